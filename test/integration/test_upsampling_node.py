"""upsampling_node with the shipped ShapeGF checkpoint, as its own process: sparse clouds of
held-out SH3D models (never seen in training) come back denser and closer to the true surface
(issue 8's "done when"), a cloud already dense passes through unchanged and flagged (issue 18),
and bad clouds are rejected without stopping the node."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.mesh_dataset import default_data_dir
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.pointcloud2 import object_id_of, read_points, read_xyz
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.transforms import rotation_z
from gmm_perception.metrics.chamfer import chamfer_distance
from gmm_perception.ros.pointcloud import object_cloud, xyz_to_cloud

pytestmark = pytest.mark.integration
NODE = "/upsampling_it"
IN = "/ups_objects"
DATA = default_data_dir() / "sh3d"
CLASSES = ("person", "car", "chair", "table", "lamp", "plant")  # one held-out object each
INPUT_POINTS = 512
OUTPUT_POINTS = 2048
TRUTH_POINTS = 20_000  # mesh surface samples: the true surface, denser than either cloud
# The dense clouds' mean Chamfer to the surface must be at least this fraction below the sparse
# inputs' own: the gain the issue asks for, not a tie within the objects' scatter.
CHAMFER_GAIN = 0.05
SCALE, PLACE = 0.4, np.array([3.0, 0.5, 0.4])  # unit shapes -> ~0.8 m objects 3 m away


@pytest.fixture(scope="module")
def held_out():
    """(object_id, sparse input, true surface) per object, placed alike in frame 'map'."""
    if not (DATA / "sh3d_points_2048.npz").is_file() or not (DATA / "sh3d_meshes.npz").is_file():
        pytest.skip(f"no SH3D data in {DATA} (`gmm-perception data sh3d` builds it)")
    shapes = ShapeSet.load(DATA / "sh3d_points_2048.npz").subset("test")
    meshes = MeshSet.load(DATA / "sh3d_meshes.npz")
    rng = np.random.default_rng(0)
    objects = []
    for object_id, name in enumerate(CLASSES, start=1):
        k = int(np.flatnonzero(shapes.labels == shapes.class_names.index(name))[0])
        surface = sample_surface(meshes.mesh(meshes.index_of(shapes.model_ids[k])),
                                 TRUTH_POINTS, rng)
        sparse = shapes.points[k][rng.choice(len(shapes.points[k]), INPUT_POINTS, replace=False)]
        turn = rotation_z(rng.uniform(0, 2 * np.pi)).T * SCALE
        objects.append((object_id, (sparse @ turn + PLACE).astype(np.float32),
                        surface @ turn + PLACE))
    return objects


def start(start_node, *extra):
    return start_node("upsampling_node", "-r", "__node:=upsampling_it", "-r", f"points:={IN}",
                      *extra)


def test_held_out_objects_come_back_dense_and_closer_to_their_surface(probe, start_node,
                                                                      held_out):
    # The gate off: this test is about the model's output, whatever the objects' density.
    node = start(start_node, "-p", f"output_points:={OUTPUT_POINTS}",
                 "-p", "density_threshold:=0.0")
    dense = probe.record(PointCloud2, f"{NODE}/dense")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()

    answer = lambda object_id: next(  # noqa: E731
        (msg for msg in dense if object_id_of(msg) == object_id), None)
    input_cd, dense_cd = [], []
    for object_id, sparse, surface in held_out:
        # One object at a time: the node keeps only the newest input (queue_size 1).
        cloud = object_cloud(sparse, object_id, "map", TimeMsg(sec=object_id, nanosec=7))
        assert probe.publish_until(publisher, cloud, lambda: answer(object_id) is not None,
                                   attempts=12, timeout=5.0), node.log()
        msg = answer(object_id)
        assert msg.header.frame_id == "map"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (object_id, 7)
        points = read_xyz(msg, drop_invalid=False)
        assert points.shape == (OUTPUT_POINTS, 3) and np.isfinite(points).all()
        assert (read_points(msg)["upsampled"] == 1).all()
        input_cd.append(chamfer_distance(sparse, surface))
        dense_cd.append(chamfer_distance(points, surface))
    summary = f"input CD {np.round(input_cd, 4)}, dense CD {np.round(dense_cd, 4)}"
    print(summary)
    assert np.mean(dense_cd) < (1 - CHAMFER_GAIN) * np.mean(input_cd), summary


def test_a_dense_object_passes_through_unchanged_and_a_sparse_one_is_upsampled(
        probe, start_node, held_out):
    """At the default density threshold (300 points per square metre of the bounding surface):
    the true surface of a 0.8 m object, 20,000 points (some 10,000 per m^2), comes back as the
    very points it was, flagged upsampled=0; 128 of its sparse points (under 100 per m^2) come
    back as OUTPUT_POINTS of ShapeGF's, flagged 1."""
    node = start(start_node, "-p", f"output_points:={OUTPUT_POINTS}")
    dense_out = probe.record(PointCloud2, f"{NODE}/dense")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()
    _, sparse, surface = held_out[2]
    answer = lambda object_id: next(  # noqa: E731
        (msg for msg in dense_out if object_id_of(msg) == object_id), None)
    dense_in = surface.astype(np.float32)
    assert probe.publish_until(publisher, object_cloud(dense_in, 21, "map", TimeMsg(sec=21)),
                               lambda: answer(21) is not None, attempts=12, timeout=5.0), \
        node.log()
    passed = answer(21)
    np.testing.assert_array_equal(read_xyz(passed, drop_invalid=False), dense_in)
    assert (read_points(passed)["upsampled"] == 0).all()
    assert probe.publish_until(publisher, object_cloud(sparse[:128], 22, "map", TimeMsg(sec=22)),
                               lambda: answer(22) is not None, attempts=12, timeout=5.0), \
        node.log()
    upsampled = answer(22)
    assert read_xyz(upsampled, drop_invalid=False).shape == (OUTPUT_POINTS, 3)
    assert (read_points(upsampled)["upsampled"] == 1).all()
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "passed_through") >= 1
                      and probe.diagnostic_count(NODE, "upsampled") >= 1, 5), node.log()


def test_bad_clouds_are_rejected_and_the_node_carries_on(probe, start_node, held_out):
    node = start(start_node)
    dense = probe.record(PointCloud2, f"{NODE}/dense")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()
    rejected = lambda: probe.diagnostic_count(NODE, "rejected")  # noqa: E731
    bad = [xyz_to_cloud(np.zeros((0, 3), np.float32), "map", TimeMsg(sec=1)),
           xyz_to_cloud(np.full((100, 3), np.nan, np.float32), "map", TimeMsg(sec=2)),
           object_cloud(held_out[0][1][:5], 3, "map", TimeMsg(sec=3))]
    for count, cloud in enumerate(bad, start=1):
        # Diagnostics come once a second: each rejection is seen before the next cloud goes.
        assert probe.publish_until(publisher, cloud, lambda: rejected() >= count, attempts=10,
                                   timeout=1.5), (count, node.log())
    # A good cloud with some NaN rows (dropped by read_cloud) is still upsampled.
    points = held_out[0][1].copy()
    points[::10] = np.nan
    good = object_cloud(points, 9, "map", TimeMsg(sec=4))
    assert probe.publish_until(publisher, good, lambda: any(object_id_of(m) == 9 for m in dense),
                               attempts=12, timeout=5.0), node.log()
    assert all(object_id_of(m) == 9 for m in dense)  # nothing came of the bad clouds
    assert np.isfinite(read_xyz(dense[0], drop_invalid=False)).all()
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "processed") >= 1, 5)
    assert probe.diagnostic_count(NODE, "failed") == 0
    log = node.log()
    assert "rejected input" in log and "EmptyCloudError" in log, log
    assert node.alive()
