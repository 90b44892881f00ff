"""Rigid-body transform math on numpy arrays (no ROS dependency).

Conventions:
    * Quaternions are in ROS order ``(x, y, z, w)`` everywhere in this API.
    * Homogeneous transforms are 4x4 matrices; ``T_a_b`` maps points expressed
      in frame ``b`` into frame ``a``, so ``compose(T_a_b, T_b_c) == T_a_c``.
    * Functions accept leading batch dimensions where that is natural:
      quaternions ``(..., 4)``, rotations ``(..., 3, 3)``, transforms ``(..., 4, 4)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Below this norm a quaternion carries no usable direction, so normalising it
# would just amplify noise into an arbitrary rotation.
_MIN_QUAT_NORM = 1e-9
# Below this angle between quaternions slerp's sin(theta) denominator is too
# small to divide by; normalised linear interpolation is exact to first order.
_SLERP_LINEAR_THRESHOLD = 1e-6


def _check_trailing_shape(array: NDArray, trailing: tuple[int, ...], name: str) -> None:
    if array.ndim < len(trailing) or array.shape[-len(trailing) :] != trailing:
        expected = "(..., " + ", ".join(map(str, trailing)) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")


def _as_unit_quat(q_xyzw: ArrayLike) -> NDArray[np.float64]:
    """Validate ``(..., 4)`` quaternions and normalise them to unit length."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    _check_trailing_shape(q, (4,), "quaternion (x, y, z, w)")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)):
        raise ValueError("quaternion contains non-finite values")
    if np.any(norm < _MIN_QUAT_NORM):
        raise ValueError("zero quaternion does not represent a rotation")
    return q / norm


def _as_rotation(R: ArrayLike) -> NDArray[np.float64]:
    rotation = np.asarray(R, dtype=np.float64)
    _check_trailing_shape(rotation, (3, 3), "rotation matrix")
    return rotation


def _as_transform(T: ArrayLike) -> NDArray[np.float64]:
    transform = np.asarray(T, dtype=np.float64)
    _check_trailing_shape(transform, (4, 4), "homogeneous transform")
    return transform


def quat_to_matrix(q_xyzw: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices ``(..., 3, 3)`` from quaternions ``(..., 4)`` (normalised first)."""
    x, y, z, w = np.moveaxis(_as_unit_quat(q_xyzw), -1, 0)
    R = np.empty((*x.shape, 3, 3))
    R[..., 0, 0] = 1.0 - 2.0 * (y * y + z * z)
    R[..., 0, 1] = 2.0 * (x * y - z * w)
    R[..., 0, 2] = 2.0 * (x * z + y * w)
    R[..., 1, 0] = 2.0 * (x * y + z * w)
    R[..., 1, 1] = 1.0 - 2.0 * (x * x + z * z)
    R[..., 1, 2] = 2.0 * (y * z - x * w)
    R[..., 2, 0] = 2.0 * (x * z - y * w)
    R[..., 2, 1] = 2.0 * (y * z + x * w)
    R[..., 2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return R


def matrix_to_quat(R: ArrayLike) -> NDArray[np.float64]:
    """Unit quaternions ``(..., 4)`` in (x, y, z, w) order with ``w >= 0``.

    Uses Shepperd's method: the component with the largest magnitude is
    recovered from the diagonal and the others from off-diagonal sums, which
    avoids dividing by a near-zero value for rotations close to 180 degrees.
    The result is normalised, so slightly non-orthonormal input is tolerated.
    """
    rotation = _as_rotation(R)
    m = rotation.reshape(-1, 3, 3)
    trace = np.trace(m, axis1=-2, axis2=-1)
    # Each column is proportional to the squared magnitude of x, y, z, w.
    candidates = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], trace], axis=-1)
    largest = np.argmax(candidates, axis=-1)

    q = np.empty((m.shape[0], 4))
    w_largest = largest == 3
    mw = m[w_largest]
    q[w_largest] = np.stack(
        [
            mw[:, 2, 1] - mw[:, 1, 2],
            mw[:, 0, 2] - mw[:, 2, 0],
            mw[:, 1, 0] - mw[:, 0, 1],
            1.0 + trace[w_largest],
        ],
        axis=-1,
    )
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        rows = largest == i
        mi = m[rows]
        q[rows, i] = 1.0 - trace[rows] + 2.0 * mi[:, i, i]
        q[rows, j] = mi[:, j, i] + mi[:, i, j]
        q[rows, k] = mi[:, k, i] + mi[:, i, k]
        q[rows, 3] = mi[:, k, j] - mi[:, j, k]

    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[q[:, 3] < 0] *= -1.0  # q and -q are the same rotation; pick w >= 0.
    return q.reshape((*rotation.shape[:-2], 4))


def make_transform(R: ArrayLike, t: ArrayLike) -> NDArray[np.float64]:
    """Homogeneous ``(..., 4, 4)`` from rotations ``(..., 3, 3)`` and translations ``(..., 3)``."""
    rotation = _as_rotation(R)
    translation = np.asarray(t, dtype=np.float64)
    _check_trailing_shape(translation, (3,), "translation")
    batch = np.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    T = np.zeros((*batch, 4, 4))
    T[..., :3, :3] = rotation
    T[..., :3, 3] = translation
    T[..., 3, 3] = 1.0
    return T


def invert_transform(T: ArrayLike) -> NDArray[np.float64]:
    """Inverse of rigid transforms in closed form: ``[R^T, -R^T t]``."""
    transform = _as_transform(T)
    R_inv = np.swapaxes(transform[..., :3, :3], -1, -2)
    t_inv = -np.einsum("...ij,...j->...i", R_inv, transform[..., :3, 3])
    return make_transform(R_inv, t_inv)


def compose(*transforms: ArrayLike) -> NDArray[np.float64]:
    """Matrix product left to right, e.g. ``compose(T_a_b, T_b_c) == T_a_c``; identity if empty."""
    result = np.eye(4)
    for T in transforms:
        result = result @ _as_transform(T)
    return result


def transform_points(T: ArrayLike, points: ArrayLike) -> NDArray[np.floating]:
    """Apply one 4x4 transform to points ``(..., 3)``.

    Floating input keeps its dtype (float32 clouds stay float32 to halve memory
    traffic); integer input is promoted to float64.
    """
    transform = np.asarray(T, dtype=np.float64)
    if transform.shape != (4, 4):
        raise ValueError(f"transform must have shape (4, 4), got {transform.shape}")
    pts = np.asarray(points)
    _check_trailing_shape(pts, (3,), "points")
    dtype = np.result_type(pts.dtype, np.float32)
    R = transform[:3, :3].astype(dtype)
    t = transform[:3, 3].astype(dtype)
    return pts.astype(dtype, copy=False) @ R.T + t


def rotation_angle(R: ArrayLike) -> NDArray[np.float64] | float:
    """Rotation angle(s) in radians, in ``[0, pi]``.

    ``atan2(|axis * sin|, cos)`` stays accurate near 0 and pi, where
    ``arccos((trace - 1) / 2)`` loses precision; the cosine is clipped to
    ``[-1, 1]`` so slightly non-orthonormal input still yields a valid angle.
    """
    rotation = _as_rotation(R)
    cos_angle = np.clip((np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    # The skew-symmetric part of R is sin(angle) times the axis' cross matrix.
    sin_axis = np.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        axis=-1,
    )
    sin_angle = np.linalg.norm(sin_axis, axis=-1) / 2.0
    angle = np.arctan2(sin_angle, cos_angle)
    return float(angle) if angle.ndim == 0 else angle


def rotation_error_deg(R_est: ArrayLike, R_gt: ArrayLike) -> NDArray[np.float64] | float:
    """Geodesic angle in degrees between estimated and ground-truth rotations."""
    est = _as_rotation(R_est)
    gt = _as_rotation(R_gt)
    error = np.degrees(rotation_angle(np.swapaxes(est, -1, -2) @ gt))
    return float(error) if np.ndim(error) == 0 else error


def random_rotation(
    rng: np.random.Generator, size: int | tuple[int, ...] | None = None
) -> NDArray[np.float64]:
    """Rotation(s) drawn uniformly (Haar measure) from SO(3).

    A normalised 4-D standard Gaussian is uniform on the unit 3-sphere, and the
    unit-quaternion double cover maps that to the uniform measure on SO(3).
    """
    if size is None:
        batch: tuple[int, ...] = ()
    elif isinstance(size, int):
        batch = (size,)
    else:
        batch = tuple(size)
    return quat_to_matrix(rng.standard_normal((*batch, 4)))


def slerp(q0_xyzw: ArrayLike, q1_xyzw: ArrayLike, s: ArrayLike) -> NDArray[np.float64]:
    """Spherical linear interpolation along the shorter arc; ``s=0 -> q0``, ``s=1 -> q1``."""
    q0 = _as_unit_quat(q0_xyzw)
    q1 = _as_unit_quat(q1_xyzw)
    fraction = np.asarray(s, dtype=np.float64)[..., np.newaxis]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    # q and -q are the same rotation; flipping keeps the path under 180 degrees.
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    nearly_parallel = sin_theta < _SLERP_LINEAR_THRESHOLD
    safe_sin = np.where(nearly_parallel, 1.0, sin_theta)
    w0 = np.where(nearly_parallel, 1.0 - fraction, np.sin((1.0 - fraction) * theta) / safe_sin)
    w1 = np.where(nearly_parallel, fraction, np.sin(fraction * theta) / safe_sin)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def interpolate_transform(T0: ArrayLike, T1: ArrayLike, s: float) -> NDArray[np.float64]:
    """Interpolate rigid transforms: slerp on rotation, linear on translation."""
    start = _as_transform(T0)
    end = _as_transform(T1)
    q = slerp(matrix_to_quat(start[..., :3, :3]), matrix_to_quat(end[..., :3, :3]), s)
    t = (1.0 - s) * start[..., :3, 3] + s * end[..., :3, 3]
    return make_transform(quat_to_matrix(q), t)


def euler_to_matrix(roll: ArrayLike, pitch: ArrayLike, yaw: ArrayLike) -> NDArray[np.float64]:
    """Rotation from ROS fixed-axis XYZ angles (radians): ``R_z(yaw) @ R_y(pitch) @ R_x(roll)``."""
    r, p, y = np.broadcast_arrays(
        np.asarray(roll, dtype=np.float64),
        np.asarray(pitch, dtype=np.float64),
        np.asarray(yaw, dtype=np.float64),
    )
    cr, sr = np.cos(r), np.sin(r)
    cp, sp = np.cos(p), np.sin(p)
    cy, sy = np.cos(y), np.sin(y)
    R = np.empty((*r.shape, 3, 3))
    R[..., 0, 0] = cy * cp
    R[..., 0, 1] = cy * sp * sr - sy * cr
    R[..., 0, 2] = cy * sp * cr + sy * sr
    R[..., 1, 0] = sy * cp
    R[..., 1, 1] = sy * sp * sr + cy * cr
    R[..., 1, 2] = sy * sp * cr - cy * sr
    R[..., 2, 0] = -sp
    R[..., 2, 1] = cp * sr
    R[..., 2, 2] = cp * cr
    return R


def rotation_z(angles: ArrayLike) -> NDArray[np.float64]:
    """(B,) angles -> (B, 3, 3) rotations about z (turns of upright objects)."""
    angles = np.asarray(angles, dtype=np.float64)
    c, s = np.cos(angles), np.sin(angles)
    zeros, ones = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, zeros], -1), np.stack([s, c, zeros], -1),
                     np.stack([zeros, zeros, ones], -1)], -2)
