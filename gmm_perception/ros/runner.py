"""gmm_perception_runner: start a pipeline of our nodes, in one process or one process per node.

`launch` is not installable from PyPI, so this runner gives venv users what a launch file and a
component container give on a real ROS install, from the same pipeline YAML:

- in one process (the default): every node in one multi-threaded executor, a component
  container's equivalent;
- with `--processes` (or `processes: true` at the top of the pipeline YAML): each node in its own
  OS process, started from its own console script as `ros2 launch` does, and supervised.

Both modes give a node the same arguments (`node_arguments`): its name and namespace, the
pipeline's parameter files in order, then its inline parameters and `use_sim_time` as `-p`
overrides (which win over the files, as the dict after the files does in a launch file), then
its remappings.

Processes: each child gets OMP_NUM_THREADS (torch's intra-op pool, MKL and OpenBLAS follow it)
= `--torch-threads`, else the OMP_NUM_THREADS of the runner's environment, else
max(1, CPUs available // number of nodes), so the nodes together do not oversubscribe the
cores. Supervision: SIGINT or SIGTERM to the runner is forwarded to every node, which then has
`--stop-timeout` seconds to exit before its process group is killed (a second signal kills at
once); the runner exits 0 when every node stopped by itself. A node that dies while the pipeline
runs (a crash, the OOM killer) is not restarted: the runner logs which one and its status, stops
the others and exits 1, so a supervisor (or the live evaluator) sees a broken pipeline instead
of one quietly missing a stage. Each node runs in its own session (its own process group, which
a terminal's Ctrl-C does not reach twice) and gets SIGTERM when the runner itself dies, so no
node outlives its runner.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from gmm_perception.node_registry import NODES
from gmm_perception.pipeline_config import NodeEntry, PipelineConfigError, load_pipeline

PROGRAM = "gmm_perception_runner"
#: Thread-pool variables a node process gets (torch reads OMP_NUM_THREADS; MKL and OpenBLAS
#: have their own, which follow it unless the environment sets them).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _log(message: str) -> None:
    print(f"[{PROGRAM}] {message}", file=sys.stderr, flush=True)


# --- What a node is started with (both modes) -------------------------------------------------

def _ros_value(value: Any) -> str:
    """A parameter value as rcl parses `-p name:=value` (YAML): JSON is YAML, and a quoted
    string stays a string ('true', '1.0' included)."""
    return json.dumps(value, ensure_ascii=False)


def node_arguments(entry: NodeEntry, use_sim_time: bool = False) -> list[str]:
    """The node's own `--ros-args`, the one source of what a node of this entry is started
    with: in one process they are its `cli_args`, in its own process its command line."""
    args = ["--ros-args", "-r", f"__node:={entry.name}"]
    if entry.namespace:
        args += ["-r", f"__ns:=/{entry.namespace}"]
    args += entry.ros_arguments()[1:]  # parameter files in order, remappings
    parameters = dict(entry.parameters)
    if use_sim_time:
        parameters["use_sim_time"] = True
    for key, value in parameters.items():
        args += ["-p", f"{key}:={_ros_value(value)}"]
    return args


def _script(name: str, module: str) -> list[str]:
    """A console script beside this Python (a venv's bin), else its module run by this Python
    (a ROS install keeps our scripts in lib/gmm_perception, off PATH)."""
    script = Path(sys.executable).parent / name
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", module]


def node_executable(executable: str) -> list[str]:
    """How to start the node's own process: its console script."""
    return _script(executable, NODES[executable][0])


def node_command(entry: NodeEntry, use_sim_time: bool = False,
                 ros_args: Sequence[str] = ()) -> list[str]:
    """The command line of the entry's own process, as `ros2 run` with the same arguments;
    `ros_args` (the runner's global `--ros-args`, e.g. a log level) come first, so the node's
    own arguments win as they do over the global ones in one process."""
    return [*node_executable(entry.executable), *ros_args, *node_arguments(entry, use_sim_time)]


def node_class(executable: str):
    module, class_name, _ = NODES[executable]
    return getattr(importlib.import_module(module), class_name)


def create_node(entry: NodeEntry, use_sim_time: bool = False, context=None):
    """Instantiate one pipeline entry in this process, with the arguments its own process gets."""
    return node_class(entry.executable)(
        entry.name, namespace=entry.namespace or None,
        cli_args=node_arguments(entry, use_sim_time), context=context)


# --- One process ------------------------------------------------------------------------------

def run_in_process(entries: Sequence[NodeEntry], use_sim_time: bool = False, threads: int = 4,
                   ros_args: Sequence[str] = ()) -> int:
    """Every node in this process, in one multi-threaded executor, until Ctrl-C; returns 0.
    A node that cannot be created is reported and the others run on."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from gmm_perception.ros.middleware import use_default_dds_profile
    from gmm_perception.ros.node_base import close_nodes, stop_on_first_sigint

    use_default_dds_profile()
    stop_on_first_sigint()
    rclpy.init(args=[PROGRAM, *ros_args])  # global --ros-args apply to every node
    executor = MultiThreadedExecutor(num_threads=threads)
    nodes = []
    try:
        for entry in entries:
            try:
                nodes.append(create_node(entry, use_sim_time))
            except Exception as exc:  # one broken node must not take the others down
                _log(f"could not start {entry.executable} '{entry.name}': "
                     f"{type(exc).__name__}: {exc}")
                continue
            executor.add_node(nodes[-1])
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close_nodes(nodes)
    return 0


# --- One process per node ---------------------------------------------------------------------

def torch_threads_per_process(node_count: int, requested: int | None = None) -> int:
    """Threads of each node's pools: `requested`, else the environment's OMP_NUM_THREADS, else
    the available CPUs shared out between the nodes (at least 1)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"torch threads must be at least 1, got {requested}")
        return requested
    try:
        inherited = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        inherited = 0
    if inherited >= 1:
        return inherited
    return max(1, len(os.sched_getaffinity(0)) // max(1, node_count))


def _child_setup(parent: int, nice: int = 0):
    """preexec_fn: the child gets SIGTERM when the runner dies, even by SIGKILL (Linux; a
    no-op elsewhere), and runs at the entry's `nice` priority. libc is looked up here, in the
    runner, not in the forked child."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def setup() -> None:
        if nice:
            os.nice(nice)
            # Each node runs in a session of its own, and with the kernel's autogroup scheduling
            # (Debian's default) CPU time is shared between sessions first: a process's nice
            # then only ranks it within its session. The session's own nice ranks the nodes.
            try:
                with open("/proc/self/autogroup", "w") as group:
                    group.write(str(nice))
            except OSError:
                pass  # no autogroup (kernel or permissions): nice alone ranks them
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the runner died before prctl took effect
                os._exit(1)
    return setup


def _status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class NodeProcesses:
    """The nodes of a pipeline, each in its own process (and process group), supervised."""

    def __init__(self, entries: Sequence[NodeEntry], use_sim_time: bool = False,
                 torch_threads: int | None = None, ros_args: Sequence[str] = (),
                 stop_timeout: float = 10.0):
        self.entries = list(entries)
        self.use_sim_time = use_sim_time
        self.threads = torch_threads_per_process(len(self.entries), torch_threads)
        self.ros_args = list(ros_args)
        self.stop_timeout = stop_timeout
        self.children: list[tuple[NodeEntry, subprocess.Popen]] = []
        self._stop_signal: int | None = None
        self._kill_now = False

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.threads)
        for variable in THREAD_VARIABLES[1:]:
            env.setdefault(variable, str(self.threads))
        return env

    def start(self) -> None:
        from gmm_perception.ros.middleware import use_default_dds_profile

        use_default_dds_profile()  # inherited by every node
        env = self.environment()
        _log(f"starting {len(self.entries)} node process(es), {self.threads} torch thread(s) "
             f"each")
        for entry in self.entries:
            if self._stop_signal is not None:
                break
            process = subprocess.Popen(
                node_command(entry, self.use_sim_time, self.ros_args), env=env,
                start_new_session=True, preexec_fn=_child_setup(os.getpid(), entry.nice))
            self.children.append((entry, process))
            _log(f"{entry.executable} '{entry.name}' started (pid {process.pid}"
                 + (f", nice {entry.nice})" if entry.nice else ")"))

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Signal-handler safe: the first call stops the pipeline, a second kills it."""
        if self._stop_signal is None:
            self._stop_signal = signum
        else:
            self._kill_now = True

    def supervise(self, poll_interval: float = 0.1) -> int:
        """Until a stop is requested or a node dies; then stop every node. Returns the runner's
        exit status: 0 after a requested stop that every node obeyed, 1 otherwise."""
        died = None
        while self._stop_signal is None and died is None:
            died = next(((e, p) for e, p in self.children if self._exited(p)), None)
            if died is None:
                time.sleep(poll_interval)
        if died is not None:
            entry, process = died
            self._reap(process)
            _log(f"{entry.executable} '{entry.name}' (pid {process.pid}) exited unexpectedly "
                 f"({_status(process.returncode)}); stopping the pipeline")
        clean = self.stop(self._stop_signal or signal.SIGINT)
        return 0 if clean and died is None else 1

    def stop(self, signum: int = signal.SIGINT) -> bool:
        """Pass `signum` to every node still running, wait up to `stop_timeout` for them, kill
        the rest; whatever a node left in its process group is killed with it. Whether every
        node exited by itself with status 0 (or by the signal it was sent)."""
        stopping = [(e, p) for e, p in self.children if not self._exited(p)]
        for _, process in stopping:
            self._signal_group(process, signum)
        deadline = time.monotonic() + self.stop_timeout
        clean = True
        for entry, process in stopping:
            while not self._exited(process) and not self._kill_now \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self._exited(process):
                why = "a second signal" if self._kill_now else \
                    f"still running {self.stop_timeout:g} s after {signal.Signals(signum).name}"
                _log(f"{entry.executable} '{entry.name}' (pid {process.pid}): {why}, killed")
                self._reap(process)
                clean = False
            elif self._reap(process) not in (0, -signum):
                _log(f"{entry.executable} '{entry.name}' stopped with "
                     f"{_status(process.returncode)}")
                clean = False
        for _, process in self.children:
            self._reap(process)
        return clean

    @staticmethod
    def _exited(process: subprocess.Popen) -> bool:
        """Whether the node's process has exited, without reaping it: while it is an unreaped
        zombie its pid, and so its process group id, cannot be reused."""
        if process.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, process.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            process.poll()
            return True

    def _reap(self, process: subprocess.Popen) -> int:
        """Kill what is left of the node's process group (the node itself too, if it still
        runs), then collect its exit status."""
        if process.returncode is None:
            self._signal_group(process, signal.SIGKILL)
            process.wait()
        return process.returncode

    @staticmethod
    def _signal_group(process: subprocess.Popen, signum: int) -> None:
        try:
            os.killpg(process.pid, signum)  # a session leader: its group id is its pid
        except (ProcessLookupError, PermissionError):
            pass


def run_processes(entries: Sequence[NodeEntry], use_sim_time: bool = False,
                  torch_threads: int | None = None, ros_args: Sequence[str] = (),
                  stop_timeout: float = 10.0) -> int:
    """Every node in its own process until SIGINT/SIGTERM or a node dies; returns the exit
    status (see the module's docstring). Signal handlers are installed from the main thread
    only (and restored afterwards)."""
    pipeline = NodeProcesses(entries, use_sim_time, torch_threads, ros_args, stop_timeout)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(
                signum, lambda number, frame: pipeline.request_stop(number))
    try:
        try:
            pipeline.start()
        except OSError as exc:
            _log(f"could not start a node process: {exc}")
            pipeline.stop()
            return 1
        return pipeline.supervise()
    finally:
        for _, process in pipeline.children:  # an exception above: leave nothing running
            pipeline._reap(process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- Both -------------------------------------------------------------------------------------

def pipeline_runs_in_processes(pipeline: str | Path) -> bool:
    """The pipeline YAML's top-level `processes:` option (false when absent)."""
    data = yaml.safe_load(Path(pipeline).read_text()) or {}
    value = data.get("processes", False) if isinstance(data, dict) else False
    if not isinstance(value, bool):
        raise PipelineConfigError(f"pipeline file '{pipeline}': 'processes' must be true or "
                                  f"false, got {value!r}")
    return value


def run_pipeline(pipeline: str | Path, processes: bool | None = None, use_sim_time: bool = False,
                 threads: int = 4, torch_threads: int | None = None,
                 ros_args: Sequence[str] = (), stop_timeout: float = 10.0) -> int:
    """Run a pipeline YAML until stopped; returns the runner's exit status. `processes`: one
    process per node (True), all in this one (False), or as the YAML says (None)."""
    entries = load_pipeline(pipeline)
    if processes is None:
        processes = pipeline_runs_in_processes(pipeline)
    if processes:
        return run_processes(entries, use_sim_time, torch_threads, ros_args, stop_timeout)
    return run_in_process(entries, use_sim_time, threads, ros_args)


def runner_command(pipeline: str | Path, processes: bool | None = None,
                   use_sim_time: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The command line that runs `run_pipeline` in a child process (for subprocess.Popen)."""
    command = [*_script(PROGRAM, "gmm_perception.ros.runner"), str(pipeline)]
    if processes is not None:
        command.append("--processes" if processes else "--no-processes")
    if use_sim_time:
        command.append("--use-sim-time")
    return [*command, *extra]


def _global_ros_args(argv: Sequence[str]) -> list[str]:
    """The `--ros-args ... [--]` sections of a command line (for every node)."""
    found, inside = [], False
    for arg in argv:
        if arg == "--ros-args":
            inside = True
            found.append(arg)
        elif arg == "--" and inside:
            inside = False
        elif inside:
            found.append(arg)
    return found


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    from rclpy.utilities import remove_ros_args

    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="pipeline YAML (see config/*_pipeline.yaml)")
    parser.add_argument("--processes", action=argparse.BooleanOptionalAction, default=None,
                        help="each node in its own process (default: the YAML's top-level "
                             "'processes:', else one process)")
    parser.add_argument("--threads", type=int, default=4,
                        help="executor threads (one process)")
    parser.add_argument("--torch-threads", type=_positive_int, default=None,
                        help="torch/OpenMP threads of each node process (default: "
                             "OMP_NUM_THREADS, else CPUs // nodes)")
    parser.add_argument("--stop-timeout", type=float, default=10.0,
                        help="seconds a node process has to stop before it is killed")
    parser.add_argument("--use-sim-time", action="store_true", help="every node on /clock time")
    args = parser.parse_args(remove_ros_args([PROGRAM, *argv])[1:])
    try:
        code = run_pipeline(args.pipeline, args.processes, args.use_sim_time, args.threads,
                            args.torch_threads, _global_ros_args(argv), args.stop_timeout)
    except PipelineConfigError as exc:
        parser.error(str(exc))
    sys.exit(code)


if __name__ == "__main__":
    main()
