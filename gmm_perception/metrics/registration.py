"""Registration metrics of DeepGMR (Yuan et al., ECCV 2020, Sec. 5): RMSE (eq. 19-20), recall.

Units: the threshold only means something relative to the shape's size. Shapes here are normalised
into the unit sphere (``normalize_mesh``), so 0.2 is 20 % of the object radius; DeepGMR's text does
not state its scale (the ModelNet40 clouds it uses are commonly distributed unit-sphere normalised).
Every function takes leading batch dimensions (e.g. transforms (B, 4, 4)) and returns a float for
single inputs, an array otherwise.

RMSE definition used here, everywhere: ``sqrt(mean_i ||T_est p_i - T_gt p_i||^2)`` over *all*
source points p_i. Two other readings exist, and neither is used:
  * eq. 19/20 as printed put 1/n *outside* the root, ``(1/n) sqrt(sum_i ...)``, which is not an RMSE
    (it shrinks like 1/sqrt(n) for a fixed error) and contradicts the name; the text uses n = 500;
  * the reference code (wentaoyuan/deepgmr, model.py ``rmse``) evaluates only the first 100 source
    points and takes the *mean of the per-point distances* ``mean_i ||T_est p_i - T_gt p_i||``,
    without squaring. That is <= our RMSE (Jensen), equal when the error is a pure translation, so
    recall computed here can be lower than with the reference code when rotations are wrong.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Reused, not duplicated: the geodesic angle of R_est^T R_gt, batched over leading dimensions.
from gmm_perception.geometry.transforms import rotation_error_deg

__all__ = ["pose_errors", "recall", "registration_rmse", "rotation_error_deg",
           "symmetric_rmse", "translation_error"]

DEEPGMR_RECALL_THRESHOLD = 0.2  # DeepGMR Table 1 "Re@0.2", after Choi et al. (CVPR 2015)
# A pose is equivalent under the object's symmetry when its symmetric RMSE is below this (issue 15).
SYMMETRIC_THRESHOLD = 0.05


def _scalar_or_array(values: NDArray) -> NDArray[np.float64] | float:
    return float(values) if np.ndim(values) == 0 else values


def _as_transforms(T: ArrayLike, name: str) -> NDArray[np.float64]:
    transforms = np.asarray(T, dtype=np.float64)
    if transforms.ndim < 2 or transforms.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must have shape (..., 4, 4), got {transforms.shape}")
    return transforms


def registration_rmse(points: ArrayLike, T_est: ArrayLike, T_gt: ArrayLike
                      ) -> NDArray[np.float64] | float:
    """RMSE ``sqrt(mean_i ||T_est p_i - T_gt p_i||^2)`` over all source points (module docstring).

    points: (n, 3) shared by the batch, or (..., n, 3) per item; T_est, T_gt: (..., 4, 4).
    """
    source = np.asarray(points, dtype=np.float64)
    if source.ndim < 2 or source.shape[-1] != 3 or source.shape[-2] == 0:
        raise ValueError(f"points must have shape (..., n, 3) with n > 0, got {source.shape}")
    T_est, T_gt = _as_transforms(T_est, "T_est"), _as_transforms(T_gt, "T_gt")
    # T_est p - T_gt p = (R_est - R_gt) p + (t_est - t_gt): one product instead of two transforms.
    delta = T_est - T_gt
    residual = (np.einsum("...ij,...nj->...ni", delta[..., :3, :3], source)
                + delta[..., np.newaxis, :3, 3])
    return _scalar_or_array(np.sqrt(np.mean(np.sum(residual**2, axis=-1), axis=-1)))


def symmetric_rmse(source: ArrayLike, target: ArrayLike, T_est: ArrayLike, T_gt: ArrayLike
                   ) -> float:
    """RMSE up to the object's symmetry (ADD-S, Hinterstoisser et al. 2012, with a root mean
    square): the seen surface, `source` together with `target` brought into the source frame by
    T_gt, is placed by T_est and by T_gt, and each point placed by T_est takes its distance to the
    *nearest* point placed by T_gt. A box turned by 180 degrees about its axis scores ~0 where
    `registration_rmse` scores its size. With a partial pair the seen surface is the union of the
    two views, so only symmetries of what was seen count. One pair: (n, 3), (m, 3), (4, 4), (4, 4).
    """
    from scipy.spatial import cKDTree

    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    T_est, T_gt = _as_transforms(T_est, "T_est"), _as_transforms(T_gt, "T_gt")
    if T_est.shape != (4, 4) or T_gt.shape != (4, 4):
        raise ValueError("symmetric_rmse scores one pair: transforms (4, 4)")
    back = np.linalg.inv(T_gt)
    surface = np.concatenate([source, target @ back[:3, :3].T + back[:3, 3]])
    placed = surface @ T_est[:3, :3].T + T_est[:3, 3]
    distances, _ = cKDTree(surface @ T_gt[:3, :3].T + T_gt[:3, 3]).query(placed)
    return float(np.sqrt(np.mean(distances ** 2)))


def recall(rmse_values: ArrayLike, threshold: float = DEEPGMR_RECALL_THRESHOLD) -> float:
    """Fraction of registrations with RMSE strictly below `threshold` (NaN counts as a failure)."""
    values = np.asarray(rmse_values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("recall of no registrations is undefined")
    return float(np.mean(values < threshold))


def translation_error(t_est: ArrayLike, t_gt: ArrayLike) -> NDArray[np.float64] | float:
    """Euclidean distance between translations (..., 3)."""
    t_est = np.asarray(t_est, dtype=np.float64)
    t_gt = np.asarray(t_gt, dtype=np.float64)
    if t_est.shape[-1:] != (3,) or t_gt.shape[-1:] != (3,):
        raise ValueError(
            f"translations must have shape (..., 3), got {t_est.shape} and {t_gt.shape}")
    return _scalar_or_array(np.linalg.norm(t_est - t_gt, axis=-1))


def pose_errors(T_est: ArrayLike, T_gt: ArrayLike
                ) -> tuple[NDArray[np.float64] | float, NDArray[np.float64] | float]:
    """(rotation error in degrees, translation error) of transforms (..., 4, 4)."""
    T_est, T_gt = _as_transforms(T_est, "T_est"), _as_transforms(T_gt, "T_gt")
    return (rotation_error_deg(T_est[..., :3, :3], T_gt[..., :3, :3]),
            translation_error(T_est[..., :3, 3], T_gt[..., :3, 3]))
