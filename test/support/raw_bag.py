"""Bags written message by message with rosbags alone: an independent writer for the tests."""
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from gmm_perception.geometry.transforms import matrix_to_quat

EPOCH_NS = 1_700_000_000 * 10**9
PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
FLOAT32 = 7


def typestore():
    return get_typestore(Stores.ROS2_KILTED)


def _time(ts, stamp):
    return ts.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9)


def tf_message(ts, transforms):
    """transforms: [(parent, child, 4x4, stamp ns)] -> a tf2_msgs/TFMessage."""
    t = ts.types
    out = []
    for parent, child, T, stamp in transforms:
        x, y, z, w = matrix_to_quat(np.asarray(T)[:3, :3])
        out.append(t["geometry_msgs/msg/TransformStamped"](
            header=t["std_msgs/msg/Header"](stamp=_time(ts, stamp), frame_id=parent),
            child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](*map(float, np.asarray(T)[:3, 3])),
                rotation=t["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z),
                                                           w=float(w)))))
    return t["tf2_msgs/msg/TFMessage"](transforms=out)


def clock(ts, stamp):
    return ts.types["rosgraph_msgs/msg/Clock"](clock=_time(ts, stamp))


def pointcloud(ts, points=None, *, fields=None, point_step=12, data=None, height=1, width=None,
               row_step=None, bigendian=False, frame_id="lidar", stamp=EPOCH_NS):
    """A PointCloud2 built field by field, so a test can make any part of it inconsistent."""
    t = ts.types
    PointField = t["sensor_msgs/msg/PointField"]
    if points is not None:
        data = np.ascontiguousarray(points, dtype="<f4").reshape(-1).view(np.uint8)
        width = len(points)
    fields = fields if fields is not None else [("x", 0, FLOAT32), ("y", 4, FLOAT32),
                                                ("z", 8, FLOAT32)]
    return t["sensor_msgs/msg/PointCloud2"](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
            frame_id=frame_id),
        height=height, width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields],
        is_bigendian=bigendian, point_step=point_step,
        row_step=row_step if row_step is not None else width * point_step,
        data=np.asarray(data, dtype=np.uint8), is_dense=True)


def write_raw_bag(path, messages, storage="mcap"):
    """messages: [(topic, msgtype, log ns, message object or raw bytes)], written as given."""
    ts = typestore()
    writer = Writer(path, version=9, storage_plugin=PLUGINS[storage])
    writer.open()
    connections = {}
    for topic, msgtype, log_ns, msg in messages:
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
        raw = msg if isinstance(msg, bytes) else ts.serialize_cdr(msg, msgtype)
        writer.write(connections[topic], log_ns, raw)
    writer.close()


