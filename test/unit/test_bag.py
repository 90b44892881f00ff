"""Demo bags: checked with rosbags' own AnyReader, and our tolerant reader against bad bags."""
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import StoragePlugin, Writer

from gmm_perception.data.procedural import procedural_meshes
from gmm_perception.data.sensors import SpinningLidar
from gmm_perception.data.pointcloud2 import MalformedCloudError, read_xyz
from gmm_perception.evaluation.bag import CLOCK_TOPIC, EPOCH_NS, POINTS_TOPIC, SCENE_KEY, \
    TF_STATIC_TOPIC, TF_TOPIC, default_typestore, make_demo, read_bag, stamp_ns, write_demo_bag
from gmm_perception.evaluation.scene import build_demo_scene, scan_frames, sensor_poses
from gmm_perception.geometry.transforms import quat_to_matrix
from raw_bag import pointcloud, write_raw_bag

UPSTREAM_TFMESSAGE_HASH = \
    "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
LIDAR = SpinningLidar(channels=16, vertical_fov=(-15.0, 15.0), horizontal_resolution=2.0)
FRAMES = 3
RATE_HZ = 5.0
STORAGES = ["mcap", "sqlite3"]
PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
FLOAT32, UINT8 = 7, 2


@pytest.fixture(scope="module")
def scene():
    return build_demo_scene(procedural_meshes(5, seed=0), np.random.default_rng(2))


@pytest.fixture(scope="module")
def frames(scene):
    return list(scan_frames(scene, LIDAR, sensor_poses(FRAMES, LIDAR, scene.orbit)))


@pytest.fixture(scope="module", params=STORAGES)
def demo_bag(request, scene, frames, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "bag"
    summary = write_demo_bag(path, scene, iter(frames), storage=request.param, rate_hz=RATE_HZ)
    return path, summary


def any_reader_messages(path):
    """topic -> [(log time, decoded message)] through rosbags' generic reader."""
    out = defaultdict(list)
    with AnyReader([path], default_typestore=default_typestore()) as reader:
        connections = {c.topic: c for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            out[conn.topic].append((log_ns, reader.deserialize(raw, conn.msgtype)))
    return out, connections


def ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_bag_reads_back_with_anyreader(demo_bag, scene, frames):
    path, summary = demo_bag
    messages, connections = any_reader_messages(path)
    assert {t: c.msgtype for t, c in connections.items()} == {
        POINTS_TOPIC: "sensor_msgs/msg/PointCloud2", TF_TOPIC: "tf2_msgs/msg/TFMessage",
        TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage", CLOCK_TOPIC: "rosgraph_msgs/msg/Clock"}
    counts = {topic: len(items) for topic, items in messages.items()}
    assert counts == {POINTS_TOPIC: FRAMES, TF_TOPIC: FRAMES, TF_STATIC_TOPIC: 1,
                      CLOCK_TOPIC: FRAMES} == summary.message_counts
    assert connections[TF_TOPIC].digest == UPSTREAM_TFMESSAGE_HASH
    # /tf_static is offered transient-local, so `ros2 bag play` latches the ground truth.
    (qos,) = connections[TF_STATIC_TOPIC].ext.offered_qos_profiles
    assert qos.durability == QosDurability.TRANSIENT_LOCAL and qos.depth == 1
    assert connections[TF_TOPIC].ext.offered_qos_profiles[0].durability == \
        QosDurability.VOLATILE

    stamps = [stamp_ns(k, RATE_HZ) for k in range(FRAMES)]
    assert stamps[0] == EPOCH_NS and stamps[1] - stamps[0] == 200_000_000
    assert [ns(m.clock) for _, m in messages[CLOCK_TOPIC]] == stamps
    for k, (log_ns, msg) in enumerate(messages[POINTS_TOPIC]):
        assert log_ns == ns(msg.header.stamp) == stamps[k]
        assert msg.header.frame_id == "lidar"
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == \
            [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]
        assert (msg.height, msg.width, msg.point_step, msg.row_step) == \
            (1, len(frames[k].points), 12, 12 * len(frames[k].points))
        assert not msg.is_bigendian and msg.is_dense
        np.testing.assert_array_equal(msg.data.view("<f4").reshape(-1, 3), frames[k].points)
    for k, (log_ns, msg) in enumerate(messages[TF_TOPIC]):
        (t,) = msg.transforms
        assert (t.header.frame_id, t.child_frame_id, ns(t.header.stamp), log_ns) == \
            ("world", "lidar", stamps[k], stamps[k])
        r, p = t.transform.rotation, t.transform.translation
        np.testing.assert_allclose(quat_to_matrix([r.x, r.y, r.z, r.w]),
                                   frames[k].T_world_sensor[:3, :3], atol=1e-12)
        np.testing.assert_allclose([p.x, p.y, p.z], frames[k].T_world_sensor[:3, 3])
    ((log_ns, static),) = messages[TF_STATIC_TOPIC]
    assert log_ns == stamps[0]
    truth = {t.child_frame_id: t for t in static.transforms}
    assert set(truth) == {f"truth/{o.name}" for o in scene.objects}
    for obj in scene.objects:
        t = truth[f"truth/{obj.name}"]
        assert t.header.frame_id == "world" and ns(t.header.stamp) == stamps[0]
        r, p = t.transform.rotation, t.transform.translation
        np.testing.assert_allclose(quat_to_matrix([r.x, r.y, r.z, r.w]),
                                   obj.T_world_object[:3, :3], atol=1e-12)
        np.testing.assert_allclose([p.x, p.y, p.z], obj.T_world_object[:3, 3])


def test_our_reader_round_trips_clouds_and_transforms(demo_bag, scene, frames):
    path, summary = demo_bag
    contents = read_bag(path)
    assert contents.warnings == []
    assert contents.storage == summary.storage
    assert {t: i.count for t, i in contents.topics.items()} == summary.message_counts
    stamps = [stamp_ns(k, RATE_HZ) for k in range(FRAMES)]
    assert [c.stamp_ns for c in contents.clouds] == stamps == contents.clock_ns
    for cloud, frame in zip(contents.clouds, frames):
        assert cloud.frame_id == "lidar" and cloud.points.dtype == np.float32
        np.testing.assert_array_equal(cloud.points, frame.points)  # bit for bit
    assert [(t.parent, t.child, t.stamp_ns) for t in contents.transforms] == \
        [("world", "lidar", s) for s in stamps]
    for t, frame in zip(contents.transforms, frames):
        np.testing.assert_allclose(t.T_parent_child, frame.T_world_sensor, atol=1e-12)
    truth = contents.truth_poses()
    assert set(truth) == {o.name for o in scene.objects}
    for obj in scene.objects:
        np.testing.assert_allclose(truth[obj.name], obj.T_world_object, atol=1e-12)
    described = {o["name"]: o for o in contents.scene["objects"]}
    assert {n: o["class"] for n, o in described.items()} == \
        {o.name: o.class_name for o in scene.objects}
    assert SCENE_KEY in contents.custom_data


def test_finer_clock_ticks_between_frames(scene, frames, tmp_path):
    summary = write_demo_bag(tmp_path / "bag", scene, frames, rate_hz=5.0, clock_rate_hz=20.0)
    clock = read_bag(tmp_path / "bag").clock_ns
    assert len(clock) == summary.message_counts[CLOCK_TOPIC] == FRAMES + 3 * (FRAMES - 1)
    assert np.all(np.diff(clock) == 50_000_000) and clock[0] == EPOCH_NS


# ------------------------------------------------------------------- damaged and partial bags

@pytest.mark.parametrize("storage", STORAGES)
def test_missing_topics_are_warnings(tmp_path, storage):
    ts = default_typestore()
    points = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_raw_bag(tmp_path / "bag", [(POINTS_TOPIC, "sensor_msgs/msg/PointCloud2", EPOCH_NS,
                                      pointcloud(ts, points))], storage)
    contents = read_bag(tmp_path / "bag")
    assert set(contents.topics) == {POINTS_TOPIC}
    assert len(contents.clouds) == 1
    np.testing.assert_array_equal(contents.clouds[0].points, points)
    assert contents.transforms == contents.static_transforms == contents.clock_ns == []
    assert contents.scene is None
    for topic in (TF_TOPIC, TF_STATIC_TOPIC, CLOCK_TOPIC):
        assert any(topic in w and "no" in w for w in contents.warnings), topic
    assert len(contents.warnings) == 3


def test_malformed_clouds_are_skipped_with_warnings(tmp_path):
    ts = default_typestore()
    good = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    raw_good = np.ascontiguousarray(good).reshape(-1).view(np.uint8)
    bad = {
        "truncated": pointcloud(ts, data=raw_good[:-4], width=2),
        "no z": pointcloud(ts, good, fields=[("x", 0, FLOAT32), ("y", 4, FLOAT32)]),
        "uint8 x": pointcloud(ts, good, fields=[("x", 0, UINT8), ("y", 4, FLOAT32),
                                                ("z", 8, FLOAT32)]),
        "field past point_step": pointcloud(ts, data=raw_good, width=3, point_step=8),
        "short row_step": pointcloud(ts, good, row_step=12),
    }
    messages = [(POINTS_TOPIC, "sensor_msgs/msg/PointCloud2", EPOCH_NS + i, msg)
                for i, msg in enumerate([pointcloud(ts, good), *bad.values(),
                                         pointcloud(ts, good + 1)])]
    # A message that is not even valid CDR, on an otherwise fine topic.
    messages.append((CLOCK_TOPIC, "rosgraph_msgs/msg/Clock", EPOCH_NS + 10, b"\x00\x01"))
    write_raw_bag(tmp_path / "bag", messages)
    contents = read_bag(tmp_path / "bag")
    assert len(contents.clouds) == 2
    np.testing.assert_array_equal(contents.clouds[0].points, good)
    np.testing.assert_array_equal(contents.clouds[1].points, good + 1)
    malformed = [w for w in contents.warnings if "malformed cloud" in w]
    assert len(malformed) == len(bad)
    assert any("does not decode" in w and CLOCK_TOPIC in w for w in contents.warnings)
    assert contents.clock_ns == []


def _node_side_malformations():
    """rclpy messages, as a node's subscription hands them over, each with one defect."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointField

    from gmm_perception.ros.pointcloud import xyz_to_cloud

    def make(mutate):
        msg = xyz_to_cloud(np.arange(12, dtype=np.float32).reshape(4, 3), "lidar",
                           Time(sec=1_700_000_000), fields={"intensity": np.ones(4, np.float32)})
        mutate(msg)
        return msg

    def set_field(index, **changes):
        def mutate(msg):
            old = msg.fields[index]
            values = {"name": old.name, "offset": old.offset, "datatype": old.datatype,
                      "count": old.count, **changes}
            msg.fields = msg.fields[:index] + [PointField(**values)] + msg.fields[index + 1:]
        return mutate

    def truncate(msg):
        msg.data = msg.data[:-5]

    def drop_z(msg):
        msg.fields = [f for f in msg.fields if f.name != "z"]

    def short_row_step(msg):
        msg.row_step -= 1

    def duplicate(msg):
        msg.fields = msg.fields + [PointField(name="x", offset=0, datatype=7, count=1)]

    return {
        "truncated data": make(truncate),
        "missing z": make(drop_z),
        "integer x": make(set_field(0, datatype=PointField.INT32)),
        "datatype 9": make(set_field(3, datatype=9)),
        "count 0": make(set_field(3, count=0)),
        "field past point_step": make(set_field(3, offset=14)),
        "row_step below width*point_step": make(short_row_step),
        "duplicate name": make(duplicate),
    }


def test_a_malformed_cloud_is_refused_identically_by_the_bag_reader_and_the_nodes(tmp_path):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2

    from gmm_perception.evaluation import bag
    from gmm_perception.ros import node_base

    # One error class everywhere, and the nodes count it as a rejected input, not a failure.
    assert bag.MalformedCloudError is MalformedCloudError is node_base.MalformedCloudError
    assert MalformedCloudError in node_base.REJECTED_INPUT_ERRORS

    malformed = _node_side_malformations()
    raws = {name: serialize_message(msg) for name, msg in malformed.items()}
    node_reasons = {}
    for name, raw in raws.items():  # the node path: what a subscription receives, decoded
        with pytest.raises(MalformedCloudError) as refused:
            node_base.read_xyz(deserialize_message(raw, PointCloud2))  # what the base reads
        node_reasons[name] = str(refused.value)
    write_raw_bag(tmp_path / "bag", [(POINTS_TOPIC, "sensor_msgs/msg/PointCloud2",
                                      EPOCH_NS + i, raw) for i, raw in enumerate(raws.values())])

    contents = read_bag(tmp_path / "bag")  # the bag path: the same bytes, recorded

    assert contents.clouds == []
    bag_reasons = [w for w in contents.warnings if "malformed cloud" in w]
    assert len(bag_reasons) == len(node_reasons)
    for (name, reason), warning in zip(node_reasons.items(), bag_reasons):
        assert f"malformed cloud ({reason})" in warning, name


def test_unexpected_topic_type_is_a_warning(tmp_path):
    ts = default_typestore()
    text = ts.types["std_msgs/msg/String"](data="not a cloud")
    write_raw_bag(tmp_path / "bag", [(POINTS_TOPIC, "std_msgs/msg/String", EPOCH_NS, text)])
    contents = read_bag(tmp_path / "bag")
    assert contents.clouds == []
    assert contents.topics[POINTS_TOPIC].msgtype == "std_msgs/msg/String"
    assert any("std_msgs/msg/String" in w and "expected" in w for w in contents.warnings)


def test_zero_quaternion_transform_is_skipped(tmp_path):
    ts = default_typestore()
    t = ts.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                      frame_id="world")

    def stamped(child, w):
        return t["geometry_msgs/msg/TransformStamped"](
            header=header, child_frame_id=child, transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=1.0, y=0.0, z=0.0),
                rotation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=w)))

    tf = t["tf2_msgs/msg/TFMessage"](transforms=[stamped("good", 1.0), stamped("bad", 0.0)])
    write_raw_bag(tmp_path / "bag", [(TF_TOPIC, "tf2_msgs/msg/TFMessage", EPOCH_NS, tf)])
    contents = read_bag(tmp_path / "bag")
    assert [x.child for x in contents.transforms] == ["good"]
    np.testing.assert_allclose(contents.transforms[0].T_parent_child[:3, 3], [1.0, 0.0, 0.0])
    assert any("bad" in w and "quaternion" in w for w in contents.warnings)


def test_foreign_type_definition_is_skipped_with_a_warning(tmp_path):
    """A TFMessage whose recorded type hash differs would decode as garbage: skip it."""
    ts = default_typestore()
    msgdef, _ = ts.generate_msgdef("tf2_msgs/msg/TFMessage", ros_version=2)
    writer = Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conn = writer.add_connection(TF_TOPIC, "tf2_msgs/msg/TFMessage", msgdef=msgdef,
                                 rihs01="RIHS01_" + "0" * 64)
    empty = ts.serialize_cdr(ts.types["tf2_msgs/msg/TFMessage"](transforms=[]),
                             "tf2_msgs/msg/TFMessage")
    writer.write(conn, EPOCH_NS, empty)
    writer.close()
    contents = read_bag(tmp_path / "bag")
    assert contents.transforms == []
    assert any(TF_TOPIC in w and "differs" in w for w in contents.warnings)


# --------------------------------------------------------------------------- cloud decoding

def cloud(fields, point_step, data, height=1, width=None, row_step=None, bigendian=False):
    width = width if width is not None else len(data) // (point_step * height)
    return SimpleNamespace(
        height=height, width=width, point_step=point_step, is_bigendian=bigendian,
        row_step=row_step if row_step is not None else width * point_step,
        fields=[SimpleNamespace(name=n, offset=o, datatype=d, count=1) for n, o, d in fields],
        data=np.frombuffer(data, dtype=np.uint8))


def cloud_xyz(msg) -> np.ndarray:
    """What the bag reader keeps of a cloud: every point, NaNs included."""
    return read_xyz(msg, drop_invalid=False)


def test_cloud_xyz_handles_offsets_padding_rows_and_byte_order():
    rng = np.random.default_rng(0)
    xyz = rng.standard_normal((2, 3, 3)).astype(np.float32)  # 2 rows of 3 points
    for order in ("<", ">"):
        # point: intensity f32 | z f64 | pad | y f32 | x f32 (24 bytes); rows padded by 8 bytes
        dtype = np.dtype({"names": ["i", "z", "y", "x"],
                          "formats": [order + "f4", order + "f8", order + "f4", order + "f4"],
                          "offsets": [0, 4, 16, 20], "itemsize": 24})
        rows = np.zeros((2, 3), dtype=dtype)
        rows["x"], rows["y"], rows["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
        data = b"".join(row.tobytes() + b"\xff" * 8 for row in rows)
        msg = cloud([("intensity", 0, FLOAT32), ("z", 4, 8), ("y", 16, FLOAT32),
                     ("x", 20, FLOAT32)], 24, data, height=2, width=3, row_step=80,
                    bigendian=order == ">")
        out = cloud_xyz(msg)
        assert out.dtype == np.float32 and out.shape == (6, 3)
        np.testing.assert_array_equal(out, xyz.reshape(-1, 3))


def test_cloud_xyz_rejects_inconsistent_headers():
    data = np.zeros(24, dtype=np.float32).tobytes()  # 2 points of 12 bytes... or not
    xyz = [("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32)]
    assert cloud_xyz(cloud(xyz, 12, data[:24], width=2)).shape == (2, 3)
    for defect, msg in {
        "bytes": cloud(xyz, 12, data, width=2),  # 96 bytes for 24 announced
        "duplicate": cloud(xyz + [("x", 0, FLOAT32)], 12, data[:24], width=2),
        "datatype 9": cloud([("x", 0, 9), ("y", 4, FLOAT32), ("z", 8, FLOAT32)], 12,
                            data[:24], width=2),
    }.items():
        with pytest.raises(MalformedCloudError):
            cloud_xyz(msg)
    empty = cloud(xyz, 12, b"", width=0)
    assert cloud_xyz(empty).shape == (0, 3)


def test_make_demo_writes_bag_and_library_and_never_overwrites_silently(tmp_path):
    meshes = procedural_meshes(5, seed=0)
    demo = make_demo(tmp_path / "demo", meshes, frames=2, objects=2, seed=1)
    assert (tmp_path / "demo" / "bag" / "metadata.yaml").is_file()
    assert sorted(p.name for p in (tmp_path / "demo" / "library").iterdir()) == \
        sorted(f"{o.name}.ply" for o in demo.scene.objects)
    contents = read_bag(tmp_path / "demo" / "bag")
    assert contents.warnings == [] and len(contents.clouds) == 2
    assert set(contents.truth_poses()) == {o.name for o in demo.scene.objects}
    assert contents.scene["sensor"]["channels"] == 64  # the OS1-64 description travels along
    with pytest.raises(FileExistsError):
        make_demo(tmp_path / "demo", meshes, frames=2, objects=2, seed=1)
    again = make_demo(tmp_path / "demo", meshes, frames=2, objects=3, seed=2, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "demo" / "library").iterdir()) == \
        sorted(f"{o.name}.ply" for o in again.scene.objects)
