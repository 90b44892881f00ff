"""Transform math checked against closed forms, transforms3d and scipy."""

import numpy as np
import pytest
import transforms3d
from scipy.spatial.transform import Rotation

from gmm_perception.geometry.transforms import (
    compose,
    euler_to_matrix,
    interpolate_transform,
    invert_transform,
    make_transform,
    matrix_to_quat,
    quat_to_matrix,
    random_rotation,
    rotation_angle,
    rotation_error_deg,
    slerp,
    transform_points,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def random_unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def random_transform(rng: np.random.Generator) -> np.ndarray:
    return make_transform(random_rotation(rng), rng.uniform(-5, 5, 3))


def same_rotation_quat(q_a: np.ndarray, q_b: np.ndarray) -> bool:
    """q and -q encode the same rotation."""
    return bool(np.allclose(q_a, q_b, atol=1e-9) or np.allclose(q_a, -q_b, atol=1e-9))


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula, independent of any quaternion code."""
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def test_axis_angle_quaternion_closed_form(rng):
    for _ in range(200):
        axis = random_unit_vector(rng)
        angle = rng.uniform(0.0, np.pi)
        expected_q = np.append(axis * np.sin(angle / 2), np.cos(angle / 2))  # w >= 0 here
        R = axis_angle_matrix(axis, angle)
        np.testing.assert_allclose(quat_to_matrix(expected_q), R, atol=1e-12)
        np.testing.assert_allclose(matrix_to_quat(R), expected_q, atol=1e-9)


def test_quaternion_of_known_rotations():
    # 90 degrees about z maps x onto y.
    q = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    np.testing.assert_allclose(quat_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # 180 degrees about x: w = 0, the case naive trace-based conversion fails on.
    R_x180 = np.diag([1.0, -1.0, -1.0])
    assert same_rotation_quat(matrix_to_quat(R_x180), np.array([1.0, 0, 0, 0]))


def test_matrix_quaternion_round_trip(rng):
    R = random_rotation(rng, 500)
    q = matrix_to_quat(R)
    assert q.shape == (500, 4)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(q), R, atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-12)


def test_round_trip_near_180_degrees(rng):
    for _ in range(100):
        axis = random_unit_vector(rng)
        R = axis_angle_matrix(axis, np.pi - rng.uniform(0, 1e-7))
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-10)


def test_agrees_with_transforms3d_wxyz_order(rng):
    for R in random_rotation(rng, 100):
        q_xyzw = matrix_to_quat(R)
        q_wxyz = transforms3d.quaternions.mat2quat(R)
        assert same_rotation_quat(q_xyzw, np.roll(q_wxyz, -1))
        np.testing.assert_allclose(
            transforms3d.quaternions.quat2mat(np.roll(q_xyzw, 1)), R, atol=1e-12
        )


def test_agrees_with_scipy_xyzw_order(rng):
    R = random_rotation(rng, 200)
    scipy_q = Rotation.from_matrix(R).as_quat()  # (x, y, z, w)
    ours = matrix_to_quat(R)
    for a, b in zip(ours, scipy_q, strict=True):
        assert same_rotation_quat(a, b)
    np.testing.assert_allclose(quat_to_matrix(scipy_q), R, atol=1e-12)


def test_non_unit_quaternion_is_normalised():
    q = np.array([0.0, 0.0, 1.0, 1.0])  # 90 degrees about z, norm sqrt(2)
    R = quat_to_matrix(q)
    np.testing.assert_allclose(R, quat_to_matrix(q / np.linalg.norm(q)), atol=1e-15)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize(
    "bad_quat, message",
    [
        ([0.0, 0.0, 0.0, 0.0], "zero quaternion"),
        ([0.0, 0.0, 1.0], r"\(\.\.\., 4\)"),
        ([np.nan, 0, 0, 1], "non-finite"),
    ],
)
def test_invalid_quaternions_rejected(bad_quat, message):
    with pytest.raises(ValueError, match=message):
        quat_to_matrix(bad_quat)


@pytest.mark.parametrize(
    "call",
    [
        lambda: matrix_to_quat(np.eye(4)),
        lambda: make_transform(np.eye(3), [1.0, 2.0]),
        lambda: invert_transform(np.eye(3)),
        lambda: compose(np.eye(4), np.eye(3)),
        lambda: transform_points(np.eye(4), np.zeros((5, 2))),
        lambda: transform_points(np.eye(4)[None], np.zeros((5, 3))),
        lambda: rotation_angle(np.eye(2)),
        lambda: slerp([0, 0, 0, 1], [0, 0, 1], 0.5),
    ],
)
def test_bad_shapes_raise_value_error(call):
    with pytest.raises(ValueError, match="shape"):
        call()


def test_invert_and_compose_give_identity(rng):
    for _ in range(100):
        T = random_transform(rng)
        np.testing.assert_allclose(compose(T, invert_transform(T)), np.eye(4), atol=1e-12)
        np.testing.assert_allclose(compose(invert_transform(T), T), np.eye(4), atol=1e-12)
        np.testing.assert_allclose(invert_transform(T), np.linalg.inv(T), atol=1e-12)


def test_compose_order_and_batched_inverse(rng):
    T_a_b, T_b_c = random_transform(rng), random_transform(rng)
    point_c = np.array([0.3, -1.2, 2.0])
    point_a = transform_points(T_a_b, transform_points(T_b_c, point_c[None]))[0]
    np.testing.assert_allclose(transform_points(compose(T_a_b, T_b_c), point_c[None])[0], point_a)
    np.testing.assert_allclose(compose(), np.eye(4))
    batch = np.stack([T_a_b, T_b_c])
    np.testing.assert_allclose(invert_transform(batch), np.linalg.inv(batch), atol=1e-12)


def test_transform_points_matches_loop(rng):
    T = random_transform(rng)
    points = rng.uniform(-10, 10, (257, 3))
    expected = np.array([T[:3, :3] @ p + T[:3, 3] for p in points])
    np.testing.assert_allclose(transform_points(T, points), expected, atol=1e-12)


def test_transform_points_dtypes(rng):
    T = random_transform(rng)
    points32 = rng.uniform(-10, 10, (100, 3)).astype(np.float32)
    result32 = transform_points(T, points32)
    assert result32.dtype == np.float32
    assert result32.shape == (100, 3)
    np.testing.assert_allclose(
        result32, transform_points(T, points32.astype(np.float64)), atol=1e-4
    )
    assert transform_points(T, np.zeros((4, 3), dtype=np.int64)).dtype == np.float64
    assert transform_points(T, np.zeros((0, 3), dtype=np.float32)).shape == (0, 3)


def test_rotation_angle_and_error_for_known_angles(rng):
    axis = random_unit_vector(rng)
    for angle in [0.0, 1e-9, 0.3, np.pi / 2, np.pi - 1e-9, np.pi]:
        assert rotation_angle(axis_angle_matrix(axis, angle)) == pytest.approx(angle, abs=1e-12)
    R_gt = random_rotation(rng)
    R_est = R_gt @ axis_angle_matrix(axis, np.radians(7.5))
    assert rotation_error_deg(R_est, R_gt) == pytest.approx(7.5, abs=1e-9)
    assert rotation_error_deg(R_gt, R_gt) == pytest.approx(0.0, abs=1e-9)
    # Slight non-orthonormality from float32 round-off must not yield NaN.
    assert np.isfinite(rotation_angle(np.eye(3) * (1 + 1e-7)))


def test_rotation_angle_batched(rng):
    angles = rng.uniform(0, np.pi, 50)
    R = np.stack([axis_angle_matrix(random_unit_vector(rng), a) for a in angles])
    np.testing.assert_allclose(rotation_angle(R), angles, atol=1e-9)


def test_slerp_midpoint_is_half_angle():
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    z90 = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    mid = slerp(identity, z90, 0.5)
    assert np.degrees(rotation_angle(quat_to_matrix(mid))) == pytest.approx(45.0, abs=1e-9)
    np.testing.assert_allclose(mid, [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)], atol=1e-12)
    np.testing.assert_allclose(slerp(identity, z90, 0.0), identity, atol=1e-12)
    np.testing.assert_allclose(slerp(identity, z90, 1.0), z90, atol=1e-12)


def test_slerp_takes_shortest_path_and_handles_equal_inputs(rng):
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    z90 = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    # -z90 is the same rotation; the midpoint must still be 45 degrees, not 135.
    mid = slerp(identity, -z90, 0.5)
    assert np.degrees(rotation_angle(quat_to_matrix(mid))) == pytest.approx(45.0, abs=1e-9)
    q = matrix_to_quat(random_rotation(rng))
    np.testing.assert_allclose(slerp(q, q, 0.3), q, atol=1e-12)


def test_slerp_has_constant_angular_velocity(rng):
    q0, q1 = matrix_to_quat(random_rotation(rng, 2))
    total = rotation_error_deg(quat_to_matrix(q0), quat_to_matrix(q1))
    for s in [0.1, 0.25, 0.7]:
        partial = rotation_error_deg(quat_to_matrix(q0), quat_to_matrix(slerp(q0, q1, s)))
        assert partial == pytest.approx(s * total, abs=1e-8)


def test_interpolate_transform(rng):
    T0 = make_transform(np.eye(3), [0.0, 0.0, 0.0])
    T1 = make_transform(axis_angle_matrix(np.array([1.0, 0, 0]), np.pi / 2), [2.0, -4.0, 6.0])
    mid = interpolate_transform(T0, T1, 0.5)
    np.testing.assert_allclose(mid[:3, 3], [1.0, -2.0, 3.0])
    np.testing.assert_allclose(
        mid[:3, :3], axis_angle_matrix(np.array([1.0, 0, 0]), np.pi / 4), atol=1e-12
    )
    np.testing.assert_allclose(mid[3], [0, 0, 0, 1])
    T = random_transform(rng)
    np.testing.assert_allclose(interpolate_transform(T, T1, 0.0), T, atol=1e-12)


def test_random_rotation_is_uniform(rng):
    R = random_rotation(rng, 20000)
    np.testing.assert_allclose(
        np.einsum("nij,nik->njk", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    # Haar measure: E[R] = 0 and the angle density is (1 - cos a) / pi, so E[a] = pi/2 + 2/pi.
    assert np.abs(R.mean(axis=0)).max() < 0.02
    assert rotation_angle(R).mean() == pytest.approx(np.pi / 2 + 2 / np.pi, abs=0.02)


def test_euler_matches_scipy_extrinsic_xyz(rng):
    for roll, pitch, yaw in rng.uniform(-np.pi, np.pi, (100, 3)):
        expected = Rotation.from_euler("xyz", [roll, pitch, yaw]).as_matrix()
        np.testing.assert_allclose(euler_to_matrix(roll, pitch, yaw), expected, atol=1e-12)
    # Pure yaw of 90 degrees turns x into y.
    np.testing.assert_allclose(
        euler_to_matrix(0.0, 0.0, np.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12
    )
    batched = euler_to_matrix(np.zeros(5), np.zeros(5), np.linspace(0, 1, 5))
    assert batched.shape == (5, 3, 3)
