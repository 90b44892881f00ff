"""Held-out sets: the clouds that the benchmarks score and the training tasks validate on, built
in one place and one way.

Split. `TEST_SPLIT` is what the benchmarks (bench/) score; `VALIDATION_SPLIT` is what the training
tasks (train/) validate on, and so what picks their best checkpoint. Both are "test" today: the
datasets have no validation split yet, so every shipped checkpoint was selected on the split that
its benchmark then reports. Once the datasets carry one (issue 14), `VALIDATION_SPLIT` is the one
line to change.

Per model, everything is drawn from generators seeded with [seed, key, ...], key being the model's
row in the MeshSet (in the ShapeSet when no meshes are given), so a model's clouds do not depend on
which other models are in the set (`categories` and `max_models` only drop models):
  * `stored`    the dataset's stored surface cloud;
  * `scans`     `views` simulated depth-camera scans of the mesh (the D435 model of the training
                pools, `partial_scans.scans`: rng [seed, key]), `scan_points` each;
  * `surfaces`  independent fresh area-weighted samples of the true mesh surface, one array per
                entry of `surface_points` (rng [seed, key, j]): ground truth that no input point
                is part of.
With `max_models`, the models kept are a sorted draw of default_rng(seed).choice(M, max_models,
replace=False). With `unit_sphere`, every cloud is mapped into the unit sphere of the *true* shape
(the mesh's bounding-box centre, farthest vertex at radius 1: the rule of
`mesh_ops.normalize_mesh`; the SH3D meshes are stored that way, so this is nearly the identity).
With `rotate`, each model is then turned about z by one seeded angle (rng [seed, key, 99]), all of
its clouds alike: objects stand upright at any heading. Inputs cut from these clouds take
`HeldOutSet.rng(row, stream)` with streams from 100 up (0-99 are this module's).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from gmm_perception.data import partial_scans
from gmm_perception.data.class_sizes import class_scale, size_factor
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.transforms import rotation_z

TEST_SPLIT = "test"  # what the benchmarks score
# What training on the SH3D set validates on and selects checkpoints by: that set has no
# validation split, so its checkpoints are scored on the data they were selected on. The shape
# pool (data/pool.py) has one: tasks trained on the pool validate on POOL_VALIDATION_SPLIT.
VALIDATION_SPLIT = "test"
POOL_VALIDATION_SPLIT = "val"
# The pool's rows of every benchmark: its test split per training source, and the cross-source
# test (sources no training ever sees: data/pool.CROSS_SOURCES) per source.
POOL_TEST_SOURCES = ("sh3d", "pybullet")
CROSS_SPLIT = "cross"
_ANGLE_STREAM = 99


@dataclass
class HeldOutSet:
    split: str
    seed: int
    model_ids: np.ndarray  # (M,)
    labels: np.ndarray  # (M,) indices into class_names
    class_names: list[str]
    keys: np.ndarray  # (M,) per-model seed key: row in the MeshSet (ShapeSet without meshes)
    stored: np.ndarray  # (M, P, 3) float32, the stored cloud
    scans: np.ndarray | None  # (M, views, scan_points, 3) float32; None without meshes or views
    surfaces: list[np.ndarray]  # each (M, n_j, 3) float32 fresh mesh samples; [] without meshes

    def __len__(self) -> int:
        return len(self.model_ids)

    def rng(self, row: int, stream: int) -> np.random.Generator:
        """A generator for model `row`, independent of the set's other models; streams 0-99 are
        this module's, users take 100 and above."""
        return np.random.default_rng([self.seed, int(self.keys[row]), stream])

    def cut(self, clouds: np.ndarray, count: int, stream: int) -> np.ndarray:
        """(M, count, 3): `count` distinct points of each model's cloud in `clouds` (M, n, 3),
        drawn with `rng(row, stream)`."""
        return np.stack([c[self.rng(row, stream).choice(len(c), count, replace=False)]
                         for row, c in enumerate(clouds)])

    def class_size_scales(self, spread: float, stream: int) -> np.ndarray:
        """(M,) metres per unit that put each (unit-shape) model at its class's real size,
        spread as training spreads it (data/class_sizes.py), drawn with `rng(row, stream)`."""
        return np.array([class_scale(self.class_names[self.labels[row]], self.stored[row])
                         * size_factor(self.rng(row, stream), spread)
                         for row in range(len(self))])

    def at_class_sizes(self, spread: float | None, stream: int) -> "HeldOutSet":
        """This set with every model at its class's real size in metres (`class_size_scales`):
        what a classifier trained at real sizes is scored or calibrated on; the set itself when
        `spread` is None (unit shapes)."""
        if spread is None:
            return self
        scale = self.class_size_scales(spread, stream).astype(np.float32)
        return replace(self, stored=self.stored * scale[:, None, None],
                       scans=None if self.scans is None
                       else self.scans * scale[:, None, None, None],
                       surfaces=[s * scale[:, None, None] for s in self.surfaces])


def validation_split(shapes: ShapeSet | MeshSet) -> str:
    """The split a training task validates on: the pool's `POOL_VALIDATION_SPLIT` when the set
    has one, else `VALIDATION_SPLIT` (the SH3D set, which has no validation split)."""
    return POOL_VALIDATION_SPLIT if np.any(shapes.split == POOL_VALIDATION_SPLIT) \
        else VALIDATION_SPLIT


def held_out_shapes(shapes: ShapeSet, split: str, categories: Sequence[str] = ()) -> ShapeSet:
    """The models of `split`, restricted to `categories` (class names; empty = every class)."""
    unknown = sorted(set(categories) - set(shapes.class_names))
    if unknown:
        raise ValueError(f"unknown categories {unknown} (known: {list(shapes.class_names)})")
    selected = shapes.subset(split)
    if categories:
        wanted = [list(shapes.class_names).index(c) for c in categories]
        selected = selected.select(np.isin(selected.labels, wanted))
    return selected


def held_out_set(shapes: ShapeSet, meshes: MeshSet | None = None, *, split: str, seed: int,
                 categories: Sequence[str] = (), max_models: int = 0, views: int = 0,
                 scan_points: int = 2048, surface_points: Sequence[int] = (),
                 rotate: bool = True, unit_sphere: bool = False, progress: bool = True
                 ) -> HeldOutSet:
    """The held-out set of the module docstring. Without `meshes` there are no scans, no fresh
    surface samples and no unit-sphere mapping (asking for them is an error)."""
    if meshes is None and (unit_sphere or surface_points):
        raise ValueError("fresh surface samples and the unit-sphere frame need the meshes")
    selected = held_out_shapes(shapes, split, categories)
    rows = np.flatnonzero(np.isin(shapes.model_ids, selected.model_ids))  # keys without meshes
    if 0 < max_models < len(selected):
        keep = np.sort(np.random.default_rng(seed).choice(len(selected), max_models,
                                                          replace=False))
        selected, rows = selected.select(keep), rows[keep]
    if len(selected) == 0:
        raise ValueError(f"no {split} models to hold out")
    keys = rows if meshes is None else np.array([meshes.index_of(m) for m in selected.model_ids])

    scans = None
    if meshes is not None and views > 0:
        scans = partial_scans.scans(meshes, selected, views, scan_points, seed, progress,
                                    f"partial scans of the {split} meshes")
    surfaces = [np.empty((len(selected), n, 3), np.float32) for n in surface_points]
    for row, k in enumerate(keys if meshes is not None and surface_points else ()):
        mesh = meshes.mesh(k)
        for j, (out, n) in enumerate(zip(surfaces, surface_points)):
            out[row] = sample_surface(mesh, n, np.random.default_rng([seed, k, j]))

    clouds = [selected.points, *([] if scans is None else [scans]), *surfaces]
    if unit_sphere:
        centres, scales = np.empty((len(keys), 3)), np.empty(len(keys))
        for row, k in enumerate(keys):
            vertices = np.asarray(meshes.vertices[k], dtype=np.float64)
            centres[row] = 0.5 * (vertices.min(0) + vertices.max(0))
            scales[row] = np.linalg.norm(vertices - centres[row], axis=1).max()
        clouds = [(c - _per_model(centres, c.ndim)) / _per_model(scales, c.ndim)
                  for c in clouds]
    if rotate:
        angles = np.array([np.random.default_rng([seed, k, _ANGLE_STREAM]).uniform(0, 2 * np.pi)
                           for k in keys])
        turns = rotation_z(angles).transpose(0, 2, 1)
        clouds = [c @ _per_model(turns, c.ndim) for c in clouds]
    stored, *rest = (np.asarray(c, dtype=np.float32) for c in clouds)
    if scans is not None:
        scans, *rest = rest
    return HeldOutSet(split, int(seed), selected.model_ids, selected.labels,
                      list(selected.class_names), keys, stored, scans, list(rest))


def _per_model(values: np.ndarray, ndim: int) -> np.ndarray:
    """Per-model values (M, ...) shaped to broadcast against an array of `ndim` dimensions whose
    first axis is the model: (M, 1, ..., 1, *values.shape[1:])."""
    extra = ndim - values.ndim
    return values.reshape(values.shape[:1] + (1,) * extra + values.shape[1:])


def benchmark_sources(data_dir, meshes: bool = False, pool: bool = True, sh3d: bool = True
                      ) -> dict[str, ShapeSet | MeshSet]:
    """The held-out shape sets every model benchmark reports a row for, by row name:
    'sh3d test' (the SH3D set's test split, as in earlier model cards), then, when the pool is
    built, 'pool test <source>' per training source and 'cross-source <source>' per source of
    the cross-source test. ShapeSets, or the MeshSets with `meshes`; a missing pool is skipped
    with a note on stderr (`gmm-perception data pool` builds it)."""
    import sys
    from pathlib import Path

    from gmm_perception.data import pool as shape_pool

    data_dir = Path(data_dir)
    container = MeshSet if meshes else ShapeSet
    sets: dict[str, ShapeSet | MeshSet] = {}
    if sh3d:
        name = "sh3d_meshes.npz" if meshes else "sh3d_points_2048.npz"
        sets["sh3d test"] = container.load(data_dir / "sh3d" / name).subset(TEST_SPLIT)
    if not pool:
        return sets
    try:
        everything = shape_pool.load_pool(data_dir, meshes=meshes)
    except FileNotFoundError as exc:
        print(f"no pool rows: {exc}", file=sys.stderr)
        return sets
    for source in POOL_TEST_SOURCES:  # the pool split keeps SH3D training models out of these
        sets[f"pool test {source}"] = shape_pool.select(everything, TEST_SPLIT, source)
    # Cross-source rows leave out the SH3D set's training models (the KatorLegaz library lends
    # it some): the shipped checkpoints trained on them, and the rows must stay comparable.
    sh3d_trained = {model for model, split in shape_pool.sh3d_set_splits(data_dir).items()
                    if split == "train"}
    for source in shape_pool.CROSS_SOURCES:
        cross = shape_pool.select(everything, CROSS_SPLIT, source)
        unseen = np.array([m.split(":", 1)[-1] not in sh3d_trained for m in cross.model_ids],
                          dtype=bool)
        sets[f"cross-source {source}"] = cross.select(unseen)
    return sets
