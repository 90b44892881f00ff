"""What a robot's classifier sees, for training it: sensor views of the shape pool's categorised
shapes, single and accumulated, drawn class-balanced.

A `ViewPool` (data/views.py: a RealSense D435 depth camera and an Ouster OS1-64 LiDAR, objects
0.3-2 m across at ranges that give 200-20,000 returns) of the pool's categorised shapes of the
training and validation splits is built once and cached. A training sample is, with the
configured shares, one view (fresh sensor noise), 2-6 views accumulated as the scene pipeline
accumulates an object's frames (voxel grid), or the stored full surface cloud; every cloud in
the object's upright frame, resampled to `num_points` by `geometry.points.resample` (repeats
when a far view holds fewer returns), which is what the classification stage does at run time.
The class is drawn uniformly, then a shape of it: the pool's classes hold 11-33 training shapes.
With scene objects (evaluation/scene_objects.py: the scene pipeline's own segmented, accumulated
object clouds from simulated robot drives through scenes of the pool's shapes), a class that
has them takes `ViewMix.scene` of its samples from them instead.

Validation (what picks the checkpoint) is the pool's `val` split only: per shape its full cloud,
`val_views` single views and `val_accumulated` accumulations of 3 views, fixed seeds and one
seeded heading per shape, and with scene objects a seeded subset of the val split's scenes'
clouds; never the test or cross splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmm_perception.data.class_sizes import class_scale, size_factor
from gmm_perception.data.scene_objects import SceneObjects
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.data.view_loader import ViewLoader
from gmm_perception.data.views import cached_view_pool
from gmm_perception.geometry.points import resample
from gmm_perception.metrics.classification import labels_by_name
from gmm_perception.geometry.transforms import rotation_z

_VAL_SEED = 2_026_120_7
SCENE_VAL_CLOUDS = 400  # scene-object clouds validated on (a seeded subset of the val file)


@dataclass
class ViewMix:
    """Shares of the training samples (the rest are full surface clouds)."""

    single: float = 0.5
    accumulated: float = 0.3
    accumulated_views: tuple[int, int] = (2, 6)
    # Of the samples of a class the scene-object set has, this share are its clouds instead
    # (the mix above applies to the rest).
    scene: float = 0.0

    def __post_init__(self):
        if not (0 <= self.single and 0 <= self.accumulated and
                self.single + self.accumulated <= 1):
            raise ValueError("view shares must be >= 0 and sum to at most 1")
        if not 0 <= self.scene <= 1:
            raise ValueError("the scene share must lie in [0, 1]")
        low, high = self.accumulated_views
        if not 2 <= low <= high:
            raise ValueError("accumulated_views must be (min, max) with 2 <= min <= max")


def categorised(shapes: ShapeSet, class_names: list[str]) -> tuple[ShapeSet, np.ndarray]:
    """The shapes of `class_names` with labels re-indexed into that list."""
    index = {name: k for k, name in enumerate(class_names)}
    unknown = sorted(set(class_names) - set(shapes.class_names))
    if unknown:
        raise ValueError(f"classes {unknown} are not in the shape file")
    mapping = np.array([index.get(name, -1) for name in shapes.class_names])
    labels = mapping[shapes.labels]
    keep = labels >= 0
    kept = shapes.select(keep)
    kept.labels = labels[keep]
    kept.class_names = list(class_names)
    return kept, labels[keep]


class ViewSource:
    """Training and validation clouds of one split pair from a cached view pool."""

    def __init__(self, shapes: ShapeSet, meshes: MeshSet, class_names: list[str],
                 cache: str, views_per_shape: int, seed: int, num_points: int, mix: ViewMix,
                 train_split: str = "train", val_split: str = "val", workers: int = 2,
                 progress: bool = True, size_spread: float | None = None,
                 scene_objects: tuple[str, str] | None = None):
        """`scene_objects`: (train, val) files of the scene pipeline's object clouds
        (data/scene_objects.py), mixed in at `mix.scene` and validated on; they are at their
        classes' real sizes, so only with `size_spread`."""
        if scene_objects is not None and not all(scene_objects):
            raise ValueError("scene objects need a train and a val file")
        if scene_objects is not None and size_spread is None:
            raise ValueError("scene objects are clouds in metres: they need metric sizes")
        self.shapes, _ = categorised(shapes, class_names)
        self.class_names, self.num_points, self.mix = list(class_names), num_points, mix
        ids = self.shapes.model_ids[np.isin(self.shapes.split, (train_split, val_split))]
        self.pool = cached_view_pool(cache, meshes, [str(i) for i in ids], views_per_shape,
                                     seed, workers=workers, progress=progress)
        self.train = ViewLoader(self.pool, self.shapes, train_split, seed=seed,
                                num_points=num_points)
        self.val = ViewLoader(self.pool, self.shapes, val_split, seed=_VAL_SEED,
                              num_points=num_points)
        labels = self.train.shapes.labels[self.train.full_row[self.train.rows]]
        self._rows_of_class = {c: self.train.rows[labels == c] for c in np.unique(labels)}
        # Metres per unit of each shape (pool row: train and val rows are disjoint) at its
        # class's size; None: clouds stay unit shapes.
        self.size_spread = size_spread
        self._class_scale = None if size_spread is None else {
            int(row): class_scale(self.class_names[self.label(loader, row)],
                                  loader.shapes.points[loader.full_row[row]])
            for loader in (self.train, self.val) for row in loader.rows}
        self.scene_train = self.scene_val = None
        self._scene_of_class: dict[int, np.ndarray] = {}
        if scene_objects is not None:
            self.scene_train, self.scene_val = (SceneObjects.load(p) for p in scene_objects)
            labels = labels_by_name(self.scene_train.class_name, self.class_names)
            self._scene_of_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)
                                    if c >= 0}

    def _scene_cloud(self, objects: SceneObjects, k: int, rng: np.random.Generator
                     ) -> np.ndarray:
        """Cloud k, its box centred on the origin (the views' object frame), `num_points`."""
        points = objects.cloud(k)
        centred = points - (points.min(axis=0) + points.max(axis=0)) / 2.0
        return resample(centred, self.num_points, rng).astype(np.float32)

    def _size(self, row: int, rng: np.random.Generator) -> np.float32:
        """Metres per unit of one draw of pool row `row`: its class's size spread by
        `size_spread`; 1 (and no draw) without sizes."""
        if self._class_scale is None:
            return np.float32(1.0)
        return np.float32(self._class_scale[int(row)] * size_factor(rng, self.size_spread))

    def _placement(self, row: int, rng: np.random.Generator) -> np.ndarray:
        """(3, 3) to right-multiply a val shape's clouds by: one seeded turn about z, times its
        size (validation and calibration place a shape alike)."""
        return rotation_z(np.array([rng.uniform(0, 2 * np.pi)]))[0].T * self._size(row, rng)

    def label(self, loader: ViewLoader, row: int) -> int:
        return int(loader.shapes.labels[loader.full_row[row]])

    def _cloud(self, loader: ViewLoader, row: int, kind: str, rng: np.random.Generator,
               count: int = 0) -> np.ndarray:
        views = loader.pool.views_of(row)
        if kind == "full":
            return loader.full_cloud(row, self.num_points, rng)
        if kind == "single":
            return loader.scan_cloud(views[rng.integers(len(views))][None], rng, self.num_points)
        picked = rng.choice(views, min(count, len(views)), replace=False)
        return loader.scan_cloud(picked, rng, self.num_points)

    def sample(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """`count` training clouds (count, num_points, 3), upright object frame, and labels."""
        classes = np.array(sorted(self._rows_of_class))
        clouds = np.empty((count, self.num_points, 3), dtype=np.float32)
        labels = np.empty(count, dtype=np.int64)
        low, high = self.mix.accumulated_views
        for i in range(count):
            c = classes[rng.integers(len(classes))]
            if c in self._scene_of_class and rng.random() < self.mix.scene:
                # At its class's real size already: spread as the views' sizes are.
                k = int(rng.choice(self._scene_of_class[c]))
                clouds[i] = self._scene_cloud(self.scene_train, k, rng) * size_factor(
                    rng, self.size_spread)
                labels[i] = c
                continue
            row = int(rng.choice(self._rows_of_class[c]))
            draw = rng.random()
            kind = ("single" if draw < self.mix.single else
                    "accumulated" if draw < self.mix.single + self.mix.accumulated else "full")
            clouds[i] = self._cloud(self.train, row, kind, rng,
                                    int(rng.integers(low, high + 1))) * self._size(row, rng)
            labels[i] = c
        return clouds, labels

    def validation(self, views: int, accumulated: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Fixed validation clouds per kind: {"full", "partial" (single views), "accumulated"}:
        (clouds (n, num_points, 3), labels (n,)), each shape turned by one seeded heading."""
        out: dict[str, list] = {"full": [], "partial": [], "accumulated": []}
        for row in self.val.rows:
            rng = np.random.default_rng([_VAL_SEED, int(row)])
            turn = self._placement(row, rng)
            label = self.label(self.val, row)
            out["full"].append((self._cloud(self.val, row, "full", rng) @ turn, label))
            shape_views = self.val.pool.views_of(row)
            for v in shape_views[:views]:
                cloud = self.val.scan_cloud(np.array([v]), rng, self.num_points)
                out["partial"].append((cloud @ turn, label))
            for _ in range(accumulated):
                cloud = self._cloud(self.val, row, "accumulated", rng, 3)
                out["accumulated"].append((cloud @ turn, label))
        if self.scene_val is not None:
            labels = labels_by_name(self.scene_val.class_name, self.class_names)
            known = np.flatnonzero(labels >= 0)
            rng = np.random.default_rng([_VAL_SEED, 1])
            picked = np.sort(rng.choice(known, min(SCENE_VAL_CLOUDS, len(known)), replace=False))
            out["scene"] = [(self._scene_cloud(self.scene_val, int(k), rng), int(labels[k]))
                            for k in picked]
        return {kind: (np.stack([c for c, _ in items]).astype(np.float32),
                       np.array([label for _, label in items], dtype=np.int64))
                for kind, items in out.items() if items}

    def tracks(self, sequences: int, steps: int, window: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a robot's classifier sees of the val shapes, for calibration: per shape (one
        seeded heading and size, as one object in one scene) its full cloud and `sequences`
        tracks of `steps` clouds, each step the accumulation of the track's last `window` views
        (fewer at its start), as the scene pipeline accumulates recent frames; a shape's views
        (sensors, ranges, point counts of the pool) are dealt to its tracks in a seeded order,
        reused only when it has fewer than sequences x steps. Returns full clouds (M, N, 3),
        tracks (M * sequences, steps, N, 3) and the shapes' labels (M,)."""
        full, tracks, labels = [], [], []
        for row in self.val.rows:
            rng = np.random.default_rng([seed, int(row)])
            turn = self._placement(row, rng)
            labels.append(self.label(self.val, row))
            full.append(self._cloud(self.val, row, "full", rng) @ turn)
            views = self.val.pool.views_of(row)
            order = np.concatenate([rng.permutation(views) for _ in range(
                -(-sequences * steps // len(views)))])[:sequences * steps]
            for track in order.reshape(sequences, steps):
                tracks.append([self.val.scan_cloud(track[max(0, t - window + 1):t + 1], rng,
                                                   self.num_points) @ turn
                               for t in range(steps)])
        return (np.stack(full).astype(np.float32), np.asarray(tracks, dtype=np.float32),
                np.array(labels, dtype=np.int64))

