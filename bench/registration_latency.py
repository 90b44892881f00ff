"""Node latency benchmark: registration_node, as its own process, from a cloud's stamp to its TF.

    python bench/registration_latency.py [--points 100000] [--frames 40] [--rate 5]

A posed object (a procedural chair, 0.8 m across) sampled at --points points with sensor noise is
published best effort at --rate Hz, stamped with the publisher's clock at send time; the node runs
with the shipped checkpoint and the pipeline's preprocessing (voxel grid, then 1024 points for the
network). Latency = arrival of the TF on /tf minus the cloud's stamp: DDS transfer, conversion,
preprocessing, DeepGMR, optional ICP and the TF publication. One row per setting
(--settings: refinement, then `track` for the default register-once-then-track or `global` for
global registration of every cloud).
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench._report import environment, print_table, write_json  # noqa: E402

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from gmm_perception.data.mesh_ops import sample_surface  # noqa: E402
from gmm_perception.data.procedural import procedural_mesh  # noqa: E402
from gmm_perception.geometry.transforms import make_transform, random_rotation, \
    rotation_error_deg, transform_points  # noqa: E402
from gmm_perception.ros.pointcloud import xyz_to_cloud  # noqa: E402
from gmm_perception.ros.tf import transform_to_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_setting(node: Node, executor, workdir: Path, args, setting: str) -> dict:
    icp, mode = setting.split(":")
    name = f"{icp}_{mode}"
    mesh = procedural_mesh("chair", np.random.default_rng(11))
    mesh.apply_scale(0.4)
    reference = workdir / "chair.ply"
    mesh.export(reference)
    topic, child = f"/latency_points_{name}", f"chair_{name}"
    log = open(workdir / f"node_{name}.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "registration_node"), "--ros-args",
         "-r", f"__node:=latency_{name}", "-r", f"points:={topic}",
         "-p", f"reference_file:={reference}", "-p", f"icp:={icp}",
         "-p", f"tracking:={'true' if mode == 'track' else 'false'}",
         "-p", f"voxel_size:={args.voxel}", "-p", f"child_frame:={child}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    arrivals: dict[int, tuple[float, np.ndarray]] = {}

    def on_tf(msg: TFMessage) -> None:
        now = node.get_clock().now().nanoseconds
        for tf in msg.transforms:
            if tf.child_frame_id == child:
                stamp = tf.header.stamp.sec * 10**9 + tf.header.stamp.nanosec
                arrivals[stamp] = ((now - stamp) / 1e6, transform_to_matrix(tf))

    processing: list[tuple[float, float]] = []  # the node's own (p50, p95) per diagnostics window

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith(f"latency_{name}") and int(values.get("processed", 0)):
                processing.append((float(values["processing_p50_ms"]),
                                   float(values["processing_p95_ms"])))

    subscription = node.create_subscription(TFMessage, "/tf", on_tf, 100)
    diagnostics = node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 20)
    publisher = node.create_publisher(PointCloud2, topic, qos_profile_sensor_data)
    rng = np.random.default_rng(5)
    pose = make_transform(random_rotation(rng), [2.0, 0.5, 0.3])
    scan = sample_surface(mesh, args.points, rng) + rng.normal(0, 0.003, (args.points, 3))
    points = transform_points(pose, scan).astype(np.float32)

    def send() -> int:
        stamp = node.get_clock().now()
        publisher.publish(xyz_to_cloud(points, "sensor", stamp.to_msg()))
        return stamp.nanoseconds

    try:
        deadline = time.monotonic() + 120
        while not arrivals and time.monotonic() < deadline:  # discovery and warm-up
            send()
            end = time.monotonic() + 1.0
            while not arrivals and time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
        if not arrivals:
            raise RuntimeError(f"no TF from the node; see {log.name}")
        arrivals.clear()
        processing.clear()
        stamps = []
        for _ in range(args.frames):
            stamps.append(send())
            end = time.monotonic() + 1.0 / args.rate
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.005)
        end = time.monotonic() + 3.0
        while len(arrivals) < len(stamps) and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        process.send_signal(2)
        process.wait(10)
        node.destroy_subscription(subscription)
        node.destroy_subscription(diagnostics)
        node.destroy_publisher(publisher)
    latencies = np.array([arrivals[s][0] for s in stamps if s in arrivals])
    rotation = [rotation_error_deg(arrivals[s][1][:3, :3], pose[:3, :3]) for s in stamps
                if s in arrivals]
    return {"setting": setting, "icp": icp, "tracking": mode == "track", "points": args.points, "voxel": args.voxel, "sent": len(stamps),
            "received": len(latencies), "latency_ms_p50": float(np.median(latencies)),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
            "latency_ms_max": float(latencies.max()),
            # Inside the node: conversion, preprocessing, registration, publishing (per window).
            "processing_ms_p50": float(np.median([p50 for p50, _ in processing]))
            if processing else float("nan"),
            "processing_ms_p95_max": max((p95 for _, p95 in processing), default=float("nan")),
            "rotation_error_deg_median": float(np.median(rotation))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--rate", type=float, default=5.0, help="clouds per second")
    parser.add_argument("--voxel", type=float, default=0.01, help="node voxel_size, metres")
    parser.add_argument("--settings", default="none:global,point_to_point:global,"
                        "point_to_point:track", help="refinement:global|track, comma-separated")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench" / "results" / "registration_latency.json")
    args = parser.parse_args()
    rclpy.init()
    node = Node("latency_bench")
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for setting in args.settings.split(","):
            results.append(run_setting(node, executor, Path(workdir), args, setting))
            print(f"{setting}: p95 {results[-1]['latency_ms_p95']:.0f} ms", file=sys.stderr)
    rclpy.try_shutdown()
    print(f"\n{args.points} points per cloud at {args.rate:g} Hz, voxel {args.voxel} m; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print_table(["refinement:registration", "sent", "TFs", "latency p50 (ms)", "p95 (ms)", "max (ms)",
                 "in-node p50 (ms)", "in-node p95 (ms)", "median rot. err. (deg)"],
                [[r["setting"], str(r["sent"]), str(r["received"]), f"{r['latency_ms_p50']:.0f}",
                  f"{r['latency_ms_p95']:.0f}", f"{r['latency_ms_max']:.0f}",
                  f"{r['processing_ms_p50']:.0f}", f"{r['processing_ms_p95_max']:.0f}",
                  f"{r['rotation_error_deg_median']:.1f}"] for r in results], "lrrrrrrrr")
    write_json(args.json, {"environment": environment(), "results": results})


if __name__ == "__main__":
    main()
