"""Pools of simulated partial scans of dataset meshes, shared by the training tasks (and by the
held-out sets of `data.held_out`).

View v of shape k is drawn with rng [seed, mesh index] by the default depth camera
(registration_pairs.PartialViews), so every task that asks for the same shapes, views, points and
seed gets the same scans, and the same cache file (under data/: scans of third-party meshes are
data, never committed) serves them all.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from gmm_perception.data.registration_pairs import PartialViews, _partial_view
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.transforms import rotation_z

_CACHE_VERSION = 1


def scans(meshes: MeshSet, shapes: ShapeSet, views: int, num_points: int, seed: int,
          progress: bool = True, description: str = "partial scans") -> np.ndarray:
    """(len(shapes), views, num_points, 3) float32 partial scans of the meshes of `shapes`, in
    the object frame."""
    camera = PartialViews()
    out = np.empty((len(shapes), views, num_points, 3), dtype=np.float32)
    for row, model_id in enumerate(tqdm(shapes.model_ids, desc=description,
                                        disable=not progress)):
        k = meshes.index_of(model_id)
        mesh = meshes.mesh(k)
        rng = np.random.default_rng([seed, k])
        for v in range(views):
            out[row, v] = _partial_view(mesh, camera, num_points, rng)
    return out


def scan_pool(meshes: MeshSet, shapes: ShapeSet, views: int, num_points: int, seed: int,
              cache: str | Path | None = None, progress: bool = True) -> np.ndarray:
    """`scans` of the training shapes, loaded from `cache` when it holds this exact pool, else
    made and saved there (atomically)."""
    key = hashlib.sha256(json.dumps({
        "version": _CACHE_VERSION, "models": shapes.model_ids.tolist(), "views": views,
        "points": num_points, "seed": seed, "camera": repr(PartialViews())}).encode()
    ).hexdigest()[:16]
    cache = Path(cache) if cache else None
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return stored["pool"]
    pool = scans(meshes, shapes, views, num_points, seed, progress,
                 "partial scans of the training meshes")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, pool=pool, key=key)
        tmp.replace(cache)
    return pool


def rotate_about_z(clouds: list[np.ndarray], angles: np.ndarray) -> list[np.ndarray]:
    """The same turn about z per object applied to every (S, n, 3) array of `clouds`; an
    (S, n, 6) array is points and their normals, both turned."""
    rotations = rotation_z(angles).transpose(0, 2, 1)
    return [np.concatenate([c[..., j:j + 3] @ rotations for j in range(0, c.shape[-1], 3)],
                           axis=-1).astype(np.float32) for c in clouds]


def sample_input_target_pairs(rng: np.random.Generator, points: np.ndarray,
                              pool: np.ndarray | None, pool_rows: np.ndarray, count: int,
                              input_points: int, target_points: int, partial_fraction: float,
                              rotate_z: bool, disjoint: bool = False,
                              surface: Callable[[int, int, np.random.Generator], np.ndarray]
                              | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` (input, target) training pairs of the shapes `points` (S, P, 3): the target is
    `target_points` of the stored cloud (unless `surface`, below); the input `input_points` of
    it, or, with probability `partial_fraction`, of a random pooled scan of that shape (pool row
    `pool_rows[k]`); both turned by the same random angle about z when `rotate_z`.

    With `disjoint`, a sparse input and its target share no stored point (needs input_points +
    target_points <= P). Drawn independently, input_points / P of the target are input points
    themselves, and an upsampler's denoiser learns to put its output onto the input points: at
    the fine levels the optimal score for those targets is a pull to the nearest input point.
    With `surface` (shape index, count, rng) -> fresh points of that shape's surface (e.g.
    mesh_ops.SurfaceSampler; with its normals, (count, 6), the targets carry them too), the
    targets are new samples every time: the stored cloud is one fixed sample whose spacing
    (mean nearest distance 0.02-0.03 at 2048 points of a unit shape) exceeds the finest noise
    levels, where a denoiser trained on it learns the sample's points instead of the surface
    through them."""
    stored = points.shape[1]
    if disjoint and input_points + target_points > stored:
        raise ValueError(f"disjoint inputs and targets need input_points + target_points <= "
                         f"{stored} stored points, got {input_points} + {target_points}")
    split_stored = disjoint and surface is None  # one draw gives the target and the input
    index = rng.integers(len(points), size=count)
    inputs = np.empty((count, input_points, 3), dtype=np.float32)
    targets = []
    for row, k in enumerate(index):
        if surface is not None:
            targets.append(surface(int(k), target_points, rng))
        elif split_stored:
            order = rng.permutation(stored)
            targets.append(points[k, order[:target_points]])
            inputs[row] = points[k, order[target_points:target_points + input_points]]
        else:
            targets.append(points[k, rng.choice(stored, target_points, replace=False)])
        if pool is not None and rng.random() < partial_fraction:
            scan = pool[pool_rows[k], rng.integers(pool.shape[1])]
            inputs[row] = scan[rng.choice(len(scan), input_points, replace=False)]
        elif not split_stored:
            inputs[row] = points[k, rng.choice(stored, input_points, replace=False)]
    targets = np.stack(targets).astype(np.float32)
    if rotate_z:
        inputs, targets = rotate_about_z([inputs, targets], rng.uniform(0, 2 * np.pi, count))
    return inputs, targets
