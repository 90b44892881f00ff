"""tf over rclpy without tf2_ros: message conversions, a broadcaster and a buffer.

Topics and QoS follow tf2_ros so that our nodes interoperate with rviz, robot_state_publisher
and tf2 tools: ``/tf`` is reliable/volatile keep-last 100, ``/tf_static`` reliable/transient-local
keep-last 1. The tree logic lives in the ROS-free ``gmm_perception.geometry.tf_tree``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Pose, Transform, TransformStamped
from numpy.typing import ArrayLike, NDArray
from rclpy.callback_groups import CallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from tf2_msgs.msg import TFMessage

from gmm_perception.geometry.tf_tree import (
    DEFAULT_CACHE_DURATION_NS,
    LATEST_TIME,
    NANOSECONDS_PER_SECOND,
    TransformCache,
)
from gmm_perception.geometry.transforms import make_transform, matrix_to_quat, quat_to_matrix

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
TF_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
TF_STATIC_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# A late joiner receives the one latched message of every static broadcaster at once; a
# depth of 1 on the reader side could drop all but one of them before they are taken,
# so the listener keeps 100 like tf2_ros's StaticListenerQoS (depth does not affect matching).
TF_STATIC_LISTENER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
_INVALID_INPUT_LOG_PERIOD_S = 5.0
_DEFAULT_CACHE_DURATION = Duration(nanoseconds=DEFAULT_CACHE_DURATION_NS)


def _matrix_from(translation, rotation) -> NDArray[np.float64]:
    """4x4 from any message pair of (x, y, z) and (x, y, z, w) fields."""
    q, t = rotation, translation
    return make_transform(quat_to_matrix([q.x, q.y, q.z, q.w]), [t.x, t.y, t.z])


def _fill_from(matrix: ArrayLike, translation, rotation) -> None:
    """Write a 4x4 into a message pair of (x, y, z) and (x, y, z, w) fields."""
    matrix = _as_single_transform(matrix)
    translation.x, translation.y, translation.z = (float(v) for v in matrix[:3, 3])
    rotation.x, rotation.y, rotation.z, rotation.w = (float(v) for v in
                                                      matrix_to_quat(matrix[:3, :3]))


def transform_to_matrix(msg: Transform | TransformStamped) -> NDArray[np.float64]:
    """4x4 ``T_parent_child`` of a Transform (or the transform of a TransformStamped)."""
    transform = msg.transform if isinstance(msg, TransformStamped) else msg
    return _matrix_from(transform.translation, transform.rotation)


def matrix_to_transform(T: ArrayLike) -> Transform:
    """geometry_msgs/Transform of a 4x4 rigid transform."""
    msg = Transform()
    _fill_from(T, msg.translation, msg.rotation)
    return msg


def make_transform_stamped(
    T: ArrayLike, parent: str, child: str, stamp: Time | TimeMsg
) -> TransformStamped:
    """TransformStamped whose transform maps points in ``child`` into ``parent``."""
    msg = TransformStamped()
    msg.header.frame_id = parent
    msg.header.stamp = stamp.to_msg() if isinstance(stamp, Time) else stamp
    msg.child_frame_id = child
    msg.transform = matrix_to_transform(T)
    return msg


def pose_to_matrix(pose: Pose) -> NDArray[np.float64]:
    """4x4 transform of a Pose: maps points in the posed body's frame into the pose's frame."""
    return _matrix_from(pose.position, pose.orientation)


def matrix_to_pose(T: ArrayLike) -> Pose:
    """geometry_msgs/Pose of a 4x4 rigid transform."""
    pose = Pose()
    _fill_from(T, pose.position, pose.orientation)
    return pose


def _as_single_transform(T: ArrayLike) -> NDArray[np.float64]:
    matrix = np.asarray(T, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"transform must have shape (4, 4), got {matrix.shape}")
    return matrix


def _stamp_to_ns(stamp: TimeMsg) -> int:
    return stamp.sec * NANOSECONDS_PER_SECOND + stamp.nanosec


def _as_list(transforms: TransformStamped | Iterable[TransformStamped]) -> list[TransformStamped]:
    return [transforms] if isinstance(transforms, TransformStamped) else list(transforms)


class TfBroadcaster:
    """Publishes dynamic transforms on ``/tf`` and static ones on ``/tf_static``."""

    def __init__(self, node: Node) -> None:
        self._publisher = node.create_publisher(TFMessage, TF_TOPIC, TF_QOS)
        self._static_publisher = node.create_publisher(TFMessage, TF_STATIC_TOPIC, TF_STATIC_QOS)
        self._static_by_child: dict[str, TransformStamped] = {}
        self._static_lock = threading.Lock()

    def send(self, transforms: TransformStamped | Iterable[TransformStamped]) -> None:
        """Publish dynamic transforms in one TFMessage."""
        self._publisher.publish(TFMessage(transforms=_as_list(transforms)))

    def send_static(self, transforms: TransformStamped | Iterable[TransformStamped]) -> None:
        """Add or replace static transforms (keyed by child frame) and republish the whole set.

        The topic keeps only the last message for late joiners, so each message must
        carry every static transform this broadcaster has ever sent, as in tf2_ros.
        """
        with self._static_lock:
            for transform in _as_list(transforms):
                self._static_by_child[transform.child_frame_id] = transform
            message = TFMessage(transforms=list(self._static_by_child.values()))
            self._static_publisher.publish(message)


class TfBuffer:
    """Listens to ``/tf`` and ``/tf_static`` and answers transform lookups.

    Lookups never block: poll ``can_transform`` (e.g. from a timer) instead of waiting,
    which would deadlock a single-threaded executor that must deliver the data.
    """

    def __init__(
        self,
        node: Node,
        cache_duration: Duration = _DEFAULT_CACHE_DURATION,
        callback_group: CallbackGroup | None = None,
    ) -> None:
        self._logger = node.get_logger()
        self._cache = TransformCache(cache_duration_ns=cache_duration.nanoseconds)
        # Subscription callbacks and lookups may run on different executor threads.
        self._lock = threading.Lock()
        node.create_subscription(
            TFMessage, TF_TOPIC, self._on_tf, TF_QOS, callback_group=callback_group
        )
        node.create_subscription(
            TFMessage,
            TF_STATIC_TOPIC,
            self._on_tf_static,
            TF_STATIC_LISTENER_QOS,
            callback_group=callback_group,
        )

    def lookup_transform(
        self, target_frame: str, source_frame: str, time: Time | None = None
    ) -> NDArray[np.float64]:
        """4x4 ``T_target_source`` mapping points in ``source_frame`` into ``target_frame``.

        ``time`` None (or zero) means the latest time every link on the path has data for.
        Raises a ``TransformError`` subclass when the transform is not available.
        """
        with self._lock:
            return self._cache.lookup(target_frame, source_frame, self._time_ns(time))

    def can_transform(self, target_frame: str, source_frame: str, time: Time | None = None) -> bool:
        """Whether ``lookup_transform`` with the same arguments would succeed now."""
        with self._lock:
            return self._cache.can_transform(target_frame, source_frame, self._time_ns(time))

    @property
    def frames(self) -> list[str]:
        """Every frame received so far, sorted."""
        with self._lock:
            return self._cache.frames

    @staticmethod
    def _time_ns(time: Time | None) -> int:
        return LATEST_TIME if time is None else time.nanoseconds

    def _on_tf(self, msg: TFMessage) -> None:
        self._store(msg, is_static=False)

    def _on_tf_static(self, msg: TFMessage) -> None:
        self._store(msg, is_static=True)

    def _store(self, msg: TFMessage, is_static: bool) -> None:
        with self._lock:
            for transform in msg.transforms:
                self._store_one(transform, is_static)

    def _store_one(self, transform: TransformStamped, is_static: bool) -> None:
        parent, child = transform.header.frame_id, transform.child_frame_id
        try:
            T = transform_to_matrix(transform)
            if is_static:
                self._cache.set_static_transform(parent, child, T)
                return
            stamp_ns = _stamp_to_ns(transform.header.stamp)
            stored = self._cache.set_transform(parent, child, T, stamp_ns)
        except ValueError as error:
            # One malformed transform from another node must not take down our executor.
            self._warn(f"ignoring invalid transform {parent!r} -> {child!r}: {error}")
            return
        if not stored:
            self._warn(f"ignoring transform {parent!r} -> {child!r}: older than the cache duration")

    def _warn(self, message: str) -> None:
        self._logger.warning(message, throttle_duration_sec=_INVALID_INPUT_LOG_PERIOD_S)
