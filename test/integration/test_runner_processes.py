"""`gmm_perception_runner --processes`: each node of a pipeline YAML in its own process, with the
arguments the in-process runner gives it, supervised (signals forwarded, no orphans)."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from builtin_interfaces.msg import Time as TimeMsg
from rcl_interfaces.srv import GetParameters
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import read_xyz
from gmm_perception.pipeline_config import NodeEntry, load_pipeline
from gmm_perception.ros.pointcloud import xyz_to_cloud
from gmm_perception.ros.runner import node_arguments, node_command, node_executable, \
    torch_threads_per_process

ROOT = Path(__file__).resolve().parents[2]
RUNNER = str(Path(sys.executable).parent / "gmm_perception_runner")


def chain_pipeline(path: Path, prefix: str, **options) -> Path:
    """Two preprocess nodes: `<prefix>_crop` crops to the unit cube, `<prefix>_voxel` puts what
    is left into one 10 m voxel."""
    path.write_text(yaml.safe_dump({**options, "nodes": [
        {"executable": "preprocess_node", "name": f"{prefix}_crop",
         "parameters": [str(ROOT / "config" / "preprocess.yaml"),
                        {"voxel_size": 0.0, "crop_min": [0.0, 0.0, 0.0],
                         "crop_max": [1.0, 1.0, 1.0]}],
         "remappings": {"points": f"/{prefix}_in"}},
        {"executable": "preprocess_node", "name": f"{prefix}_voxel",
         "parameters": [{"voxel_size": 10.0}],
         "remappings": {"points": f"/{prefix}_crop/points"}},
    ]}))
    return path


def gone(process: psutil.Process) -> bool:
    """Exited (a zombie no reaper has collected yet counts as exited)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[int]:
    """Pids of the processes still running after `timeout` seconds."""
    from conftest import wait_until

    wait_until(lambda: all(map(gone, processes)), timeout)
    return [p.pid for p in processes if not gone(p)]


def node_children(runner, count: int, timeout: float = 30.0) -> list[psutil.Process]:
    """The runner's node processes, once `count` of them run."""
    parent = psutil.Process(runner.pid)
    children: list[psutil.Process] = []

    def found() -> bool:
        nonlocal children
        children = [c for c in parent.children() if "__node:=" in " ".join(c.cmdline())]
        return len(children) >= count or not runner.alive()

    from conftest import wait_until

    assert wait_until(found, timeout), runner.log()
    assert len(children) == count, runner.log()
    return children


@pytest.fixture
def no_orphans():
    """Processes the test names here are killed after it, whatever happened."""
    tracked: list[psutil.Process] = []
    yield tracked
    for process in tracked:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def test_node_arguments_are_the_command_line_of_the_nodes_own_process(tmp_path):
    entry = NodeEntry("registration_node", "reg", namespace="robot",
                      parameter_files=(tmp_path / "a.yaml", tmp_path / "b.yaml"),
                      parameters={"reference_mode": "library", "input_depth": 32,
                                  "upright_axis": [0.0, 0.0, 1.0], "library_dir": "true"},
                      remappings={"points": "/segmentation/objects"})
    args = node_arguments(entry, use_sim_time=True)
    assert args == [
        "--ros-args", "-r", "__node:=reg", "-r", "__ns:=/robot",
        "--params-file", str(tmp_path / "a.yaml"), "--params-file", str(tmp_path / "b.yaml"),
        "-r", "points:=/segmentation/objects",
        "-p", 'reference_mode:="library"', "-p", "input_depth:=32",
        "-p", "upright_axis:=[0.0, 0.0, 1.0]", "-p", 'library_dir:="true"',  # stays a string
        "-p", "use_sim_time:=true"]
    # The node's own process: its console script, the runner's global --ros-args, then its own.
    command = node_command(entry, ros_args=["--ros-args", "--log-level", "debug"])
    assert command == [*node_executable("registration_node"), "--ros-args", "--log-level",
                       "debug", *node_arguments(entry)]
    assert Path(command[0]).name == "registration_node"  # the venv's console script


def test_torch_threads_share_the_cpus_between_the_node_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert torch_threads_per_process(5) == 1
    assert torch_threads_per_process(3) == 2
    assert torch_threads_per_process(20) == 1
    assert torch_threads_per_process(5, requested=3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert torch_threads_per_process(5) == 4


@pytest.mark.integration
def test_processes_runs_each_node_in_its_own_process_and_stops_on_sigint(
        probe, start_node, tmp_path, no_orphans):
    """`--processes`: two chained nodes in two processes under the runner, with the pipeline's
    parameters; a cloud on the input comes out of the last one; SIGINT ends all, status 0."""
    pipeline = chain_pipeline(tmp_path / "chain.yaml", "procs")
    outputs = probe.record(PointCloud2, "/procs_voxel/points")
    publisher = probe.publisher(PointCloud2, "/procs_in")
    runner = start_node([RUNNER, str(pipeline), "--processes"])
    children = node_children(runner, 2)
    no_orphans.extend(children)
    assert len({runner.pid, *(c.pid for c in children)}) == 3
    names = sorted(arg for c in children for arg in c.cmdline() if arg.startswith("__node:="))
    assert names == ["__node:=procs_crop", "__node:=procs_voxel"]
    for entry in load_pipeline(pipeline):  # the arguments the in-process runner gives it
        child = next(c for c in children if f"__node:={entry.name}" in c.cmdline())
        assert child.cmdline()[-len(node_arguments(entry)):] == node_arguments(entry)
        assert child.environ()["OMP_NUM_THREADS"] == str(torch_threads_per_process(2))

    # The inline value reached the node in its process (parameter service of the child).
    assert probe.wait_for_subscribers(publisher, timeout=30), runner.log()
    reply = probe.call(GetParameters, "/procs_voxel/get_parameters",
                       GetParameters.Request(names=["voxel_size"]), timeout=20)
    assert reply.values[0].double_value == 10.0

    rng = np.random.default_rng(0)
    inside = rng.uniform(0.1, 0.9, (200, 3)).astype(np.float32)
    outside = rng.uniform(2.0, 3.0, (300, 3)).astype(np.float32)
    cloud = xyz_to_cloud(np.concatenate([inside, outside]), "base", TimeMsg(sec=8))
    assert probe.publish_until(publisher, cloud, lambda: outputs, attempts=100), runner.log()
    np.testing.assert_allclose(read_xyz(outputs[0]), inside.mean(axis=0, keepdims=True),
                               atol=1e-5)
    assert outputs[0].header.stamp.sec == 8

    runner.process.send_signal(signal.SIGINT)
    assert runner.process.wait(30) == 0, runner.log()
    assert not wait_gone(children, 5), "node processes outlived the runner"
    assert "Traceback" not in runner.log() and "killed" not in runner.log(), runner.log()


@pytest.mark.integration
def test_a_node_that_dies_stops_the_pipeline_with_status_1(probe, start_node, tmp_path,
                                                           no_orphans):
    """`processes: true` in the YAML: a running node killed from outside is reported by name
    and status, the other one is stopped, and the runner exits 1."""
    pipeline = chain_pipeline(tmp_path / "chain.yaml", "dies", processes=True)
    runner = start_node([RUNNER, str(pipeline)])
    children = node_children(runner, 2)
    no_orphans.extend(children)
    assert probe.wait(lambda: {"dies_crop", "dies_voxel"} <= set(probe.node.get_node_names()),
                      30), runner.log()
    crop = next(c for c in children if "__node:=dies_crop" in c.cmdline())
    crop.kill()
    assert runner.process.wait(30) == 1, runner.log()
    assert "preprocess_node 'dies_crop'" in runner.log() and "SIGKILL" in runner.log()
    assert not wait_gone(children, 5), runner.log()


@pytest.mark.integration
def test_nodes_do_not_outlive_a_killed_runner(probe, start_node, tmp_path, no_orphans):
    """SIGKILL leaves the runner no time to stop its nodes: they get SIGTERM from the kernel
    (the parent-death signal) and exit by themselves."""
    pipeline = tmp_path / "one.yaml"
    pipeline.write_text(yaml.safe_dump({"processes": True, "nodes": [
        {"executable": "preprocess_node", "name": "orphan_check",
         "remappings": {"points": "/orphan_in"}}]}))
    runner = start_node([RUNNER, str(pipeline)])
    children = node_children(runner, 1)
    no_orphans.extend(children)
    assert probe.wait(lambda: "orphan_check" in probe.node.get_node_names(), 30), runner.log()
    runner.process.kill()
    runner.process.wait(10)
    assert not wait_gone(children, 20), runner.log()


@pytest.mark.integration
def test_a_node_runs_at_its_entrys_lower_priority(probe, start_node, tmp_path, no_orphans):
    """`nice: 7` in a pipeline entry: that node's process runs 7 levels below the runner."""
    pipeline = tmp_path / "nice.yaml"
    pipeline.write_text(yaml.safe_dump({"processes": True, "nodes": [
        {"executable": "preprocess_node", "name": "nice_check", "nice": 7,
         "remappings": {"points": "/nice_in"}}]}))
    runner = start_node([RUNNER, str(pipeline)])
    children = node_children(runner, 1)
    no_orphans.extend(children)
    assert children[0].nice() == psutil.Process(runner.pid).nice() + 7, runner.log()
    # Each node has a session of its own: with autogroup scheduling the session's nice is
    # what ranks it against the other nodes, so it carries the entry's nice too.
    autogroup = Path(f"/proc/{children[0].pid}/autogroup")
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroup.is_file() and enabled.is_file() and enabled.read_text().strip() == "1":
        assert autogroup.read_text().split()[-1] == "7", autogroup.read_text()


@pytest.mark.parametrize("nice", [-1, 20, "low", True])
def test_a_bad_priority_is_refused_with_its_reason(tmp_path, nice):
    from gmm_perception.pipeline_config import PipelineConfigError, load_pipeline

    pipeline = tmp_path / "bad.yaml"
    pipeline.write_text(yaml.safe_dump({"nodes": [{"executable": "preprocess_node",
                                                   "nice": nice}]}))
    with pytest.raises(PipelineConfigError, match="'nice' must be an integer 0-19"):
        load_pipeline(pipeline)
