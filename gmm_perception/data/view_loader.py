"""Training batches sampled from a cached `views.ViewPool`, without ray casting.

Registration pairs follow `registration_pairs.RegistrationPairs` (``target ~ T_gt . source``,
unit-shape units, each cloud given its own random rigid pose: Haar rotation, translation uniform
in the cube +-max_translation), so a training task can take ``pairs.source, pairs.target,
pairs.T_gt`` as it takes `make_pairs`' today. Settings:
    * view_to_view:   two different single views of one shape whose overlap (pool matrix) is at
                      least `min_overlap` (the best-overlapping one when none is); sensor noise;
    * scan_to_model:  1-3 views accumulated (voxelised as the scene pipeline accumulates) vs the
                      shape's full stored model (ShapeSet, 2048 points); sensor noise plus the
                      DeepGMR jitter, as `registration_pairs`' scan_to_model;
    * noisy:          full vs full, the same stored points on both sides, each jittered
                      independently (DeepGMR's noisy setting);
    * clean:          as noisy without jitter.
Completion / upsampling batches are (partial, full) pairs in the object frame: 1-3 accumulated
views vs the stored model, both turned by one rotation about z (upright shapes) or a Haar
rotation (shapes whose up is unknown).

Sensor noise is drawn fresh per sample from the pool's sensor models (`views.apply_sensor_noise`,
on the clean sensor-frame returns), so every epoch sees new noise; `noise=False` gives exact
clouds (tests). Every cloud is resampled to a fixed count (`geometry.points.resample`).
Only the shapes of `split` (and present in `shapes`) are ever sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from gmm_perception.data.registration_pairs import JITTER_CLIP, JITTER_SIGMA, RegistrationPairs
from gmm_perception.data.shape_set import ShapeSet
from gmm_perception.data.views import ViewPool, accumulate, apply_sensor_noise, ViewSettings
from gmm_perception.geometry.points import resample
from gmm_perception.geometry.transforms import random_rotation, rotation_z

REGISTRATION_SETTINGS = ("view_to_view", "scan_to_model", "noisy", "clean")
FULL_SETTINGS = ("noisy", "clean")


@dataclass
class ViewPairs(RegistrationPairs):
    """RegistrationPairs plus where each cloud came from: ``source[b] = pose_source[b] . x`` for x
    in the unit shape frame (likewise target), and how many views each side holds (0: the stored
    full model)."""

    pose_source: np.ndarray | None = None  # (B, 4, 4)
    pose_target: np.ndarray | None = None  # (B, 4, 4)
    source_views: np.ndarray | None = None  # (B,) int
    target_views: np.ndarray | None = None  # (B,) int


@dataclass
class CompletionBatch:
    """(partial, full) pairs of one shape each, in one rotated object frame (unit shape)."""

    partial: np.ndarray  # (B, N_in, 3) float32
    full: np.ndarray  # (B, N_out, 3) float32
    rotation: np.ndarray  # (B, 3, 3): unit shape frame -> batch frame, applied to both
    views: np.ndarray  # (B,) views accumulated in the partial cloud
    model_ids: np.ndarray  # (B,)
    labels: np.ndarray  # (B,)

    def __len__(self) -> int:
        return len(self.partial)


class ViewLoader:
    """Samples batches of one split from a view pool (and the shapes' stored full clouds)."""

    def __init__(self, pool: ViewPool, shapes: ShapeSet | None = None, split: str | None = None,
                 seed: int = 0, num_points: int = 1024, max_translation: float = 0.5,
                 min_overlap: float = 0.5, scan_views: tuple[int, int] = (1, 3),
                 noise: bool = True, voxel: float | None = None):
        if not 1 <= scan_views[0] <= scan_views[1]:
            raise ValueError("scan_views must be (min, max) with 1 <= min <= max")
        self.pool, self.shapes, self.split = pool, shapes, split
        self.num_points, self.max_translation = int(num_points), float(max_translation)
        self.min_overlap, self.scan_views, self.noise = float(min_overlap), scan_views, noise
        stored = pool.config.get("settings") or {}
        self.voxel = float(stored.get("accumulate_voxel", ViewSettings.accumulate_voxel)
                           if voxel is None else voxel)
        self.sensors = _sensors(stored)
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)
        rows = np.arange(len(pool)) if split is None else np.flatnonzero(pool.split == split)
        rows = rows[np.diff(pool.view_offsets)[rows] > 0]
        self.full_row = np.full(len(pool), -1, dtype=np.int64)
        if shapes is not None:
            if split is not None:
                shapes = self.shapes = shapes.subset(split)
            index = {m: i for i, m in enumerate(shapes.model_ids)}
            self.full_row[rows] = [index.get(m, -1) for m in pool.model_ids[rows]]
            rows = rows[self.full_row[rows] >= 0]
        if len(rows) == 0:
            raise ValueError("no shape of the pool is in this split (and in `shapes`)")
        self.rows = rows

    @property
    def model_ids(self) -> np.ndarray:
        """The shapes this loader samples from."""
        return self.pool.model_ids[self.rows]

    # ----- clouds ---------------------------------------------------------------------------
    def view_cloud(self, view: int, rng: np.random.Generator) -> np.ndarray:
        """One view in the object frame (metres), with fresh sensor noise when enabled."""
        pool = self.pool
        pts = pool.points[pool.point_offsets[view]:pool.point_offsets[view + 1]]
        if self.noise:
            pts = apply_sensor_noise(pts, self.sensors[pool.sensor_kind[view]], rng)
        T = pool.T_sensor_object[view]
        return ((pts.astype(np.float64) - T[:3, 3]) @ T[:3, :3]).astype(np.float32)

    def scan_cloud(self, views: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` points of the views accumulated (one view: its raw returns), unit frame."""
        scale = self.pool.scale[self.pool.view_shape[views[0]]]
        if len(views) == 1:
            # Resample first: noise and the frame change then touch `count` points only.
            pool, v = self.pool, int(views[0])
            pts = resample(pool.points[pool.point_offsets[v]:pool.point_offsets[v + 1]],
                           count, rng)
            if self.noise:
                pts = apply_sensor_noise(pts, self.sensors[pool.sensor_kind[v]], rng)
            T = pool.T_sensor_object[v]
            return ((pts.astype(np.float64) - T[:3, 3]) @ T[:3, :3] / scale).astype(np.float32)
        merged = accumulate([self.view_cloud(int(v), rng) for v in views], self.voxel)
        return (resample(merged, count, rng) / scale).astype(np.float32)

    def full_cloud(self, row: int, count: int, rng: np.random.Generator) -> np.ndarray:
        if self.shapes is None:
            raise ValueError("this setting needs the shapes' full clouds: pass `shapes`")
        return resample(self.shapes.points[self.full_row[row]], count, rng)

    # ----- batches --------------------------------------------------------------------------
    def registration_pairs(self, count: int, setting: str = "view_to_view",
                           rng: np.random.Generator | None = None) -> ViewPairs:
        """`count` pairs of `setting` (REGISTRATION_SETTINGS); rng: the loader's own stream."""
        if setting not in REGISTRATION_SETTINGS:
            raise ValueError(f"setting must be one of {REGISTRATION_SETTINGS}, got '{setting}'")
        rng = self.rng if rng is None else rng
        pool, n = self.pool, self.num_points
        rows = self.rows[rng.integers(len(self.rows), size=count)]
        source = np.empty((count, n, 3), dtype=np.float32)
        target = np.empty_like(source)
        overlap = np.full(count, np.nan)
        n_src = np.zeros(count, dtype=np.int64)
        n_tgt = np.zeros(count, dtype=np.int64)
        for b, row in enumerate(rows):
            views = pool.views_of(row)
            if setting == "view_to_view":
                a = int(rng.integers(len(views)))
                matrix = pool.overlap_matrix(row)[a].copy()
                matrix[a] = -np.inf
                candidates = np.flatnonzero(matrix >= self.min_overlap)
                if len(views) == 1:
                    other = a
                elif len(candidates):
                    other = int(rng.choice(candidates))
                else:
                    other = int(np.argmax(matrix))
                overlap[b] = pool.overlap_matrix(row)[a, other]
                source[b] = self.scan_cloud(views[[a]], rng, n)
                target[b] = self.scan_cloud(views[[other]], rng, n)
                n_src[b] = n_tgt[b] = 1
            elif setting == "scan_to_model":
                k = int(rng.integers(self.scan_views[0], self.scan_views[1] + 1))
                chosen = rng.choice(views, size=min(k, len(views)), replace=False)
                source[b] = self.scan_cloud(chosen, rng, n)
                target[b] = self.full_cloud(row, n, rng)
                n_src[b] = len(chosen)
            else:
                source[b] = target[b] = self.full_cloud(row, n, rng)
        pose_s = _random_poses(rng, count, self.max_translation)
        pose_t = _random_poses(rng, count, self.max_translation)
        source = _apply(pose_s, source)
        target = _apply(pose_t, target)
        if self.noise and setting in ("scan_to_model", "noisy"):
            source = source + _jitter(rng, source.shape)
            target = target + _jitter(rng, target.shape)
        T_gt = pose_t @ np.linalg.inv(pose_s)
        config = {"loader": "view_pool", "setting": setting, "num_points": n,
                  "max_translation": self.max_translation, "split": self.split,
                  "noise": self.noise, "pool_key": pool.config.get("key")}
        return ViewPairs(source.astype(np.float32), target.astype(np.float32), T_gt,
                         pool.model_ids[rows], pool.labels[rows], overlap, setting, self.seed,
                         list(pool.class_names), config, pose_s, pose_t, n_src, n_tgt)

    def completion_pairs(self, count: int, input_points: int = 1024, target_points: int = 2048,
                         rng: np.random.Generator | None = None,
                         rotate: str = "auto") -> CompletionBatch:
        """(partial, full): 1-3 accumulated views vs the stored model; rotate 'auto' (about z
        when upright, Haar otherwise), 'z', 'so3' or 'none'."""
        if rotate not in ("auto", "z", "so3", "none"):
            raise ValueError("rotate must be auto, z, so3 or none")
        rng = self.rng if rng is None else rng
        pool = self.pool
        rows = self.rows[rng.integers(len(self.rows), size=count)]
        partial = np.empty((count, input_points, 3), dtype=np.float32)
        full = np.empty((count, target_points, 3), dtype=np.float32)
        views = np.zeros(count, dtype=np.int64)
        for b, row in enumerate(rows):
            pool_views = pool.views_of(row)
            k = int(rng.integers(self.scan_views[0], self.scan_views[1] + 1))
            chosen = rng.choice(pool_views, size=min(k, len(pool_views)), replace=False)
            partial[b] = self.scan_cloud(chosen, rng, input_points)
            full[b] = self.full_cloud(row, target_points, rng)
            views[b] = len(chosen)
        rotation = np.broadcast_to(np.eye(3), (count, 3, 3)).copy()
        if rotate != "none":
            about_z = (np.ones(count, bool) if rotate == "z" else np.zeros(count, bool)
                       if rotate == "so3" else pool.upright[rows])
            rotation[about_z] = rotation_z(rng.uniform(0, 2 * np.pi, int(about_z.sum())))
            rotation[~about_z] = random_rotation(rng, int((~about_z).sum()))
            partial = np.einsum("bij,bnj->bni", rotation, partial).astype(np.float32)
            full = np.einsum("bij,bnj->bni", rotation, full).astype(np.float32)
        return CompletionBatch(partial, full, rotation, views, pool.model_ids[rows],
                               pool.labels[rows])

    def batches(self, batch_size: int, setting: str = "view_to_view") -> Iterator[ViewPairs]:
        """Endless registration batches from the loader's stream."""
        while True:
            yield self.registration_pairs(batch_size, setting)


def _sensors(stored: dict) -> list:
    """The pool's sensor models (with their noise) rebuilt from its config (defaults if absent)."""
    from gmm_perception.data.sensors import DepthCamera, SpinningLidar

    defaults = ViewSettings()
    out = []
    for name, cls, default in (("depth", DepthCamera, defaults.depth),
                               ("lidar", SpinningLidar, defaults.lidar)):
        described = dict(stored.get(name) or {})
        described.pop("type", None)
        out.append(cls(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in described.items()}) if described else default)
    return out


def _random_poses(rng: np.random.Generator, count: int, max_translation: float) -> np.ndarray:
    poses = np.broadcast_to(np.eye(4), (count, 4, 4)).copy()
    poses[:, :3, :3] = random_rotation(rng, count)
    poses[:, :3, 3] = rng.uniform(-max_translation, max_translation, (count, 3))
    return poses


def _apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (np.einsum("bij,bnj->bni", T[:, :3, :3], points.astype(np.float64))
            + T[:, None, :3, 3])


def _jitter(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(JITTER_SIGMA * rng.standard_normal(shape), -JITTER_CLIP, JITTER_CLIP)
