"""Shared test set-up: an isolated DDS domain on loopback, and helpers to run nodes as processes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

# One DDS domain per test session (1..101: IDs whose ports Linux never hands out), discovery kept on this host: concurrent runs on a shared
# machine must not see each other's nodes, and no test traffic may leave the machine.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent / "support"))  # test-only helper modules


def wait_until(condition: Callable[[], bool], timeout: float, spin: Callable[[], None] | None = None,
               interval: float = 0.02) -> bool:
    """Poll `condition` (spinning `spin` between polls) until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if spin is not None:
            spin()
        else:
            time.sleep(interval)
    return condition()


class NodeProcess:
    """A node started as its own OS process, as `ros2 run` would; its log kept for failures."""

    def __init__(self, command: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})},
                                        start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_node(tmp_path, request):
    """start_node(executable_or_argv, *ros_args) -> NodeProcess; stopped after the test,
    and its log printed when the test failed."""
    started: list[NodeProcess] = []

    def start(executable: str | list[str], *ros_args: str, env: dict | None = None) -> NodeProcess:
        argv = [str(BIN / executable)] if isinstance(executable, str) else list(executable)
        if ros_args:
            argv += ["--ros-args", *ros_args]
        node = NodeProcess(argv, tmp_path / f"node{len(started)}.log", env)
        started.append(node)
        return node

    yield start
    for node in started:
        code = node.stop()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(f"\n----- log of {node.process.args} (exit {code}) -----\n{node.log()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test, the previous count restored after: tiny models run
    faster without thread hand-offs, and tests running beside each other do not oversubscribe."""
    import torch  # here, not at the top: most tests never load torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ros_context():
    """An rclpy context of the test process, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def probe(ros_context):
    """A test-side node (test/support/ros_probe.py) in this test's context."""
    from ros_probe import Probe

    probe = Probe(ros_context)
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def gmcn():
    """An untrained three-class GMCN small enough for fast classification-stage tests."""
    import torch

    from gmm_perception.models.gmcn import Gmcn, GmcnConfig

    torch.manual_seed(0)
    config = GmcnConfig(num_classes=3, input_components=16, channels=(4,), components=(8,),
                        fit_points=512, final_dense_components=4)
    return Gmcn(config).eval()
