"""A test-side ROS node: publishes inputs, records outputs and diagnostics, calls services."""
from __future__ import annotations

import time
from collections import defaultdict

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

RELIABLE = QoSProfile(depth=10)


class Probe:
    """Wraps one node in its own executor; every wait is bounded by a deadline."""

    def __init__(self, context, name: str = "test_probe"):
        self.node = Node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = defaultdict(list)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.diagnostic_levels: dict[str, int] = {}
        self.diagnostic_messages: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def spin(self, seconds: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.spin(0.02)

    def wait(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.spin(0.02)
        return condition()

    def publisher(self, msg_type, topic: str, best_effort: bool = True):
        return self.node.create_publisher(
            msg_type, topic, qos_profile_sensor_data if best_effort else RELIABLE)

    def record(self, msg_type, topic: str, best_effort: bool = False) -> list:
        """Subscribe and return the list the messages are appended to."""
        qos = qos_profile_sensor_data if best_effort else RELIABLE
        self.node.create_subscription(msg_type, topic, self.received[topic].append, qos)
        return self.received[topic]

    def publish_until(self, publisher, msg, condition, attempts: int = 50,
                      timeout: float = 0.3) -> bool:
        """Best effort: the first messages may go before the reader has matched our writer, so
        publish `msg` again until `condition()` holds (a round trip), at most `attempts` times."""
        for _ in range(attempts):
            publisher.publish(msg)
            if self.wait(condition, timeout):
                return True
        return False

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 15.0) -> bool:
        return self.wait(lambda: publisher.get_subscription_count() >= count, timeout)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 15.0) -> bool:
        return self.wait(lambda: self.node.count_publishers(topic) >= count, timeout)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
            self.diagnostic_levels[status.name] = int.from_bytes(status.level, "little") \
                if isinstance(status.level, bytes) else int(status.level)
            self.diagnostic_messages[status.name] = status.message

    def diagnostic_count(self, node_name: str, key: str) -> int:
        return int(self.diagnostics.get(node_name, {}).get(key, "0") or 0)

    def call(self, srv_type, service: str, request, timeout: float = 10.0):
        client = self.node.create_client(srv_type, service)
        try:
            if not self.wait(client.service_is_ready, timeout):
                raise TimeoutError(f"service {service} not available within {timeout} s")
            future = client.call_async(request)
            if not self.wait(future.done, timeout):
                raise TimeoutError(f"service {service} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
