"""DeepGMR registration metrics against closed forms."""

import numpy as np
import pytest

from gmm_perception.geometry.transforms import make_transform, random_rotation
from gmm_perception.geometry import transforms
from gmm_perception.metrics.registration import (
    pose_errors,
    recall,
    registration_rmse,
    rotation_error_deg,
    translation_error,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(5)


def rotation_about_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_identical_transforms_give_zero(rng):
    points = rng.normal(size=(500, 3))
    T = make_transform(random_rotation(rng), rng.normal(size=3))
    assert registration_rmse(points, T, T) == 0.0


def test_translation_offset_gives_its_length(rng):
    points = rng.normal(size=(500, 3))
    T_gt = make_transform(random_rotation(rng), rng.normal(size=3))
    offset = np.array([0.1, -0.2, 0.05])
    T_est = make_transform(np.eye(3), offset) @ T_gt  # translate the result by `offset`
    expected = np.linalg.norm(offset)
    assert registration_rmse(points, T_est, T_gt) == pytest.approx(expected, rel=1e-12)


def test_rotation_error_closed_form():
    # Points at radius r in the xy-plane, rotated by theta about z, move by 2 r sin(theta / 2).
    theta, r = np.radians(30.0), 0.8
    angles = np.linspace(0.0, 2 * np.pi, 12, endpoint=False)
    points = r * np.stack([np.cos(angles), np.sin(angles), np.zeros(12)], axis=1)
    T_est = make_transform(rotation_about_z(theta), np.zeros(3))
    assert registration_rmse(points, T_est, np.eye(4)) == pytest.approx(2 * r * np.sin(theta / 2))
    assert rotation_error_deg(T_est[:3, :3], np.eye(3)) == pytest.approx(30.0)
    assert pose_errors(T_est, np.eye(4)) == (pytest.approx(30.0), pytest.approx(0.0))


def test_rmse_is_the_root_of_the_mean_over_all_points():
    # Errors 0 (for p = 0, R only) and |(R - I) p| for the second point: the mean is over both.
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    T_est = make_transform(rotation_about_z(np.pi), np.zeros(3))  # moves (1, 0, 0) by 2
    assert registration_rmse(points, T_est, np.eye(4)) == pytest.approx(np.sqrt((0 + 4) / 2))


def test_batched_matches_single(rng):
    points = rng.normal(size=(100, 3))
    T_est = make_transform(random_rotation(rng, 4), rng.normal(size=(4, 3)))
    T_gt = make_transform(random_rotation(rng, 4), rng.normal(size=(4, 3)))
    batched = registration_rmse(points, T_est, T_gt)
    assert batched.shape == (4,)
    np.testing.assert_allclose(batched, [registration_rmse(points, T_est[i], T_gt[i])
                                         for i in range(4)], rtol=1e-12)
    per_item_points = np.stack([points] * 4)
    np.testing.assert_allclose(registration_rmse(per_item_points, T_est, T_gt), batched, rtol=1e-12)
    rotation, translation = pose_errors(T_est, T_gt)
    np.testing.assert_allclose(rotation, [rotation_error_deg(T_est[i, :3, :3], T_gt[i, :3, :3])
                                          for i in range(4)])
    np.testing.assert_allclose(translation,
                               np.linalg.norm(T_est[:, :3, 3] - T_gt[:, :3, 3], axis=1))


def test_translation_error_and_reuse_of_rotation_error():
    assert translation_error([1.0, 2.0, 2.0], [0.0, 0.0, 0.0]) == pytest.approx(3.0)
    assert rotation_error_deg is transforms.rotation_error_deg


def test_recall_counts_strictly_below_threshold():
    values = [0.0, 0.1, 0.19999, 0.2, 0.5, np.nan, 3.0, 0.05]
    assert recall(values) == pytest.approx(4 / 8)
    assert recall(values, threshold=0.6) == pytest.approx(6 / 8)
    with pytest.raises(ValueError):
        recall([])


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        registration_rmse(np.zeros((5, 2)), np.eye(4), np.eye(4))
    with pytest.raises(ValueError):
        registration_rmse(np.zeros((5, 3)), np.eye(3), np.eye(4))


def _rotation_z(angle: float) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return T


def test_symmetric_rmse_forgives_a_symmetry_and_nothing_else():
    from gmm_perception.metrics.registration import symmetric_rmse

    # A ring of 12 points has 12-fold symmetry about z: a turn by 30 degrees maps it onto itself.
    angles = np.arange(12) * np.pi / 6
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(12)], axis=1)
    T_gt = np.eye(4)
    T_gt[:3, 3] = [0.3, -0.2, 0.5]
    target = ring + T_gt[:3, 3]
    turned = T_gt @ _rotation_z(np.pi / 6)
    assert registration_rmse(ring, turned, T_gt) == pytest.approx(2 * np.sin(np.pi / 12))
    assert symmetric_rmse(ring, target, turned, T_gt) == pytest.approx(0.0, abs=1e-12)
    # A turn by 15 degrees is no symmetry: every point lands halfway between two ring points.
    half = T_gt @ _rotation_z(np.pi / 12)
    assert symmetric_rmse(ring, target, half, T_gt) == pytest.approx(2 * np.sin(np.pi / 24))
    # A shift smaller than half the point spacing: every point's nearest is its own image.
    shifted = T_gt.copy()
    shifted[:3, 3] += [0.0, 0.0, 0.1]
    assert symmetric_rmse(ring, target, shifted, T_gt) == pytest.approx(0.1)


def test_symmetric_rmse_uses_both_views_of_a_partial_pair():
    from gmm_perception.metrics.registration import symmetric_rmse

    # Source sees one half of the ring, target (posed by T_gt) the other: the seen surface is the
    # whole ring, so a turn by 180 degrees (source onto the target's half) is a symmetry of it.
    angles = np.arange(12) * np.pi / 6
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(12)], axis=1)
    T_gt = _rotation_z(0.4)
    source, target = ring[:6], ring[6:] @ T_gt[:3, :3].T
    assert symmetric_rmse(source, target, T_gt @ _rotation_z(np.pi), T_gt) == pytest.approx(0.0,
                                                                                           abs=1e-9)
    # Without the target's half the same turn would not be forgiven.
    assert symmetric_rmse(source, source[:0], T_gt @ _rotation_z(np.pi), T_gt) > 0.5
