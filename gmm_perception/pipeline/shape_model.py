"""Shape-model stage: an object cloud -> PointGMM's hierarchical GMM of its surface, and a dense
cloud resampled from the finest level (Hertz et al., CVPR 2020).

With `refine_iterations` > 0 the network's mixture is a prior: its finest level initialises that
many EM iterations on the points the network was given (`models.pointgmm.refine`; Gaussians the
points do not support, e.g. the unseen side of a partial scan, stay as predicted), the coarser
levels become the merges of their children, and the refined hierarchy is what the stage returns
and resamples.

The resampled cloud keeps to the observed surface: with `resample_max_distance` > 0, a draw from
the finest level farther than that many times the input's own spacing (the median distance from
an observed point to its nearest neighbour) from every observed point is rejected and drawn
again, and what rejection cannot fill is pulled to that distance (`near_observed_sample`); the
mixture itself is published whole, completion of unseen sides included.

The cloud is resampled to the point count the model was trained with; the model centres and
scales it itself and answers in the cloud's frame and units. Training rotated the objects about
z only: clouds must be in a z-up frame (a segmentation's fixed frame is). Covariances are rebuilt
in float64 from the predicted axes and eigenvalues and symmetrised: float32 products
P^T diag(lambda) P are symmetric only to rounding, and consumers of the messages (rviz's
ellipsoids, Cholesky factorisations) expect exactly symmetric positive-definite matrices.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from gmm_perception.geometry.points import MIN_OBJECT_POINTS, object_points, resample
from gmm_perception.gmm.hierarchical import sample
from gmm_perception.models.pointgmm import PointGmm, refine
from gmm_perception.pipeline.configs import ShapeModelConfig

MIN_POINTS = MIN_OBJECT_POINTS  # re-exported: the least cloud the stage takes


@dataclass(frozen=True)
class ShapeModelResult:
    # Coarse to fine, float64 in the cloud's frame: weights (K,), means (K, 3), covariances
    # (K, 3, 3), axes (K, 3, 3) (rows), eigenvalues (K, 3), parents (K,) int (-1 for the roots).
    levels: list[dict]
    resampled: np.ndarray  # (resample_points, 3) float32 points drawn from the finest level
    seconds: float


REJECTION_ROUNDS = 4  # draws of 2 x count before the rest is pulled in


def _observed_tree(points: np.ndarray) -> cKDTree:
    """A k-d tree of the cloud's distinct points (a scan resampled with replacement repeats
    many, which would make every point its own nearest neighbour)."""
    return cKDTree(np.unique(np.asarray(points, dtype=np.float64), axis=0))


def _spacing(tree: cKDTree) -> float:
    if tree.n < 2:
        return 0.0
    distances, _ = tree.query(tree.data, k=2)
    return float(np.median(distances[:, 1]))


def point_spacing(points: np.ndarray) -> float:
    """The median distance from a point to its nearest other point in the cloud, repeated
    points counted once; 0 for a single point."""
    return _spacing(_observed_tree(points))


def near_observed_sample(hgmm, observed: np.ndarray, count: int, spacings: float,
                         generator: torch.Generator) -> np.ndarray:
    """(count, 3) float32 draws of the finest level within `spacings` times the observed cloud's
    `point_spacing` of an observed point: rejection sampling over at most REJECTION_ROUNDS
    rounds of 2 x count draws; when the mixture puts too little mass there (a thick mixture
    around a dense cloud), the remaining draws are pulled onto the sphere of that radius around
    their nearest observed point."""
    tree = _observed_tree(observed)  # one tree for the spacing and every round's query
    max_distance = spacings * _spacing(tree)
    kept, total = [], 0
    for _ in range(REJECTION_ROUNDS):
        drawn = sample(hgmm, -1, 2 * count, generator)[0].cpu().numpy().astype(np.float64)
        distances, nearest = tree.query(drawn)
        near = distances <= max_distance
        kept.append(drawn[near])
        total += int(near.sum())
        if total >= count:
            return np.concatenate(kept)[:count].astype(np.float32)
    rest = drawn[~near][:count - total]
    anchors = tree.data[nearest[~near][:count - total]]
    offsets = rest - anchors
    scale = max_distance / np.maximum(np.linalg.norm(offsets, axis=1, keepdims=True), 1e-12)
    return np.concatenate(kept + [anchors + offsets * np.minimum(scale, 1.0)]).astype(np.float32)


class ShapeModeller:
    """`training_points`: the input size the checkpoint was trained with (its data.num_points),
    used when the config's input_points is 0."""

    def __init__(self, config: ShapeModelConfig, model: PointGmm, device: torch.device,
                 training_points: int | None = None):
        num_points = config.input_points or training_points
        if not num_points:
            raise ValueError("the checkpoint does not say its training input size "
                             "(data.num_points): set input_points")
        self.config = config
        self.model, self.device = model.eval(), torch.device(device)
        self.num_points, self.resample_points = num_points, config.resample_points
        self._rng = np.random.default_rng(config.seed)
        self._generator = torch.Generator(device=self.device).manual_seed(config.seed)

    @torch.no_grad()
    def __call__(self, points: np.ndarray) -> ShapeModelResult:
        started = time.perf_counter()
        points = object_points(points, "model", MIN_POINTS)
        chosen = torch.from_numpy(resample(points, self.num_points, self._rng)[None])
        chosen = chosen.to(self.device)
        hgmm = self.model.predict(chosen)
        if self.config.refine_iterations:
            hgmm, _ = refine(hgmm, chosen, self.config.refine_iterations,
                             self.config.refine_support)
        levels = []
        for level in hgmm.levels:
            arrays = level.as_arrays(0)
            axes, eigenvalues = arrays["axes"], arrays["eigenvalues"]
            covariances = np.einsum("kji,kj,kjl->kil", axes, eigenvalues, axes)
            arrays["covariances"] = 0.5 * (covariances + covariances.transpose(0, 2, 1))
            levels.append(arrays)
        if self.config.resample_max_distance > 0:
            resampled = near_observed_sample(hgmm, points, self.resample_points,
                                             self.config.resample_max_distance, self._generator)
        else:
            resampled = sample(hgmm, -1, self.resample_points, self._generator)[0].cpu().numpy()
        return ShapeModelResult(levels, resampled, time.perf_counter() - started)
