"""The base class of every gmm_perception node: lifecycle, parameters, QoS, hand-over, diagnostics.

A node subclass only declares its parameters, builds its stage, converts messages and publishes:

    class MyNode(PerceptionNode):
        parameters = [ParameterSpec("voxel_size", 0.05, "...", min_value=0.0, max_value=1.0)]

        def configure_node(self):          # load the model, warm up, create outputs
            self.stage = build_stage(self.param("voxel_size"))
            self.pub = self.create_output(PointCloud2, "~/points")

        def process(self, msg):            # runs on the worker thread, never in a callback
            cloud = self.read_cloud(msg)
            self.pub.publish(xyz_to_cloud(self.stage(cloud.points), cloud.frame_id, cloud.stamp))

Incoming messages are handed to one worker thread through a bounded drop-oldest queue: the
callback returns at once, memory stays bounded under any input rate, and displaced frames are
counted. Malformed, empty and untransformable inputs are rejected with a log line and counted;
the next good input is processed as usual.
"""
from __future__ import annotations

import threading
import time
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.time import Time
from sensor_msgs.msg import PointCloud2

from gmm_perception.geometry.transforms import transform_points
from gmm_perception.models.checkpoint import CheckpointError, load_checkpoint
from gmm_perception.pipeline.preprocess import EmptyCloudError
from gmm_perception.pipeline.stats import StageStats
from gmm_perception.pipeline.work_queue import DropOldestQueue
from gmm_perception.ros.middleware import use_default_dds_profile
from gmm_perception.ros.parameters import ParameterSpec, declare_parameters
from gmm_perception.ros.pointcloud import MalformedCloudError, read_xyz
from gmm_perception.ros.qos import RELIABILITY_CHOICES, make_qos
from gmm_perception.geometry.tf_tree import TransformError
from gmm_perception.ros.tf import TfBuffer

if TYPE_CHECKING:  # torch is imported where a model is loaded: nodes without one never pay for it
    import torch

# Inputs that are the sender's fault: counted as rejected, logged, and the node carries on.
REJECTED_INPUT_ERRORS = (MalformedCloudError, EmptyCloudError, TransformError)

BASE_PARAMETERS = [
    ParameterSpec("autostart", True, "Walk the lifecycle to active at start-up (no lifecycle "
                  "manager needed); false waits for configure/activate requests.", read_only=True),
    ParameterSpec("device", "auto", "Torch device for models: auto picks CUDA when present, "
                  "cpu, or cuda (falls back to the CPU with a warning).", read_only=True,
                  choices=("auto", "cpu", "cuda")),
    ParameterSpec("input_reliability", "best_effort", "Reliability QoS of the input "
                  "subscription (sensor data is best effort).", read_only=True,
                  choices=RELIABILITY_CHOICES),
    ParameterSpec("input_depth", 1, "History depth of the input subscription.", read_only=True,
                  min_value=1, max_value=100),
    ParameterSpec("output_reliability", "reliable", "Reliability QoS of the outputs.",
                  read_only=True, choices=RELIABILITY_CHOICES),
    ParameterSpec("output_depth", 5, "History depth of the outputs.", read_only=True,
                  min_value=1, max_value=100),
    ParameterSpec("queue_size", 1, "Frames waiting for the worker; when full the oldest is "
                  "dropped and counted (1 = always the newest).", read_only=True,
                  min_value=1, max_value=32),
    ParameterSpec("target_frame", "", "Frame to transform input clouds into before processing, "
                  "through TF (empty keeps the input frame).", read_only=True),
    ParameterSpec("tf_timeout", 0.1, "Seconds to wait for the transform of an input stamp.",
                  min_value=0.0, max_value=5.0),
    ParameterSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
                  read_only=True, min_value=0.1, max_value=60.0),
]


@dataclass(frozen=True)
class Cloud:
    """An input cloud as the stages see it: finite xyz plus the header it arrived with."""

    points: np.ndarray  # (N,3) float32, finite
    frame_id: str
    stamp: Any  # builtin_interfaces/Time


class PerceptionNode(LifecycleNode, metaclass=ABCMeta):
    """Lifecycle node with the shared input checks, TF, QoS, worker hand-over and diagnostics."""

    #: Parameters of the subclass, declared after the base ones.
    parameters: ClassVar[Sequence[ParameterSpec]] = ()
    #: Message type and (relative, remappable) topic of the input.
    input_type: ClassVar[type] = PointCloud2
    input_topic: ClassVar[str] = "points"
    #: Whether the node looks up transforms even without a target_frame.
    uses_tf: ClassVar[bool] = False

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self, [*BASE_PARAMETERS, *self.parameters])
        self.stats = StageStats()
        self.device = None
        self.device_note = ""
        self.checkpoint_note = ""
        self.model_status = "unconfigured"
        self.last_error = ""
        self.tf_buffer: TfBuffer | None = None
        self._outputs: list = []
        self._subscription = None
        self._queue: DropOldestQueue = DropOldestQueue(self.param("queue_size"))
        self._worker: threading.Thread | None = None
        self._stop_worker = threading.Event()
        self._reconfigure_requested = threading.Event()
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.param("diagnostics_period"), self.publish_diagnostics)
        if self.param("autostart"):
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ----------------------------------------------------------------- subclass hooks
    def configure_node(self) -> None:
        """Build the stage, load and warm up the model, create outputs (may raise)."""

    def cleanup_node(self) -> None:
        """Release what configure_node created (outputs are destroyed by the base)."""

    def reconfigure(self) -> None:
        """Rebuild what depends on parameters changed at run time (default: nothing)."""

    @abstractmethod
    def process(self, msg) -> None:
        """Handle one input message on the worker thread: convert, run the stage, publish."""

    # ----------------------------------------------------------------- helpers for subclasses
    def param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def create_output(self, msg_type: type, topic: str, *, transient_local: bool = False):
        """A lifecycle publisher with the output QoS; destroyed on cleanup."""
        qos = make_qos(self.param("output_reliability"), self.param("output_depth"), transient_local)
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._outputs.append(publisher)
        return publisher

    def resolve_torch_device(self):
        """The configured torch device, CUDA falling back to the CPU with a logged warning."""
        from gmm_perception.device import describe_device, resolve_device

        choice = resolve_device(self.param("device"))
        if choice.fallback_reason:
            self.get_logger().warning(f"{choice.fallback_reason}: using {choice.device}")
        self.device, self.device_note = choice.device, describe_device(choice.device)
        return self.device

    def load_model_checkpoint(self, path: str, expected_model: str) -> dict:
        """A checked checkpoint on the configured device (CheckpointError names the file)."""
        device = self.device if self.device is not None else self.resolve_torch_device()
        payload = load_checkpoint(path, expected_model=expected_model, map_location=device)
        self.checkpoint_note = f"{path} (model {payload['model']}, code " \
                               f"{payload['metadata'].get('code_version', 'unknown')})"
        return payload

    def load_model(self, path: str, expected_model: str | None
                   ) -> tuple[torch.nn.Module, dict]:
        """A registry model from a checked checkpoint (load_model_checkpoint: the diagnostics
        name it), built, weights loaded, on the node's device and in eval mode; and the payload."""
        from gmm_perception.models.registry import model_from_payload

        payload = self.load_model_checkpoint(path, expected_model=expected_model)
        return model_from_payload(payload, self.device), payload

    def read_cloud(self, msg: PointCloud2) -> Cloud:
        """Validated finite xyz of a PointCloud2, in target_frame when one is set."""
        points = read_xyz(msg)  # drops NaN/inf rows
        if len(points) == 0:
            raise EmptyCloudError(f"no finite points among {msg.width * msg.height}")
        frame_id = msg.header.frame_id
        target = self.param("target_frame")
        if target and target != frame_id:
            points = transform_points(self.lookup(target, frame_id, msg.header.stamp), points)
            frame_id = target
        return Cloud(points=points, frame_id=frame_id, stamp=msg.header.stamp)

    def lookup(self, target_frame: str, source_frame: str, stamp) -> np.ndarray:
        """4x4 transform from source_frame to target_frame at `stamp`, waiting up to tf_timeout."""
        time_at = Time.from_msg(stamp)
        deadline = time.monotonic() + self.param("tf_timeout")
        while True:
            try:
                return self.tf_buffer.lookup_transform(target_frame, source_frame, time_at)
            except TransformError:
                if time.monotonic() >= deadline or self._stop_worker.is_set():
                    raise
                time.sleep(0.005)

    # ----------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        started = time.perf_counter()
        if self.tf_buffer is None and (self.param("target_frame") or self.uses_tf):
            self.tf_buffer = TfBuffer(self)  # created here, on the executor's thread
        try:
            self.configure_node()
        except (CheckpointError, ValueError, OSError, RuntimeError) as exc:
            self._destroy_outputs()
            self.model_status, self.last_error = "error", str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self.publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self.model_status, self.last_error = "ready", ""
        self.get_logger().info(f"configured in {time.perf_counter() - started:.2f} s"
                               + (f" on {self.device_note}" if self.device_note else ""))
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = make_qos(self.param("input_reliability"), self.param("input_depth"))
        self._subscription = self.create_subscription(
            self.input_type, self.input_topic, self._on_input, qos)
        self._queue.reopen()
        self._stop_worker.clear()
        self._worker = threading.Thread(target=self._work, name=f"{self.get_name()}-worker",
                                        daemon=True)
        self._worker.start()
        self.model_status = "active"
        self.get_logger().info(
            f"active: '{self.resolve_topic_name(self.input_topic)}' "
            f"({self.param('input_reliability')}, depth {self.param('input_depth')})")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.model_status = "ready"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cleanup_node()
        self._destroy_outputs()
        self.model_status = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown()
        self.model_status = "finalized"
        return super().on_shutdown(state)

    def shutdown(self) -> None:
        """Stop the worker and release outputs whatever the lifecycle state (process exit)."""
        self._stop()
        self.cleanup_node()
        self._destroy_outputs()

    def _stop(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._stop_worker.set()
        self._queue.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        self._worker = None
        self._queue.clear()

    def _destroy_outputs(self) -> None:
        for publisher in self._outputs:
            self.destroy_lifecycle_publisher(publisher)
        self._outputs.clear()

    # ----------------------------------------------------------------- data path
    def _on_input(self, msg) -> None:
        """Subscription callback: hand the message over, never process it here."""
        self.stats.count("received")
        if self._queue.put(msg) is not None:
            self.stats.count("dropped")

    def _work(self) -> None:
        while not self._stop_worker.is_set():
            msg = self._queue.get(timeout=0.2)
            if msg is not None:
                self._process_one(msg)

    def _process_one(self, msg) -> None:
        if self._reconfigure_requested.is_set():
            self._reconfigure_requested.clear()
            self.reconfigure()
        started = time.perf_counter()
        try:
            self.process(msg)
        except REJECTED_INPUT_ERRORS as exc:
            self.stats.count("rejected")
            self.get_logger().warning(
                f"rejected input from frame '{getattr(msg.header, 'frame_id', '?')}': "
                f"{type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
            return
        except Exception as exc:  # a bug or a model failure must not kill the worker
            self.stats.count("failed")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"processing failed: {self.last_error}",
                                    throttle_duration_sec=1.0)
            return
        processing_ms = (time.perf_counter() - started) * 1e3
        self.stats.record_processed(processing_ms, self._latency_ms(msg))

    def _latency_ms(self, msg) -> float | None:
        """Stamp-to-publish latency on the node's clock (sim time when use_sim_time)."""
        stamp = getattr(getattr(msg, "header", None), "stamp", None)
        if stamp is None or (stamp.sec == 0 and stamp.nanosec == 0):
            return None
        return (self.get_clock().now().nanoseconds - Time.from_msg(stamp).nanoseconds) / 1e6

    def _on_parameters_set(self, parameters) -> None:
        self._reconfigure_requested.set()

    # ----------------------------------------------------------------- diagnostics
    def publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        level, message = self._health(snap)
        values = {
            "lifecycle_state": self.model_status,
            "device": self.device_note or str(self.param("device")),
            "checkpoint": self.checkpoint_note,
            "input_rate_hz": f"{snap.input_rate_hz:.2f}",
            "processed_rate_hz": f"{snap.processed_rate_hz:.2f}",
            "received": snap.received, "processed": snap.processed, "dropped": snap.dropped,
            "rejected": snap.rejected, "failed": snap.failed,
            "latency_p50_ms": f"{snap.latency_p50_ms:.1f}",
            "latency_p95_ms": f"{snap.latency_p95_ms:.1f}",
            "processing_p50_ms": f"{snap.processing_p50_ms:.1f}",
            "processing_p95_ms": f"{snap.processing_p95_ms:.1f}",
            "last_error": self.last_error,
        }
        status = DiagnosticStatus(
            level=level, name=self.get_fully_qualified_name(), message=message,
            hardware_id=self.device_note or "",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)

    def _health(self, snap) -> tuple[bytes, str]:
        if self.model_status == "error":
            return DiagnosticStatus.ERROR, f"not running: {self.last_error}"
        if self.model_status != "active":
            return DiagnosticStatus.WARN, f"{self.model_status}: not processing"
        summary = (f"{snap.input_rate_hz:.1f} Hz in, {snap.processed_rate_hz:.1f} Hz out, "
                   f"{snap.window_dropped} dropped, {snap.window_rejected} rejected")
        if snap.window_failed:
            return DiagnosticStatus.ERROR, f"{snap.window_failed} frame(s) failed; {summary}"
        if snap.window_rejected:
            return DiagnosticStatus.WARN, summary
        return DiagnosticStatus.OK, summary


def run_node(node_class: type[PerceptionNode], node_name: str, args: list[str] | None = None) -> None:
    """Console-script body: one node in its own process until Ctrl-C or shutdown."""
    use_default_dds_profile()
    rclpy.init(args=args)
    node = node_class(node_name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
