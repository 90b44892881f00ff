"""The shared preprocessing stage: crop, range gate, voxel downsample, resample to a fixed count."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# The object stages' (classify, shape model, upsample) least input: fewer points say nothing about
# a shape (they are a segmentation speck), cannot be fitted with GMCN's input components, and
# are fewer than the encoders ever saw in training.
MIN_OBJECT_POINTS = 16


class EmptyCloudError(ValueError):
    """The input holds no finite point, so there is nothing to process."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Every step is off at its default: an all-default stage returns the finite input points."""

    crop_min: tuple[float, float, float] = (-np.inf, -np.inf, -np.inf)
    crop_max: tuple[float, float, float] = (np.inf, np.inf, np.inf)
    min_range: float = 0.0  # distance from the cloud's frame origin (the sensor), metres
    max_range: float = np.inf
    voxel_size: float = 0.0  # metres; 0 disables the voxel grid
    num_points: int = 0  # resample to exactly this many points; 0 keeps the count
    seed: int = 0

    def __post_init__(self):
        if np.any(np.asarray(self.crop_min) > np.asarray(self.crop_max)):
            raise ValueError(f"crop_min {self.crop_min} exceeds crop_max {self.crop_max}")
        if not 0.0 <= self.min_range <= self.max_range:
            raise ValueError(f"need 0 <= min_range <= max_range, got {self.min_range}, {self.max_range}")
        if self.voxel_size < 0 or self.num_points < 0:
            raise ValueError("voxel_size and num_points must be >= 0")


def finite_points(points: np.ndarray) -> np.ndarray:
    """(N,3) float32 rows without NaN/inf; raises EmptyCloudError when none is left."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    keep = np.isfinite(points).all(axis=1)
    finite = points if keep.all() else points[keep]
    if len(finite) == 0:
        raise EmptyCloudError(f"no finite points among {len(points)}")
    return finite


def object_points(points: np.ndarray, verb: str, min_points: int = MIN_OBJECT_POINTS,
                  finite: bool = False) -> np.ndarray:
    """An object stage's input as (N,3) float32; `verb` names the stage in the error message.

    ValueError for another shape (or, with `finite`, any NaN/inf coordinate); EmptyCloudError
    for fewer than `min_points` points: the sender's problem (a speck of a cluster), not the
    node's, so a node rejects the cloud rather than failing.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"expected (N, 3) points, got {points.shape}")
    if finite and not np.isfinite(points).all():
        # One NaN poisons a normalisation and so every output point: the nodes' read_cloud /
        # Preprocessor drop such rows before the stage.
        raise ValueError("points must be finite (drop NaN rows first: Preprocessor does)")
    if len(points) < min_points:
        raise EmptyCloudError(f"{len(points)} points are too few to {verb} (< {min_points})")
    return points


def crop(points: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Keep points inside the axis-aligned box and the range shell."""
    keep = np.ones(len(points), dtype=bool)
    if np.isfinite(config.crop_min).any() or np.isfinite(config.crop_max).any():
        keep &= ((points >= np.asarray(config.crop_min, dtype=np.float32))
                 & (points <= np.asarray(config.crop_max, dtype=np.float32))).all(axis=1)
    if config.min_range > 0 or np.isfinite(config.max_range):
        as_double = points.astype(np.float64)  # exact at the bounds, like the crop box
        squared_range = np.einsum("ij,ij->i", as_double, as_double)
        keep &= (squared_range >= config.min_range ** 2) & (squared_range <= config.max_range ** 2)
    return points if keep.all() else points[keep]


def voxel_downsample(points: np.ndarray, voxel_size: float) -> np.ndarray:
    """One point per occupied voxel: the centroid of its points, voxels ordered by key.

    Same grid as Open3D's voxel_down_sample (origin half a voxel below the cloud's minimum
    corner), in numpy: 5x faster than Open3D at 200k points and no 2.7 s import in a node.
    """
    origin = points.min(axis=0).astype(np.float64) - 0.5 * voxel_size
    keys = np.floor((points - origin) / voxel_size).astype(np.int64)
    extent = keys.max(axis=0) + 1
    linear = (keys[:, 0] * extent[1] + keys[:, 1]) * extent[2] + keys[:, 2]
    _, voxel_of_point, counts = np.unique(linear, return_inverse=True, return_counts=True)
    centroids = np.empty((len(counts), 3), dtype=np.float64)
    for axis in range(3):
        centroids[:, axis] = np.bincount(voxel_of_point, weights=points[:, axis],
                                         minlength=len(counts))
    return (centroids / counts[:, None]).astype(np.float32)


def resample(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly `count` points: a random subset, or all points plus random repeats when too few."""
    n = len(points)
    if n >= count:
        return points[rng.choice(n, size=count, replace=False)]
    extra = rng.choice(n, size=count - n, replace=True)
    return np.concatenate([points, points[extra]])


class Preprocessor:
    """Callable stage; its random generator makes resampling reproducible per stage instance."""

    def __init__(self, config: PreprocessConfig):
        self.config = config
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        points = crop(finite_points(points), self.config)
        if len(points) and self.config.voxel_size > 0:
            points = voxel_downsample(points, self.config.voxel_size)
        if len(points) and self.config.num_points > 0:
            points = resample(points, self.config.num_points, self._rng)
        return np.ascontiguousarray(points, dtype=np.float32)
