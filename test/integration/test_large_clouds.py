"""Large clouds over best-effort DDS, from this test process to a preprocess_node process.

The shipped Fast DDS profile (config/fastdds_shm.xml) must carry what a 1280 x 720 depth camera
produces, best-effort, even when the subscriber does not read while the clouds arrive (see
bench/large_clouds.py for where delivery stops).
"""
from __future__ import annotations

import array
import os
import signal

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import PointCloud2, PointField

from gmm_perception.data.pointcloud2 import read_xyz
from gmm_perception.ros.pointcloud import xyz_to_cloud
from ros_probe import Probe

pytestmark = pytest.mark.integration

NODE = "/large_clouds_it"
IN, OUT = "/large_it_points", f"{NODE}/points"
HEIGHT, WIDTH = 720, 1280
# PCL's PointXYZRGB: x, y, z, 4 bytes of padding, rgb, 12 bytes of padding (point_step 32).
XYZRGB = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4,
                   "offsets": [0, 4, 8, 16], "itemsize": 32})


def depth_cloud(seed: int, sec: int) -> tuple[PointCloud2, np.ndarray]:
    """An organised 1280 x 720 cloud of 32-byte points (29.5 MB), some pixels without depth
    (NaN); returns it with its finite points in row-major order."""
    rng = np.random.default_rng(seed)
    packed = np.zeros(HEIGHT * WIDTH, dtype=XYZRGB)
    xyz = rng.uniform(-3.0, 3.0, (HEIGHT * WIDTH, 3)).astype(np.float32)
    xyz[rng.random(HEIGHT * WIDTH) < 0.1] = np.nan  # no depth: NaN, as camera drivers publish
    packed["x"], packed["y"], packed["z"] = xyz.T
    packed["rgb"] = rng.random(HEIGHT * WIDTH, dtype=np.float32)
    msg = PointCloud2(height=HEIGHT, width=WIDTH, is_bigendian=False, point_step=32,
                      row_step=32 * WIDTH, is_dense=False)
    msg.header.frame_id = "camera_depth_optical_frame"
    msg.header.stamp = TimeMsg(sec=sec)
    msg.fields = [PointField(name=name, offset=XYZRGB.fields[name][1],
                             datatype=PointField.FLOAT32, count=1) for name in XYZRGB.names]
    data = array.array("B")
    data.frombytes(packed.tobytes())
    msg.data = data
    return msg, xyz[np.isfinite(xyz).all(axis=1)]


def test_depth_camera_clouds_arrive_best_effort_while_the_node_is_stopped(probe: Probe,
                                                                          start_node):
    node = start_node("preprocess_node", "-r", "__node:=large_clouds_it", "-r",
                      f"points:={IN}", "-p", "voxel_size:=0.0")
    outputs = probe.record(PointCloud2, OUT)
    publisher = probe.publisher(PointCloud2, IN, best_effort=True)
    assert probe.wait_for_subscribers(publisher, timeout=20), node.log()
    # Discovery first: a best-effort sample sent before the node knows our writer is lost.
    warm_up = xyz_to_cloud(np.zeros((1, 3), dtype=np.float32), "camera_depth_optical_frame",
                           TimeMsg(sec=1))
    assert probe.publish_until(publisher, warm_up, lambda: outputs), \
        f"no round trip within 15 s\n{node.log()}"
    probe.spin_for(0.3)
    outputs.clear()

    first, _ = depth_cloud(1, sec=10)
    second, expected = depth_cloud(2, sec=11)
    # Two clouds (910 fragments of ~64 KB) reach the node while it reads nothing: both must fit
    # the shared-memory port and segment, or the newest one is lost.
    os.kill(node.pid, signal.SIGSTOP)
    try:
        publisher.publish(first)
        publisher.publish(second)
        probe.spin_for(0.3)
    finally:
        os.kill(node.pid, signal.SIGCONT)

    assert probe.wait(lambda: any(m.header.stamp.sec == 11 for m in outputs), timeout=30), \
        f"the second 1280 x 720 cloud was not processed\n{node.log()}"
    result = next(m for m in outputs if m.header.stamp.sec == 11)
    assert result.header.frame_id == "camera_depth_optical_frame"
    np.testing.assert_array_equal(read_xyz(result), expected)
    assert node.alive()
