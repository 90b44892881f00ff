"""End-to-end demo: the pipeline runner in its own process, fed a simulated sensor over DDS."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2

from gmm_perception.paths import config_path
from gmm_perception.ros.middleware import use_default_dds_profile
from gmm_perception.ros.pointcloud import read_xyz, xyz_to_cloud


def simulated_scan(rng: np.random.Generator, count: int, sensor_x: float) -> np.ndarray:
    """A ground plane with three boxes, seen from a sensor at (sensor_x, 0, 1.5), with noise."""
    ground = count * 6 // 10
    points = [np.column_stack([rng.uniform(-20, 20, ground), rng.uniform(-20, 20, ground),
                               np.zeros(ground)])]
    per_box = (count - ground) // 3
    for centre in ((4.0, 2.0, 0.5), (-3.0, -5.0, 0.4), (8.0, -2.0, 0.75)):
        faces = rng.uniform(-0.5, 0.5, (per_box, 3))
        axis = rng.integers(0, 3, per_box)
        faces[np.arange(per_box), axis] = np.sign(faces[np.arange(per_box), axis]) * 0.5
        points.append(faces * (2 * np.array(centre[2])) + np.array(centre))
    cloud = np.concatenate(points)
    cloud[:, 0] -= sensor_x
    cloud[:, 2] -= 1.5
    cloud += rng.normal(0, 0.01, cloud.shape)
    cloud[rng.random(len(cloud)) < 0.01] = np.nan  # dropouts, as real drivers report them
    return cloud.astype(np.float32)


def run_demo(seconds: float = 5.0, rate_hz: float = 10.0, points: int = 200_000) -> int:
    use_default_dds_profile()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    pipeline = config_path("preprocess_pipeline.yaml")
    runner = subprocess.Popen([sys.executable, "-m", "gmm_perception.ros.runner", str(pipeline)])
    rclpy.init()
    node = rclpy.create_node("gmm_perception_demo")
    outputs, diagnostics = [], {}
    node.create_subscription(PointCloud2, "/preprocess/points", outputs.append, QoSProfile(depth=10))
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.update(
        {s.name: {kv.key: kv.value for kv in s.values} for s in m.status}), 10)
    publisher = node.create_publisher(PointCloud2, "/points", qos_profile_sensor_data)
    try:
        deadline = time.monotonic() + 30
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        if publisher.get_subscription_count() == 0:
            print("the pipeline did not come up within 30 s", file=sys.stderr)
            return 1
        rng = np.random.default_rng(0)
        frames = int(seconds * rate_hz)
        print(f"publishing {frames} clouds of {points:,} points at {rate_hz:g} Hz on /points ...")
        for i in range(frames):
            due = time.monotonic() + 1.0 / rate_hz
            publisher.publish(xyz_to_cloud(simulated_scan(rng, points, 0.1 * i), "lidar",
                                           node.get_clock().now().to_msg()))
            while time.monotonic() < due:
                rclpy.spin_once(node, timeout_sec=max(0.0, due - time.monotonic()))
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        stats = diagnostics.get("/preprocess", {})
        kept = np.mean([len(read_xyz(m)) for m in outputs]) if outputs else 0
        print("\n| metric | value |\n|---|---|")
        print(f"| clouds published | {frames} |\n| clouds received back | {len(outputs)} |")
        print(f"| points per cloud in / out (voxel 0.05 m) | {points:,} / {kept:,.0f} |")
        for key in ("dropped", "rejected", "latency_p50_ms", "latency_p95_ms",
                    "processing_p50_ms", "processing_p95_ms"):
            print(f"| {key} | {stats.get(key, 'n/a')} |")
        return 0 if outputs else 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        runner.terminate()
        runner.wait(10)
