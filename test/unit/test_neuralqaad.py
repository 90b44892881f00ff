"""NeuralQAAD's model and training steps: patches, folding, QAAD_GREEDY and QAAD_REASSIGNMENT."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from gmm_perception.models.neuralqaad import NeuralQaad, NeuralQaadConfig, kd_patches
from gmm_perception.models.registry import build_model
from gmm_perception.models.neuralqaad import augmented_chamfer
from gmm_perception.train.compression import greedy_assignment, reassign


def test_kd_patches_are_equal_compact_and_keep_every_point():
    rng = np.random.default_rng(0)
    cloud = rng.random((4096, 3)) * [4.0, 1.0, 0.5]
    patches = kd_patches(cloud, 16)
    assert patches.shape == (16, 256, 3)
    assert np.array_equal(np.sort(patches.reshape(-1, 3), axis=0), np.sort(cloud, axis=0))
    # Compact: each patch spans far less than the cloud along its longest axis.
    assert max(np.ptp(p, axis=0).max() for p in patches) < 0.5 * np.ptp(cloud, axis=0).max()
    with pytest.raises(ValueError, match="power of two"):
        kd_patches(cloud, 12)


def test_a_fresh_model_folds_q_onto_itself_and_counts_its_floats():
    rng = np.random.default_rng(1)
    config = NeuralQaadConfig(shapes=3, latent=8, input_points=1024, patches=4,
                              shared_widths=(32, 16), patch_widths=(16,))
    model = NeuralQaad(config)
    model.set_input_cloud(rng.random((1024, 3)))
    with torch.no_grad():
        image = model.decode_all(model.codes)
    # Residual folding with a near-zero last layer: the image starts at Q (module docstring).
    assert image.shape == (3, 1024, 3)
    assert torch.allclose(image[0], model.inputs.reshape(-1, 3), atol=0.05)
    floats = model.parameter_floats()
    assert floats["input_cloud"] == 1024 * 3 and floats["codes"] == 3 * 8
    shared = (8 + 3) * 32 + 32 + 32 * 16 + 16
    per_patch = 16 * 16 + 16 + 16 * 3 + 3
    assert floats["network"] == shared + 4 * per_patch
    with torch.no_grad():
        for count in (10, 1024, 5000):
            assert model.decode(model.codes[1], count).shape == (count, 3)
    assert float(model.spacing) > 0


def test_each_patch_has_its_own_last_layers():
    config = NeuralQaadConfig(shapes=1, latent=4, input_points=64, patches=2,
                              shared_widths=(8,), patch_widths=(8,))
    model = build_model("neuralqaad", vars(config))
    with torch.no_grad():
        model.patch_weights[-1].normal_()
        same = model.inputs[:1, :1].expand(1, 2, 1, 3).clone()  # one point fed to both patches
        out = model.fold(model.codes[:1], same[None, 0])
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_augmented_chamfer_is_the_larger_directed_mean():
    a = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    b = torch.tensor([[[0.0, 0, 0], [0.0, 0, 0]]])
    # a -> b: (0 + 1) / 2; b -> a: 0: the maximum is 0.5.
    assert augmented_chamfer(a, b).item() == pytest.approx(0.5)


def test_greedy_assignment_is_a_bijection_within_the_auction_tolerance_per_leaf():
    rng = np.random.default_rng(2)
    image, target = rng.random((2048, 3)), rng.random((2048, 3))
    assignment = greedy_assignment(image, target, leaf_size=2048)  # one leaf: the whole LAP
    assert np.array_equal(np.sort(assignment), np.arange(2048))
    cost = cdist(image, target)
    rows, cols = linear_sum_assignment(cost)
    optimum = cost[rows, cols].sum()
    assert optimum - 1e-9 <= cost[np.arange(2048), assignment].sum() <= optimum * 1.001
    split = greedy_assignment(image, target, leaf_size=256)
    assert np.array_equal(np.sort(split), np.arange(2048))


def test_reassignment_permutes_the_targets_and_never_raises_the_loss():
    rng = np.random.default_rng(3)
    targets = rng.random((500, 3))
    for trial in range(5):
        assigned = rng.choice(500, 200, replace=False)
        predicted = targets[assigned] + rng.normal(scale=0.3, size=(200, 3))
        new = reassign(predicted, assigned, targets)
        assert sorted(new.tolist()) == sorted(assigned.tolist())
        before = np.sum((predicted - targets[assigned]) ** 2)
        after = np.sum((predicted - targets[new]) ** 2)
        assert after <= before + 1e-12
        assert after < before  # with this much noise some swap always helps
    # A perfect assignment stays as it is.
    assigned = np.arange(100)
    assert np.array_equal(reassign(targets[:100], assigned, targets), assigned)


def test_training_runs_both_phases_keeps_bijections_and_resumes(tmp_path):
    from gmm_perception.data.shape_set import ShapeSet
    from gmm_perception.models.checkpoint import load_checkpoint
    from gmm_perception.models.registry import load_model
    from gmm_perception.train.compression import CompressionData, CompressionSettings, \
        CompressionTrainer

    rng = np.random.default_rng(4)
    clouds = rng.normal(size=(5, 1500, 3)).astype(np.float32) * [1.0, 0.5, 0.2]
    path = ShapeSet(points=clouds, labels=np.zeros(5), class_names=["chair"],
                    split=["train", "train", "val", "test", "cross"],
                    model_ids=[f"m{i}" for i in range(5)]).save(tmp_path / "set.npz")
    model = {"latent": 8, "input_points": 512, "patches": 4, "shared_widths": [32, 16],
             "patch_widths": [16]}
    data = CompressionData(shapes=str(path), splits=("train", "val", "test"))

    def settings(qap_steps):
        return CompressionSettings(output_dir=str(tmp_path / "run"), validate_every=3,
                                   chamfer={"steps": 6, "batch_shapes": 2,
                                            "points_per_patch": 32},
                                   qap={"steps": qap_steps, "batch_shapes": 2,
                                        "points_per_patch": 32}, device="cpu", threads=1)

    trainer = CompressionTrainer(model, data, settings(6), progress=False)
    assert len(trainer.stored) == 4  # the cross shape is a new shape, not stored
    best = trainer.run()
    assert trainer.step == 12 and trainer.phase == "qap"
    for row in trainer.assignment:
        assert np.array_equal(np.sort(row), np.arange(512))
    lines = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["3", "chamfer"], ["6", "chamfer"], ["9", "qap"], ["12", "qap"]]
    loaded, payload = load_model(best, "neuralqaad")
    assert payload["config"]["model"]["shapes"] == 4
    assert torch.equal(loaded.codes, trainer.model.codes.detach())

    again = CompressionTrainer(model, data, settings(9), progress=False)
    again.run()  # resumes from last.pt: three more QAP steps
    assert again.step == 15
    assert load_checkpoint(tmp_path / "run" / "last.pt")["training_state"]["step"] == 15
    for row in again.assignment:
        assert np.array_equal(np.sort(row), np.arange(512))
