"""PointGMM (Hertz et al., CVPR 2020): Gaussian densities against scipy, the axes and eigenvalues
of the per-Gaussian head, the hierarchy's assignment rule on a hand-made case and against a
brute-force implementation, level weights, sampling moments, the input-frame mapping, a training
smoke test through the shape-model task, the registry round trip, and the EM baseline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from bench.em_baseline import fit_em, fits_to_level
from gmm_perception.data.partial_scans import scan_pool
from gmm_perception.data.procedural import procedural_shapes
from gmm_perception.gmm.hierarchical import GmmLevel, HierarchicalGmm, component_log_density, \
    sample
from gmm_perception.metrics.gmm import gmm_negative_log_likelihood
from gmm_perception.models.pointgmm import GaussianHead, PointGmm, PointGmmConfig, gram_schmidt
from gmm_perception.models.pointgmm_loss import PointGmmLossWeights, eigenvalue_penalty, \
    hierarchical_log_likelihood, hierarchical_nll, kl_divergence, pointgmm_loss
from gmm_perception.models.registry import build_model
from gmm_perception.train.run import TASKS, load_config
from gmm_perception.train.shape_model import ShapeModelData, ShapeModelTask
from procedural_files import procedural_dataset
from round_trip import checkpoint_round_trip
from tiny_configs import POINTGMM_TINY as TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_level(generator: torch.Generator, b: int = 2, k: int = 5, spread: float = 1.0,
                 dtype=torch.float64) -> GmmLevel:
    """A flat mixture with random right-handed axes, eigenvalues in [0.01, 0.5] and weights."""
    v1, v2 = torch.randn(2, b, k, 3, generator=generator, dtype=dtype)
    axes = gram_schmidt(v1, v2)
    eigenvalues = 0.01 + 0.49 * torch.rand(b, k, 3, generator=generator, dtype=dtype)
    means = spread * torch.randn(b, k, 3, generator=generator, dtype=dtype)
    logits = torch.randn(b, k, generator=generator, dtype=dtype)
    return HierarchicalGmm.from_sibling_logits([logits], [means], [axes], [eigenvalues],
                                               children=2).levels[0]


def random_hierarchy(generator: torch.Generator, b: int = 2, roots: int = 3, children: int = 2,
                     depth: int = 2) -> HierarchicalGmm:
    logits, means, axes, eigenvalues = [], [], [], []
    for level in range(depth + 1):
        k = roots * children ** level
        v1, v2 = torch.randn(2, b, k, 3, generator=generator, dtype=torch.float64)
        axes.append(gram_schmidt(v1, v2))
        eigenvalues.append(0.02 + 0.3 * torch.rand(b, k, 3, generator=generator,
                                                   dtype=torch.float64) / (level + 1))
        means.append(torch.randn(b, k, 3, generator=generator, dtype=torch.float64))
        logits.append(torch.randn(b, k, generator=generator, dtype=torch.float64))
    return HierarchicalGmm.from_sibling_logits(logits, means, axes, eigenvalues, children)


def isotropic_level(means: list[list[float]], variance: float, log_siblings: list[float],
                    parents: list[int]) -> GmmLevel:
    k = len(means)
    sibling = torch.tensor([log_siblings], dtype=torch.float64)
    return GmmLevel(weights=sibling.exp(), means=torch.tensor([means], dtype=torch.float64),
                    axes=torch.eye(3, dtype=torch.float64).expand(1, k, 3, 3).clone(),
                    eigenvalues=torch.full((1, k, 3), variance, dtype=torch.float64),
                    parents=torch.tensor(parents), sibling_log_weights=sibling)


# ----------------------------------------------------------------------------- densities
def test_log_densities_match_scipy():
    generator = torch.Generator().manual_seed(0)
    level = random_level(generator)
    points = torch.randn(2, 40, 3, generator=generator, dtype=torch.float64)
    covariance = level.covariance().numpy()
    expected = np.empty((2, 40, 5))
    for b in range(2):
        for k in range(5):
            expected[b, :, k] = multivariate_normal(level.means[b, k].numpy(),
                                                    covariance[b, k]).logpdf(points[b].numpy())
    np.testing.assert_allclose(level.component_log_densities(points).numpy(), expected,
                               rtol=1e-10, atol=1e-10)
    # the elementwise form (used by the hierarchical loss) agrees
    direct = component_log_density(points.unsqueeze(2), level.means.unsqueeze(1),
                                   level.axes.unsqueeze(1), level.eigenvalues.unsqueeze(1))
    np.testing.assert_allclose(direct.numpy(), expected, rtol=1e-10, atol=1e-10)
    # the mixture density and NLL
    weights = level.weights.numpy()
    mixture = np.log(np.einsum("bnk,bk->bn", np.exp(expected), weights))
    np.testing.assert_allclose(level.log_density(points).numpy(), mixture, rtol=1e-10)
    for b in range(2):
        assert float(level.nll(points)[b]) == pytest.approx(gmm_negative_log_likelihood(
            points[b].numpy(), weights[b], level.means[b].numpy(), covariance[b]), rel=1e-10)
    # the precision is the inverse of the covariance, without inverting anything
    identity = level.precision() @ level.covariance()
    torch.testing.assert_close(identity, torch.eye(3, dtype=torch.float64).expand_as(identity))


def test_log_densities_stay_accurate_far_from_the_origin_in_float32():
    generator = torch.Generator().manual_seed(1)
    level = random_level(generator, spread=0.2)
    points = 0.3 * torch.randn(2, 30, 3, generator=generator, dtype=torch.float64)
    expected = level.log_density(points)
    offset = torch.tensor([120.0, -75.0, 40.0], dtype=torch.float64)
    moved = level.transformed(offset.expand(2, 3), torch.ones(2, dtype=torch.float64))
    moved32 = GmmLevel(*(t.float() if t.is_floating_point() else t for t in (
        moved.weights, moved.means, moved.axes, moved.eigenvalues, moved.parents,
        moved.sibling_log_weights)))
    got = moved32.log_density((points + offset).float())
    torch.testing.assert_close(got.double(), expected, atol=2e-3, rtol=1e-4)


# ----------------------------------------------------------------------------- the head
def test_gram_schmidt_gives_orthonormal_right_handed_axes_and_the_head_positive_eigenvalues():
    generator = torch.Generator().manual_seed(2)
    v1, v2 = torch.randn(2, 1000, 3, generator=generator)
    axes = gram_schmidt(v1, v2)
    eye = torch.eye(3).expand(1000, 3, 3)
    torch.testing.assert_close(axes @ axes.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(axes), torch.ones(1000), atol=1e-5, rtol=0)
    # the first axis is the first vector's direction, the second lies in the span of both
    torch.testing.assert_close(axes[:, 0], v1 / v1.norm(dim=-1, keepdim=True))
    normal = torch.linalg.cross(v1, v2, dim=-1)
    assert float((axes[:, 1] * normal).sum(-1).abs().max()) < 1e-4

    head = GaussianHead(hidden=16, dropout=0.0, eps=1e-6)
    with torch.no_grad():
        head.mlp[-1].weight.zero_()  # s = 0 everywhere: lambda must still be eps > 0
        head.mlp[-1].bias.zero_()
        head.mlp[-1].bias[:6] = torch.tensor([1.0, 0, 0, 0, 1.0, 0])
        _, _, axes, eigenvalues = head(torch.randn(4, 7, 16))
    assert bool((eigenvalues == 1e-6).all())
    torch.testing.assert_close(axes, torch.eye(3).expand(4, 7, 3, 3))


def test_model_output_levels_weights_axes_and_parents():
    torch.manual_seed(0)
    config = PointGmmConfig(**TINY, roots=4, children=3)
    model = PointGmm(config).eval()
    assert config.components == (4, 12, 36)
    points = torch.randn(3, 200, 3)
    with torch.no_grad():
        hgmm = model.predict(points)
    assert [lv.num_components for lv in hgmm.levels] == [4, 12, 36]
    previous = None
    for level in hgmm.levels:
        torch.testing.assert_close(level.weights.sum(-1), torch.ones(3))
        assert bool((level.weights > 0).all())
        eye = torch.eye(3).expand_as(level.axes)
        torch.testing.assert_close(level.axes @ level.axes.transpose(-1, -2), eye,
                                   atol=1e-5, rtol=0)
        assert bool((torch.linalg.det(level.axes) > 0.999).all())
        assert bool((level.eigenvalues > 0).all())
        if previous is None:
            assert level.parents.tolist() == [-1] * 4
        else:
            assert level.parents.tolist() == (torch.arange(level.num_components) // 3).tolist()
            # children's weights sum to their parent's; the sibling weights to 1 per parent
            torch.testing.assert_close(level.weights.view(3, -1, 3).sum(-1), previous.weights)
            torch.testing.assert_close(level.sibling_log_weights.exp().view(3, -1, 3).sum(-1),
                                       torch.ones(3, previous.num_components))
            torch.testing.assert_close(
                level.weights, previous.weights[:, level.parents]
                * level.sibling_log_weights.exp())
        previous = level
    arrays = hgmm.level(1).as_arrays(2)
    assert arrays["parents"].tolist() == [k // 3 for k in range(12)]
    np.testing.assert_allclose(arrays["covariances"], hgmm.level(1).covariance()[2].numpy(),
                               rtol=1e-6)
    assert arrays["weights"].sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the hierarchy
def test_hierarchical_loss_scores_only_the_assigned_parents_children():
    """Two roots (x = -1 and x = +1, variance 1, equal weights) with two children each
    (variance 0.05). The
    point x = (-0.2, 0, 0) belongs to root 0, but the Gaussian nearest to it is root 1's first
    child at -0.25: the level-1 term must use root 0's children only."""
    roots = isotropic_level([[-1, 0, 0], [1, 0, 0]], 1.0, [math.log(0.5)] * 2, [-1, -1])
    children = isotropic_level([[-1.5, 0, 0], [-0.9, 0, 0], [-0.25, 0, 0], [2, 0, 0]], 0.05,
                               [math.log(0.3), math.log(0.7), math.log(0.5), math.log(0.5)],
                               [0, 0, 1, 1])
    hgmm = HierarchicalGmm([roots, children], children=2)
    x = np.array([-0.2, 0.0, 0.0])
    y = np.array([1.4, 0.0, 0.0])  # root 1's
    points = torch.tensor(np.stack([x, y])[None], dtype=torch.float64)

    def n(point, mean, variance):
        return multivariate_normal(mean, variance * np.eye(3)).pdf(point)

    log_likelihoods, assignments = hierarchical_log_likelihood(hgmm, points)
    # level 0: every point against both roots
    for row, p in enumerate((x, y)):
        expected = math.log(0.5 * n(p, [-1, 0, 0], 1.0) + 0.5 * n(p, [1, 0, 0], 1.0))
        assert float(log_likelihoods[0][0, row]) == pytest.approx(expected, rel=1e-12)
    assert assignments[0].tolist() == [[0, 1]]
    # level 1: x against root 0's children, with their sibling weights 0.3 / 0.7 ...
    expected_x = math.log(0.3 * n(x, [-1.5, 0, 0], 0.05) + 0.7 * n(x, [-0.9, 0, 0], 0.05))
    expected_y = math.log(0.5 * n(y, [-0.25, 0, 0], 0.05) + 0.5 * n(y, [2, 0, 0], 0.05))
    assert float(log_likelihoods[1][0, 0]) == pytest.approx(expected_x, rel=1e-12)
    assert float(log_likelihoods[1][0, 1]) == pytest.approx(expected_y, rel=1e-12)
    # ... which is far from what the nearest child would give (the rule matters here)
    flat = math.log(sum(w * n(x, m, 0.05) for w, m in zip(
        (0.15, 0.35, 0.25, 0.25), ([-1.5, 0, 0], [-0.9, 0, 0], [-0.25, 0, 0], [2, 0, 0]))))
    assert flat - expected_x > 3.0
    assert assignments[1].tolist() == [[1, 3]]  # -0.9 under root 0; 2.0 under root 1
    nll = hierarchical_nll(hgmm, points)
    assert float(nll[1]) == pytest.approx(-(expected_x + expected_y) / 2, rel=1e-12)


def test_hierarchical_log_likelihood_matches_a_brute_force_walk_down_the_tree():
    generator = torch.Generator().manual_seed(3)
    hgmm = random_hierarchy(generator, b=2, roots=3, children=2, depth=3)
    points = 1.5 * torch.randn(2, 25, 3, generator=generator, dtype=torch.float64)
    log_likelihoods, assignments = hierarchical_log_likelihood(hgmm, points)
    for b in range(2):
        for n in range(25):
            candidates = list(range(3))
            for level_index, level in enumerate(hgmm.levels):
                scores = [
                    float(level.sibling_log_weights[b, c]) + multivariate_normal(
                        level.means[b, c].numpy(), level.covariance()[b, c].numpy()
                    ).logpdf(points[b, n].numpy()) for c in candidates]
                expected = float(np.logaddexp.reduce(scores))
                assert float(log_likelihoods[level_index][b, n]) == pytest.approx(expected,
                                                                                  rel=1e-9)
                chosen = candidates[int(np.argmax(scores))]
                assert int(assignments[level_index][b, n]) == chosen
                candidates = [chosen * 2 + c for c in range(2)]


def test_loss_terms_kl_and_eigenvalue_penalty():
    generator = torch.Generator().manual_seed(4)
    hgmm = random_hierarchy(generator, b=2, roots=2, children=2, depth=1)
    assert float(eigenvalue_penalty(hgmm)) == pytest.approx(
        float(hgmm.finest.eigenvalues.min(dim=-1).values.mean()))
    mean = torch.tensor([[0.5, -1.0]])
    log_variance = torch.tensor([[0.2, -0.3]])
    expected = 0.5 * np.mean(np.exp([0.2, -0.3]) - 1 - np.array([0.2, -0.3])
                             + np.array([0.25, 1.0]))
    assert float(kl_divergence(mean, log_variance)) == pytest.approx(expected, rel=1e-6)
    assert float(kl_divergence(mean, None)) == 0.0
    assert float(kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0


# ----------------------------------------------------------------------------- sampling
def test_samples_match_the_mixture_moments_and_flattened_samples_lie_on_the_planes():
    generator = torch.Generator().manual_seed(5)
    level = random_level(generator, b=2, k=4, dtype=torch.float64)
    count = 200_000
    points, components = sample(level, count=count, generator=generator, return_components=True)
    assert points.shape == (2, count, 3)
    mean, covariance = level.moments()
    # the moments by the textbook formula, independently
    w, mu, sigma = level.weights.numpy(), level.means.numpy(), level.covariance().numpy()
    m = np.einsum("bk,bkd->bd", w, mu)
    c = np.einsum("bk,bkde->bde", w, sigma + mu[..., :, None] * mu[..., None, :]) \
        - m[:, :, None] * m[:, None, :]
    np.testing.assert_allclose(mean.numpy(), m, rtol=1e-12)
    np.testing.assert_allclose(covariance.numpy(), c, rtol=1e-12, atol=1e-14)
    for b in range(2):
        x = points[b].numpy()
        standard_error = np.sqrt(np.diag(c[b]) / count)
        assert np.all(np.abs(x.mean(0) - m[b]) < 5 * standard_error)
        # covariance entries: standard error about sqrt((C_ii C_jj + C_ij^2) / n)
        se_cov = np.sqrt((np.outer(np.diag(c[b]), np.diag(c[b])) + c[b] ** 2) / count)
        assert np.all(np.abs(np.cov(x.T) - c[b]) < 5 * se_cov)
        frequencies = np.bincount(components[b].numpy(), minlength=4) / count
        assert np.all(np.abs(frequencies - w[b]) < 5 * np.sqrt(w[b] * (1 - w[b]) / count))
    # flatten: no spread along each component's smallest axis
    flat, components = sample(level, count=1000, generator=generator, flatten=True,
                              return_components=True)
    index = components.unsqueeze(-1)
    smallest = torch.gather(level.eigenvalues.argmin(-1), 1, components)
    axes = torch.gather(level.axes, 1, index.unsqueeze(-1).expand(-1, -1, 3, 3))
    normal = torch.gather(axes, 2, smallest[..., None, None].expand(-1, -1, 1, 3)).squeeze(2)
    offsets = flat - torch.gather(level.means, 1, index.expand(-1, -1, 3))
    assert float((offsets * normal).sum(-1).abs().max()) < 1e-12


def test_sampling_a_network_hierarchy_is_reproducible_and_in_the_input_frame():
    torch.manual_seed(0)
    model = PointGmm(PointGmmConfig(**TINY)).eval()
    points = torch.randn(2, 300, 3) * 4.0 + 10.0
    with torch.no_grad():
        output = model(points)
    hgmm = output.hgmm
    a = sample(hgmm, 1, 20_000, torch.Generator().manual_seed(7))
    b = sample(hgmm, 1, 20_000, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 20_000, 3)
    # the samples follow the mixture in the input frame: the decoder's mixture mapped back
    mean, covariance = hgmm.level(1).moments()
    local_mean, local_covariance = output.normalised.level(1).moments()
    scale = output.scale[:, None]
    torch.testing.assert_close(mean, local_mean * scale + output.centre, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(covariance, local_covariance * scale[..., None] ** 2,
                               rtol=1e-4, atol=1e-4)
    standard_error = torch.diagonal(covariance, dim1=-2, dim2=-1).sqrt() / math.sqrt(20_000)
    assert bool(((a.mean(1) - mean).abs() < 5 * standard_error).all())


# ----------------------------------------------------------------------------- frames
@pytest.mark.parametrize("mode", ["unit_sphere", "centre"])
def test_output_follows_a_translation_and_scaling_of_the_input(mode):
    torch.manual_seed(0)
    model = PointGmm(PointGmmConfig(**TINY, input_normalisation=mode)).eval()
    points = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(8)) - 0.5
    shift = torch.tensor([5.0, -3.0, 2.0])
    factor = 3.0 if mode == "unit_sphere" else 1.0
    with torch.no_grad():
        base = model(points)
        moved = model(points * factor + shift)
    torch.testing.assert_close(moved.z, base.z, atol=1e-4, rtol=0)
    for a, b in zip(base.hgmm.levels, moved.hgmm.levels):
        torch.testing.assert_close(b.means, a.means * factor + shift, atol=2e-4, rtol=1e-5)
        torch.testing.assert_close(b.eigenvalues, a.eigenvalues * factor ** 2, rtol=1e-3,
                                   atol=1e-6)
        torch.testing.assert_close(b.axes, a.axes, atol=1e-3, rtol=0)
        torch.testing.assert_close(b.weights, a.weights, atol=1e-5, rtol=1e-4)
    # densities carry the Jacobian of the map
    lhs = moved.hgmm.log_density(points * factor + shift)
    rhs = base.hgmm.log_density(points) - 3 * math.log(factor)
    torch.testing.assert_close(lhs, rhs, atol=2e-2, rtol=1e-3)
    # and the decoder's own frame is the normalised one
    torch.testing.assert_close(moved.normalised.finest.means, base.normalised.finest.means,
                               atol=1e-4, rtol=0)


def test_unit_sphere_normalisation_centres_and_scales_the_input():
    from gmm_perception.geometry.normalise import normalise_clouds as normalise_input

    points = torch.rand(2, 100, 3) * 7.0 + 3.0
    normalised, centre, scale = normalise_input(points)
    torch.testing.assert_close(normalised.mean(1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(normalised.norm(dim=-1).amax(1), torch.ones(2))
    torch.testing.assert_close(normalised * scale[:, None, None] + centre[:, None], points)
    same, zero, one = normalise_input(points, "none")
    assert same is points and float(zero.abs().sum()) == 0 and bool((one == 1).all())
    with pytest.raises(ValueError):
        PointGmmConfig(input_normalisation="bogus")


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def procedural_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("procedural_shapes")
    shapes, meshes = procedural_dataset(folder)
    return ShapeModelData(shapes, meshes, num_points=128, target_points=192,
                          partial_fraction=0.5, partial_views_per_mesh=2, val_partial_views=1,
                          val_held_out_points=160, val_chamfer_points=256,
                          partial_cache=str(folder / "pool.npz"))


def test_training_reduces_the_loss_on_a_fixed_batch_and_validation_reports_every_level(
        procedural_data):
    task = ShapeModelTask(dict(TINY), procedural_data, batch_size=6, progress=False)
    assert task.pool is not None and task.pool.shape[:2] == (len(task.train_shapes), 2)
    torch.manual_seed(0)
    model = task.build()
    batch = task.train_batch(np.random.default_rng(0), torch.device("cpu"))
    assert batch[0].shape == (6, 128, 3) and batch[1].shape == (6, 192, 3)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, terms = [], {}
    for _ in range(30):
        loss, terms = task.loss(model.train(), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 2.0  # nats, summed over the three levels
    assert set(terms) == {"nll_l0", "nll_l1", "nll_l2", "kl", "eigenvalue_penalty"}
    model.eval()
    with torch.no_grad():
        metrics = task.validate(model, torch.device("cpu"))
    for tag in ("full", "partial"):
        for level in range(3):
            assert np.isfinite(metrics[f"val_nll_{tag}_l{level}"])
            assert np.isfinite(metrics[f"val_hnll_{tag}_l{level}"])
        assert 0 < metrics[f"val_chamfer_{tag}"] < 4.0
    assert metrics["val_loss"] == pytest.approx(
        0.5 * metrics["val_nll_full_l2"] + 0.5 * metrics["val_nll_partial_l2"])
    # root level: the hierarchical term is the flat mixture's NLL
    assert metrics["val_hnll_full_l0"] == pytest.approx(metrics["val_nll_full_l0"], rel=1e-5)
    description = task.data_description()
    assert description["loss"]["eigenvalue_weight"] == 10.0
    assert description["val_partial"] == len(task.test_shapes)


def test_category_selection_and_the_shared_scan_pool(procedural_data, monkeypatch):
    from dataclasses import replace

    import gmm_perception.data.partial_scans as partial_scans
    from gmm_perception.data.shape_set import MeshSet, ShapeSet
    from gmm_perception.train.classification import ClassificationData, ClassificationTask

    data = replace(procedural_data, categories=["chair", "mug"], val_partial_views=0)
    task = ShapeModelTask(dict(TINY), data, batch_size=4, progress=False)
    names = {task.class_names[label] for label in task.train_shapes.labels}
    assert names == {"chair", "mug"} and len(task.test_shapes) == 2
    # pool rows of the selected shapes are those shapes' scans
    all_train = ShapeSet.load(data.shapes).subset("train")
    assert list(all_train.model_ids[task.train_rows]) == list(task.train_shapes.model_ids)
    with pytest.raises(ValueError, match="unknown categories"):
        ShapeModelTask(dict(TINY), replace(data, categories=["boat"]), progress=False)

    # The classification task's pool file is read as it is (same key, no new scans).
    classification = ClassificationTask(
        "pointnet_cls", dict(local_widths=(8,), global_widths=(8, 16), head_widths=(8,),
                             input_transform=False, feature_transform=False),
        ClassificationData(data.shapes, data.meshes, num_points=128, partial_views_per_mesh=2,
                           partial_cache=data.partial_cache, val_partial_views=0),
        progress=False)

    def no_scans(*args, **kwargs):
        raise AssertionError("the cached pool should have been used")

    monkeypatch.setattr(partial_scans, "scans", no_scans)
    pool = scan_pool(MeshSet.load(data.meshes), all_train, 2, 128, 0, data.partial_cache,
                     progress=False)
    np.testing.assert_array_equal(pool, classification.pool)


def test_checkpoint_round_trip_through_the_registry(tmp_path):
    model, loaded = checkpoint_round_trip("pointgmm", TINY, tmp_path)
    points = torch.randn(2, 100, 3)
    a, b = model.predict(points), loaded.predict(points)
    for x, y in zip(a.levels, b.levels):
        torch.testing.assert_close(y.means, x.means)
        torch.testing.assert_close(y.covariance(), x.covariance())
        torch.testing.assert_close(y.weights, x.weights)


def test_canonical_yaw_makes_the_mixture_follow_turns_about_z():
    """With canonical_yaw the network sees one heading: turning the input about z turns the
    output mixture with it (means, covariances), weights unchanged."""
    from gmm_perception.geometry.transforms import rotation_z
    from gmm_perception.models.pointgmm import canonical_yaw

    torch.manual_seed(0)
    model = PointGmm(PointGmmConfig(**{**TINY, "canonical_yaw": True})).eval()
    points = torch.randn(1, 300, 3, dtype=torch.float64).float() * torch.tensor([1.0, 0.4, 0.2])
    points[..., 0] += 0.3 * points[..., 0] ** 2  # skewed along x: a unique heading
    turn = torch.from_numpy(rotation_z(0.9)).float()
    with torch.no_grad():
        base, turned = model.predict(points), model.predict(points @ turn.T)
    for a, b in zip(base.levels, turned.levels):
        torch.testing.assert_close(b.means, a.means @ turn.T, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b.covariance(), turn @ a.covariance() @ turn.T,
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b.weights, a.weights, atol=1e-5, rtol=1e-4)
    R = canonical_yaw(points)
    torch.testing.assert_close(R[0] @ R[0].T, torch.eye(3), atol=1e-5, rtol=0)
    assert float(torch.linalg.det(R[0])) == pytest.approx(1.0, abs=1e-5)


def test_training_config_builds_the_model_and_registers_the_task():
    assert "shape_model" in TASKS
    config = load_config("config/train/pointgmm.yaml")
    assert 0 < config["data"]["partial_fraction"] < 1  # one model for full and partial inputs
    model = build_model("pointgmm", config["model"])
    assert model.config.components == (8, 32, 128, 512)
    assert sum(p.numel() for p in model.parameters()) < 1e6  # small enough to commit
    PointGmmLossWeights(**config["loss"])


def test_full_loss_is_differentiable_and_weighted_as_documented():
    torch.manual_seed(0)
    model = PointGmm(PointGmmConfig(**TINY)).train()
    points = torch.randn(3, 64, 3)
    output = model(points)
    total, terms = pointgmm_loss(output, points, PointGmmLossWeights(level_weights=(1, 2, 3),
                                                                     kl_weight=0.5,
                                                                     eigenvalue_weight=4.0))
    expected = terms["nll_l0"] + 2 * terms["nll_l1"] + 3 * terms["nll_l2"] \
        + 0.5 * terms["kl"] + 4.0 * terms["eigenvalue_penalty"]
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    total.backward()
    # every parameter gets a gradient (the attention gains too, though they start at 0)
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError):
        pointgmm_loss(output, points, PointGmmLossWeights(level_weights=(1.0,)))


# ----------------------------------------------------------------------------- EM baseline
def test_em_baseline_returns_valid_deterministic_mixtures():
    import sklearn  # noqa: F401  (a pinned requirement)

    cloud = torch.tensor(procedural_shapes(1, num_points=400, seed=0).points[0]).numpy()
    fit = fit_em(cloud, 12, seed=0, threads=1)
    assert fit.weights.shape == (12,) and fit.means.shape == (12, 3)
    assert fit.covariances.shape == (12, 3, 3)
    assert fit.weights.sum() == pytest.approx(1.0) and np.all(fit.weights > 0)
    np.testing.assert_allclose(fit.covariances, np.swapaxes(fit.covariances, 1, 2))
    assert np.all(np.linalg.eigvalsh(fit.covariances) > 0)
    assert fit.converged and fit.iterations >= 1 and fit.seconds > 0
    assert fit.nbytes() == 12 * 10 * 4
    again = fit_em(cloud, 12, seed=0, threads=1)
    np.testing.assert_allclose(again.means, fit.means)
    # the same mixture through PointGMM's structure: equal NLL, finite samples
    level = fit.to_level()
    nll = gmm_negative_log_likelihood(cloud, fit.weights, fit.means, fit.covariances)
    assert float(level.nll(torch.tensor(cloud[None], dtype=torch.float32))[0]) == \
        pytest.approx(nll, abs=1e-3)
    assert -fit.lower_bound == pytest.approx(nll, abs=1e-2)  # sklearn's own figure agrees
    torch.testing.assert_close(level.covariance()[0].double(), torch.tensor(fit.covariances),
                               atol=1e-6, rtol=1e-4)
    assert bool(torch.isfinite(sample(level, count=100)).all())
    batch = fits_to_level([fit, again])
    assert batch.means.shape == (2, 12, 3)
    with pytest.raises(ValueError):
        fit_em(cloud[:5], 12)
