"""Live evaluation: the bag played into the real nodes, running as their own process (the one
part of the evaluation that needs rclpy; the scoring and the report are evaluation/'s).

The pipeline YAML is started with gmm_perception_runner on simulated time. A player node
publishes the bag's /clock, /tf_static (latched), /tf and /points at the recorded rate times
`rate`, and records what the nodes publish: each registration result (object id, model, pose,
the node's own latency), the segmentation's markers (one message per processed frame) and the
nodes' diagnostics (dropped frames). Frames without any output were dropped.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from gmm_perception.evaluation.bag import BagContents
from gmm_perception.evaluation.offline import truth_objects
from gmm_perception.evaluation.records import ClassifiedObject, Detection, EvaluationRun, \
    FrameRecord, SurfaceCloud
from gmm_perception.evaluation.stages import CLASSIFICATION, REGISTRATION, SEGMENTATION, \
    SHAPE_MODEL, UPSAMPLING, pipeline_entries, resolved_configs
from gmm_perception.geometry.transforms import invert_transform
from gmm_perception.pipeline.configs import NodeConfig
from gmm_perception.pipeline.register import load_library

# A warm-up cloud the segmentation processes (so we know the nodes hear us) but that can never
# form a cluster or change a result: 8 points 0.3 m apart on a line 3-5 m from the sensor,
# inside any sensible crop box but far sparser than a cluster (cluster_eps, min_cluster_points).
_WARM_UP_POINTS = np.array([[0.0, 0.0, 3.0 + 0.3 * k] for k in range(8)], dtype=np.float32)
_QUIET_SECONDS = 3.0  # after the last frame: this long without new output ends the run


class LiveEvaluationError(RuntimeError):
    """The nodes could not be started or never answered; the message carries their log."""


def isolate_ros_domain() -> None:
    """Unless the caller chose a domain, evaluate on a random one, discovery on this host only:
    replayed /points and /tf must not reach a robot's nodes, nor theirs ours."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _ns(stamp) -> int:
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def _stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def write_live_pipeline(pipeline: Path, library_dir: Path, device: str, directory: Path) -> Path:
    """A copy of the pipeline YAML with absolute parameter files, the library and the device."""
    entries = pipeline_entries(pipeline)
    nodes = []
    for executable, entry in entries.items():
        inline = dict(entry.parameters, device=device)
        if executable == REGISTRATION:  # as the offline evaluator: the bag's library
            inline.update(reference_mode="library", library_dir=str(Path(library_dir).resolve()))
        nodes.append({"executable": executable, "name": entry.name,
                      "namespace": entry.namespace,
                      "parameters": [*map(str, entry.parameter_files), inline],
                      "remappings": dict(entry.remappings), "nice": entry.nice})
    path = directory / "live_pipeline.yaml"
    path.write_text(yaml.safe_dump({"nodes": nodes}, sort_keys=False))
    return path


def _topic(entry, suffix: str) -> str:
    return "/" + "/".join(part for part in (entry.namespace, entry.name, suffix) if part)


class _Player:
    """The player's rclpy node: publishes the bag, records the pipeline's outputs."""

    def __init__(self, entries, input_topic: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import PointCloud2
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from gmm_perception.ros.tf import TF_QOS, TF_STATIC_QOS
        from gmm_perception_msgs.msg import ObjectClassification, RegistrationResult

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("bag_player", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self.tf_pub = self.node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.static_pub = self.node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.points_pub = self.node.create_publisher(PointCloud2, input_topic,
                                                     qos_profile_sensor_data)
        self.results: dict[int, list] = defaultdict(list)
        self.result_arrival: dict[int, float] = {}
        self.marker_arrival: dict[int, float] = {}
        self.object_centres: dict[int, dict[int, np.ndarray]] = {}  # stamp -> id -> box centre
        self.dropped: dict[str, int] = {}
        self.last_output = time.monotonic()
        self.result_topic = _topic(entries[REGISTRATION], "result")
        self.node.create_subscription(RegistrationResult, self.result_topic, self._on_result,
                                      QoSProfile(depth=1000))
        self.node.create_subscription(MarkerArray, _topic(entries[SEGMENTATION], "markers"),
                                      self._on_markers, QoSProfile(depth=100))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.classifications: dict[int, list] = defaultdict(list)
        if CLASSIFICATION in entries:
            self.node.create_subscription(
                ObjectClassification, _topic(entries[CLASSIFICATION], "classification"),
                lambda msg: self.classifications[_ns(msg.header.stamp)].append(msg),
                QoSProfile(depth=1000))
        # Surface stages: their clouds and, to score against, the segmentation's object clouds.
        self.surfaces: dict[int, list] = defaultdict(list)
        topics = {"shape_model": (SHAPE_MODEL, "resampled"), "upsampling": (UPSAMPLING, "dense")}
        topics = {kind: _topic(entries[node], suffix) for kind, (node, suffix) in topics.items()
                  if node in entries}
        if topics:
            topics["input"] = _topic(entries[SEGMENTATION], "objects")
        for kind, topic in topics.items():
            self.node.create_subscription(PointCloud2, topic,
                                          lambda msg, kind=kind: self._on_surface(kind, msg),
                                          QoSProfile(depth=1000))
        self._Clock, self._TFMessage = Clock, TFMessage

    def _on_surface(self, kind: str, msg) -> None:
        from gmm_perception.data.pointcloud2 import object_id_of, read_xyz

        object_id = object_id_of(msg)
        self.surfaces[_ns(msg.header.stamp)].append(SurfaceCloud(
            -1 if object_id is None else object_id, kind, read_xyz(msg)))

    def _on_result(self, msg) -> None:
        stamp = _ns(msg.header.stamp)
        self.results[stamp].append(msg)
        self.result_arrival[stamp] = self.last_output = time.monotonic()

    def _on_markers(self, msg) -> None:
        if msg.markers:
            stamp = _ns(msg.markers[0].header.stamp)
            self.marker_arrival.setdefault(stamp, time.monotonic())
            self.last_output = time.monotonic()
            # Each object's box (its 12 edges, every corner three times): the mean is its centre.
            self.object_centres[stamp] = {
                marker.id: np.mean([[p.x, p.y, p.z] for p in marker.points], axis=0)
                for marker in msg.markers if marker.ns == "objects" and marker.points}

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "dropped" in values:
                self.dropped[status.name] = int(values["dropped"])

    def spin_until(self, deadline: float) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.executor.spin_once(timeout_sec=min(remaining, 0.01))

    def clock(self, stamp_ns: int) -> None:
        self.clock_pub.publish(self._Clock(clock=_stamp(stamp_ns)))

    def transforms(self, records, publisher) -> None:
        from gmm_perception.ros.tf import make_transform_stamped

        if records:
            publisher.publish(self._TFMessage(transforms=[
                make_transform_stamped(r.T_parent_child, r.parent, r.child, _stamp(r.stamp_ns))
                for r in records]))

    def cloud(self, points: np.ndarray, frame_id: str, stamp_ns: int) -> None:
        from gmm_perception.ros.pointcloud import xyz_to_cloud

        self.points_pub.publish(xyz_to_cloud(points.astype(np.float32), frame_id,
                                             _stamp(stamp_ns)))

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run_live(contents: BagContents, pipeline: str | Path, library_dir: str | Path, *,
             rate: float = 1.0, device: str = "auto", progress: bool = True,
             startup_timeout: float = 120.0, drain_timeout: float = 60.0,
             processes: bool = True) -> EvaluationRun:
    """The bag played into the pipeline's nodes at `rate` times its recorded speed: each node in
    its own process (gmm_perception_runner --processes, what measured faster here:
    bench/scene_latency.py), or with `processes=False` every node in one runner process."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    pipeline = Path(pipeline)
    entries = pipeline_entries(pipeline)
    # Validated as the nodes will validate them: a refused value stops here, with its reason.
    configs = {executable: resolved_configs(entry, {"device": device})
               for executable, entry in entries.items()}
    world_frame = configs[SEGMENTATION][NodeConfig].target_frame
    run = EvaluationRun("live", str(contents.path), world_frame, warnings=list(contents.warnings))
    run.truth = truth_objects(contents, world_frame, load_library(library_dir), run.warnings)
    if not contents.clouds:
        run.warnings.append("the bag has no clouds to play")
        return run
    isolate_ros_domain()
    from gmm_perception.ros.middleware import use_default_dds_profile

    use_default_dds_profile()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gmm_live_") as tmp:
        live_yaml = write_live_pipeline(pipeline, Path(library_dir), device, Path(tmp))
        log_path = Path(tmp) / "nodes.log"
        with open(log_path, "w") as log:
            runner = subprocess.Popen(
                [str(Path(sys.executable).parent / "gmm_perception_runner"), str(live_yaml),
                 "--use-sim-time", *(["--processes"] if processes else [])], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
                start_new_session=True)
            input_topic = entries[SEGMENTATION].remappings.get("points", "points")
            player = _Player(entries, "/" + input_topic.lstrip("/"))
            try:
                _play(player, contents, rate, startup_timeout, drain_timeout, progress,
                      log_path, runner)
            finally:
                player.close()
                _stop(runner)
        run.frames = _frames(contents, player, run.warnings)
    run.dropped_by_nodes = sum(player.dropped.values())
    run.dropped_per_node = dict(sorted(player.dropped.items()))
    run.seconds = time.perf_counter() - started
    return run


def _play(player: _Player, contents: BagContents, rate: float, startup_timeout: float,
          drain_timeout: float, progress: bool, log_path: Path, runner) -> None:
    clouds = contents.clouds
    first = clouds[0]
    warm_up_ns = first.stamp_ns - 10**9
    sensor_at_start = [r for r in contents.transforms if r.child == first.frame_id][:1]
    player.transforms(contents.static_transforms, player.static_pub)

    def alive_or_raise():
        if runner.poll() is not None:
            raise LiveEvaluationError(f"the pipeline exited ({runner.returncode}):\n"
                                      + log_path.read_text()[-4000:])

    # Start-up and discovery: warm-up clouds (placed where nothing can cluster) until the
    # segmentation answers one; best-effort clouds sent before discovery are simply lost.
    deadline = time.monotonic() + startup_timeout
    while (warm_up_ns not in player.marker_arrival
           or player.node.count_publishers(player.result_topic) == 0):
        alive_or_raise()
        if time.monotonic() > deadline:
            raise LiveEvaluationError("the pipeline did not answer within "
                                      f"{startup_timeout:.0f} s:\n" + log_path.read_text()[-4000:])
        player.clock(warm_up_ns)
        player.transforms([_at(r, warm_up_ns) for r in sensor_at_start], player.tf_pub)
        player.cloud(_WARM_UP_POINTS, first.frame_id, warm_up_ns)
        player.spin_until(time.monotonic() + 0.5)
    player.spin_until(time.monotonic() + 1.0)  # let the result writer match our reader too

    pending_tf = sorted(contents.transforms, key=lambda r: r.stamp_ns)
    frames = range(len(clouds))
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, desc=f"live x{rate:g}", unit="frame")
    t0 = time.monotonic()
    player.publish_wall = {}
    next_tf = 0
    for i in frames:
        cloud = clouds[i]
        player.spin_until(t0 + (cloud.stamp_ns - first.stamp_ns) / 1e9 / rate)
        alive_or_raise()
        player.clock(cloud.stamp_ns)
        due = []
        while next_tf < len(pending_tf) and pending_tf[next_tf].stamp_ns <= cloud.stamp_ns:
            due.append(pending_tf[next_tf])
            next_tf += 1
        player.transforms(due, player.tf_pub)
        player.publish_wall[cloud.stamp_ns] = time.monotonic()
        player.cloud(cloud.points, cloud.frame_id, cloud.stamp_ns)
    # Drain: wait until every frame has an answer or the pipeline has gone quiet.
    deadline = time.monotonic() + drain_timeout
    expected = {cloud.stamp_ns for cloud in clouds}
    while time.monotonic() < deadline:
        player.spin_until(time.monotonic() + 0.1)
        answered = expected <= set(player.marker_arrival)
        quiet = time.monotonic() - player.last_output > _QUIET_SECONDS
        if answered and quiet or quiet and time.monotonic() - player.publish_wall[
                clouds[-1].stamp_ns] > 2 * _QUIET_SECONDS:
            break


def _at(record, stamp_ns: int):
    from dataclasses import replace

    return replace(record, stamp_ns=stamp_ns)


def _frames(contents: BagContents, player: _Player, warnings: list[str]) -> list[FrameRecord]:
    frames = []
    for index, cloud in enumerate(contents.clouds):
        stamp = cloud.stamp_ns
        frame = FrameRecord(index, stamp)
        results = sorted(player.results.get(stamp, []), key=lambda r: _object_id(r.object_id))
        for result in results:
            frame.detections.append(Detection(
                _object_id(result.object_id), result.reference_name,
                invert_transform(_matrix(result.transform)), result.fitness,
                result.inlier_rmse, result.latency_ms, result.mode or "registered"))
        for msg in sorted(player.classifications.get(stamp, []), key=lambda m: m.object_id):
            frame.classifications.append(ClassifiedObject(
                _object_id(msg.object_id), msg.label,
                float(msg.scores[msg.class_id]) if len(msg.scores) > msg.class_id else 0.0,
                msg.fused_label, float(max(msg.fused_scores, default=0.0)), int(msg.observations)))
        frame.object_centres = player.object_centres.get(stamp, {})
        frame.surfaces = sorted(player.surfaces.get(stamp, []),
                                key=lambda c: (c.object_id, c.kind))
        sent = player.publish_wall.get(stamp)
        if results:
            frame.stage_ms["registration"] = float(sum(r.latency_ms for r in results))
            frame.stage_ms["end_to_end"] = (player.result_arrival[stamp] - sent) * 1e3
        elif stamp in player.marker_arrival:
            frame.status = "no_objects"
            frame.stage_ms["end_to_end"] = (player.marker_arrival[stamp] - sent) * 1e3
        else:
            frame.status, frame.message = "dropped", "no output from the pipeline"
        frames.append(frame)
    dropped = sum(frame.status == "dropped" for frame in frames)
    if dropped:
        warnings.append(f"{dropped} of {len(frames)} frames got no output (dropped by a "
                        "node's queue, rejected, or still in flight): try a lower --rate")
    return frames


def _object_id(text: str) -> int:
    """The segmentation's object id a result names (-1 for a cloud that was not an object)."""
    return int(text) if text.isdigit() else -1


def _matrix(transform) -> np.ndarray:
    from gmm_perception.ros.tf import transform_to_matrix

    return transform_to_matrix(transform)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
