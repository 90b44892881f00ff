"""The registration stage with the shipped DeepGMR checkpoint: units, cached reference mixtures,
and the model library (best match by fitness)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.geometry.transforms import (invert_transform, make_transform,
                                                random_rotation, rotation_error_deg,
                                                transform_points)
from gmm_perception.models.registry import load_model
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.configs import RegistrationConfig
from gmm_perception.pipeline.register import DeepGmrRegistrar

CHECKPOINT = share_dir() / "checkpoints" / "deepgmr" / "deepgmr_sh3d.pt"


@pytest.fixture(scope="module")
def model():
    model, _ = load_model(CHECKPOINT, "deepgmr")
    return model


def shape(kind: str, seed: int, size: float) -> np.ndarray:
    mesh = procedural_mesh(kind, np.random.default_rng(seed))
    mesh.apply_scale(size / 2)  # unit sphere -> `size` metres across
    return sample_surface(mesh, 4096, np.random.default_rng(seed + 1))


def test_cached_reference_mixture_equals_the_paired_forward_pass(model):
    rng = np.random.default_rng(0)
    reference = shape("chair", 1, 2.0).astype(np.float32)  # radius ~1: no rescaling
    source = transform_points(make_transform(random_rotation(rng), [0.2, 0, 0]), reference)
    registrar = DeepGmrRegistrar(RegistrationConfig(registration_points=4096, icp="none"), model,
                                 torch.device("cpu"))
    registrar.set_reference(reference)
    registrar._rng = np.random.default_rng(5)  # resampling 4096 of 4096 keeps every point
    cached = model.mixture(torch.from_numpy(((source - source.mean(0))
                                             / registrar.references[0].scale)[None]))
    with torch.no_grad():
        paired = model(torch.from_numpy((source - source.mean(0)) / registrar.references[0].scale)
                       [None].float(),
                       torch.from_numpy((reference - reference.mean(0))
                                        / registrar.references[0].scale)[None].float())
    for field in ("weights", "means", "variances"):
        torch.testing.assert_close(getattr(paired.target_gmm, field),
                                   getattr(registrar.references[0].gmm, field),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(getattr(paired.source_gmm, field), getattr(cached, field),
                                   atol=1e-4, rtol=1e-4)


def test_the_transform_comes_back_in_metres_and_in_the_callers_frame(model):
    """A 0.8 m object 3 m away: normalisation must be undone exactly."""
    rng = np.random.default_rng(1)
    reference = shape("chair", 11, 0.8)
    pose = make_transform(random_rotation(rng), [3.0, -1.0, 0.5])  # reference -> sensor
    scan = transform_points(pose, reference[rng.permutation(4096)[:3000]])
    registrar = DeepGmrRegistrar(RegistrationConfig(icp="point_to_point", icp_max_distance=0.05),
                                 model, torch.device("cpu"))
    registrar.set_reference(reference, "chair")
    result = registrar.register(scan + rng.normal(0, 0.002, scan.shape))
    estimate = invert_transform(result.transform)  # pose of the reference in the sensor frame
    assert rotation_error_deg(estimate[:3, :3], pose[:3, :3]) < 3.0
    assert np.linalg.norm(estimate[:3, 3] - pose[:3, 3]) < 0.02
    assert result.fitness > 0.9 and result.reference_name == "chair"


def test_the_library_picks_the_model_that_was_scanned(model):
    rng = np.random.default_rng(2)
    library = {"chair": shape("chair", 11, 0.8), "table": shape("table", 12, 1.2),
               "lamp": shape("lamp", 13, 1.5)}
    registrar = DeepGmrRegistrar(RegistrationConfig(icp="point_to_point", icp_max_distance=0.05,
                                                    inlier_threshold=0.03),
                                 model, torch.device("cpu"))
    for name, points in library.items():
        registrar.add_reference(points, name)
    for name, points in library.items():
        pose = make_transform(random_rotation(rng), rng.uniform(-2, 2, 3))
        result = registrar.register(transform_points(pose, points[rng.permutation(4096)[:3000]]))
        assert result.reference_name == name, (name, result)
        # Tables and lamps are symmetric: judge the alignment by fit, not by rotation error.
        assert result.fitness > 0.9 and result.inlier_rmse < 0.015, (name, result)


def test_an_empty_library_is_an_error(model):
    with pytest.raises(RuntimeError, match="no reference"):
        DeepGmrRegistrar(RegistrationConfig(), model, torch.device("cpu")).register(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 3 points"):
        DeepGmrRegistrar(RegistrationConfig(), model, torch.device("cpu")).add_reference(np.zeros((2, 3)), "tiny")


def test_upright_variants_are_turns_about_the_axis_that_keep_the_centroid():
    from scipy.spatial.transform import Rotation

    from gmm_perception.pipeline.register import _upright_variants

    up, centre = np.array([0.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.5])
    yaw = Rotation.from_euler("z", 40, degrees=True).as_matrix()
    tilt = Rotation.from_euler("x", 10, degrees=True).as_matrix()
    T = make_transform(yaw @ tilt, [0.3, -0.2, 0.1])
    variants = _upright_variants(T, up, centre)
    for k, U in enumerate(variants):
        assert np.allclose(U[:3, :3] @ up, up)  # a turn about up
        assert np.allclose(U[:3, :3] @ centre + U[:3, 3], T[:3, :3] @ centre + T[:3, 3])
        angle = np.degrees(np.arctan2(U[1, 0], U[0, 0])) % 360
        assert angle == pytest.approx((40 + 90 * k) % 360, abs=1e-6)
    exact = make_transform(yaw, [0, 0, 0])
    assert np.allclose(_upright_variants(exact, up, centre)[0], exact)
