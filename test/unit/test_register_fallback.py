"""The registration stage's classical fallback (FPFH + RANSAC + ICP): it runs only when the
network's best fit is poor, it wins where the network alone fails, the result says which path
won, and the registrar counts runs and wins."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.geometry.transforms import (invert_transform, make_transform,
                                                random_rotation, rotation_error_deg,
                                                transform_points)
from gmm_perception.models.deepgmr import DeepGmr, DeepGmrConfig
from gmm_perception.models.registry import load_model
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.configs import RegistrationConfig
from gmm_perception.pipeline.register import FALLBACK_METHOD, DeepGmrRegistrar

CHECKPOINT = share_dir() / "checkpoints" / "deepgmr" / "deepgmr_sh3d.pt"
SIZE = 0.8  # metres across
# A 2 cm inlier distance on a 0.8 m chair: a chair turned 90 degrees about its up axis still
# fits about 0.77 of its points (seat and legs are four-fold symmetric), a correct pose ~1.
TIGHT = dict(icp_max_distance=0.02, inlier_threshold=0.02)


@pytest.fixture(scope="module")
def random_model():
    """An untrained DeepGMR: its alignments are wrong, so only the fallback can succeed."""
    torch.manual_seed(0)
    return DeepGmr(DeepGmrConfig(components=8, feature_dim=32, encoder_widths=(16, 32),
                                 head_widths=(32,), rri_neighbours=8)).eval()


def chair_pair(seed: int):
    """(reference, scan, pose of the reference in the scan's frame): a procedural chair, a
    different surface sample of it at a random pose, 2 mm noise."""
    rng = np.random.default_rng(seed)
    mesh = procedural_mesh("chair", np.random.default_rng(seed + 10))
    mesh.apply_scale(SIZE / 2)
    reference = sample_surface(mesh, 4096, np.random.default_rng(seed + 1))
    pose = make_transform(random_rotation(rng), rng.uniform(-2, 2, 3))
    scan = transform_points(pose, sample_surface(mesh, 3000, np.random.default_rng(seed + 100)))
    return reference, scan + rng.normal(0, 0.002, scan.shape), pose


def pose_error(result, pose) -> tuple[float, float]:
    estimate = invert_transform(result.transform)
    return (rotation_error_deg(estimate[:3, :3], pose[:3, :3]),
            float(np.linalg.norm(estimate[:3, 3] - pose[:3, 3])))


def registrar(model, **values) -> DeepGmrRegistrar:
    return DeepGmrRegistrar(RegistrationConfig(registration_points=256, **values), model,
                            torch.device("cpu"))


def test_the_fallback_wins_where_the_network_alone_fails(random_model):
    reference, scan, pose = chair_pair(0)
    network_only = registrar(random_model, fallback=False, **TIGHT)
    network_only.set_reference(reference, "chair")
    alone = network_only.register(scan)
    assert alone.method == "deepgmr+icp_point_to_point" and alone.fallback == "off"
    assert alone.fitness < 0.8 and pose_error(alone, pose)[0] > 20.0  # below the threshold below
    assert network_only.fallback_runs == network_only.fallback_wins == 0

    stage = registrar(random_model, fallback=True, fallback_fitness=0.8, **TIGHT)
    stage.set_reference(reference, "chair")
    result = stage.register(scan)
    assert result.method == FALLBACK_METHOD and result.fallback == "won"
    assert result.fallback_ran and result.fallback_won
    rotation, translation = pose_error(result, pose)
    assert rotation < 5.0 and translation < 0.02 * SIZE, (rotation, translation)
    assert result.fitness > 0.95 and result.reference_name == "chair"
    assert (stage.fallback_runs, stage.fallback_wins) == (1, 1)
    # A configuration change keeps the counts (the node reports them over its lifetime).
    changed = stage.with_config(RegistrationConfig(registration_points=256, fallback_fitness=0.9,
                                                   **TIGHT))
    assert (changed.fallback_runs, changed.fallback_wins) == (1, 1)


def test_the_fallback_does_not_run_when_the_network_fits_well():
    model, _ = load_model(CHECKPOINT, "deepgmr")
    reference, scan, pose = chair_pair(1)
    stage = DeepGmrRegistrar(RegistrationConfig(fallback=True, fallback_fitness=0.8), model,
                             torch.device("cpu"))
    stage.set_reference(reference, "chair")
    result = stage.register(scan)
    assert result.fitness >= 0.8
    assert result.method == "deepgmr+icp_point_to_point" and result.fallback == "not_needed"
    assert not result.fallback_ran and not result.fallback_won
    assert (stage.fallback_runs, stage.fallback_wins) == (0, 0)


def test_the_counters_count_runs_and_wins_apart(random_model):
    """Threshold 1.0: the fallback runs on every frame (no noisy scan fits every point); it wins
    or loses by fit alone, runs are counted either way and wins only when it won."""
    reference, scan, _ = chair_pair(0)
    stage = registrar(random_model, fallback=True, fallback_fitness=1.0, **TIGHT)
    stage.set_reference(reference, "chair")
    states = [stage.register(scan).fallback for _ in range(2)]
    assert all(state in ("lost", "won") for state in states)
    assert stage.fallback_runs == 2
    assert stage.fallback_wins == states.count("won")
    # Fallback off: never runs, counts stay.
    off = stage.with_config(RegistrationConfig(registration_points=256, fallback=False, **TIGHT))
    assert off.register(scan).fallback == "off" and off.fallback_runs == 2


def test_reference_features_are_built_once_at_the_reference_scale(random_model):
    reference, _, _ = chair_pair(0)
    stage = registrar(random_model, fallback=True, fallback_voxel=0.05)
    stage.set_reference(reference, "chair")
    features = stage.references[0].features
    assert features is not None
    assert features.voxel == pytest.approx(0.05 * stage.references[0].scale)
    assert features.fpfh.num() == len(features.cloud.points) > 0
    assert registrar(random_model, fallback=False)._reference(reference, "chair").features is None
    # A new config at the same voxel keeps the same features object (not recomputed).
    same = stage.with_config(RegistrationConfig(registration_points=256, fallback_fitness=0.5,
                                                fallback_voxel=0.05))
    assert same.references[0].features is features
