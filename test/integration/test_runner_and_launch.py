"""The pipeline YAMLs, the in-process runner and the launch files agree on nodes and parameters."""
from __future__ import annotations

import ast
import importlib.util
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.context import Context
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import read_xyz
from gmm_perception.node_registry import NODES, console_scripts
from gmm_perception.pipeline_config import load_pipeline, node_parameters
from gmm_perception.ros.pointcloud import xyz_to_cloud
from gmm_perception.ros.runner import create_node

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "config").glob("*_pipeline.yaml"))
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def node_parameter_keys(path: Path, node_name: str) -> set[str]:
    """Keys a ROS parameter file sets for `node_name` (wildcard and named sections)."""
    data = yaml.safe_load(path.read_text()) or {}
    keys = set()
    for section, content in data.items():
        if section in ("/**", node_name, f"/{node_name}") and "ros__parameters" in content:
            keys |= set(content["ros__parameters"])
    return keys


def test_every_registered_node_has_a_console_script_and_an_entry_point():
    scripts = {line.split(" = ")[0]: line.split(" = ")[1] for line in console_scripts()}
    for executable, (module, class_name, _) in NODES.items():
        assert scripts[executable] == f"{module}:main"
        assert hasattr(importlib.import_module(module), class_name)
        assert (Path(sys.executable).parent / executable).exists(), f"{executable} not installed"


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_pipeline_parameters_are_all_declared_by_their_nodes(pipeline):
    context = Context()
    rclpy.init(context=context)
    try:
        for entry in load_pipeline(pipeline):
            node = create_node(entry, context=context)
            try:
                declared = set(node._parameters)
                for path in entry.parameter_files:
                    undeclared = node_parameter_keys(path, entry.name) - declared
                    assert not undeclared, f"{path.name} sets undeclared {sorted(undeclared)}"
                assert not set(entry.parameters) - declared
                # The files' values, overridden by the inline ones, reached the node.
                for key, value in node_parameters(entry).items():
                    assert node.get_parameter(key).value == pytest.approx(value), key
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_name_existing_files_and_executables(launch_file):
    tree = ast.parse(launch_file.read_text())
    strings = {node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    for name in strings:
        if name.endswith((".yaml", ".xml")):
            assert (ROOT / "config" / name).is_file(), f"{launch_file.name} names missing {name}"
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", "") == "Node"]
    for call in calls:
        package = {k.arg: k.value for k in call.keywords}.get("package")
        assert isinstance(package, ast.Constant) and package.value == "gmm_perception"


@pytest.mark.integration
@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_start_their_nodes_where_launch_is_installed(launch_file, probe):
    """On a ROS install (launch_ros importable): the nodes of the default pipeline appear."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI")
    from launch import LaunchService

    spec = importlib.util.spec_from_file_location("launch_under_test", launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = {entry.name for entry in load_pipeline(module.DEFAULT_PIPELINE)}
    service = LaunchService(noninteractive=True)
    service.include_launch_description(module.generate_launch_description())
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert probe.wait(lambda: expected <= set(probe.node.get_node_names()), 30), \
            probe.node.get_node_names()
    finally:
        service.shutdown()
        thread.join(30)


@pytest.mark.integration
def test_runner_serves_a_two_node_pipeline_in_one_process(probe, start_node, tmp_path):
    """Two preprocess nodes chained in one runner process: crop, then voxel downsample."""
    pipeline = tmp_path / "chain_pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"nodes": [
        {"executable": "preprocess_node", "name": "crop",
         "parameters": [str(ROOT / "config" / "preprocess.yaml"),
                        {"voxel_size": 0.0, "crop_min": [0.0, 0.0, 0.0],
                         "crop_max": [1.0, 1.0, 1.0]}],
         "remappings": {"points": "/chain_in"}},
        {"executable": "preprocess_node", "name": "voxel",
         "parameters": [{"voxel_size": 10.0}],
         "remappings": {"points": "/crop/points"}},
    ]}))
    runner = start_node([str(Path(sys.executable).parent / "gmm_perception_runner"), str(pipeline)])
    outputs = probe.record(PointCloud2, "/voxel/points")
    publisher = probe.publisher(PointCloud2, "/chain_in")
    assert probe.wait_for_subscribers(publisher, timeout=30), runner.log()
    rng = np.random.default_rng(0)
    inside = rng.uniform(0.1, 0.9, (200, 3)).astype(np.float32)
    outside = rng.uniform(2.0, 3.0, (300, 3)).astype(np.float32)
    points = np.concatenate([inside, outside])
    for _ in range(50):
        publisher.publish(xyz_to_cloud(points, "base", TimeMsg(sec=8)))
        if probe.wait(lambda: outputs, timeout=0.3):
            break
    assert outputs, runner.log()
    # Cropping keeps the 200 inside points; one 10 m voxel then holds them all.
    np.testing.assert_allclose(read_xyz(outputs[0]), inside.mean(axis=0, keepdims=True),
                               atol=1e-5)
    assert outputs[0].header.stamp.sec == 8
