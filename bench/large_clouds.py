"""Where best-effort delivery of large PointCloud2 messages stops, between two processes.

Usage: python bench/large_clouds.py [--profile config/fastdds_shm.xml] [--attempts 3]
           [--point-steps 16 32] [--no-stall] [--stream-seconds 3] [--busy 0]
           [--json bench/results/large_clouds.json]

This process publishes; a subscriber started as a second process (this script with
``--role subscriber``) reports every cloud it receives. Publisher and subscription use the same
QoS, keep-last 1 and volatile, best-effort on one topic and reliable on another.

* Single clouds: each size is sent ``--attempts`` times per QoS, one cloud at a time, each
  awaited for a time that grows with its size. "yes" means every attempt arrived. The
  subscriber process is stopped (SIGSTOP) while a cloud is published and resumed after: the
  whole cloud must then fit Fast DDS's buffers, as it must when the subscriber is busy, so the
  limit does not depend on the machine's load (``--no-stall`` lets the subscriber run).
* Streams: the OS1-128 and the depth camera send for ``--stream-seconds`` at their usual rates
  (10 and 30 Hz). With keep-last 1 a subscriber slower than the stream drops frames by design;
  none arriving is the failure.

Both processes use the Fast DDS profile named by ``--profile`` (default: the shipped one, which
every Python of the venv already points at), a random ROS domain and localhost discovery, like
the tests. ``--busy N`` runs N busy-loop processes beside them, as a loaded machine would.

Point layouts: point_step 16 is x, y, z float32 and 4 bytes of padding (PCL's PointXYZ);
point_step 32 adds intensity float32 at 16, ring uint16 at 20 and time float32 at 24 (a LiDAR
driver's layout). The named sensors are sent organised (height = rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "large_clouds.json"
DEFAULT_PROFILE = REPO_ROOT / "config" / "fastdds_shm.xml"
BEST_EFFORT_TOPIC, RELIABLE_TOPIC = "/bench_large/best_effort", "/bench_large/reliable"
TOPICS = ((BEST_EFFORT_TOPIC, "best_effort"), (RELIABLE_TOPIC, "reliable"))

# (name, height, width): the sensors the shipped profile must carry, and a ladder around them.
CLOUDS = [
    ("64k points", 1, 65_536),
    ("Ouster OS1-128 (2048 x 128)", 128, 2048),
    ("512k points", 1, 524_288),
    ("1280 x 720 depth camera", 720, 1280),
    ("1M points", 1, 1_048_576),
    ("1.5M points", 1, 1_500_000),
    ("2M points", 1, 2_000_000),
    ("3M points", 1, 3_000_000),
    ("4M points", 1, 4_000_000),
    ("5M points", 1, 5_000_000),
]
MUST_DELIVER = ("Ouster OS1-128 (2048 x 128)", "1280 x 720 depth camera")
# (name, height, width, rate Hz): the same sensors streaming at their usual rates.
STREAMS = [("Ouster OS1-128 (2048 x 128)", 128, 2048, 10.0),
           ("1280 x 720 depth camera", 720, 1280, 30.0)]


def make_cloud(height: int, width: int, point_step: int, index: int):
    """An organised (height > 1) or unorganised cloud; header.stamp.sec carries `index`."""
    import numpy as np
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointCloud2, PointField

    fields = [PointField(name=axis, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, axis in enumerate("xyz")]
    if point_step == 32:
        fields += [PointField(name="intensity", offset=16, datatype=PointField.FLOAT32, count=1),
                   PointField(name="ring", offset=20, datatype=PointField.UINT16, count=1),
                   PointField(name="time", offset=24, datatype=PointField.FLOAT32, count=1)]
    msg = PointCloud2(height=height, width=width, fields=fields, is_bigendian=False,
                      point_step=point_step, row_step=point_step * width, is_dense=True)
    msg.header.frame_id = "bench"
    msg.header.stamp = Time(sec=index)
    data = msg.data  # grown in place: assigning msg.data would copy (see ros/pointcloud.py)
    data.append(0)
    data *= point_step * width * height
    floats = np.frombuffer(data, dtype=np.float32).reshape(height * width, point_step // 4)
    floats[:, :3] = np.random.default_rng(index).uniform(-50, 50, (height * width, 3))
    return msg


def qos(reliable: bool):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT)


def subscriber() -> int:
    """Print one JSON line per received cloud: topic, index, points, bytes."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("bench_large_clouds_sub")

    def report(topic):
        def callback(msg):
            print(json.dumps({"topic": topic, "index": msg.header.stamp.sec,
                              "points": msg.height * msg.width, "bytes": len(msg.data)}),
                  flush=True)
        return callback

    for topic, label in TOPICS:
        node.create_subscription(PointCloud2, topic, report(topic), qos(label == "reliable"))
    print(json.dumps({"ready": True}), flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


class Receipts:
    """The subscriber's stdout lines, read on a thread."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def wait(self, predicate, timeout: float, spin) -> dict | None:
        """The next line that satisfies `predicate` (earlier ones are dropped), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.02)
            except queue.Empty:
                spin()
                continue
            if predicate(item):
                return item
        return None

    def clear(self) -> None:
        while not self.lines.empty():
            self.lines.get()


class Bench:
    def __init__(self, args, node, publishers, receipts: Receipts, subscriber_pid: int):
        import rclpy

        self.args, self.publishers, self.receipts = args, publishers, receipts
        self.subscriber_pid = subscriber_pid
        self.spin = lambda: rclpy.spin_once(node, timeout_sec=0)
        self.index = 1  # header.stamp.sec of the next cloud: tells the clouds apart

    def connect(self) -> None:
        """Small clouds until both topics carry one (best-effort ones are lost while the
        subscriber does not know this writer yet)."""
        if self.receipts.wait(lambda item: item.get("ready"), 30, self.spin) is None:
            raise SystemExit("the subscriber process did not start")
        small = make_cloud(1, 10, 16, 0)
        for topic, _ in TOPICS:
            for _ in range(100):
                self.publishers[topic].publish(small)
                if self.receipts.wait(lambda item: item.get("topic") == topic, 0.3, self.spin):
                    break
            else:
                raise SystemExit(f"no warm-up cloud arrived on {topic}")
        time.sleep(0.5)
        self.receipts.clear()

    @staticmethod
    def patience(size: int) -> float:
        return 3.0 + size / 5e6  # 5 MB/s and 3 s more: far beyond what shared memory needs

    def single_clouds(self, point_step: int) -> list[dict]:
        rows = []
        for name, height, width in CLOUDS:
            if height * width > self.args.max_points:
                continue
            row = {"cloud": name, "point_step": point_step, "height": height, "width": width,
                   "points": height * width, "bytes": height * width * point_step,
                   "attempts": self.args.attempts}
            for topic, label in TOPICS:
                delivered, seconds = 0, []
                for _ in range(self.args.attempts):
                    index, msg = self.index, make_cloud(height, width, point_step, self.index)
                    self.index += 1
                    start = time.monotonic()
                    if self.args.stall:
                        os.kill(self.subscriber_pid, signal.SIGSTOP)
                    try:
                        self.publishers[topic].publish(msg)
                        if self.args.stall:
                            time.sleep(0.2)  # the fragments are in the stopped reader's queue
                    finally:
                        if self.args.stall:
                            os.kill(self.subscriber_pid, signal.SIGCONT)
                    del msg
                    got = self.receipts.wait(
                        lambda item: item.get("index") == index and item.get("topic") == topic,
                        self.patience(row["bytes"]), self.spin)
                    if got is not None:
                        if got["bytes"] != row["bytes"]:
                            raise SystemExit(f"{name}: {got['bytes']} of {row['bytes']} bytes")
                        delivered += 1
                        seconds.append(time.monotonic() - start)
                row[label] = delivered
                row[f"{label}_seconds"] = seconds
            rows.append(row)
            print(f"  {name}, point_step {point_step}: best-effort {row['best_effort']}/"
                  f"{row['attempts']}, reliable {row['reliable']}/{row['attempts']}",
                  file=sys.stderr, flush=True)
        return rows

    def streams(self, point_step: int) -> list[dict]:
        rows = []
        for name, height, width, rate in STREAMS:
            frames = max(1, round(rate * self.args.stream_seconds))
            row = {"cloud": name, "point_step": point_step, "points": height * width,
                   "bytes": height * width * point_step, "rate_hz": rate, "frames": frames}
            msg = make_cloud(height, width, point_step, self.index)
            for topic, label in TOPICS:
                first, start = self.index, time.monotonic()
                for k in range(frames):
                    while time.monotonic() < start + k / rate:  # a late publish sends at once
                        self.spin()
                        time.sleep(0.001)
                    msg.header.stamp.sec = self.index
                    self.publishers[topic].publish(msg)
                    self.index += 1
                row[f"{label}_send_hz"] = frames / (time.monotonic() - start)
                last, got = self.index, set()
                deadline = time.monotonic() + self.patience(row["bytes"])
                while len(got) < frames and time.monotonic() < deadline:
                    item = self.receipts.wait(
                        lambda item: item.get("topic") == topic
                        and first <= item.get("index", -1) < last,
                        deadline - time.monotonic(), self.spin)
                    if item is not None:
                        got.add(item["index"])
                row[label] = len(got)
            del msg
            rows.append(row)
            print(f"  stream {name} at {rate:g} Hz, point_step {point_step}: best-effort "
                  f"{row['best_effort']}/{frames}, reliable {row['reliable']}/{frames}",
                  file=sys.stderr, flush=True)
        return rows


def print_report(args, rows: list[dict], stream_rows: list[dict]) -> list[str]:
    """Print the tables; return what the target misses."""
    print(f"PointCloud2 delivery between two processes on one host, Fast DDS profile "
          f"{args.profile.name}, {args.busy} busy-loop processes beside them, "
          f"{os.cpu_count()} CPUs.\n\nSingle clouds ({args.attempts} attempts per size and QoS"
          f"{', subscriber stopped while each is sent' if args.stall else ''}; "
          "yes = every attempt delivered, lossy = some):\n")
    print("| cloud | point_step | points | MB | best-effort | reliable |")
    print("|---|---:|---:|---:|---|---|")
    for row in rows:
        def verdict(label):
            word = "yes" if row[label] == row["attempts"] else "lossy" if row[label] else "no"
            return f"{word} ({row[label]}/{row['attempts']})"
        print(f"| {row['cloud']} | {row['point_step']} | {row['points']:,} "
              f"| {row['bytes'] / 1e6:.1f} | {verdict('best_effort')} | {verdict('reliable')} |")
    if stream_rows:
        print(f"\nStreams ({args.stream_seconds:g} s at the sensor's rate; keep-last 1, so a "
              "subscriber slower than the stream drops frames by design):\n")
        print("| sensor | point_step | MB | rate | best-effort delivered | reliable delivered |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in stream_rows:
            print(f"| {row['cloud']} | {row['point_step']} | {row['bytes'] / 1e6:.1f} "
                  f"| {row['rate_hz']:g} Hz | {row['best_effort']}/{row['frames']} "
                  f"| {row['reliable']}/{row['frames']} |")
    missing = [f"{row['cloud']} (point_step {row['point_step']})" for row in rows
               if row["cloud"] in MUST_DELIVER and row["best_effort"] < row["attempts"]]
    missing += [f"{row['cloud']} stream (point_step {row['point_step']})"
                for row in stream_rows if not row["best_effort"]]
    print("\ntarget: every OS1-128 and 1280 x 720 depth camera cloud delivered best-effort, and "
          "their streams carried: " + ("pass" if not missing else "FAIL: " + ", ".join(missing)))
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["publisher", "subscriber"], default="publisher")
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--point-steps", type=int, nargs="+", default=[16, 32],
                        choices=[16, 32])
    parser.add_argument("--max-points", type=int, default=5_000_000)
    parser.add_argument("--stream-seconds", type=float, default=3.0,
                        help="seconds each sensor streams at its rate (0: no streams)")
    parser.add_argument("--stall", action=argparse.BooleanOptionalAction, default=True,
                        help="stop the subscriber process while each single cloud is sent "
                        "(default; --no-stall lets it run, so results depend on the load)")
    parser.add_argument("--busy", type=int, default=0,
                        help="busy-loop processes run beside the two (a loaded machine)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    if args.role == "subscriber":
        return subscriber()

    # Both processes: this profile, a domain of their own, discovery on this host only.
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(args.profile.resolve())
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from sensor_msgs.msg import PointCloud2

    child = subprocess.Popen([sys.executable, __file__, "--role", "subscriber"],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.busy)]
    rclpy.init()
    node = rclpy.create_node("bench_large_clouds_pub")
    publishers = {topic: node.create_publisher(PointCloud2, topic, qos(label == "reliable"))
                  for topic, label in TOPICS}
    bench = Bench(args, node, publishers, Receipts(child), child.pid)
    rows, stream_rows = [], []
    try:
        bench.connect()
        for point_step in args.point_steps:
            rows += bench.single_clouds(point_step)
            if args.stream_seconds > 0:
                stream_rows += bench.streams(point_step)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for process in burners:
            process.kill()
            process.wait()
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()

    missing = print_report(args, rows, stream_rows)
    report = {
        "profile": str(args.profile),
        "attempts": args.attempts,
        "stream_seconds": args.stream_seconds,
        "busy_processes": args.busy,
        "subscriber_stalled": args.stall,
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")},
        "results": rows,
        "streams": stream_rows,
        "pass": not missing,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
