"""The base classes of every gmm_perception node: lifecycle, parameters, QoS, hand-over, health.

A node names its executable (its parameters are the fields of the configs that
pipeline/configs.py lists for it), builds its stages from the validated configs and
converts messages:

    class MyNode(PerceptionNode):
        executable = "preprocess_node"

        def configure_node(self):          # build the stage, create outputs (may raise)
            self.output = self.create_output(PointCloud2, "~/points")
            self.apply_configs(self.configs)

        def apply_configs(self, configs):  # build the stages from validated configs
            self.stage = Preprocessor(configs[PreprocessConfig])

        def process(self, msg):            # runs on the worker thread, never in a callback
            cloud = self.read_cloud(msg)
            self.output.publish(xyz_to_cloud(self.stage(cloud.points), cloud.frame_id, cloud.stamp))

Parameters: a change is validated as a whole new set of configs before it is accepted (a refused
change says why), and an accepted change is applied: the worker rebuilds the stages from the new
configs before its next frame. A value refused at start-up leaves the node up, unconfigured,
with the reason in its log and in /diagnostics.

Incoming messages are handed to one worker thread through a bounded drop-oldest queue: the
callback returns at once, memory stays bounded under any input rate, and displaced frames are
counted. Everything a frame does (reconfiguration, processing, statistics) runs inside one
guard: malformed, empty and untransformable inputs are rejected (WARN) and counted, any other
error is counted as failed (ERROR) and the next good input is processed as usual. A worker
that dies, or stays on one frame longer than `stall_timeout`, is reported (ERROR) and replaced.

Large clouds: between processes on one host, with the shipped Fast DDS profile
(config/fastdds_shm.xml), best-effort clouds of up to 64 MB arrive even at a subscriber that is
busy while they come in (a 2048 x 128 OS1-128 scan and a 1280 x 720 depth cloud with 32-byte
points: 8.4 and 29.5 MB); larger ones are then lost, so set `input_reliability: reliable` for
them (measured by bench/large_clouds.py).
"""
from __future__ import annotations

import signal
import threading
import time
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.time import Time
from sensor_msgs.msg import PointCloud2

from gmm_perception.config import ConfigError, from_values
from gmm_perception.data.pointcloud2 import MalformedCloudError, object_id_of, read_xyz
from gmm_perception.geometry.points import EmptyCloudError
from gmm_perception.geometry.tf_tree import TransformError
from gmm_perception.pipeline.configs import NODE_CONFIGS, NodeConfig, ReuseConfig, \
    build_configs
from gmm_perception.pipeline.preprocess import ObjectStep, cloud_in_frame
from gmm_perception.pipeline.reuse import reused_step
from gmm_perception.pipeline.stats import StageStats
from gmm_perception.pipeline.work_queue import DropOldestQueue
from gmm_perception.ros.middleware import use_default_dds_profile
from gmm_perception.ros.parameters import declare_parameters, parameter_values, \
    undeclared_overrides
from gmm_perception.ros.qos import make_qos
from gmm_perception.ros.tf import TfBuffer

# Inputs that are the sender's fault: counted as rejected, logged (WARN), the node carries on.
REJECTED_INPUT_ERRORS = (MalformedCloudError, EmptyCloudError, TransformError)
# Seconds a stopping process waits for the frame at work (launch escalates after 5 s).
SHUTDOWN_WAIT = 1.0


@dataclass(frozen=True)
class Cloud:
    """An input cloud as the stages see it: finite xyz plus the header it arrived with."""

    points: np.ndarray  # (N,3) float32, finite
    frame_id: str
    stamp: Any  # builtin_interfaces/Time
    # The received frame's origin in frame_id (the sensor's position, for a cloud that came
    # in its sensor frame).
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))


def stamp_problem(stamp) -> str:
    """Why a header stamp is not a ROS time ('' when it is): ROS time starts at 0."""
    if stamp.sec < 0:
        return f"header stamp {stamp.sec} s is negative (ROS time starts at 0)"
    if not 0 <= stamp.nanosec < 10**9:
        return f"header stamp nanosec {stamp.nanosec} is outside [0, 1e9)"
    return ""


class PerceptionNode(LifecycleNode, metaclass=ABCMeta):
    """Lifecycle node with the shared input checks, TF, QoS, worker hand-over and health."""

    #: Key of pipeline.configs.NODE_CONFIGS: which configs the parameters come from.
    executable: ClassVar[str]
    #: The configs themselves: NODE_CONFIGS[executable] unless a node (a test's) names others.
    config_classes: ClassVar[tuple[type, ...] | None] = None
    #: Message type and (relative, remappable) topic of the input.
    input_type: ClassVar[type] = PointCloud2
    input_topic: ClassVar[str] = "points"
    #: Whether the node looks up transforms even without a target_frame.
    uses_tf: ClassVar[bool] = False

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        if self.config_classes is None:
            self.config_classes = NODE_CONFIGS[self.executable]
        # Values refused at start-up (name -> reason): the node stays unconfigured until fixed.
        self._refused = declare_parameters(self, self.config_classes)
        for reason in self._refused.values():
            self.get_logger().error(f"invalid parameter: {reason}")
        undeclared = undeclared_overrides(self)
        if undeclared:  # a shared parameter file (/**) may address other nodes: not refused
            self.get_logger().warning(f"ignoring parameter(s) {undeclared}: {self.executable} "
                                      "does not declare them (a typo?)")
        self.configs: dict[type, Any] = self._current_configs(strict=False)
        self.stats = StageStats()
        self.device = None
        self.device_note = ""
        self.checkpoint_note = ""
        self.model_status = "unconfigured"
        self.last_error = ""
        self.tf_buffer: TfBuffer | None = None
        self._outputs: list = []
        self._subscription = None
        self._queue: DropOldestQueue = DropOldestQueue(self.settings.queue_size,
                                                       key=self.queue_key)
        self._worker: threading.Thread | None = None
        self._generation = 0  # the current worker's; a replaced (stalled) worker sees it change
        self._busy: tuple[int, float] | None = None  # (generation, since) of the frame at work
        self._replaced_worker: threading.Thread | None = None  # a stalled one, until it returns
        self._stop_worker = threading.Event()
        self._pending_configs: dict[type, Any] | None = None
        self._pending_lock = threading.Lock()
        self.add_on_set_parameters_callback(self._validate_change)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.settings.diagnostics_period, self._on_diagnostics_timer)
        if self.settings.autostart:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # ----------------------------------------------------------------- subclass hooks
    def configure_node(self) -> None:
        """Load models, create outputs and build the stages from self.configs (may raise)."""

    def cleanup_node(self) -> None:
        """Release what configure_node created (outputs are destroyed by the base)."""

    def apply_configs(self, configs: dict[type, Any]) -> None:
        """Rebuild the stages from validated configs (called on the worker thread after an
        accepted parameter change). Raising keeps the previous stages and reports the error."""

    @abstractmethod
    def process(self, msg) -> None:
        """Handle one input message on the worker thread: convert, run the stage, publish."""

    # Queue key of an input message (None: never replaced in the queue): object nodes key
    # by the object a cloud holds, so they work on each object's newest cloud in turn.
    queue_key: ClassVar[Any] = None

    def stage_diagnostics(self) -> dict[str, Any]:
        """Stage-specific values for /diagnostics (default: none)."""
        return {}

    # ----------------------------------------------------------------- helpers for subclasses
    @property
    def settings(self) -> NodeConfig:
        """The node's own settings (QoS, queue, TF, health) as currently configured."""
        return self.configs[NodeConfig]

    def create_output(self, msg_type: type, topic: str, *, depth: int | None = None):
        """A lifecycle publisher with the output QoS; destroyed on cleanup."""
        qos = make_qos(self.settings.output_reliability, depth or self.settings.output_depth)
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._outputs.append(publisher)
        return publisher

    @staticmethod
    def wanted(publisher) -> bool:
        """Whether anyone subscribes to `publisher`: optional outputs (markers, aligned and
        resampled clouds) are neither built nor sent when nobody does."""
        return publisher.get_subscription_count() > 0

    def resolve_torch_device(self):
        """The configured torch device, CUDA falling back to the CPU with a logged warning."""
        from gmm_perception.device import describe_device, resolve_device

        choice = resolve_device(self.settings.device)
        if choice.fallback_reason:
            self.get_logger().warning(f"{choice.fallback_reason}: using {choice.device}")
        self.device, self.device_note = choice.device, describe_device(choice.device)
        return self.device

    def read_cloud(self, msg: PointCloud2) -> Cloud:
        """Validated finite xyz of a PointCloud2, in target_frame when one is set."""
        problem = stamp_problem(msg.header.stamp)
        if problem:
            raise MalformedCloudError(problem)
        points = read_xyz(msg)  # drops NaN/inf rows
        if len(points) == 0:
            raise EmptyCloudError(f"no finite points among {msg.width * msg.height}")
        points, frame_id, origin = cloud_in_frame(points, msg.header.frame_id, msg.header.stamp,
                                                  self.settings.target_frame, self.lookup)
        return Cloud(points=points, frame_id=frame_id, stamp=msg.header.stamp, origin=origin)

    def lookup(self, target_frame: str, source_frame: str, stamp) -> np.ndarray:
        """4x4 transform from source_frame to target_frame at `stamp`, waiting up to tf_timeout."""
        time_at = Time.from_msg(stamp)
        deadline = time.monotonic() + self.settings.tf_timeout
        while True:
            try:
                return self.tf_buffer.lookup_transform(target_frame, source_frame, time_at)
            except TransformError:
                if time.monotonic() >= deadline or self._stop_worker.is_set():
                    raise
                time.sleep(0.005)

    # ----------------------------------------------------------------- parameters
    def _current_configs(self, strict: bool = True) -> dict[type, Any]:
        """Configs from the parameters' current values. With strict=False (the constructor must
        not raise: configure reports) a config whose rule between fields is broken falls back to
        its defaults, alone: the others, the node's own settings among them, keep their values."""
        values = parameter_values(self, self.config_classes)
        if strict:
            return self._build_configs(values)
        configs = {}
        for config_class in self.config_classes:
            try:
                configs[config_class] = from_values(config_class, values)
            except ConfigError as exc:
                self._refused.setdefault("(combination)", str(exc))
                configs[config_class] = config_class()
        return configs

    def _build_configs(self, values: dict[str, Any]) -> dict[type, Any]:
        return build_configs(self.config_classes, values, self.executable)

    def _validate_change(self, parameters) -> SetParametersResult:
        """Accept a change only if the whole new set of values makes valid configs."""
        values = parameter_values(self, self.config_classes)
        values.update({p.name: p.value for p in parameters if p.name in values})
        try:
            self._build_configs(values)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, parameters) -> None:
        """An accepted change: the worker applies it before its next frame. A node that could
        not configure for want of valid parameters tries again once none is refused."""
        refused_before = bool(self._refused)
        for parameter in parameters:
            self._refused.pop(parameter.name, None)
        self._refused.pop("(combination)", None)  # the accepted set is valid as a whole
        with self._pending_lock:
            self._pending_configs = self._build_configs(
                parameter_values(self, self.config_classes))
        if refused_before and not self._refused and self.model_status == "error" \
                and self.settings.autostart:
            self.get_logger().info("the refused parameters are fixed: configuring again")
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    def _take_pending_configs(self) -> dict[type, Any] | None:
        with self._pending_lock:
            configs, self._pending_configs = self._pending_configs, None
            return configs

    def _reconfigure(self) -> None:
        """Apply an accepted parameter change (worker thread, inside the frame guard). Should
        the new stages fail to build, the error is reported and the frame runs on the previous
        ones."""
        configs = self._take_pending_configs()
        if configs is None or configs == self.configs:
            return
        try:
            self.apply_configs(configs)
        except Exception as exc:  # noqa: BLE001 - reported; the node keeps working
            self.stats.count("failed")
            self.last_error = f"could not apply the parameters: {type(exc).__name__}: {exc}"
            self.get_logger().error(f"{self.last_error}; keeping the previous stages")
            return
        self.configs = configs
        self.get_logger().info("parameters applied")

    # ----------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        started = time.perf_counter()
        try:
            if self._refused:
                raise ConfigError("invalid parameter(s): " + "; ".join(self._refused.values()))
            self._take_pending_configs()  # configure reads the current values itself
            self.configs = self._current_configs()
            if self.tf_buffer is None and (self.settings.target_frame or self.uses_tf):
                self.tf_buffer = TfBuffer(self)  # created here, on the executor's thread
            self.configure_node()
        except Exception as exc:  # any failure: logged with its reason, shown in diagnostics
            self._destroy_outputs()
            self.model_status, self.last_error = "error", f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {self.last_error}")
            self.publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self.model_status, self.last_error = "ready", ""
        self.get_logger().info(f"configured in {time.perf_counter() - started:.2f} s"
                               + (f" on {self.device_note}" if self.device_note else ""))
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            qos = make_qos(self.settings.input_reliability, self.settings.input_depth)
            self._subscription = self.create_subscription(
                self.input_type, self.input_topic, self._on_input, qos)
        except Exception as exc:  # rclpy's lifecycle would swallow it without a word
            self.last_error = f"activate failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        self._queue.reopen()
        self._stop_worker.clear()
        self._start_worker()
        self.model_status = "active"
        self.get_logger().info(
            f"active: '{self.resolve_topic_name(self.input_topic)}' "
            f"({self.settings.input_reliability}, depth {self.settings.input_depth})")
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
        """Stop the worker and release outputs whatever the lifecycle state (process exit).
        A frame still at work is abandoned after SHUTDOWN_WAIT seconds: the worker is a daemon
        thread, and a process asked to stop must stop within launch's grace period."""
        self._stop(wait=SHUTDOWN_WAIT)
        self.cleanup_node()
        self._destroy_outputs()

    def _stop(self, wait: float | None = None) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._stop_worker.set()
        self._queue.close()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            # Deactivation waits for the frame at work (nothing is published after it); a
            # stalled frame must not hold the node for ever: the thread is a daemon.
            worker.join(timeout=wait if wait is not None else
                        max(5.0, self.settings.tf_timeout + 1.0))
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

    def _start_worker(self) -> None:
        self._generation += 1
        self._busy = None
        self._worker = threading.Thread(target=self._work, args=(self._generation,),
                                        name=f"{self.get_name()}-worker-{self._generation}",
                                        daemon=True)
        self._worker.start()

    def _work(self, generation: int) -> None:
        while not self._stop_worker.is_set() and generation == self._generation:
            msg = self._queue.get(timeout=0.2)
            if msg is not None and generation == self._generation:
                self._busy = (generation, time.monotonic())
                self._process_one(msg)
                if self._busy is not None and self._busy[0] == generation:
                    self._busy = None

    def _process_one(self, msg) -> None:
        """One frame, everything it does inside one guard: no input can stop the worker."""
        started = time.perf_counter()
        try:
            self._reconfigure()
            self.process(msg)
            processing_ms = (time.perf_counter() - started) * 1e3
            self.stats.record_processed(processing_ms, self._latency_ms(msg))
            self.last_error = ""  # recovered: the diagnostics stop showing the old error
        except REJECTED_INPUT_ERRORS as exc:
            self.stats.count("rejected")
            frame = getattr(getattr(msg, "header", None), "frame_id", "?")
            self.get_logger().warning(f"rejected input from frame '{frame}': "
                                      f"{type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
        except Exception as exc:  # a bug or a model failure must not kill the worker
            if not self.context.ok():  # Ctrl-C during the frame: rclpy shut down, not a fault
                return
            self.stats.count("failed")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"processing failed: {self.last_error}",
                                    throttle_duration_sec=1.0)

    def _latency_ms(self, msg) -> float | None:
        """Stamp-to-publish latency on the node's clock (sim time when use_sim_time); None for
        a zero stamp."""
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 10**9 + stamp.nanosec)) / 1e6

    # ----------------------------------------------------------------- health
    def _on_diagnostics_timer(self) -> None:
        self._check_worker()
        self.publish_diagnostics()

    def _check_worker(self) -> None:
        """Replace a worker that died or is stuck on one frame, and say so (ERROR)."""
        if self.model_status != "active":
            return
        worker, busy = self._worker, self._busy
        stall_timeout = self.get_parameter("stall_timeout").value  # as set now, not at the frame
        if worker is None or not worker.is_alive():
            problem = "the worker thread died"
        elif stall_timeout > 0 and busy is not None and time.monotonic() - busy[1] > stall_timeout:
            problem = (f"the worker stalled: one frame has taken "
                       f"{time.monotonic() - busy[1]:.1f} s (stall_timeout {stall_timeout:g} s)")
        else:
            return
        self.stats.count("failed")
        replaced = self._replaced_worker
        if replaced is not None and replaced.is_alive():
            # One replaced worker at a time: a second stall while the first replaced frame has
            # not returned points at something shared being stuck; more threads would not help.
            self.last_error = f"{problem}; an earlier stalled frame has not returned either"
            self.get_logger().error(self.last_error, throttle_duration_sec=5.0)
            return
        self.last_error = f"{problem}; a new worker was started"
        self.get_logger().error(self.last_error)
        # The stalled worker sees the new generation and ends after its frame (which may still
        # publish); until then it shares the stages with the new one.
        self._replaced_worker = worker if worker is not None and worker.is_alive() else None
        self._start_worker()

    def publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        level, message = self._health(snap)
        values = {
            "lifecycle_state": self.model_status,
            "device": self.device_note or str(self.settings.device),
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
            **self.stage_diagnostics(),
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
            return DiagnosticStatus.ERROR, (f"{snap.window_failed} frame(s) failed "
                                            f"({self.last_error}); {summary}")
        if snap.window_rejected:
            return DiagnosticStatus.WARN, summary
        return DiagnosticStatus.OK, summary


class ModelNode(PerceptionNode):
    """A node whose stage wraps a trained model: the stage config's read-only `checkpoint`,
    loaded on the configured device with the model kind checked (pipeline.scene's loaders),
    named in the diagnostics. A missing, corrupt or mismatched file fails configure (ERROR,
    naming the file) and the process stays up."""

    def load_stage(self, loader, config):
        """`loader(config, device)` -> (stage, checkpoint payload); returns the stage and sets
        `model_name` ('<registry name>:<file name>', what the outputs report)."""
        device = self.device if self.device is not None else self.resolve_torch_device()
        stage, payload = loader(config, device)
        self.model_name = f"{payload['model']}:{Path(config.checkpoint).name}"
        self.checkpoint_note = (f"{config.checkpoint} (model {payload['model']}, code "
                                f"{payload['metadata'].get('code_version', 'unknown')})")
        return stage

    @staticmethod
    def queue_key(msg) -> int | None:
        """The object a segmented cloud holds; None (never replaced) for other clouds and for
        malformed ones, which the worker then rejects with its reason."""
        try:
            return object_id_of(msg)
        except Exception:  # noqa: BLE001 - a callback never raises
            return None

    def reused_step(self, configs: dict, stage) -> ObjectStep:
        """The node's step around `stage`, run for an object again only when its cloud changed
        (ReuseConfig); a new configuration starts with no kept answers."""
        step = reused_step(configs, stage)
        self.reuse = step.stage
        return step

    def answer_is_new(self) -> bool:
        """Whether the step's last answer should be published: it is new, or `republish` asks
        for every frame."""
        reuse = getattr(self, "reuse", None)
        return reuse is None or not reuse.last_reused or self.configs[ReuseConfig].republish

    def stage_diagnostics(self) -> dict[str, Any]:
        """How often the stage ran and how often an object's last answer was reused."""
        reuse = getattr(self, "reuse", None)
        return {} if reuse is None else {"stage_runs": reuse.runs, "reused_answers": reuse.reuses}


def run_node(node_class: type[PerceptionNode], node_name: str, args: list[str] | None = None
             ) -> None:
    """Console-script body: one node in its own process until Ctrl-C or shutdown; exits 0
    without a traceback on SIGINT (a user's Ctrl-C, or `ros2 launch` ending)."""
    use_default_dds_profile()
    stop_on_first_sigint()
    rclpy.init(args=args)
    node = None
    try:
        node = node_class(node_name)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close_nodes([node] if node is not None else [])


def stop_on_first_sigint() -> None:
    """The first SIGINT or SIGTERM (Ctrl-C, or `ros2 launch` ending: a terminal's Ctrl-C reaches
    the nodes twice, from the terminal and from launch, and launch escalates to SIGTERM) raises
    KeyboardInterrupt; later ones are ignored while the process cleans up, so it exits 0 without
    a traceback. Call before rclpy.init, whose own handlers then pass the signals on to these."""
    def handler(signum, frame):
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, signal.SIG_IGN)
        raise KeyboardInterrupt

    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, handler)


def close_nodes(nodes: Sequence[PerceptionNode]) -> None:
    """Stop workers and destroy nodes, then shut rclpy down, ignoring a second Ctrl-C."""
    for node in nodes:
        try:
            node.shutdown()
            node.destroy_node()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
    rclpy.try_shutdown()
