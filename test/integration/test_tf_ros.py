"""TfBroadcaster and TfBuffer exchanging transforms over real DDS.

Each participant gets its own rclpy context, hence its own DDS participant, so traffic
between them goes through discovery and the wire exactly as between processes.
(test/conftest.py puts the session on its own DDS domain, on loopback.)
"""

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

pytestmark = pytest.mark.integration

import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from rclpy.time import Time
from tf2_msgs.msg import TFMessage

from gmm_perception.geometry.tf_tree import ExtrapolationError, UnknownFrameError
from gmm_perception.geometry.transforms import (
    compose,
    euler_to_matrix,
    interpolate_transform,
    make_transform,
    random_rotation,
)
from gmm_perception.ros.tf import (
    TfBroadcaster,
    TfBuffer,
    make_transform_stamped,
    matrix_to_pose,
    matrix_to_transform,
    pose_to_matrix,
    transform_to_matrix,
)

DEADLINE_S = 10.0
SECOND = 1_000_000_000


class Participant:
    """One rclpy context with one node and its executor: a stand-in for a process."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node: Node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def make_participant() -> Iterator[Callable[[str], Participant]]:
    created: list[Participant] = []

    def create(name: str) -> Participant:
        created.append(Participant(name))
        return created[-1]

    yield create
    for each in reversed(created):
        each.close()


def spin_until(
    condition: Callable[[], bool],
    participants: list[Participant],
    every_iteration: Callable[[], None] = lambda: None,
) -> bool:
    """Spin all participants until ``condition`` holds or DEADLINE_S passes."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        every_iteration()
        for each in participants:
            each.executor.spin_once(timeout_sec=0.05)
        if condition():
            return True
    return False


def stamp(nanoseconds: int) -> TimeMsg:
    return Time(nanoseconds=nanoseconds).to_msg()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def test_message_conversions_round_trip(rng):
    T = make_transform(random_rotation(rng), rng.uniform(-5, 5, 3))
    np.testing.assert_allclose(transform_to_matrix(matrix_to_transform(T)), T, atol=1e-12)
    np.testing.assert_allclose(pose_to_matrix(matrix_to_pose(T)), T, atol=1e-12)
    msg = make_transform_stamped(T, "map", "odom", Time(seconds=3, nanoseconds=5))
    assert (msg.header.frame_id, msg.child_frame_id) == ("map", "odom")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 5)
    np.testing.assert_allclose(transform_to_matrix(msg), T, atol=1e-12)
    assert make_transform_stamped(T, "map", "odom", stamp(7)).header.stamp.nanosec == 7
    assert msg.transform.rotation.w >= 0
    # 90 degrees about z, written by hand in ROS's (x, y, z, w) field order.
    rotation = msg.transform.rotation
    rotation.x, rotation.y, rotation.z, rotation.w = 0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)
    np.testing.assert_allclose(
        transform_to_matrix(msg)[:3, :3], euler_to_matrix(0, 0, np.pi / 2), atol=1e-12
    )
    with pytest.raises(ValueError, match="shape"):
        matrix_to_transform(np.eye(3))


def test_dynamic_and_static_transforms_over_dds(make_participant, rng):
    sender, receiver = make_participant("tf_sender"), make_participant("tf_receiver")
    broadcaster = TfBroadcaster(sender.node)
    buffer = TfBuffer(receiver.node)
    T_map_odom_at_100 = make_transform(euler_to_matrix(0, 0, 0.2), [1.0, 2.0, 0.0])
    T_map_odom_at_101 = make_transform(euler_to_matrix(0, 0, 0.6), [2.0, 2.5, 0.0])
    T_odom_base = make_transform(random_rotation(rng), [0.1, 0.2, 0.3])
    broadcaster.send_static(make_transform_stamped(T_odom_base, "odom", "base", stamp(0)))

    def publish_odometry() -> None:
        # /tf is volatile: anything sent before discovery completes is lost, so keep sending.
        broadcaster.send(
            [
                make_transform_stamped(T_map_odom_at_100, "map", "odom", stamp(100 * SECOND)),
                make_transform_stamped(T_map_odom_at_101, "map", "odom", stamp(101 * SECOND)),
            ]
        )

    at_101 = Time(seconds=101)
    assert spin_until(
        lambda: buffer.can_transform("map", "base", at_101), [sender, receiver], publish_odometry
    )
    midpoint = buffer.lookup_transform("map", "base", Time(nanoseconds=100 * SECOND + SECOND // 2))
    expected = compose(
        interpolate_transform(T_map_odom_at_100, T_map_odom_at_101, 0.5), T_odom_base
    )
    np.testing.assert_allclose(midpoint, expected, atol=1e-9)
    np.testing.assert_allclose(
        buffer.lookup_transform("map", "base"), T_map_odom_at_101 @ T_odom_base, atol=1e-9
    )
    assert buffer.frames == ["base", "map", "odom"]
    with pytest.raises(ExtrapolationError):
        buffer.lookup_transform("map", "base", Time(seconds=200))
    with pytest.raises(UnknownFrameError):
        buffer.lookup_transform("map", "camera")

    # Same topic names and QoS as tf2_ros, so tf2 tools and rviz can match our publishers.
    qos_by_topic = {
        topic: [
            info.qos_profile
            for info in receiver.node.get_publishers_info_by_topic(topic)
            if info.node_name == sender.node.get_name()
        ]
        for topic in ("/tf", "/tf_static")
    }
    assert [q.durability for q in qos_by_topic["/tf"]] == [DurabilityPolicy.VOLATILE]
    assert [q.durability for q in qos_by_topic["/tf_static"]] == [DurabilityPolicy.TRANSIENT_LOCAL]
    assert all(
        q.reliability == ReliabilityPolicy.RELIABLE for qs in qos_by_topic.values() for q in qs
    )


def test_late_joiner_receives_every_static_transform(make_participant):
    sender = make_participant("tf_static_sender")
    broadcaster = TfBroadcaster(sender.node)
    T_first_old = make_transform(np.eye(3), [9.0, 9.0, 9.0])
    T_first = make_transform(euler_to_matrix(0.1, 0.0, 0.0), [1.0, 0.0, 0.0])
    T_second = make_transform(euler_to_matrix(0.0, 0.0, 1.0), [0.0, 2.0, 0.0])
    # Separate calls: with keep-last 1, only accumulating makes "first" survive "second".
    broadcaster.send_static(make_transform_stamped(T_first_old, "base", "first", stamp(0)))
    broadcaster.send_static(make_transform_stamped(T_first, "base", "first", stamp(0)))
    broadcaster.send_static(make_transform_stamped(T_second, "base", "second", stamp(0)))

    late = make_participant("tf_late_joiner")
    buffer = TfBuffer(late.node)

    def both_known() -> bool:
        return buffer.can_transform("base", "first") and buffer.can_transform("base", "second")

    assert spin_until(both_known, [sender, late])
    np.testing.assert_allclose(buffer.lookup_transform("base", "first"), T_first, atol=1e-12)
    np.testing.assert_allclose(buffer.lookup_transform("base", "second"), T_second, atol=1e-12)
    # Static transforms hold at any time.
    assert buffer.can_transform("first", "second", Time(seconds=12345))


def test_node_receives_its_own_broadcasts(make_participant):
    solo = make_participant("tf_solo")
    broadcaster = TfBroadcaster(solo.node)
    buffer = TfBuffer(solo.node)
    T = make_transform(euler_to_matrix(0.0, 0.3, 0.0), [0.0, 0.0, 1.5])

    def send() -> None:
        broadcaster.send(make_transform_stamped(T, "odom", "base", stamp(5 * SECOND)))

    assert spin_until(lambda: buffer.can_transform("odom", "base"), [solo], send)
    np.testing.assert_allclose(buffer.lookup_transform("odom", "base"), T, atol=1e-12)


def test_invalid_transforms_are_skipped_without_stopping_the_executor(make_participant):
    sender, receiver = make_participant("tf_bad_sender"), make_participant("tf_bad_receiver")
    publisher = sender.node.create_publisher(TFMessage, "/tf", 100)
    buffer = TfBuffer(receiver.node)
    zero_rotation = make_transform_stamped(np.eye(4), "odom", "broken", stamp(SECOND))
    zero_rotation.transform.rotation.w = 0.0
    self_parent = make_transform_stamped(np.eye(4), "odom", "odom", stamp(SECOND))
    valid = make_transform_stamped(np.eye(4), "odom", "base", stamp(SECOND))

    def send() -> None:
        publisher.publish(TFMessage(transforms=[zero_rotation, self_parent, valid]))

    assert spin_until(lambda: buffer.can_transform("odom", "base"), [sender, receiver], send)
    assert "broken" not in buffer.frames
    assert not buffer.can_transform("odom", "broken")


def test_broadcaster_accepts_iterables(make_participant):
    solo = make_participant("tf_iterables")
    broadcaster = TfBroadcaster(solo.node)
    buffer = TfBuffer(solo.node)
    generator = (
        make_transform_stamped(
            make_transform(np.eye(3), [i, 0.0, 0.0]), "base", f"link_{i}", stamp(0)
        )
        for i in range(3)
    )
    broadcaster.send_static(generator)
    assert spin_until(
        lambda: all(buffer.can_transform("base", f"link_{i}") for i in range(3)), [solo]
    )
