"""ROS 2 bags of demo scenes: written and read with `rosbags` alone (no rclpy, no ROS install).

Topics and conventions of a demo bag (all stamps integer nanoseconds; a message's log time
equals its header stamp):

* ``/points`` (sensor_msgs/msg/PointCloud2): one scan per frame in ``sensor_frame``; x, y, z
  float32 at offsets 0, 4, 8, point_step 12, little endian, height 1, is_dense true.
* ``/tf`` (tf2_msgs/msg/TFMessage): ``world_frame`` -> ``sensor_frame`` at each frame stamp,
  written before that frame's cloud.
* ``/tf_static`` (tf2_msgs/msg/TFMessage): the ground truth, once, at the first stamp: one
  ``world_frame`` -> ``truth/<object name>`` per object, whose transform is T_world_object
  (it maps the object's model-frame points, e.g. its library PLY, into the world).
* ``/clock`` (rosgraph_msgs/msg/Clock): at every frame stamp, and between frames at
  ``clock_rate_hz`` when given.

Frame k is stamped ``start_ns + round(k * 1e9 / rate_hz)`` with a fixed ``start_ns``
(``EPOCH_NS``), so a bag is reproducible byte for byte from its seed. The full ground truth
(classes, source models, scales, poses, sensor) is also stored as JSON in the bag's metadata
``custom_data`` under ``SCENE_KEY``.

Visibility: objects can be out of view (occluded, or carried in or out during the bag), so the
scene JSON's ``visibility`` holds each object's returns per frame (``points``: name -> one count
per frame of ``stamps_ns``), counted exactly from the ray cast; an object is visible in a frame
when it has at least ``min_points`` (`VISIBLE_MIN_POINTS`) there (`BagContents.truth_visibility`;
the metrics count only visible objects). A bag without it (the ``orbit`` preset's, older bags)
counts every object as visible in every frame.

Replay latching: rosbag2's player re-offers the reliability and durability recorded in each
topic's ``offered_qos_profiles`` (when all recorded offers agree; rosbag2_transport's
``adapt_offer_to_recorded_offers``), so /tf_static, recorded as one reliable, transient-local,
keep-last-1 offer (what tf2_ros's StaticTransformBroadcaster offers), is latched by
``ros2 bag play`` like a live static broadcaster's. The other topics are offered reliable and
volatile: a reliable offer matches both reliable and best-effort subscribers. When replaying
with ``--clock``, exclude /clock (the player then publishes its own).

Reading is tolerant: `BagReader` reports defects (missing topics, unexpected types, messages
that fail to decode, malformed clouds, invalid rotations) as warnings and skips the message,
so one bad message does not end an evaluation. It streams: records are decoded one at a time.
Clouds are decoded by `gmm_perception.data.pointcloud2`, the decoder the live nodes use, so a
cloud a node would reject is skipped here with the same MalformedCloudError and reason.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Union

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, \
    QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from gmm_perception.data.pointcloud2 import FLOAT32, MalformedCloudError, object_id_of, read_xyz
from gmm_perception.geometry.transforms import make_transform, matrix_to_quat, quat_to_matrix

if TYPE_CHECKING:  # scene imports Open3D (seconds); reading a bag needs none of it
    from gmm_perception.data.shape_set import MeshSet
    from gmm_perception.evaluation.scene import DemoScene, Frame

NS_PER_S = 1_000_000_000
EPOCH_NS = 1_700_000_000 * NS_PER_S  # first stamp of every demo bag: reproducible output
POINTS_TOPIC = "/points"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
CLOCK_TOPIC = "/clock"
TRUTH_PREFIX = "truth/"  # ground-truth object frames: truth/<object name>
SCENE_KEY = "gmm_perception.scene"  # custom_data key of the scene's JSON description
# Returns an object needs in a frame to count as visible there: one frame's worth of the
# segmentation's smallest cluster (SegmentConfig.min_cluster_points' default).
VISIBLE_MIN_POINTS = 30

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
TFMESSAGE = "tf2_msgs/msg/TFMessage"
CLOCK = "rosgraph_msgs/msg/Clock"
EXPECTED_TYPES = {POINTS_TOPIC: POINTCLOUD2, TF_TOPIC: TFMESSAGE, TF_STATIC_TOPIC: TFMESSAGE,
                  CLOCK_TOPIC: CLOCK}

_XYZ = ("x", "y", "z")

_ZERO_TIME = QosTime(0, 0)  # rmw "unspecified": the default, compatible with any request


def _qos(depth: int, durability: QosDurability) -> Qos:
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, _ZERO_TIME,
               _ZERO_TIME, QosLiveliness.AUTOMATIC, _ZERO_TIME, False)


# What each topic is offered with; rosbag2's player re-offers these (see the module docstring).
OFFERED_QOS = {
    POINTS_TOPIC: _qos(10, QosDurability.VOLATILE),
    TF_TOPIC: _qos(100, QosDurability.VOLATILE),  # tf2_ros's TransformBroadcaster
    TF_STATIC_TOPIC: _qos(1, QosDurability.TRANSIENT_LOCAL),  # StaticTransformBroadcaster
    CLOCK_TOPIC: _qos(10, QosDurability.VOLATILE),
}


def default_typestore():
    """The kilted message definitions (newest ROS 2 store if this rosbags predates kilted).

    Kilted's tf2_msgs/msg/TFMessage hash (RIHS01_e369d0f0...) is what our rosidl-built
    tf2_msgs and upstream announce; test_tf2_msgs_hash checks rosbags computes the same.
    """
    store = getattr(Stores, "ROS2_KILTED", None)
    if store is None:
        store = [s for s in Stores if s.name.startswith("ROS2_")][-1]
    return get_typestore(store)


def stamp_ns(frame_index: int, rate_hz: float, start_ns: int = EPOCH_NS) -> int:
    """Stamp of frame `frame_index` at `rate_hz`: integer ns, no drift from summing periods."""
    return start_ns + round(frame_index * NS_PER_S / rate_hz)


# --------------------------------------------------------------------------------- writing

@dataclass
class BagSummary:
    """What `write_demo_bag` wrote."""

    path: Path
    storage: str
    frames: int
    points_per_frame: list[int]
    message_counts: dict[str, int]  # topic -> messages
    start_ns: int
    end_ns: int  # stamp of the last frame


class _Messages:
    """Builds the demo bag's messages from the typestore's classes."""

    def __init__(self, typestore):
        self.ts = typestore
        t = typestore.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.PointField = t["sensor_msgs/msg/PointField"]
        self.PointCloud2 = t[POINTCLOUD2]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]
        self.TFMessage = t[TFMESSAGE]
        self.Clock = t[CLOCK]
        self.xyz_fields = [self.PointField(name=a, offset=4 * i, datatype=FLOAT32, count=1)
                           for i, a in enumerate(_XYZ)]

    def time(self, ns: int):
        return self.Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)

    def cloud(self, points: np.ndarray, frame_id: str, ns: int) -> bytes:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"frame points must be (N, 3), got {points.shape}")
        data = np.ascontiguousarray(points, dtype="<f4").reshape(-1).view(np.uint8)
        msg = self.PointCloud2(
            header=self.Header(stamp=self.time(ns), frame_id=frame_id), height=1,
            width=len(points), fields=self.xyz_fields, is_bigendian=False, point_step=12,
            row_step=12 * len(points), data=data, is_dense=bool(np.isfinite(points).all()))
        return self.ts.serialize_cdr(msg, POINTCLOUD2)

    def transform(self, T: np.ndarray, parent: str, child: str, ns: int):
        T = np.asarray(T, dtype=np.float64)
        x, y, z, w = matrix_to_quat(T[:3, :3])
        return self.TransformStamped(
            header=self.Header(stamp=self.time(ns), frame_id=parent), child_frame_id=child,
            transform=self.Transform(
                translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                rotation=self.Quaternion(x=float(x), y=float(y), z=float(z), w=float(w))))

    def tf(self, transforms: list) -> bytes:
        return self.ts.serialize_cdr(self.TFMessage(transforms=transforms), TFMESSAGE)

    def clock(self, ns: int) -> bytes:
        return self.ts.serialize_cdr(self.Clock(clock=self.time(ns)), CLOCK)


def write_demo_bag(path: str | Path, scene: DemoScene, frames: Iterable[Frame],
                   storage: Literal["mcap", "sqlite3"] = "mcap", sensor_frame: str = "lidar",
                   world_frame: str = "world", rate_hz: float = 5.0,
                   clock_rate_hz: float | None = None, start_ns: int = EPOCH_NS,
                   sensor_info: dict[str, Any] | None = None,
                   visibility: bool = True) -> BagSummary:
    """Write `frames` (consumed lazily, one at a time) and the scene's ground truth as a bag.

    `path` is the rosbag2 directory to create (it must not exist). `clock_rate_hz`, when above
    `rate_hz`, adds /clock ticks between frames so a replaying node's timers run smoothly.
    `sensor_info` (e.g. the sensor's parameters) is stored beside the scene in custom_data, and
    with `visibility` each object's returns per frame (see the module docstring).
    """
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got '{storage}'")
    if not rate_hz > 0:
        raise ValueError("rate_hz must be positive")
    if clock_rate_hz is not None and not clock_rate_hz > 0:
        raise ValueError("clock_rate_hz must be positive")
    path = Path(path)
    msgs = _Messages(default_typestore())
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=9, storage_plugin=plugin)
    description = scene.describe()
    description.update(world_frame=world_frame, sensor_frame=sensor_frame, rate_hz=rate_hz,
                       truth_prefix=TRUTH_PREFIX, sensor=sensor_info or {})
    writer.set_custom_data(SCENE_KEY, json.dumps(description))
    counts = dict.fromkeys(EXPECTED_TYPES, 0)
    points_per_frame: list[int] = []
    stamps: list[int] = []
    object_points: list[list[int]] = []  # per frame, per object
    writer.open()
    try:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=msgs.ts,
                                              offered_qos_profiles=[OFFERED_QOS[topic]])
                 for topic, msgtype in EXPECTED_TYPES.items()}

        def put(topic: str, ns: int, data: bytes) -> None:
            writer.write(conns[topic], ns, data)
            counts[topic] += 1

        truth = [msgs.transform(obj.T_world_object, world_frame, TRUTH_PREFIX + obj.name,
                                start_ns) for obj in scene.objects]
        put(TF_STATIC_TOPIC, start_ns, msgs.tf(truth))
        ns = start_ns
        for k, frame in enumerate(frames):
            ns = stamp_ns(k, rate_hz, start_ns)
            if k > 0 and clock_rate_hz is not None:  # ticks strictly between frames k-1 and k
                previous = stamp_ns(k - 1, rate_hz, start_ns)
                tick = 1
                while (t := previous + round(tick * NS_PER_S / clock_rate_hz)) < ns:
                    put(CLOCK_TOPIC, t, msgs.clock(t))
                    tick += 1
            put(CLOCK_TOPIC, ns, msgs.clock(ns))
            pose = msgs.transform(frame.T_world_sensor, world_frame, sensor_frame, ns)
            put(TF_TOPIC, ns, msgs.tf([pose]))
            put(POINTS_TOPIC, ns, msgs.cloud(frame.points, sensor_frame, ns))
            points_per_frame.append(len(frame.points))
            stamps.append(ns)
            object_points.append(frame.object_points(len(scene.objects)).tolist())
        if visibility:  # custom_data goes into the metadata when the writer closes
            per_object = np.array(object_points, dtype=np.int64).reshape(-1, len(scene.objects))
            description["visibility"] = {
                "min_points": VISIBLE_MIN_POINTS, "stamps_ns": stamps,
                "points": {obj.name: per_object[:, i].tolist()
                           for i, obj in enumerate(scene.objects)}}
            writer.set_custom_data(SCENE_KEY, json.dumps(description))
    finally:
        writer.close()
    return BagSummary(path, storage, len(points_per_frame), points_per_frame, counts, start_ns,
                      ns)


# --------------------------------------------------------------------------------- reading

@dataclass
class CloudRecord:
    points: np.ndarray  # (N, 3) float32 in frame_id
    frame_id: str
    stamp_ns: int  # header stamp
    log_time_ns: int  # bag time
    object_id: int | None = None  # a segmented object's id (its cloud's object_id field)


@dataclass
class TransformRecord:
    parent: str
    child: str
    stamp_ns: int
    T_parent_child: np.ndarray  # (4, 4): child-frame points -> parent frame
    static: bool  # from /tf_static
    log_time_ns: int


@dataclass
class ClockRecord:
    stamp_ns: int
    log_time_ns: int


Record = Union[CloudRecord, TransformRecord, ClockRecord]


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int  # messages, as the bag's index reports them


class BagReader:
    """Streams a bag's /points, /tf, /tf_static and /clock as numpy records, in log-time order.

    Use as a context manager. Defects never raise once the bag is open: they are appended to
    `warnings` and the message (or topic) is skipped. A path that is not a readable rosbag2
    still raises, from `open`.
    """

    def __init__(self, path: str | Path, points_topic: str = POINTS_TOPIC):
        self.path = Path(path)
        self.points_topic = points_topic
        self.expected = {points_topic: POINTCLOUD2, TF_TOPIC: TFMESSAGE,
                         TF_STATIC_TOPIC: TFMESSAGE, CLOCK_TOPIC: CLOCK}
        self.warnings: list[str] = []
        self.topics: dict[str, TopicInfo] = {}
        self.custom_data: dict[str, str] = {}
        self.storage = "unknown"
        self._reader: Reader | None = None
        self._typestore = default_typestore()
        self._usable: list = []  # connections whose messages are decoded

    def __enter__(self) -> "BagReader":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        reader = Reader(self.path)
        reader.open()
        self._reader = reader
        suffixes = {p.suffix for p in self.path.iterdir()} if self.path.is_dir() \
            else {self.path.suffix}
        self.storage = "mcap" if ".mcap" in suffixes else "sqlite3" if ".db3" in suffixes \
            else "unknown"
        metadata = getattr(reader.storage, "metadata", None)
        self.custom_data = dict(getattr(metadata, "custom", None) or {})
        for name, info in reader.topics.items():
            self.topics[name] = TopicInfo(name, info.msgtype or "(mixed types)", info.msgcount)
        for topic, msgtype in self.expected.items():
            if topic not in self.topics:
                self.warnings.append(f"bag has no {topic} topic")
        for conn in reader.connections:
            expected = self.expected.get(conn.topic)
            if expected is None:
                continue  # other topics are listed in `topics` but not decoded
            if conn.msgtype != expected:
                self.warnings.append(f"{conn.topic} has type {conn.msgtype}, expected {expected}:"
                                     " skipped")
                continue
            ours = self._typestore.hash_rihs01(expected)
            if conn.digest and conn.digest.startswith("RIHS01_") and conn.digest != ours:
                self.warnings.append(f"{conn.topic}: {expected} hash {conn.digest} differs from "
                                     f"the known definition {ours}: skipped")
                continue
            self._usable.append(conn)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def scene(self) -> dict | None:
        """The ground-truth scene JSON a demo bag carries in custom_data, if any."""
        text = self.custom_data.get(SCENE_KEY)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            self.warnings.append(f"custom_data {SCENE_KEY} is not valid JSON ({exc})")
            return None

    def records(self) -> Iterator[Record]:
        """Decode the expected topics one message at a time."""
        if self._reader is None:
            raise RuntimeError("BagReader is not open")
        if not self._usable:
            return
        for conn, log_ns, raw in self._reader.messages(connections=self._usable):
            where = f"{conn.topic} message at {log_ns} ns"
            try:
                msg = self._typestore.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # rosbags raises struct/index/value errors on bad CDR
                self.warnings.append(f"{where} does not decode ({type(exc).__name__}: {exc}): "
                                     "skipped")
                continue
            if conn.topic == self.points_topic:
                try:
                    points = read_xyz(msg, drop_invalid=False)  # the nodes' decoder
                    object_id = object_id_of(msg)
                except MalformedCloudError as exc:
                    self.warnings.append(f"{where} is a malformed cloud ({exc}): skipped")
                    continue
                yield CloudRecord(points, msg.header.frame_id, _ns(msg.header.stamp), log_ns,
                                  object_id)
            elif conn.topic == CLOCK_TOPIC:
                yield ClockRecord(_ns(msg.clock), log_ns)
            else:
                yield from self._transforms(msg, conn.topic == TF_STATIC_TOPIC, log_ns, where)

    def _transforms(self, msg, static: bool, log_ns: int, where: str
                    ) -> Iterator[TransformRecord]:
        for ts in msg.transforms:
            r, t = ts.transform.rotation, ts.transform.translation
            q = np.array([r.x, r.y, r.z, r.w], dtype=np.float64)
            xyz = np.array([t.x, t.y, t.z], dtype=np.float64)
            norm = float(np.linalg.norm(q))
            if not (np.isfinite(q).all() and np.isfinite(xyz).all()) or norm < 1e-6:
                self.warnings.append(f"{where}: transform {ts.header.frame_id} -> "
                                     f"{ts.child_frame_id} is not finite or has a zero "
                                     "quaternion: skipped")
                continue
            if abs(norm - 1.0) > 1e-3:
                self.warnings.append(f"{where}: transform {ts.header.frame_id} -> "
                                     f"{ts.child_frame_id} quaternion norm {norm:.4f}, "
                                     "normalised")
            yield TransformRecord(ts.header.frame_id, ts.child_frame_id, _ns(ts.header.stamp),
                                  make_transform(quat_to_matrix(q), xyz), static, log_ns)


def _ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


@dataclass
class BagContents:
    """Everything `read_bag` decoded; fine for demo-sized bags (use BagReader to stream)."""

    path: Path
    storage: str
    topics: dict[str, TopicInfo]
    clouds: list[CloudRecord] = field(default_factory=list)
    transforms: list[TransformRecord] = field(default_factory=list)  # /tf
    static_transforms: list[TransformRecord] = field(default_factory=list)  # /tf_static
    clock_ns: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    custom_data: dict[str, str] = field(default_factory=dict)
    scene: dict | None = None  # the demo scene's ground-truth JSON, when present

    def truth_poses(self, prefix: str = TRUTH_PREFIX) -> dict[str, np.ndarray]:
        """Object name -> T_world_object from the latest static `truth/<name>` transforms."""
        return {t.child[len(prefix):]: t.T_parent_child for t in self.static_transforms
                if t.child.startswith(prefix)}

    def truth_visibility(self, warnings: list[str] | None = None
                         ) -> dict[str, frozenset[int]] | None:
        """Object name -> the frame stamps (ns) it is visible in; None when the bag does not
        record visibility (then every object counts as visible in every frame). A malformed
        record is a warning (appended to `warnings`, default this bag's) and counts as none."""
        record = (self.scene or {}).get("visibility")
        if record is None:
            return None
        try:
            stamps = [int(s) for s in record["stamps_ns"]]
            least = int(record["min_points"])
            visible = {}
            for name, points in record["points"].items():
                if len(points) != len(stamps):
                    raise ValueError(f"{name} has {len(points)} counts for {len(stamps)} stamps")
                visible[str(name)] = frozenset(s for s, n in zip(stamps, points)
                                               if int(n) >= least)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            (self.warnings if warnings is None else warnings).append(
                f"the scene's visibility record is malformed ({exc}): every object counts as "
                "visible in every frame")
            return None
        return visible


def read_bag(path: str | Path, points_topic: str = POINTS_TOPIC) -> BagContents:
    """Read a whole bag; defects become `warnings` (see BagReader)."""
    with BagReader(path, points_topic) as reader:
        contents = BagContents(Path(path), reader.storage, dict(reader.topics),
                               custom_data=dict(reader.custom_data))
        for record in reader.records():
            if isinstance(record, CloudRecord):
                contents.clouds.append(record)
            elif isinstance(record, ClockRecord):
                contents.clock_ns.append(record.stamp_ns)
            elif record.static:
                contents.static_transforms.append(record)
            else:
                contents.transforms.append(record)
        contents.scene = reader.scene()
        contents.warnings = list(reader.warnings)
    return contents



# --------------------------------------------------------------------------- the demo command

DEMO_SENSORS = {  # --sensor choice -> (factory, frame id)
    "lidar": ("ouster_os1_64", "lidar"),
    "depth": ("realsense_d435 at half resolution", "camera_depth_optical_frame"),
}


def demo_sensor(kind: str):
    """(sensor, frame id, description) for `make_demo`'s --sensor choice.

    The LiDAR is an Ouster OS1-64 (64 x 1024 rays, 1 cm noise); the depth camera a RealSense
    D435 decimated to 424 x 240 (its noise and dropout kept), which keeps a frame near 100k rays.
    """
    from gmm_perception.data.sensors import DepthCamera, SpinningLidar

    if kind == "lidar":
        sensor = SpinningLidar.ouster_os1_64()
    elif kind == "depth":
        sensor = DepthCamera.realsense_d435().downscaled(2)
    else:
        raise ValueError(f"sensor must be one of {sorted(DEMO_SENSORS)}, got '{kind}'")
    return sensor, DEMO_SENSORS[kind][1], DEMO_SENSORS[kind][0]


@dataclass(frozen=True)
class DemoPreset:
    """What a demo bag shows; `make-bag --preset` and `demo --preset` take one by name."""

    summary: str
    frames: int
    objects: int
    rate_hz: float  # the bag's frame rate
    playback_rate: float  # the demo's live playback speed, relative to the recording
    arena_radius: float  # metres: the disc the objects stand in
    trajectory: Literal["orbit", "drive"]  # scene.Orbit (random start) or the default DrivePath
    carry: bool  # one object carried in at 30 % of the bag and another out at 70 %
    visibility: bool  # record each object's returns per frame in the truth
    # (x, y) metres of one more object outside the arena, in every frame; None: no such object
    far_object: tuple[float, float] | None = None


DEMO_PRESETS = {
    # A robot's LiDAR at its real 10 Hz, played at 1x: it drives round the near side of five
    # objects (6 -> 4 -> 6 m from their centre) while one is carried in and another out; a sixth
    # stands far off on the outer side of its path, 10 m from it at the closest and 15.2 m at
    # the ends (a sparse object, a few LiDAR rings: what the upsampler is for).
    "robot": DemoPreset("a robot drives past 5 objects, 10 Hz at 1x; one object carried in, one "
                        "out; a sixth 10-15 m away", frames=100, objects=5, rate_hz=10.0,
                        playback_rate=1.0, arena_radius=3.0, trajectory="drive", carry=True,
                        visibility=True, far_object=(0.0, -14.0)),
    # The first demo, kept so that its numbers stay reproducible: the same bag as before.
    "orbit": DemoPreset("3 objects, a LiDAR orbiting at 3.5 m, 5 Hz at 0.25x", frames=30,
                        objects=3, rate_hz=5.0, playback_rate=0.25, arena_radius=2.5,
                        trajectory="orbit", carry=False, visibility=False),
}
DEFAULT_PRESET = "robot"


def demo_preset(name: str) -> DemoPreset:
    try:
        return DEMO_PRESETS[name]
    except KeyError:
        raise ValueError(f"preset must be one of {sorted(DEMO_PRESETS)}, got '{name}'") from None


@dataclass
class DemoOutput:
    scene: DemoScene
    bag: BagSummary
    library: list[Path]
    sensor: str  # description of the simulated sensor
    sensor_frame: str
    preset: str = DEFAULT_PRESET


def make_demo(output: str | Path, meshes: MeshSet, *, preset: str = DEFAULT_PRESET,
              storage: str = "mcap", sensor: str = "lidar", frames: int | None = None,
              objects: int | None = None, seed: int = 0, rate_hz: float | None = None,
              progress: bool = False, overwrite: bool = False) -> DemoOutput:
    """Build a scene from `meshes` (a MeshSet), write `output`/bag and `output`/library/*.ply.

    `preset` (`DEMO_PRESETS`) sets the scene, the sensor's path and the defaults of `frames`,
    `objects` and `rate_hz`. The scene, the orbit's start, who is carried in and out, and the
    sensor noise all follow from `seed` (noise from its own stream, so changing the sensor does
    not move the objects). `overwrite` replaces an earlier demo's bag and library; without it an
    existing bag is an error (rosbag2 never overwrites).
    """
    from gmm_perception.evaluation.scene import DrivePath, add_far_object, build_demo_scene, \
        carry_in_and_out, scan_frames, sensor_poses, write_library

    config = demo_preset(preset)
    frames = config.frames if frames is None else frames
    objects = config.objects if objects is None else objects
    rate_hz = config.rate_hz if rate_hz is None else rate_hz
    output = Path(output)
    bag_path, library_dir = output / "bag", output / "library"
    if bag_path.exists():
        if not overwrite:
            raise FileExistsError(f"{bag_path} exists (pass overwrite / --force to replace it)")
        if not (bag_path / "metadata.yaml").is_file() and any(bag_path.iterdir()):
            raise FileExistsError(f"{bag_path} is not a rosbag2 directory: not removing it")
        shutil.rmtree(bag_path)
    if overwrite and library_dir.is_dir():
        for old in library_dir.glob("*.ply"):
            old.unlink()
    simulated, sensor_frame, description = demo_sensor(sensor)
    rng = np.random.default_rng(seed)
    scene = build_demo_scene(meshes, rng, num_objects=objects, arena_radius=config.arena_radius,
                             path=DrivePath() if config.trajectory == "drive" else None)
    if config.carry and objects >= 2 and frames >= 3:  # too short a bag keeps everyone
        carry_in_and_out(scene, rng, frames)
    if config.far_object is not None:  # after the carrying: the far object stays throughout
        add_far_object(scene, meshes, rng, config.far_object)
    poses = sensor_poses(frames, simulated, scene.trajectory)
    stream: Iterable[Frame] = scan_frames(scene, simulated, poses,
                                          np.random.default_rng([seed, 1]))
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=frames, desc="scan + write", unit="frame")
    output.mkdir(parents=True, exist_ok=True)
    library = write_library(scene, library_dir)
    info = {"kind": sensor, "model": description, **asdict(simulated)}
    summary = write_demo_bag(bag_path, scene, stream, storage=storage, sensor_frame=sensor_frame,
                             rate_hz=rate_hz, sensor_info=info, visibility=config.visibility)
    return DemoOutput(scene, summary, library, description, sensor_frame, preset)
