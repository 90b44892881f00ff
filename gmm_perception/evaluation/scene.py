"""A small room of held-out CAD objects on a floor, scanned from a sensor that circles it or
drives past it.

The demo bag (see `bag.py`) needs data whose ground truth is exact by construction, so every
number here is chosen, not estimated:

* Each object is a normalised model (`MeshSet`: centred on its bounding box, unit sphere, z up,
  x forward) scaled uniformly to a realistic size for its class (`CLASS_SIZES` in
  `data/class_sizes.py`). Its *model frame* is that scaled mesh's own frame, and ``T_world_object`` maps model points into the world.
  A reference cloud sampled from ``SceneObject.mesh`` is therefore exactly what a registration
  has to align to the scan: its answer should be ``T_world_object``.
* Objects stand upright on the floor plane z = 0 (their lowest vertex touches it), turned by a
  random yaw only (the models are upright, so pitch or roll would put them on their side), and
  do not overlap: bounding circles stay ``GAP`` apart and inside the arena disc, so the sensor's
  orbit or drive (outside the arena) never enters an object.
* The sensor either circles the scene at one radius facing its centre (`Orbit`, the old demo)
  or drives past it as a robot does (`DrivePath`: level, facing its direction of travel, its
  distance to the objects changing). An object may be carried in or out during the scan
  (`SceneObject.present`): it is in the scene, and ray cast, only in those frames.
* Scans are ray cast (`sensors.scan`) against the objects and the floor together, so occlusion
  between objects and the floor returns a real segmentation would have to remove are both there.
  Each frame keeps, per point, which object (or the floor) it hit, so how much of each object a
  frame saw (`Frame.object_points`; none when it is occluded, out of range or carried out) is
  exact too.

Only numpy, trimesh and Open3D (through `sensors`): no ROS.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import trimesh

from gmm_perception.data.class_sizes import class_scale
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.sensors import Sensor, raycasting_scene, scan
from gmm_perception.data.shape_set import MeshSet
from gmm_perception.geometry.transforms import euler_to_matrix, make_transform

# Classes that stand freely in a room. Doors and windows belong in walls, cars and trees
# outdoors; with `classes=None` they are only used if a mesh set has none of these.
DEFAULT_CLASSES = ("chair", "armchair", "stool", "table", "sofa", "bed", "cabinet", "bookshelf",
                   "lamp", "plant", "person")

GAP = 0.3  # metres between the bounding circles of two objects
ARENA_RADIUS = 2.5  # every object's bounding circle lies inside this disc around the origin
FLOOR_SIZE = 12.0  # side of the square floor, metres
_PLACEMENT_TRIES = 500  # random centres tried per object before the layout starts over
_LAYOUT_TRIES = 20  # whole layouts tried before giving up
FLOOR_LABEL = -1  # Frame.labels value of points on the floor


@dataclass
class SceneObject:
    """One object of the scene; ``mesh`` is in metres in the object's model frame."""

    name: str  # "<class>_<k>", k counting objects of that class; the truth/ TF frame's suffix
    class_name: str
    model_id: str  # MeshSet.model_ids entry the mesh came from
    mesh: trimesh.Trimesh  # the scaled model in its model (object) frame, metres
    T_world_object: np.ndarray  # (4, 4): model-frame points -> world
    scale: float  # metres per unit of the normalised model
    # Frames [first, end) in which the object is in the scene (carried in at `first`, out at
    # `end`); None: in every frame. Its pose is the same whenever it is there.
    present: tuple[int, int] | None = None

    def present_at(self, frame_index: int) -> bool:
        return self.present is None or self.present[0] <= frame_index < self.present[1]

    @property
    def radius(self) -> float:
        """Radius of the bounding circle about the frame's z axis (yaw-invariant)."""
        return float(np.linalg.norm(np.asarray(self.mesh.vertices)[:, :2], axis=1).max())

    @property
    def yaw_deg(self) -> float:
        R = self.T_world_object
        return float(np.degrees(np.arctan2(R[1, 0], R[0, 0])))

    def mesh_world(self) -> trimesh.Trimesh:
        return self.mesh.copy().apply_transform(self.T_world_object)


@dataclass(frozen=True)
class Orbit:
    """The sensor's path: a horizontal arc around ``target`` at a fixed height, facing it.

    A full circle (``arc_deg`` 360) spaces frames evenly without repeating the start pose; a
    partial arc includes both of its ends.
    """

    radius: float = 3.5
    height: float = 1.2
    arc_deg: float = 360.0
    start_deg: float = 0.0  # azimuth of the first pose about +z, 0 = on the +x axis
    target: tuple[float, float, float] = (0.0, 0.0, 0.4)

    def __post_init__(self):
        if self.radius <= 0:
            raise ValueError("orbit radius must be positive")
        if not 0.0 < self.arc_deg <= 360.0:
            raise ValueError("arc_deg must be in (0, 360]")

    def eyes(self, num_frames: int) -> np.ndarray:
        """(num_frames, 3) sensor positions along the arc."""
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        steps = num_frames if self.arc_deg >= 360.0 else max(num_frames - 1, 1)
        azimuth = np.radians(self.start_deg + self.arc_deg * np.arange(num_frames) / steps)
        cx, cy, _ = self.target
        return np.stack([cx + self.radius * np.cos(azimuth), cy + self.radius * np.sin(azimuth),
                         np.full(num_frames, self.height)], axis=1)


@dataclass(frozen=True)
class DrivePath:
    """The sensor on a robot driving past the scene: level at ``height`` (a mast-mounted LiDAR
    at the orbit's height, 1.2 m), facing its direction of travel, along an arc of the ellipse
    with semi-axes ``semi_x``, ``semi_y`` about ``centre``.

    The default half ellipse runs from (-6, 0) round the near side through (0, -4) to (6, 0), so
    the distance to the scene's centre goes 6 -> 4 -> 6 m. Frames are evenly spaced in the
    ellipse's parameter, both ends included: the robot is faster along the side (about 1.9 m/s
    over 10 s) than in the bends at the ends (about 1.3 m/s).
    """

    semi_x: float = 6.0
    semi_y: float = 4.0
    height: float = 1.2
    start_deg: float = 180.0  # ellipse parameter of the first pose (180: at (-semi_x, 0))
    arc_deg: float = 180.0  # positive: counter-clockwise seen from above
    centre: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if self.semi_x <= 0 or self.semi_y <= 0:
            raise ValueError("semi-axes must be positive")
        if not 0.0 < abs(self.arc_deg) <= 360.0:
            raise ValueError("arc_deg must be non-zero and at most 360 in magnitude")

    def _parameters(self, num_frames: int) -> np.ndarray:
        if num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        return np.radians(self.start_deg + self.arc_deg * np.linspace(0.0, 1.0, num_frames))

    def eyes(self, num_frames: int) -> np.ndarray:
        """(num_frames, 3) sensor positions along the arc."""
        t = self._parameters(num_frames)
        return np.stack([self.centre[0] + self.semi_x * np.cos(t),
                         self.centre[1] + self.semi_y * np.sin(t),
                         np.full(num_frames, self.height)], axis=1)

    def headings(self, num_frames: int) -> np.ndarray:
        """(num_frames, 3) unit horizontal directions of travel."""
        t = self._parameters(num_frames)
        sense = np.sign(self.arc_deg)
        d = np.stack([-self.semi_x * np.sin(t) * sense, self.semi_y * np.cos(t) * sense,
                      np.zeros(num_frames)], axis=1)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def closest_approach(self, point: Sequence[float] = (0.0, 0.0)) -> float:
        """Least horizontal distance from `point` to the path (sampled every 0.1 degree)."""
        samples = self.eyes(max(2, int(abs(self.arc_deg) * 10) + 1))[:, :2]
        return float(np.linalg.norm(samples - np.asarray(point, dtype=np.float64)[:2],
                                    axis=1).min())


Trajectory = Union[Orbit, DrivePath]


@dataclass
class DemoScene:
    """Objects on a floor plus the sensor's path: an orbit, or a drive (`path`); see
    `build_demo_scene`."""

    objects: list[SceneObject]
    floor: trimesh.Trimesh
    orbit: Orbit | None
    arena_radius: float = ARENA_RADIUS
    path: DrivePath | None = None  # when set, the sensor drives this instead of the orbit

    @property
    def trajectory(self) -> Trajectory:
        return self.path if self.path is not None else self.orbit

    def meshes_world(self, objects: Sequence[int] | None = None) -> list[trimesh.Trimesh]:
        """Ray-casting geometry: the k-th of `objects` (indices, default all) is geometry id k,
        the floor comes last."""
        chosen = range(len(self.objects)) if objects is None else objects
        return [self.objects[i].mesh_world() for i in chosen] + [self.floor]

    def object(self, name: str) -> SceneObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(f"no object '{name}' in the scene")

    def describe(self) -> dict:
        """JSON-ready ground truth: per object its class, source model, scale and pose (and the
        frames it is present in, when it is carried in or out); the orbit or the drive."""
        objects = []
        for obj in self.objects:
            item = {
                "name": obj.name, "class": obj.class_name, "model_id": obj.model_id,
                "scale": obj.scale, "yaw_deg": obj.yaw_deg,
                "position": obj.T_world_object[:3, 3].tolist(),
                "size": np.ptp(np.asarray(obj.mesh.vertices), axis=0).tolist(),
                "T_world_object": obj.T_world_object.tolist(),
            }
            if obj.present is not None:
                item["present_frames"] = list(obj.present)
            objects.append(item)
        description = {
            "objects": objects,
            "floor_size": float(np.ptp(np.asarray(self.floor.vertices)[:, 0])),
            "arena_radius": self.arena_radius,
        }
        if self.orbit is not None:
            description["orbit"] = asdict(self.orbit)
        if self.path is not None:
            description["path"] = {"kind": "drive", **asdict(self.path)}
        return description


@dataclass
class Frame:
    """One scan of the scene. Row i of `points` and `labels` belong to the same return."""

    index: int
    points: np.ndarray  # (N, 3) float32, sensor frame
    T_world_sensor: np.ndarray  # (4, 4) float64, the exact pose of the scan
    labels: np.ndarray  # (N,) int16: index into DemoScene.objects, FLOOR_LABEL for the floor

    def object_points(self, num_objects: int) -> np.ndarray:
        """(num_objects,) returns of each object in this frame (0: not seen at all)."""
        return np.bincount(self.labels[self.labels >= 0], minlength=num_objects)[:num_objects]


def floor_mesh(size: float = FLOOR_SIZE) -> trimesh.Trimesh:
    """A square of side `size` in the plane z = 0, centred on the origin, normal +z."""
    h = size / 2.0
    vertices = [[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]]
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False)


def build_demo_scene(meshes: MeshSet, rng: np.random.Generator, num_objects: int = 3,
                     split: str = "test", classes: Sequence[str] | None = None,
                     orbit: Orbit | None = None, arena_radius: float = ARENA_RADIUS,
                     path: DrivePath | None = None) -> DemoScene:
    """`num_objects` models of distinct classes from `split`, sized, placed and turned at random.

    `classes` limits the candidate classes (default: `DEFAULT_CLASSES` present in the split, or
    every class of the split if it has none of them). Without a drive `path` the sensor orbits:
    the default orbit starts at a random azimuth so different seeds see the scene from different
    sides. Raises ValueError when the split has too few classes, the sensor's path enters the
    arena, or the objects cannot be laid out without overlap.
    """
    if num_objects < 1:
        raise ValueError("num_objects must be >= 1")
    pool = meshes.subset(split)
    present = [name for i, name in enumerate(pool.class_names) if np.any(pool.labels == i)]
    if classes is not None:
        unknown = sorted(set(classes) - set(present))
        if unknown:
            raise ValueError(f"no '{split}' models of class(es) {unknown}; available: {present}")
        candidates = list(dict.fromkeys(classes))
    else:
        candidates = [c for c in present if c in DEFAULT_CLASSES] or present
    if len(candidates) < num_objects:
        raise ValueError(f"{num_objects} objects of distinct classes need as many classes; "
                         f"the '{split}' split offers {candidates}")
    if path is not None:
        if orbit is not None:
            raise ValueError("give an orbit or a drive path, not both")
        if path.closest_approach() <= arena_radius:
            raise ValueError("the drive path must stay outside the arena, or the sensor could "
                             "end up inside an object")
    else:
        orbit = orbit or Orbit(start_deg=float(rng.uniform(0.0, 360.0)))
        if orbit.radius <= arena_radius + np.linalg.norm(orbit.target[:2]):
            raise ValueError("the orbit must stay outside the arena, or the sensor could end "
                             "up inside an object")

    chosen = [str(c) for c in rng.choice(candidates, size=num_objects, replace=False)]
    counts: dict[str, int] = {}
    objects = []
    for class_name in chosen:
        name = f"{class_name}_{counts.get(class_name, 0)}"
        counts[class_name] = counts.get(class_name, 0) + 1
        objects.append(_sized_object(pool, class_name, name, rng))

    _place(objects, rng, arena_radius)
    return DemoScene(objects, floor_mesh(), orbit, arena_radius, path)


def add_far_object(scene: DemoScene, meshes: MeshSet, rng: np.random.Generator,
                   position: Sequence[float], split: str = "test") -> SceneObject:
    """One more object standing at `position` (x, y, metres) outside the arena, of a class the
    scene does not have yet where the split offers one (`DEFAULT_CLASSES` first), sized for its
    class and turned at random, standing at z = 0 beyond the floor's edge (see below). A robot's
    far-away object: a few rings of a LiDAR, sparse, in every frame."""
    position = np.asarray(position, dtype=np.float64)
    if np.linalg.norm(position) <= scene.arena_radius:
        raise ValueError("the far object must stand outside the arena")
    pool = meshes.subset(split)
    present = [name for i, name in enumerate(pool.class_names) if np.any(pool.labels == i)]
    taken = {obj.class_name for obj in scene.objects}
    candidates = ([c for c in present if c in DEFAULT_CLASSES and c not in taken]
                  or [c for c in present if c not in taken] or present)
    class_name = str(rng.choice(candidates))
    count = sum(obj.class_name == class_name for obj in scene.objects)
    obj = _sized_object(pool, class_name, f"{class_name}_{count}", rng)
    _stand(obj, position, rng.uniform(-np.pi, np.pi))
    # The floor is left as it is: grown to reach under the far object (32 m across), its
    # returns at 10-16 m broke the segmentation (detection recall 50 % -> 16 % on the robot
    # demo: far floor returns clustered as objects and flooded the object stages' queues).
    scene.objects.append(obj)
    return obj


def carry_in_and_out(scene: DemoScene, rng: np.random.Generator, num_frames: int,
                     enter_at: float = 0.3, leave_at: float = 0.7) -> None:
    """Someone carries one object (chosen at random) in at `enter_at` of the scan and another
    out at `leave_at`: sets their `present` frames. Needs two objects and three frames."""
    if len(scene.objects) < 2 or num_frames < 3:
        raise ValueError("carrying one object in and another out needs 2 objects and 3 frames")
    if not 0.0 < enter_at < 1.0 or not 0.0 < leave_at < 1.0:
        raise ValueError("enter_at and leave_at are fractions of the scan in (0, 1)")
    enter = min(max(1, round(enter_at * num_frames)), num_frames - 1)
    leave = min(max(1, round(leave_at * num_frames)), num_frames - 1)
    carried_in, carried_out = (int(i) for i in rng.choice(len(scene.objects), 2, replace=False))
    scene.objects[carried_in].present = (enter, num_frames)
    scene.objects[carried_out].present = (0, leave)


def _place(objects: list[SceneObject], rng: np.random.Generator, arena_radius: float) -> None:
    """Set every T_world_object: random yaw, resting on z = 0, bounding circles GAP apart.

    Rejection sampling, largest object first (it has the fewest places left once others stand).
    """
    radii = np.array([obj.radius for obj in objects])
    too_big = [obj.name for obj, r in zip(objects, radii) if r >= arena_radius]
    if too_big:
        raise ValueError(f"{too_big} do not fit in an arena of radius {arena_radius} m")
    order = np.argsort(-radii)
    for _ in range(_LAYOUT_TRIES):
        centres: dict[int, np.ndarray] = {}
        for i in order:
            for _ in range(_PLACEMENT_TRIES):
                # Uniform over the disc the centre may occupy (sqrt for uniform area density).
                rho = (arena_radius - radii[i]) * np.sqrt(rng.random())
                phi = rng.uniform(0.0, 2.0 * np.pi)
                c = np.array([rho * np.cos(phi), rho * np.sin(phi)])
                if all(np.linalg.norm(c - centres[j]) >= radii[i] + radii[j] + GAP
                       for j in centres):
                    centres[i] = c
                    break
            else:
                break
        if len(centres) == len(objects):
            break
    else:
        raise ValueError(f"could not place {len(objects)} objects without overlap in an arena "
                         f"of radius {arena_radius} m (radii {np.round(radii, 2).tolist()})")
    for i, obj in enumerate(objects):
        _stand(obj, centres[i], rng.uniform(-np.pi, np.pi))


def _sized_object(pool: MeshSet, class_name: str, name: str, rng: np.random.Generator
                  ) -> SceneObject:
    """A random model of `class_name` from `pool`, scaled to its class's size (`CLASS_SIZES`),
    in its model frame (T_world_object the identity until it is placed)."""
    index = int(rng.choice(np.flatnonzero(pool.labels == pool.class_names.index(class_name))))
    vertices = np.asarray(pool.vertices[index], dtype=np.float64)
    scale = class_scale(class_name, vertices)
    mesh = trimesh.Trimesh(vertices * scale, np.asarray(pool.faces[index], dtype=np.int64),
                           process=False)
    return SceneObject(name, class_name, str(pool.model_ids[index]), mesh, np.eye(4), scale)


def _stand(obj: SceneObject, xy: Sequence[float], yaw: float) -> None:
    """Set T_world_object: turned by `yaw` about z, at (x, y), resting on z = 0."""
    lowest = float(np.asarray(obj.mesh.vertices)[:, 2].min())
    # Rotating about z keeps z, so lifting by -lowest sets the lowest vertex on z = 0.
    obj.T_world_object = make_transform(euler_to_matrix(0.0, 0.0, yaw), [xy[0], xy[1], -lowest])


def sensor_poses(num_frames: int, sensor: Sensor, orbit: Trajectory = Orbit()) -> np.ndarray:
    """(num_frames, 4, 4) T_world_sensor along `orbit`, each facing its target (`look_at`), or
    along a `DrivePath`, level and facing the direction of travel."""
    eyes = orbit.eyes(num_frames)
    if isinstance(orbit, DrivePath):
        return np.stack([sensor.look_at(eye, eye + heading)
                         for eye, heading in zip(eyes, orbit.headings(num_frames))])
    target = np.asarray(orbit.target, dtype=np.float64)
    return np.stack([sensor.look_at(eye, target) for eye in eyes])


def scan_frames(scene: DemoScene, sensor: Sensor, poses: Iterable[np.ndarray],
                rng: np.random.Generator | None = None) -> Iterator[Frame]:
    """Scan the scene from each pose in turn, lazily (one frame in memory at a time).

    Frame k scans the objects present at k (`SceneObject.present`). The Open3D ray-casting
    scene is built once per set of present objects. `rng` drives range noise and dropout and is
    required when the sensor has either.
    """
    targets: dict[tuple[int, ...], object] = {}
    for index, T_world_sensor in enumerate(poses):
        present = tuple(i for i, obj in enumerate(scene.objects) if obj.present_at(index))
        if present not in targets:
            targets[present] = raycasting_scene(scene.meshes_world(present))
        s = scan(targets[present], sensor, T_world_sensor, rng)
        # Geometry k is the k-th present object, the floor comes after them.
        label_of = np.array([*present, FLOOR_LABEL], dtype=np.int16)
        yield Frame(index, s.points_sensor, s.T_world_sensor, label_of[s.hit_geometry])


def reference_cloud(obj: SceneObject, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) float32 points uniform on the object's surface, in its model frame, metres."""
    return sample_surface(obj.mesh, count, rng)


def write_ply_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
                   comments: Sequence[str] = ()) -> Path:
    """A binary little-endian PLY of float32 vertices and triangles (trimesh and PCL read it).

    formats.py only reads, so this is the one writer the library needs; comments carry
    provenance (class, source model, units) without a side file.
    """
    path = Path(path)
    vertices = np.ascontiguousarray(vertices, dtype="<f4")
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError("need (V, 3) vertices and (F, 3) triangles")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("face index outside the vertices")
    for comment in comments:
        if "\n" in comment or "\r" in comment:
            raise ValueError("a PLY comment must be a single line")
    header = ["ply", "format binary_little_endian 1.0",
              *(f"comment {c}" for c in comments),
              f"element vertex {len(vertices)}", "property float x", "property float y",
              "property float z", f"element face {len(faces)}",
              "property list uchar int vertex_indices", "end_header"]
    records = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    records["n"] = 3
    records["v"] = faces
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(("\n".join(header) + "\n").encode("ascii"))
        out.write(vertices.tobytes())
        out.write(records.tobytes())
    return path


def write_library(scene: DemoScene, directory: str | Path) -> list[Path]:
    """One `<object name>.ply` per object: the scaled mesh in its model frame, metres.

    `formats.load_cloud` reads these (as surface samples), so the nodes' reference-model
    directory can point here; the registration they compute should then be T_world_object.
    """
    directory = Path(directory)
    paths = []
    for obj in scene.objects:
        comments = [f"gmm_perception demo object {obj.name}", f"class {obj.class_name}",
                    f"model_id {obj.model_id}", f"scale {obj.scale:.9g} m per model unit",
                    "frame: object model frame, metres, z up"]
        paths.append(write_ply_mesh(directory / f"{obj.name}.ply", np.asarray(obj.mesh.vertices),
                                    np.asarray(obj.mesh.faces), [c.replace("\n", " ")
                                                                 for c in comments]))
    return paths

