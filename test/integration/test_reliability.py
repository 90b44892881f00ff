"""No input may stop a worker (issue 13, section 4): each bad input is sent over DDS to a node
process, and then the next good cloud must be processed. Also: refused parameters (at start-up
and at run time, alone and in combination) with the same words as the offline evaluator, a
stalled worker replaced and reported, configure errors of any kind shown, the runner keeping
its good nodes, and Ctrl-C ending nodes and the runner with exit status 0."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import PointCloud2

from gmm_perception.config import ConfigError
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.evaluation.stages import resolved_configs
from gmm_perception.models.checkpoint import save_checkpoint
from gmm_perception.pipeline_config import load_pipeline
from gmm_perception.ros.pointcloud import object_cloud, xyz_to_cloud
from gmm_perception_msgs.msg import ObjectClassification, RegistrationResult

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
ERROR = int.from_bytes(DiagnosticStatus.ERROR, "little")
WARN = int.from_bytes(DiagnosticStatus.WARN, "little")
OK = int.from_bytes(DiagnosticStatus.OK, "little")


def points(n: int = 500, seed: int = 0, centre=(2.0, 0.0, 0.5)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, 0.2, (n, 3)) + centre).astype(np.float32)


def start(start_node, executable: str, name: str, topic: str, *args: str):
    return start_node(executable, "-r", f"__node:={name}", "-r", f"points:={topic}",
                      "-p", "diagnostics_period:=0.2", *args)


def connect(probe, node, topic: str, output: str, msg_type=PointCloud2, frame: str = "map",
            sec: int = 1):
    """Once a good cloud has made the round trip: (publisher, recorded outputs)."""
    outputs = probe.record(msg_type, output)
    publisher = probe.publisher(PointCloud2, topic)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()
    assert probe.publish_until(publisher, xyz_to_cloud(points(), frame, TimeMsg(sec=sec)),
                               lambda: outputs, timeout=0.5), node.log()
    return publisher, outputs


def stamped(outputs, sec: int) -> bool:
    return any(msg.header.stamp.sec == sec for msg in outputs)


def set_parameter(probe, node_name: str, name: str, value):
    if isinstance(value, float):
        value_msg = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        value_msg = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value_msg)])
    return probe.call(SetParameters, f"{node_name}/set_parameters", request).results[0]


@pytest.mark.parametrize("executable", ["preprocess_node", "segmentation_node"])
def test_a_negative_header_stamp_is_rejected_and_the_worker_lives_on(probe, start_node,
                                                                     executable):
    name = f"negative_{executable.split('_')[0]}"
    output = f"/{name}/points" if executable == "preprocess_node" else f"/{name}/markers"
    msg_type = PointCloud2
    if executable == "segmentation_node":
        from visualization_msgs.msg import MarkerArray as msg_type
    node = start(start_node, executable, name, f"/{name}_in")
    publisher, outputs = connect(probe, node, f"/{name}_in", output, msg_type)
    for _ in range(3):  # more than once: the old worker died after the first
        rejected = probe.diagnostic_count(f"/{name}", "rejected")
        bad = xyz_to_cloud(points(), "map", TimeMsg(sec=-1))
        assert probe.publish_until(publisher, bad, lambda: probe.diagnostic_count(
            f"/{name}", "rejected") > rejected, timeout=0.5), node.log()
    assert "header stamp -1 s is negative" in node.log()
    stamp_of = (lambda m: m.markers[0].header.stamp) if msg_type is not PointCloud2 \
        else (lambda m: m.header.stamp)
    good = xyz_to_cloud(points(seed=1), "map", TimeMsg(sec=7))
    assert probe.publish_until(publisher, good, lambda: any(
        (m.markers if msg_type is not PointCloud2 else True) and stamp_of(m).sec == 7
        for m in outputs), timeout=0.5), node.log()
    assert probe.diagnostic_count(f"/{name}", "failed") == 0
    assert node.alive()


def test_a_cloud_cropped_away_is_rejected_as_a_warning_not_a_failure(probe, start_node):
    node = start(start_node, "preprocess_node", "cropped", "/cropped_in",
                 "-p", "max_range:=10.0")
    publisher, outputs = connect(probe, node, "/cropped_in", "/cropped/points")
    far = xyz_to_cloud(points(centre=(50.0, 0.0, 0.0)), "map", TimeMsg(sec=3))
    assert probe.publish_until(publisher, far, lambda: probe.diagnostic_count(
        "/cropped", "rejected") >= 1, timeout=0.5), node.log()
    assert probe.wait(lambda: probe.diagnostic_levels.get("/cropped") == WARN, 3)
    assert probe.diagnostic_count("/cropped", "failed") == 0
    assert "lies inside the crop box" in node.log()
    assert probe.publish_until(publisher, xyz_to_cloud(points(), "map", TimeMsg(sec=4)),
                               lambda: stamped(outputs, 4), timeout=0.5), node.log()


def test_min_range_above_max_range_at_run_time_is_refused_and_frames_go_on(probe, start_node):
    node = start(start_node, "classification_node", "range_rule", "/range_rule_in")
    publisher, outputs = connect(probe, node, "/range_rule_in", "/range_rule/classification",
                                 ObjectClassification)
    assert set_parameter(probe, "/range_rule", "max_range", 1.0).successful
    refused = set_parameter(probe, "/range_rule", "min_range", 5.0)
    assert not refused.successful
    with pytest.raises(ConfigError) as evaluator:  # the offline evaluator's words
        resolved_configs(load_pipeline_entry("classification_node",
                                             {"max_range": 1.0, "min_range": 5.0}))
    assert refused.reason == str(evaluator.value) == "min_range 5.0 exceeds max_range 1.0"
    # The accepted max_range is applied: a cloud 2 m away is cropped away (rejected) ...
    assert probe.publish_until(publisher, object_cloud(points(), 3, "map", TimeMsg(sec=5)),
                               lambda: probe.diagnostic_count("/range_rule", "rejected") >= 1,
                               timeout=0.5), node.log()
    assert set_parameter(probe, "/range_rule", "max_range", 100.0).successful
    # ... and, once lifted, the next cloud is classified.
    assert probe.publish_until(publisher, object_cloud(points(), 3, "map", TimeMsg(sec=6)),
                               lambda: stamped(outputs, 6), timeout=1.0), node.log()
    assert probe.diagnostic_count("/range_rule", "failed") == 0


def load_pipeline_entry(executable: str, parameters: dict, tmp: Path | None = None):
    """A one-node pipeline entry with inline parameters (what a pipeline YAML would give)."""
    import tempfile

    directory = Path(tmp or tempfile.mkdtemp())
    path = directory / "one_node_pipeline.yaml"
    path.write_text(yaml.safe_dump({"nodes": [{"executable": executable,
                                               "parameters": [parameters]}]}))
    (entry,) = load_pipeline(path)
    return entry


def test_a_bad_start_up_value_is_refused_alike_by_the_node_and_the_evaluator(probe, start_node,
                                                                           tmp_path):
    """icp: point2plane, the case the old evaluator ran as point-to-point."""
    node = start(start_node, "registration_node", "bad_icp", "/bad_icp_in",
                 "-p", "icp:=point2plane")
    assert probe.wait(lambda: probe.diagnostic_levels.get("/bad_icp") == ERROR, 30), node.log()
    with pytest.raises(ConfigError) as evaluator:
        resolved_configs(load_pipeline_entry("registration_node", {"icp": "point2plane"},
                                             tmp_path))
    assert str(evaluator.value) == \
        "icp must be one of ['none', 'point_to_point', 'point_to_plane'], got 'point2plane'"
    assert str(evaluator.value) in probe.diagnostic_messages["/bad_icp"]
    assert node.alive()


def test_an_empty_reference_file_is_reported_as_unset(probe, start_node):
    node = start(start_node, "registration_node", "unset_ref", "/unset_ref_in")
    assert probe.wait(lambda: probe.diagnostic_levels.get("/unset_ref") == ERROR, 60), node.log()
    assert "reference_file is unset" in probe.diagnostic_messages["/unset_ref"]
    assert node.alive()


def test_a_checkpoint_that_does_not_build_its_model_is_a_configure_error(probe, start_node,
                                                                        tmp_path):
    """A payload whose config lacks a key raised a silent KeyError in configure before."""
    broken = save_checkpoint(tmp_path / "no_config.pt", model="deepgmr", state_dict={},
                             config={})
    node = start(start_node, "registration_node", "broken_ckpt", "/broken_ckpt_in",
                 "-p", f"checkpoint:={broken}", "-p", "reference_mode:=topic")
    assert probe.wait(lambda: probe.diagnostic_levels.get("/broken_ckpt") == ERROR, 60), \
        node.log()
    message = probe.diagnostic_messages["/broken_ckpt"]
    assert str(broken) in message and "KeyError" in message, message
    assert "configure failed" in node.log() and node.alive()


def test_a_truncated_reference_is_rejected_and_the_last_good_one_kept(probe, start_node):
    mesh = procedural_mesh("chair", np.random.default_rng(11))
    mesh.apply_scale(0.4)
    model = sample_surface(mesh, 2048, np.random.default_rng(1)).astype(np.float32)
    node = start(start_node, "registration_node", "topic_ref", "/topic_ref_in",
                 "-p", "reference_mode:=topic", "-r", "reference:=/topic_ref_reference")
    results = probe.record(RegistrationResult, "/topic_ref/result")
    reference = probe.publisher(PointCloud2, "/topic_ref_reference", best_effort=False)
    clouds = probe.publisher(PointCloud2, "/topic_ref_in")
    assert probe.wait_for_subscribers(clouds, timeout=60), node.log()
    assert probe.wait_for_subscribers(reference, timeout=10), node.log()
    reference.publish(xyz_to_cloud(model, "model", TimeMsg(sec=1)))
    scan = model + np.float32([1.0, 0.0, 0.0])
    assert probe.publish_until(clouds, xyz_to_cloud(scan, "sensor", TimeMsg(sec=2)),
                               lambda: stamped(results, 2), timeout=1.0), node.log()
    truncated = xyz_to_cloud(model, "model", TimeMsg(sec=3))
    truncated.data = truncated.data[:len(truncated.data) // 2]
    reference.publish(truncated)
    probe.spin_for(0.5)
    for sec in (4, 5):  # every later frame still registers, against the last good reference
        assert probe.publish_until(clouds, xyz_to_cloud(scan, "sensor", TimeMsg(sec=sec)),
                                   lambda: stamped(results, sec), timeout=1.0), node.log()
    assert "rejected reference" in node.log() and "keeping the previous reference" in node.log()
    last = next(r for r in results if r.header.stamp.sec == 5)
    assert last.fitness > 0.9, last
    assert probe.diagnostic_count("/topic_ref", "failed") == 0


def test_a_stalled_worker_is_reported_replaced_and_the_error_cleared_after_recovery(
        probe, start_node):
    """A frame waiting 3 s for a transform that never comes, with stall_timeout 1 s."""
    node = start(start_node, "preprocess_node", "stall", "/stall_in", "-p", "target_frame:=map",
                 "-p", "tf_timeout:=3.0", "-p", "stall_timeout:=1.0")
    publisher, outputs = connect(probe, node, "/stall_in", "/stall/points", frame="map")
    publisher.publish(xyz_to_cloud(points(), "nowhere", TimeMsg(sec=2)))
    assert probe.wait(lambda: probe.diagnostic_levels.get("/stall") == ERROR, 10), node.log()
    assert "the worker stalled" in probe.diagnostic_messages["/stall"]
    assert "a new worker was started" in node.log()
    # The new worker takes the next good cloud while the old one is still waiting.
    assert probe.publish_until(publisher, xyz_to_cloud(points(), "map", TimeMsg(sec=3)),
                               lambda: stamped(outputs, 3), timeout=0.5), node.log()
    assert probe.wait(lambda: probe.diagnostics.get("/stall", {}).get("last_error") == "", 5)
    assert probe.wait(lambda: probe.diagnostic_levels.get("/stall") == OK, 5), \
        probe.diagnostic_messages["/stall"]


def test_the_runner_keeps_its_good_nodes_when_one_has_a_bad_parameter(probe, start_node,
                                                                       tmp_path):
    pipeline = tmp_path / "two_nodes_pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({"nodes": [
        {"executable": "preprocess_node", "name": "broken",
         "parameters": [{"voxel_size": -1.0, "diagnostics_period": 0.2}],
         "remappings": {"points": "/runner_broken_in"}},
        {"executable": "preprocess_node", "name": "healthy",
         "parameters": [{"diagnostics_period": 0.2}],
         "remappings": {"points": "/runner_healthy_in"}},
    ]}))
    runner = start_node([str(BIN / "gmm_perception_runner"), str(pipeline)])
    publisher, outputs = connect(probe, runner, "/runner_healthy_in", "/healthy/points")
    assert probe.wait(lambda: probe.diagnostic_levels.get("/broken") == ERROR, 10), runner.log()
    assert "voxel_size must be in [0.0, 10.0], got -1.0" in probe.diagnostic_messages["/broken"]
    assert probe.publish_until(publisher, xyz_to_cloud(points(), "map", TimeMsg(sec=9)),
                               lambda: stamped(outputs, 9), timeout=0.5), runner.log()
    assert runner.alive()


@pytest.mark.parametrize("argv", [["preprocess_node"],
                                  ["gmm_perception_runner", "config/preprocess_pipeline.yaml"]],
                         ids=["node", "runner"])
@pytest.mark.parametrize("signals", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_sigint_ends_a_node_or_the_runner_with_status_0_and_no_traceback(probe, argv, signals):
    """`ros2 launch` ending (or a terminal's Ctrl-C, which reaches a node twice)."""
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([str(BIN / argv[0]), *[str(root / a) for a in argv[1:]]],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        assert probe.wait(lambda: "/preprocess" in probe.diagnostic_levels, 30)
        for _ in range(signals):
            process.send_signal(signal.SIGINT)
            time.sleep(0.02)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output.decode()
    assert b"Traceback" not in output, output.decode()


def test_fixing_a_refused_start_up_value_brings_the_node_up(probe, start_node):
    node = start(start_node, "preprocess_node", "fixed", "/fixed_in", "-p", "voxel_size:=-1.0")
    assert probe.wait(lambda: probe.diagnostic_levels.get("/fixed") == ERROR, 20), node.log()
    assert "voxel_size must be in [0.0, 10.0], got -1.0" in probe.diagnostic_messages["/fixed"]
    assert set_parameter(probe, "/fixed", "voxel_size", 10.0).successful
    # Configured and active again by itself (autostart), with the fixed value applied.
    publisher, outputs = connect(probe, node, "/fixed_in", "/fixed/points")
    assert len(outputs[-1].data) // outputs[-1].point_step == 1  # one 10 m voxel
    assert "configuring again" in node.log()
    assert probe.wait(lambda: probe.diagnostic_levels.get("/fixed") == OK, 5), \
        probe.diagnostic_messages["/fixed"]
