"""preprocess_node as its own process, exercised over real DDS from this test process."""
from __future__ import annotations

import numpy as np
import psutil
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import PointCloud2, PointField

from gmm_perception.data.pointcloud2 import read_xyz
from gmm_perception.geometry.transforms import euler_to_matrix, make_transform, transform_points
from ros_probe import Probe
from gmm_perception.ros.pointcloud import xyz_to_cloud
from gmm_perception.ros.tf import TfBroadcaster, make_transform_stamped

pytestmark = pytest.mark.integration

NODE = "/preprocess_it"
IN, OUT = "/it_points", f"{NODE}/points"


def start_preprocess(start_node, *extra: str):
    return start_node("preprocess_node", "-r", "__node:=preprocess_it", "-r", f"points:={IN}",
                      "-p", "voxel_size:=0.0", *extra)


def cloud(points: np.ndarray, frame: str = "sensor", sec: int = 0) -> PointCloud2:
    return xyz_to_cloud(points, frame, TimeMsg(sec=sec))


WARM_UP_SEC = 1_000_000


def connect(probe: Probe, start_node, *extra: str, warm_up_frame: str = "sensor"):
    """Start the node and return once a cloud has made the round trip.

    Discovery is asymmetric: our writer can see the node's reader before the reader knows our
    writer, and a best-effort sample sent then is lost. So warm-up clouds are sent until one
    comes back; they are valid, so they never count as rejected.
    """
    node = start_preprocess(start_node, *extra)
    outputs = probe.record(PointCloud2, OUT)
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=20), node.log()
    warm_up = cloud(np.zeros((1, 3), dtype=np.float32), frame=warm_up_frame, sec=WARM_UP_SEC)
    assert probe.publish_until(publisher, warm_up, lambda: outputs), \
        f"no round trip within 15 s\n{node.log()}"
    probe.spin_for(0.3)
    outputs.clear()
    return node, publisher, outputs


def test_million_point_best_effort_cloud_is_delivered_and_processed(probe, start_node):
    node, publisher, outputs = connect(probe, start_node)
    rng = np.random.default_rng(1)
    points = rng.uniform(-20, 20, size=(1_000_000, 3)).astype(np.float32)
    points[::1000] = np.nan  # 1000 invalid rows the node must drop
    publisher.publish(cloud(points, sec=7))
    assert probe.wait(lambda: outputs, timeout=20), node.log()
    result = outputs[0]
    assert result.header.frame_id == "sensor" and result.header.stamp.sec == 7
    np.testing.assert_array_equal(read_xyz(result), points[np.isfinite(points).all(axis=1)])


def test_bad_clouds_are_rejected_and_the_next_good_cloud_is_processed(probe, start_node):
    # A deep queue (and depth) so that no bad frame is displaced before the worker sees it.
    node, publisher, outputs = connect(probe, start_node, "-p", "queue_size:=8",
                                       "-p", "input_depth:=8")
    good = np.random.default_rng(2).normal(size=(500, 3)).astype(np.float32)
    truncated = cloud(good)
    truncated.data = truncated.data[:-7]  # data length no longer row_step * height
    no_z = cloud(good)
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    integer_xyz = cloud(good)
    for field in integer_xyz.fields:
        field.datatype = PointField.INT32
    all_nan = cloud(np.full((100, 3), np.nan, dtype=np.float32))
    empty = cloud(np.zeros((0, 3), dtype=np.float32))
    bad = [truncated, no_z, integer_xyz, all_nan, empty]
    for msg in bad:
        publisher.publish(msg)
        probe.spin_for(0.05)
    publisher.publish(cloud(good, sec=42))
    assert probe.wait(lambda: outputs, timeout=10), node.log()
    assert outputs[-1].header.stamp.sec == 42
    np.testing.assert_array_equal(read_xyz(outputs[-1]), good)
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "rejected") == len(bad), 5), \
        probe.diagnostics.get(NODE)
    assert probe.diagnostic_count(NODE, "processed") >= 1
    assert "data length" in node.log() and "rejected input" in node.log()
    assert node.alive()


def test_burst_beyond_rate_drops_frames_with_bounded_memory(probe, start_node):
    node, publisher, outputs = connect(probe, start_node, "-p", "voxel_size:=0.05")
    process = psutil.Process(node.pid)
    rng = np.random.default_rng(3)
    frames = [cloud(rng.uniform(-5, 5, (200_000, 3)).astype(np.float32), sec=i) for i in range(8)]
    publisher.publish(frames[0])
    assert probe.wait(lambda: outputs, timeout=10), node.log()
    rss_before = process.memory_info().rss
    for i in range(100):  # ~640 MB of clouds at full speed, far beyond the node's rate
        publisher.publish(frames[i % len(frames)])
        probe.spin(0.0)
    rss_after = process.memory_info().rss
    marker = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    probe.spin_for(1.0)
    publisher.publish(cloud(marker, sec=999))
    assert probe.wait(lambda: any(m.header.stamp.sec == 999 for m in outputs), 15), node.log()
    # Each marker point is alone in its voxel, so it comes back unchanged (voxel order aside).
    np.testing.assert_allclose(np.sort(read_xyz(outputs[-1]), axis=0), marker)
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "dropped") > 0, 5), probe.diagnostics
    # A queue that grew with the burst would hold hundreds of MB of clouds.
    assert rss_after - rss_before < 150e6, f"RSS grew by {(rss_after - rss_before) / 1e6:.0f} MB"


def test_parameters_are_validated_and_applied_at_run_time(probe, start_node):
    node, publisher, outputs = connect(probe, start_node)

    def set_parameter(name, value):
        kind = ParameterType.PARAMETER_DOUBLE if isinstance(value, float) \
            else ParameterType.PARAMETER_STRING
        value_msg = ParameterValue(type=kind, double_value=value) if isinstance(value, float) \
            else ParameterValue(type=kind, string_value=value)
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value_msg)])
        return probe.call(SetParameters, f"{NODE}/set_parameters", request).results[0]

    assert not set_parameter("voxel_size", -1.0).successful  # outside its declared range
    read_only = set_parameter("device", "cpu")
    assert not read_only.successful and "read-only" in read_only.reason.lower()
    result = set_parameter("voxel_size", 1.0)
    assert result.successful, result.reason

    # 1000 points in a 0.5 m cube fall into at most 8 one-metre voxels.
    points = np.random.default_rng(4).uniform(0.05, 0.45, (1000, 3)).astype(np.float32)
    publisher.publish(cloud(points, sec=5))
    assert probe.wait(lambda: outputs, timeout=10), node.log()
    assert len(read_xyz(outputs[-1])) == 1
    np.testing.assert_allclose(read_xyz(outputs[-1])[0], points.mean(axis=0), atol=1e-5)


def test_lifecycle_without_autostart_is_driven_by_services(probe, start_node):
    node = start_preprocess(start_node, "-p", "autostart:=false")

    def state():
        return probe.call(GetState, f"{NODE}/get_state", GetState.Request()).current_state.label

    def change(transition_id):
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return probe.call(ChangeState, f"{NODE}/change_state", request, timeout=20).success

    assert state() == "unconfigured"
    assert change(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
    assert change(Transition.TRANSITION_ACTIVATE) and state() == "active"
    outputs = probe.record(PointCloud2, OUT)
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=20), node.log()
    for _ in range(30):  # best effort: repeat until the reader has matched our writer
        publisher.publish(cloud(np.ones((3, 3), dtype=np.float32), sec=1))
        if probe.wait(lambda: outputs, timeout=0.3):
            break
    assert outputs, node.log()
    assert change(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
    assert probe.wait(lambda: publisher.get_subscription_count() == 0, 10)


def test_unknown_frame_is_rejected_until_tf_provides_it(probe, start_node):
    node, publisher, outputs = connect(probe, start_node, "-p", "target_frame:=map",
                                       "-p", "tf_timeout:=0.2", warm_up_frame="map")
    points = np.random.default_rng(5).normal(size=(50, 3)).astype(np.float32)
    publisher.publish(cloud(points, frame="lidar", sec=3))
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "rejected") == 1, 10), \
        (probe.diagnostics, node.log())
    assert "lidar" in node.log() and not outputs

    map_from_lidar = make_transform(euler_to_matrix(0.1, -0.2, 0.7), [1.0, -2.0, 0.5])
    TfBroadcaster(probe.node).send_static(make_transform_stamped(
        map_from_lidar, "map", "lidar", TimeMsg(sec=0)))
    probe.spin_for(1.0)
    publisher.publish(cloud(points, frame="lidar", sec=4))
    assert probe.wait(lambda: outputs, timeout=10), node.log()
    assert outputs[-1].header.frame_id == "map"
    expected = points @ map_from_lidar[:3, :3].T + map_from_lidar[:3, 3]
    np.testing.assert_allclose(read_xyz(outputs[-1]), expected, atol=1e-5)
    np.testing.assert_allclose(transform_points(map_from_lidar, points), expected, atol=1e-5)
