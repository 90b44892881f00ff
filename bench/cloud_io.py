"""Benchmark PointCloud2 <-> numpy conversion against a naive per-point struct loop.

Usage: python bench/cloud_io.py [--points 1000000] [--repeats 30] [--json out.json]

The cloud has x, y, z, intensity as float32 (point_step 16). The naive loop
is timed on a 50k-point slice and scaled linearly to the full cloud, since
running it on 1M points would take seconds per repeat.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import platform
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from gmm_perception.data.pointcloud2 import read_xyz
from gmm_perception.ros.pointcloud import xyz_to_cloud

REPO_ROOT = Path(__file__).resolve().parents[1]

NAIVE_POINTS = 50_000
TARGETS_MS = {"read_xyz": 5.0, "xyz_to_cloud": 10.0}
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "cloud_io.json"


def make_cloud(points: np.ndarray, intensity: np.ndarray) -> PointCloud2:
    """x, y, z, intensity float32 cloud, packed with numpy independently of the module."""
    layout = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])
    packed = np.empty(len(points), dtype=layout)
    for column, axis in enumerate("xyz"):
        packed[axis] = points[:, column]
    packed["intensity"] = intensity
    msg = PointCloud2(height=1, width=len(points), is_bigendian=False, point_step=16,
                      row_step=16 * len(points), is_dense=True)
    msg.fields = [PointField(name=name, offset=4 * index, datatype=PointField.FLOAT32, count=1)
                  for index, name in enumerate(layout.names)]
    data = array.array("B")
    data.frombytes(packed.tobytes())
    msg.data = data
    return msg


def naive_read_xyz(msg: PointCloud2) -> np.ndarray:
    """Per-point struct.unpack_from, dropping non-finite rows."""
    rows = []
    for index in range(msg.width * msg.height):
        x, y, z = struct.unpack_from("<3f", msg.data, index * msg.point_step)
        if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
            rows.append((x, y, z))
    return np.array(rows, dtype=np.float32).reshape(-1, 3)


def naive_xyz_to_cloud(points: np.ndarray) -> PointCloud2:
    """Per-point struct.pack_into into a bytearray."""
    buffer = bytearray(12 * len(points))
    is_dense = True
    for index, (x, y, z) in enumerate(points.tolist()):
        struct.pack_into("<3f", buffer, 12 * index, x, y, z)
        is_dense = is_dense and math.isfinite(x) and math.isfinite(y) and math.isfinite(z)
    msg = PointCloud2(height=1, width=len(points), is_bigendian=False, point_step=12,
                      row_step=12 * len(points), is_dense=is_dense)
    msg.fields = [PointField(name=axis, offset=4 * index, datatype=PointField.FLOAT32, count=1)
                  for index, axis in enumerate("xyz")]
    msg.data = array.array("B", buffer)
    return msg


def time_ms(function: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    points = rng.normal(scale=20.0, size=(args.points, 3)).astype(np.float32)
    intensity = rng.random(args.points, dtype=np.float32)
    cloud = make_cloud(points, intensity)
    naive_points = min(NAIVE_POINTS, args.points)
    naive_slice = points[:naive_points]
    naive_cloud = make_cloud(naive_slice, intensity[:naive_points])
    scale = args.points / naive_points

    operations = {
        "read_xyz": (lambda: read_xyz(cloud), lambda: naive_read_xyz(naive_cloud)),
        "xyz_to_cloud": (lambda: xyz_to_cloud(points), lambda: naive_xyz_to_cloud(naive_slice)),
    }
    # Same answers before timing anything.
    if not np.array_equal(read_xyz(naive_cloud), naive_read_xyz(naive_cloud)):
        raise SystemExit("read_xyz disagrees with the naive reader")
    if bytes(xyz_to_cloud(naive_slice).data) != bytes(naive_xyz_to_cloud(naive_slice).data):
        raise SystemExit("xyz_to_cloud disagrees with the naive writer")

    results = []
    for name, (ours, naive) in operations.items():
        samples = time_ms(ours, args.repeats)
        naive_ms = float(np.median(time_ms(naive, repeats=3, warmup=0))) * scale
        median_ms = float(np.median(samples))
        results.append({
            "operation": name,
            "ours_median_ms": median_ms,
            "ours_p90_ms": float(np.percentile(samples, 90)),
            "naive_ms_scaled": naive_ms,
            "speedup": naive_ms / median_ms,
            "target_ms": TARGETS_MS[name],
            "pass": median_ms <= TARGETS_MS[name],
        })

    print(f"PointCloud2 I/O, {args.points:,} points (x, y, z, intensity float32, point_step 16), "
          f"{args.repeats} repeats; naive per-point struct loop timed on {naive_points:,} points "
          f"and scaled x{scale:g}.\n")
    print("| operation | ours median ms | ours p90 ms | naive ms (scaled) | speed-up | target "
          "| pass/fail |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in results:
        print(f"| {row['operation']} | {row['ours_median_ms']:.2f} | {row['ours_p90_ms']:.2f} "
              f"| {row['naive_ms_scaled']:.0f} | {row['speedup']:.0f}x "
              f"| <= {row['target_ms']:g} ms | {'pass' if row['pass'] else 'FAIL'} |")

    report = {
        "points": args.points,
        "repeats": args.repeats,
        "naive_points": naive_points,
        "naive_scale": scale,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "ROS_PYTHON_CHECK_FIELDS": os.environ.get("ROS_PYTHON_CHECK_FIELDS", ""),
        },
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if all(row["pass"] for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
