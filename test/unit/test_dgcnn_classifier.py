"""DGCNN classifier (models/dgcnn_classifier.py): the graph, the edge layer against its definition,
invariances, the size features against closed forms, and the classification stage with it."""
import numpy as np
import pytest
import torch

from gmm_perception.models.dgcnn_classifier import DgcnnClassifier, DgcnnClassifierConfig, \
    EdgeConv, knn, size_features
from gmm_perception.models.registry import CLASSIFIERS, build_model
from gmm_perception.pipeline.classify import Classifier
from gmm_perception.pipeline.configs import ClassifyConfig

NAMES = ["box", "rod", "plate"]


def test_knn_matches_brute_force_distances():
    torch.manual_seed(0)
    x = torch.randn(2, 40, 5)
    index = knn(x, 6)
    for b in range(2):
        d = ((x[b, :, None] - x[b, None]) ** 2).sum(-1)
        expected = d.argsort(dim=1)[:, :6]
        # the same sets (ties are measure-zero for Gaussian points)
        assert torch.equal(index[b].sort(dim=1).values, expected.sort(dim=1).values)
        assert torch.equal(index[b, :, 0], torch.arange(40))  # each point is its own nearest


def test_edge_layer_is_the_max_over_neighbours_of_w_applied_to_the_edge_feature():
    torch.manual_seed(1)
    layer = EdgeConv(3, 8, 4).eval()
    with torch.no_grad():
        layer.norm.running_mean.uniform_(-0.5, 0.5)
        layer.norm.running_var.uniform_(0.5, 2.0)
        layer.norm.weight.uniform_(0.5, 1.5)  # positive scale: max and batch norm commute
    x = torch.randn(1, 20, 3)
    out = layer(x)[0]
    neighbours = knn(x, 4)[0]
    w = torch.cat([layer.centre.weight, layer.neighbour.weight], dim=1)  # W [x_i, x_j - x_i]
    for i in range(20):
        edges = torch.stack([torch.cat([x[0, i], x[0, j] - x[0, i]]) for j in neighbours[i]])
        pooled = (edges @ w.T).amax(dim=0)
        n = layer.norm
        expected = torch.nn.functional.leaky_relu(
            (pooled - n.running_mean) / torch.sqrt(n.running_var + n.eps) * n.weight + n.bias,
            0.2)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


def test_log_probabilities_do_not_depend_on_point_order_or_the_frame_scale():
    torch.manual_seed(2)
    model = DgcnnClassifier(DgcnnClassifierConfig(num_classes=3, input_points=0,
                                                  edge_widths=(16, 16), embedding=32,
                                                  head_widths=(32,))).eval()
    cloud = torch.rand(1, 128, 3)
    with torch.no_grad():
        a = model.classify_points(cloud)
        b = model.classify_points(cloud[:, torch.randperm(128)])
        c = model.classify_points(5.0 * cloud + 3.0)  # normalised away without size features
    torch.testing.assert_close(a.exp().sum(), torch.tensor(1.0))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)


def test_size_features_of_a_box_are_its_measured_size_and_scale_with_it():
    rng = np.random.default_rng(3)
    # a 2 x 1 x 0.5 m box's volume, z up
    box = torch.from_numpy(rng.uniform([-1.0, -0.5, 0.0], [1.0, 0.5, 0.5], (1, 4000, 3)))
    radius, height, horizontal = size_features(box)[0].exp().tolist()
    assert height == pytest.approx(0.96 * 0.5, rel=0.03)  # 2nd to 98th percentile of z
    assert horizontal == pytest.approx(1.0, rel=0.1)  # 95th percentile of the xy radius
    assert horizontal < radius < np.sqrt(1.0 + 0.25 + 0.0625)
    shifted = size_features(3.0 * box + 10.0)
    torch.testing.assert_close(shifted - size_features(box),
                               torch.full((1, 3), float(np.log(3.0)), dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_a_stray_return_does_not_change_the_size():
    rng = np.random.default_rng(4)
    cloud = torch.from_numpy(rng.uniform(0.0, 1.0, (1, 1000, 3)))
    stray = cloud.clone()
    stray[0, 0] = torch.tensor([30.0, -30.0, 15.0])  # a flying pixel
    torch.testing.assert_close(size_features(stray), size_features(cloud), atol=0.02, rtol=0)


def test_the_model_with_size_features_reads_them_and_the_stage_gives_them():
    torch.manual_seed(5)
    config = dict(num_classes=3, edge_widths=(16,), embedding=16, head_widths=(16,),
                  input_points=64, size_features=True)
    model = build_model("dgcnn_cls", config).eval()
    assert "dgcnn_cls" in CLASSIFIERS
    cloud = np.random.default_rng(5).uniform(-0.5, 0.5, (300, 3)).astype(np.float32)
    prepared = model.prepare(torch.from_numpy(cloud)[None])
    assert prepared.shape == (1, 300, 6)
    torch.testing.assert_close(prepared[0, :, 3:], size_features(
        torch.from_numpy(cloud)[None]).expand(300, 3))
    with torch.no_grad():
        torch.nn.init.normal_(model.size_net[0].weight, std=3.0)
    stage = Classifier(ClassifyConfig(classification_points=64, temperature=1.0,
                                      unknown_threshold=0.0), model, NAMES, torch.device("cpu"))
    small, large = stage(cloud), stage(4.0 * cloud)
    assert small.scores.shape == (3,) and np.isclose(small.scores.sum(), 1.0)
    assert not np.allclose(small.scores, large.scores, atol=1e-3)  # size is read
    shape_only = build_model("dgcnn_cls", {**config, "size_features": False}).eval()
    stage = Classifier(ClassifyConfig(classification_points=64, temperature=1.0,
                                      unknown_threshold=0.0, seed=1), shape_only, NAMES,
                       torch.device("cpu"))
    a = stage(cloud).scores
    stage = Classifier(ClassifyConfig(classification_points=64, temperature=1.0,
                                      unknown_threshold=0.0, seed=1), shape_only, NAMES,
                       torch.device("cpu"))
    np.testing.assert_allclose(stage(4.0 * cloud).scores, a, atol=1e-4)  # same draw, no size


def test_a_few_steps_learn_to_tell_a_small_from_a_large_object_of_one_shape():
    torch.manual_seed(6)
    rng = np.random.default_rng(6)
    model = build_model("dgcnn_cls", dict(num_classes=2, edge_widths=(16,), embedding=16,
                                          head_widths=(16,), input_points=64,
                                          size_features=True, dropout=0.0))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    unit = rng.uniform(-0.5, 0.5, (16, 64, 3)).astype(np.float32)
    labels = torch.tensor([0, 1] * 8)
    clouds = torch.from_numpy(unit) * torch.where(labels == 0, 0.5, 2.0).view(-1, 1, 1)
    for _ in range(40):
        loss = torch.nn.functional.nll_loss(model(model.prepare(clouds)), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        predicted = model(model.prepare(clouds)).argmax(1)
    assert torch.equal(predicted, labels)
