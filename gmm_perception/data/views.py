"""Sensor-realistic single views of shapes at real sizes, and a cached pool of them per shape.

Every shape of a MeshSet (normalised: centred, unit sphere) is given a physical size (a diameter
drawn log-uniformly in `ViewSettings.diameter_range`, metres) and scanned from random viewpoints
by the simulators of `data.sensors` (a RealSense D435 depth camera and an Ouster OS1-64 spinning
LiDAR by default) at ranges chosen so that each view holds `points_range` returns of the object:
the range is first predicted from the shape's mean projected area (Cauchy: surface area / 4) and
the sensor's angular resolution, then corrected from the counted returns (they fall as 1/range^2),
within the ranges where the object's bounding sphere stays inside the field of view and the
sensor's range gate. A viewpoint that cannot give an in-range count (a thin pole seen by a LiDAR)
is redrawn; a LiDAR view that fails every try falls back to the depth camera.

Views are stored noise-free, in the sensor frame, in metres, with their exact T_sensor_object
(maps object-frame metres, i.e. the unit shape times `scale`, into the sensor frame): the
sensors' noise moves a return along its own ray, so `view_loader` adds fresh noise per sample by
scaling sensor-frame points (`apply_sensor_noise`), and the clean points stay exact ground truth.

Seeding: the views of a shape come from rng [seed, crc32(model_id)] alone, so the same seed gives
the same views and adding or removing shapes never changes another shape's views (the cache
reuses them; see `cached_view_pool`). Variable point counts are stored flat with offsets.
"""
from __future__ import annotations

import hashlib
import json
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gmm_perception.data.shape_set import MeshSet, _save_npz
from gmm_perception.geometry.points import voxel_downsample

SENSOR_KINDS = ("depth", "lidar")
_CACHE_VERSION = 1
_OVERLAP_POINTS = 1024


def _d435():
    from gmm_perception.data.sensors import DepthCamera

    return DepthCamera.realsense_d435()


def _os1_64():
    from gmm_perception.data.sensors import SpinningLidar

    return SpinningLidar.ouster_os1_64()


@dataclass(frozen=True)
class ViewSettings:
    """How the views of a shape are made. Lengths in metres unless said otherwise.

    ``depth`` / ``lidar``: the sensors; their noise, dropout and quantisation are *not* applied
    when scanning (views are stored clean) but describe the noise the loader adds.
    ``lidar_fraction``: probability that a view is a LiDAR view. ``elevation_range``: degrees of
    the viewpoint above the object's centre (area-uniform). ``overlap_radius``: in unit-shape
    units, as `registration_pairs.PartialViews` (0.075 at 1024 points per view).
    ``accumulate_voxel``: the voxel of multi-view accumulations, as the scene pipeline's
    segmentation (`SegmentConfig.voxel` = cluster_eps / 2 = 0.025 m by default).
    """

    depth: Any = field(default_factory=_d435)
    lidar: Any = field(default_factory=_os1_64)
    lidar_fraction: float = 0.5
    diameter_range: tuple[float, float] = (0.3, 2.0)
    points_range: tuple[int, int] = (200, 20_000)
    elevation_range: tuple[float, float] = (-20.0, 60.0)
    max_tries: int = 12
    overlap_radius: float = 0.075
    accumulate_voxel: float = 0.025

    def __post_init__(self):
        lo, hi = self.points_range
        if not 1 <= lo < hi:
            raise ValueError("points_range must be (min, max) with 1 <= min < max")
        if not 0 < self.diameter_range[0] <= self.diameter_range[1]:
            raise ValueError("diameter_range must be (min, max) with 0 < min <= max")
        if not 0.0 <= self.lidar_fraction <= 1.0:
            raise ValueError("lidar_fraction must be in [0, 1]")
        low, high = self.elevation_range
        if not -90.0 < low <= high < 90.0:
            raise ValueError("elevation_range must lie strictly inside (-90, 90) degrees")

    def sensor(self, kind: int):
        return self.depth if SENSOR_KINDS[kind] == "depth" else self.lidar

    def describe(self) -> dict[str, Any]:
        """JSON-able, complete: part of the cache key."""
        out = asdict(self)
        out["depth"] = {"type": type(self.depth).__name__, **asdict(self.depth)}
        out["lidar"] = {"type": type(self.lidar).__name__, **asdict(self.lidar)}
        return json.loads(json.dumps(out))


class ViewError(RuntimeError):
    """No view of a shape with an in-range point count could be made."""


@dataclass
class ViewPool:
    """Views of S shapes (V views in all), points flat with offsets.

    Per view v: points ``points[point_offsets[v]:point_offsets[v+1]]`` (sensor frame, metres,
    float32, noise-free), ``T_sensor_object[v]``, ``sensor_kind[v]`` (index into SENSOR_KINDS),
    ``distance[v]`` (sensor to object centre, metres), ``view_shape[v]`` (its shape's row).
    Per shape row k: ``model_ids``, ``labels`` (into ``class_names``), ``split``, ``scale`` (metres
    per unit-shape unit: the radius of the real object), ``upright`` (z up known), ``mesh_hash``,
    views ``view_offsets[k]:view_offsets[k+1]`` and their pairwise overlap matrix
    ``overlap[overlap_offsets[k]:overlap_offsets[k+1]]`` (row-major, n_k x n_k, unit diagonal).
    """

    points: np.ndarray
    point_offsets: np.ndarray
    T_sensor_object: np.ndarray
    sensor_kind: np.ndarray
    distance: np.ndarray
    view_shape: np.ndarray
    model_ids: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    split: np.ndarray
    scale: np.ndarray
    upright: np.ndarray
    mesh_hash: np.ndarray
    view_offsets: np.ndarray
    overlap: np.ndarray
    overlap_offsets: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 3)
        self.point_offsets = np.asarray(self.point_offsets, dtype=np.int64)
        self.T_sensor_object = np.asarray(self.T_sensor_object, dtype=np.float64).reshape(-1, 4, 4)
        self.sensor_kind = np.asarray(self.sensor_kind, dtype=np.int8)
        self.distance = np.asarray(self.distance, dtype=np.float64)
        self.view_shape = np.asarray(self.view_shape, dtype=np.int64)
        self.model_ids = np.asarray(self.model_ids, dtype=str)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=str)
        self.scale = np.asarray(self.scale, dtype=np.float64)
        self.upright = np.asarray(self.upright, dtype=bool)
        self.mesh_hash = np.asarray(self.mesh_hash, dtype=str)
        self.view_offsets = np.asarray(self.view_offsets, dtype=np.int64)
        self.overlap = np.asarray(self.overlap, dtype=np.float32)
        self.overlap_offsets = np.asarray(self.overlap_offsets, dtype=np.int64)
        v, s = len(self.T_sensor_object), len(self.model_ids)
        if not (len(self.point_offsets) == v + 1 and len(self.sensor_kind) == len(self.distance)
                == len(self.view_shape) == v):
            raise ValueError("one T_sensor_object, kind, distance and shape row per view")
        if not (len(self.labels) == len(self.split) == len(self.scale) == len(self.upright)
                == len(self.mesh_hash) == s and len(self.view_offsets) == len(
                    self.overlap_offsets) == s + 1):
            raise ValueError("one label, split, scale, upright flag and hash per shape")
        if self.point_offsets[-1] != len(self.points) or self.view_offsets[-1] != v:
            raise ValueError("offsets do not match the stored arrays")

    def __len__(self) -> int:
        """Number of shapes."""
        return len(self.model_ids)

    @property
    def num_views(self) -> int:
        return len(self.T_sensor_object)

    def views_of(self, row: int) -> np.ndarray:
        return np.arange(self.view_offsets[row], self.view_offsets[row + 1])

    def point_count(self, view: int | np.ndarray) -> np.ndarray | int:
        return self.point_offsets[np.asarray(view) + 1] - self.point_offsets[np.asarray(view)]

    def overlap_matrix(self, row: int) -> np.ndarray:
        n = self.view_offsets[row + 1] - self.view_offsets[row]
        return self.overlap[self.overlap_offsets[row]:self.overlap_offsets[row + 1]].reshape(n, n)

    def view_points(self, view: int, frame: str = "sensor") -> np.ndarray:
        """The clean points of `view`: 'sensor' (metres), 'object' (metres) or 'unit' (the
        normalised shape's frame, as the MeshSet/ShapeSet store it)."""
        pts = self.points[self.point_offsets[view]:self.point_offsets[view + 1]]
        if frame == "sensor":
            return pts
        return to_object(pts, self.T_sensor_object[view],
                         self.scale[self.view_shape[view]] if frame == "unit" else 1.0)

    def row_of(self, model_id: str) -> int:
        matches = np.flatnonzero(self.model_ids == model_id)
        if len(matches) != 1:
            raise KeyError(f"model '{model_id}' is not in this view pool")
        return int(matches[0])

    def select(self, rows: Sequence[int] | np.ndarray) -> "ViewPool":
        """The pool of the given shape rows (in that order), views and overlaps carried along."""
        rows = np.asarray(rows, dtype=np.int64)
        views = (np.concatenate([self.views_of(k) for k in rows]) if len(rows)
                 else np.zeros(0, np.int64))
        counts = self.point_count(views)
        points = (np.concatenate([self.points[self.point_offsets[v]:self.point_offsets[v + 1]]
                                  for v in views]) if len(views) else np.zeros((0, 3), np.float32))
        per_shape = np.diff(self.view_offsets)[rows]
        overlap = (np.concatenate([self.overlap_matrix(k).ravel() for k in rows]) if len(rows)
                   else np.zeros(0, np.float32))
        return ViewPool(
            points, np.concatenate([[0], np.cumsum(counts)]), self.T_sensor_object[views],
            self.sensor_kind[views], self.distance[views], np.repeat(np.arange(len(rows)),
                                                                     per_shape),
            self.model_ids[rows], self.labels[rows], list(self.class_names), self.split[rows],
            self.scale[rows], self.upright[rows], self.mesh_hash[rows],
            np.concatenate([[0], np.cumsum(per_shape)]), overlap,
            np.concatenate([[0], np.cumsum(per_shape ** 2)]), dict(self.config))

    def subset(self, split: str) -> "ViewPool":
        return self.select(np.flatnonzero(self.split == split))

    def save(self, path: str | Path) -> Path:
        """One compressed .npz, written atomically."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        return _save_npz(path, **arrays, class_names=np.asarray(self.class_names, dtype=str),
                         config=json.dumps(self.config), key=self.config.get("key", ""))

    @classmethod
    def load(cls, path: str | Path) -> "ViewPool":
        with np.load(path, allow_pickle=False) as data:
            return cls(**{name: data[name] for name in _ARRAYS},
                       class_names=[str(c) for c in data["class_names"]],
                       config=json.loads(str(data["config"])))


_ARRAYS = ("points", "point_offsets", "T_sensor_object", "sensor_kind", "distance", "view_shape",
           "model_ids", "labels", "split", "scale", "upright", "mesh_hash", "view_offsets",
           "overlap", "overlap_offsets")


def to_object(points_sensor: np.ndarray, T_sensor_object: np.ndarray, scale: float = 1.0
              ) -> np.ndarray:
    """Sensor-frame points in the object frame (metres), divided by `scale` (unit shape)."""
    R, t = T_sensor_object[:3, :3], T_sensor_object[:3, 3]
    return ((points_sensor.astype(np.float64) - t) @ R / scale).astype(np.float32)


def apply_sensor_noise(points_sensor: np.ndarray, sensor, rng: np.random.Generator
                       ) -> np.ndarray:
    """The sensor's range noise on clean sensor-frame returns: each point moves along its own
    ray (depth camera: z noise a + b z^2 and depth quantisation; LiDAR: radial noise)."""
    from gmm_perception.data.sensors import DepthCamera

    pts = points_sensor.astype(np.float64)
    if isinstance(sensor, DepthCamera):
        z = pts[:, 2]
        measured = z + rng.standard_normal(len(z)) * sensor.depth_sigma(z)
        if sensor.depth_step > 0:
            measured = np.round(measured / sensor.depth_step) * sensor.depth_step
        factor = measured / z
    else:
        r = np.linalg.norm(pts, axis=1)
        factor = (r + rng.standard_normal(len(r)) * sensor.range_noise_sigma) / r
    return (pts * factor[:, None]).astype(np.float32)


def accumulate(clouds: Sequence[np.ndarray], voxel: float) -> np.ndarray:
    """Views already in one (metric object) frame merged as the scene pipeline accumulates
    frames (`SceneSegmenter._accumulate`): each voxelised, then the union voxelised again."""
    if voxel <= 0:
        return np.concatenate(clouds).astype(np.float32)
    grids = [voxel_downsample(c, voxel, fixed_grid=True) for c in clouds if len(c)]
    union = np.concatenate(grids)
    return voxel_downsample(union, voxel, fixed_grid=True) if len(grids) > 1 else union


def mesh_hash(vertices: np.ndarray, faces: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(np.ascontiguousarray(vertices, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    return h.hexdigest()


def shape_rng(seed: int, model_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(model_id.encode())])


def _ideal(sensor):
    """The sensor without noise, dropout or quantisation (the returns stay on the surface)."""
    from gmm_perception.data.sensors import DepthCamera

    if isinstance(sensor, DepthCamera):
        return replace(sensor, noise_sigma=(0.0, 0.0), dropout=0.0, depth_step=0.0)
    return replace(sensor, range_noise_sigma=0.0, dropout=0.0)


def _fov_and_pixel(sensor) -> tuple[float, float]:
    """(half-angle of the cone that surely lies in the field of view around the aim, solid angle
    of one ray in steradians)."""
    from gmm_perception.data.sensors import DepthCamera

    if isinstance(sensor, DepthCamera):
        half = min(np.arctan(min(sensor.cx + 0.5, sensor.width - 0.5 - sensor.cx) / sensor.fx),
                   np.arctan(min(sensor.cy + 0.5, sensor.height - 0.5 - sensor.cy) / sensor.fy))
        return float(half), 1.0 / (sensor.fx * sensor.fy)
    low, high = np.radians(sensor.vertical_fov)
    step_v = (high - low) / max(sensor.channels - 1, 1)
    half = max(min(-low, high), 0.5 * step_v)
    return float(half), float(np.radians(360.0 / sensor.columns) * max(step_v, 1e-3))


def _scan_view(scene, sensor, ideal, area: float, radius: float, settings: ViewSettings,
               rng: np.random.Generator):
    """(points_sensor, T_sensor_object, distance) of one view with an in-range count, or None."""
    from gmm_perception.data.sensors import scan
    from gmm_perception.geometry.transforms import invert_transform

    lo, hi = settings.points_range
    half_fov, pixel = _fov_and_pixel(sensor)
    d_min = max(radius / np.sin(half_fov) * 1.02, sensor.min_range + radius * 1.01)
    d_max = sensor.max_range - radius * 1.01
    if d_max <= d_min:
        return None
    e_low, e_high = np.radians(settings.elevation_range)
    for _ in range(settings.max_tries):
        azimuth = rng.uniform(0.0, 2.0 * np.pi)
        elevation = np.arcsin(rng.uniform(np.sin(e_low), np.sin(e_high)))
        direction = np.array([np.cos(elevation) * np.cos(azimuth),
                              np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        # Aim at a log-uniform count well inside the range; corrections land near it.
        wanted = np.exp(rng.uniform(np.log(lo * 1.5), np.log(hi / 1.5)))
        distance = float(np.clip(np.sqrt(area / 4.0 / (wanted * pixel)), d_min, d_max))
        for _ in range(4):
            T_object_sensor = sensor.look_at(distance * direction, np.zeros(3))
            result = scan(scene, ideal, T_object_sensor)
            n = len(result)
            if lo <= n <= hi:
                return result.points_sensor, invert_transform(T_object_sensor), distance
            if n == 0:
                break
            new = float(np.clip(distance * np.sqrt(n / wanted), d_min, d_max))
            if abs(new - distance) < 1e-9:
                break  # clamped: this viewpoint cannot reach the range
            distance = new
    return None


def shape_views(vertices: np.ndarray, faces: np.ndarray, model_id: str, count: int, seed: int,
                settings: ViewSettings) -> dict[str, np.ndarray]:
    """`count` views of one unit shape at its drawn size; rng [seed, crc32(model_id)] only."""
    import trimesh

    from gmm_perception.data.sensors import raycasting_scene

    rng = shape_rng(seed, model_id)
    low, high = np.log(settings.diameter_range)
    radius = float(np.exp(rng.uniform(low, high))) / 2.0
    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64) * radius, faces, process=False)
    scene = raycasting_scene(mesh)
    area = float(mesh.area)
    ideal = [_ideal(settings.sensor(k)) for k in range(len(SENSOR_KINDS))]
    lidar = SENSOR_KINDS.index("lidar")
    depth = SENSOR_KINDS.index("depth")
    points, poses, kinds, distances = [], [], [], []
    for _ in range(count):
        kind = lidar if rng.random() < settings.lidar_fraction else depth
        view = _scan_view(scene, settings.sensor(kind), ideal[kind], area, radius, settings, rng)
        if view is None and kind == lidar:
            kind = depth
            view = _scan_view(scene, settings.sensor(kind), ideal[kind], area, radius, settings,
                              rng)
        if view is None:
            raise ViewError(f"no view of '{model_id}' (diameter {2 * radius:.2f} m) held "
                            f"{settings.points_range} points in {settings.max_tries} tries")
        points.append(view[0])
        poses.append(view[1])
        kinds.append(kind)
        distances.append(view[2])
    overlap = _overlap_matrix([to_object(p, T, radius) for p, T in zip(points, poses)],
                              settings.overlap_radius, rng)
    return {"points": np.concatenate(points).astype(np.float32),
            "counts": np.array([len(p) for p in points], np.int64),
            "T_sensor_object": np.stack(poses), "sensor_kind": np.array(kinds, np.int8),
            "distance": np.array(distances), "scale": radius, "overlap": overlap.ravel()}


def _overlap_matrix(views: list[np.ndarray], radius: float, rng: np.random.Generator
                    ) -> np.ndarray:
    """Pairwise overlap of unit-frame views, as `registration_pairs._overlap` on 1024 points."""
    from scipy.spatial import cKDTree

    from gmm_perception.geometry.points import resample

    sub = [resample(v, _OVERLAP_POINTS, rng) for v in views]
    trees = [cKDTree(s) for s in sub]
    n = len(views)
    near = np.eye(n)
    for a in range(n):
        for b in range(n):
            if a != b:
                near[a, b] = np.isfinite(trees[b].query(sub[a], distance_upper_bound=radius)[0]
                                         ).mean()
    return 0.5 * (near + near.T)


def _task(args):
    index, vertices, faces, model_id, count, seed, settings = args
    start = time.perf_counter()
    return index, shape_views(vertices, faces, model_id, count, seed, settings), \
        time.perf_counter() - start


def _upright_flags(meshes: MeshSet) -> np.ndarray:
    """Per mesh, whether its z axis is known to be up: the pool's per-shape `up_known`
    ("true"/"false", in `shape_meta` or as a list in `meta`) when the set carries it, else True
    (the categorised builders normalise to z up)."""
    known = getattr(meshes, "shape_meta", {}).get("up_known")
    if known is None and isinstance(meshes.meta, dict):
        known = meshes.meta.get("up_known")
    if known is not None and len(known) == len(meshes):
        return np.array([str(k).strip().lower() in ("true", "1", "yes") for k in known])
    return np.ones(len(meshes), dtype=bool)


def _rows(meshes: MeshSet, shape_ids: Sequence[str] | Sequence[int] | None) -> np.ndarray:
    if shape_ids is None:
        return np.arange(len(meshes))
    ids = list(shape_ids)
    if all(isinstance(i, (int, np.integer)) for i in ids):
        return np.asarray(ids, dtype=np.int64)
    return np.array([meshes.index_of(str(i)) for i in ids], dtype=np.int64)


def pool_config(meshes: MeshSet, shape_ids=None, views_per_shape: int = 8, seed: int = 0,
                settings: ViewSettings | None = None) -> dict[str, Any]:
    """Everything that determines the pool; `key` hashes it (shapes by id and mesh hash)."""
    settings = settings or ViewSettings()
    rows = _rows(meshes, shape_ids)
    config = {"version": _CACHE_VERSION, "views_per_shape": int(views_per_shape),
              "seed": int(seed), "settings": settings.describe()}
    config["settings_key"] = _hash(config)
    config["shapes"] = [[str(meshes.model_ids[k]), mesh_hash(meshes.vertices[k],
                                                            meshes.faces[k])] for k in rows]
    config["key"] = _hash(config)
    return config


def build_view_pool(meshes: MeshSet, shape_ids: Sequence[str] | Sequence[int] | None = None,
                    views_per_shape: int = 8, seed: int = 0,
                    settings: ViewSettings | None = None, workers: int = 2,
                    progress: bool = True, reuse: ViewPool | None = None) -> ViewPool:
    """The views of the selected shapes (model ids or rows of `meshes`; None: all).

    Shapes are scanned in a process pool of `workers` (1: in this process) with a tqdm bar.
    Shapes whose (model id, mesh hash) `reuse` (a pool made with the same settings, views and
    seed) already holds are copied from it, not scanned again: per-shape seeding makes them equal.
    `config['build_seconds']` holds each scanned shape's wall time.
    """
    from tqdm import tqdm

    if views_per_shape < 1:
        raise ValueError("views_per_shape must be >= 1")
    settings = settings or ViewSettings()
    config = pool_config(meshes, shape_ids, views_per_shape, seed, settings)
    rows = _rows(meshes, shape_ids)
    hashes = [h for _, h in config["shapes"]]
    results: dict[int, dict[str, np.ndarray]] = {}
    if reuse is not None and reuse.config.get("settings_key") == config["settings_key"]:
        known = {(m, h): r for r, (m, h) in enumerate(zip(reuse.model_ids, reuse.mesh_hash))}
        for i, k in enumerate(rows):
            r = known.get((str(meshes.model_ids[k]), hashes[i]))
            if r is not None:
                views = reuse.views_of(r)
                results[i] = {
                    "points": reuse.points[reuse.point_offsets[views[0]]:
                                           reuse.point_offsets[views[-1] + 1]],
                    "counts": reuse.point_count(views), "T_sensor_object":
                    reuse.T_sensor_object[views], "sensor_kind": reuse.sensor_kind[views],
                    "distance": reuse.distance[views], "scale": reuse.scale[r],
                    "overlap": reuse.overlap_matrix(r).ravel()}
    tasks = [(i, meshes.vertices[k], meshes.faces[k], str(meshes.model_ids[k]), views_per_shape,
              seed, settings) for i, k in enumerate(rows) if i not in results]
    seconds: list[float] = []
    bar = tqdm(total=len(tasks), desc="views", disable=not progress or not tasks)
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            i, result, s = _task(task)
            results[i] = result
            seconds.append(s)
            bar.update()
    else:
        # spawn: the parent may already run Open3D's thread pools, which fork would copy broken.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as executor:
            for future in as_completed([executor.submit(_task, t) for t in tasks]):
                i, result, s = future.result()
                results[i] = result
                seconds.append(s)
                bar.update()
    bar.close()
    ordered = [results[i] for i in range(len(rows))]
    counts = [r["counts"] for r in ordered]
    per_shape = np.array([len(c) for c in counts], dtype=np.int64)
    all_counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    return ViewPool(
        points=(np.concatenate([r["points"] for r in ordered]) if ordered
                else np.zeros((0, 3), np.float32)),
        point_offsets=np.concatenate([[0], np.cumsum(all_counts)]),
        T_sensor_object=(np.concatenate([r["T_sensor_object"] for r in ordered]) if ordered
                         else np.zeros((0, 4, 4))),
        sensor_kind=np.concatenate([r["sensor_kind"] for r in ordered]) if ordered else [],
        distance=np.concatenate([r["distance"] for r in ordered]) if ordered else [],
        view_shape=np.repeat(np.arange(len(rows)), per_shape),
        model_ids=meshes.model_ids[rows], labels=meshes.labels[rows],
        class_names=list(meshes.class_names), split=meshes.split[rows],
        scale=[r["scale"] for r in ordered], upright=_upright_flags(meshes)[rows],
        mesh_hash=hashes, view_offsets=np.concatenate([[0], np.cumsum(per_shape)]),
        overlap=(np.concatenate([r["overlap"] for r in ordered]) if ordered
                 else np.zeros(0, np.float32)),
        overlap_offsets=np.concatenate([[0], np.cumsum(per_shape ** 2)]),
        config={**{k: v for k, v in config.items() if k != "shapes"},
                "source": meshes.meta.get("source") if isinstance(meshes.meta, dict) else None,
                "scanned_shapes": len(tasks), "build_seconds": seconds})


def default_view_path(name: str, views_per_shape: int = 8, seed: int = 0,
                      data_dir: str | Path | None = None) -> Path:
    """<data dir>/views/<name>_<V>v_seed<seed>.npz (default data dir: $GMM_PERCEPTION_DATA or
    <repo>/data)."""
    from gmm_perception.data.mesh_dataset import default_data_dir

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return root / "views" / f"{name}_{views_per_shape}v_seed{seed}.npz"


def cached_view_pool(path: str | Path, meshes: MeshSet,
                     shape_ids: Sequence[str] | Sequence[int] | None = None,
                     views_per_shape: int = 8, seed: int = 0,
                     settings: ViewSettings | None = None, workers: int = 2,
                     progress: bool = True) -> ViewPool:
    """`path` when it holds this exact pool (same key); else built (reusing the shapes an older
    file at `path` made with the same settings holds) and saved there."""
    path = Path(path)
    config = pool_config(meshes, shape_ids, views_per_shape, seed, settings)
    old = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                stored_key = str(data["key"])
            if stored_key == config["key"]:
                return ViewPool.load(path)
            old = ViewPool.load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            old = None  # unreadable or foreign file: rebuild over it
    pool = build_view_pool(meshes, shape_ids, views_per_shape, seed, settings, workers, progress,
                           reuse=old)
    pool.save(path)
    return pool


def _hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
