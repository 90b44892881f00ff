"""shape_model_node with the shipped PointGMM checkpoint, as its own process: held-out SH3D objects
(never seen in training) sent over DDS come back as hierarchical GMMs, ellipsoids and a resampled
cloud close to the object's true surface; the refined mixture fits the observed points better
than the network's own; unusable clouds are rejected and the node carries on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.data.mesh_dataset import default_data_dir
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.pointcloud2 import object_id_of, read_xyz
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.transforms import rotation_z
from gmm_perception.metrics.chamfer import chamfer_distance
from gmm_perception.ros.mixture_msgs import msg_to_mixture
from gmm_perception.ros.pointcloud import object_cloud
from gmm_perception_msgs.msg import GaussianMixture

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NODE = "/shape_model_it"
IN = "/shape_objects"
SHAPES = default_data_dir() / "sh3d" / "sh3d_points_2048.npz"
MESHES = default_data_dir() / "sh3d" / "sh3d_meshes.npz"
CLASSES = ("chair", "table", "car")  # one held-out object of each
COMPONENTS = (8, 32, 128, 512)  # the shipped model's levels
RESAMPLE_POINTS = 3000
TRUTH_POINTS = 20000  # dense samples of the object's mesh: its true surface
# Chamfer distance (sum of the two mean nearest distances, unsquared) of the resampled cloud to
# the true surface, mean over the objects, for 0.8 m objects: 9 cm, about 11 % of their size.
# The shipped checkpoint (40 min of CPU training, see its card) measured 0.072 m (chair 0.105,
# table 0.059, car 0.053) where the filled bounding box scores 0.129 / 0.118 / 0.067 and the
# 2048 input points themselves about 0.01-0.02; refined by the default 15 EM iterations (issue
# 18), 0.029 m (0.027 / 0.037 / 0.022).
MAX_CHAMFER_M = 0.09


def place(points: np.ndarray, angle: float) -> np.ndarray:
    """A unit shape as a 0.8 m object standing 3 m away in a z-up frame, turned about z."""
    return (points @ rotation_z(angle).T * 0.4 + [3.0, 0.5, 0.4]).astype(np.float32)


@pytest.fixture(scope="module")
def held_out():
    """(object id, input cloud, true surface) of one test-split object per class, placed."""
    if not (SHAPES.is_file() and MESHES.is_file()):
        pytest.skip(f"no SH3D data in {SHAPES.parent} (`gmm-perception data sh3d` builds it)")
    shapes, meshes = ShapeSet.load(SHAPES).subset("test"), MeshSet.load(MESHES)
    rng = np.random.default_rng(0)
    objects = []
    for object_id, name in enumerate(CLASSES, start=1):
        row = int(np.flatnonzero(shapes.labels == shapes.class_names.index(name))[0])
        mesh = meshes.mesh(meshes.index_of(shapes.model_ids[row]))
        angle = rng.uniform(0, 2 * np.pi)
        objects.append((object_id, place(shapes.points[row], angle),
                        place(sample_surface(mesh, TRUTH_POINTS, rng), angle)))
    return objects


def start(start_node, *args):
    return start_node("shape_model_node", "-r", "__node:=shape_model_it", "-r", f"points:={IN}",
                      *args)


def at(messages: list, sec: int):
    """The message of `messages` stamped `sec` (None until it arrives)."""
    return next((m for m in messages if _stamp(m).sec == sec), None)


def _stamp(msg):
    return msg.markers[0].header.stamp if isinstance(msg, MarkerArray) else msg.header.stamp


def test_held_out_objects_come_back_as_hierarchical_gmms_near_their_surface(probe, start_node,
                                                                            held_out):
    node = start(start_node, "-p", f"resample_points:={RESAMPLE_POINTS}")
    levels = [probe.record(GaussianMixture, f"{NODE}/mixture/level_{level}")
              for level in range(len(COMPONENTS))]
    markers = probe.record(MarkerArray, f"{NODE}/markers")
    resampled = probe.record(PointCloud2, f"{NODE}/resampled")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()

    def answered(sec):
        return all(at(topic, sec) for topic in (*levels, markers, resampled))

    chamfers, baselines = [], []
    for object_id, points, truth in held_out:
        cloud = object_cloud(points, object_id, "map", TimeMsg(sec=object_id, nanosec=7))
        assert probe.publish_until(publisher, cloud, lambda: answered(object_id), attempts=60,
                                   timeout=1.0), node.log()
        parent_weights = None
        for level, count in enumerate(COMPONENTS):
            msg = at(levels[level], object_id)
            assert (msg.header.frame_id, msg.header.stamp.nanosec) == ("map", 7)
            assert msg.level == level and msg.dimension == 3
            assert msg.model_name.startswith("pointgmm:")
            weights, means, covariances = msg_to_mixture(msg)
            assert len(weights) == count and weights.sum() == pytest.approx(1.0, abs=1e-6)
            np.testing.assert_allclose(covariances, covariances.transpose(0, 2, 1), atol=1e-12)
            assert np.all(np.linalg.eigvalsh(covariances) > 0)
            parents = np.asarray(msg.parent_indices)
            if level == 0:
                assert len(parents) == 0
            else:
                assert len(parents) == count and 0 <= parents.min() <= parents.max() < count // 4
                np.testing.assert_allclose(np.bincount(parents, weights, len(parent_weights)),
                                           parent_weights, atol=1e-6)
            parent_weights = weights
        ellipsoids = at(markers, object_id).markers  # the finest level by default
        assert {m.ns for m in ellipsoids} == {f"shape_model/{object_id}"}
        assert [m.id for m in ellipsoids] == list(range(COMPONENTS[-1]))
        assert all(m.action == Marker.ADD and m.header.frame_id == "map" for m in ellipsoids)
        np.testing.assert_allclose([[m.pose.position.x, m.pose.position.y, m.pose.position.z]
                                    for m in ellipsoids], means, atol=1e-9)
        out = at(resampled, object_id)
        assert out.header.frame_id == "map" and object_id_of(out) == object_id
        drawn = read_xyz(out)
        assert drawn.shape == (RESAMPLE_POINTS, 3)
        # A baseline that knows the object's extent but not its shape: its bounding box, filled.
        low, high = truth.min(axis=0), truth.max(axis=0)
        box = np.random.default_rng(object_id).uniform(low, high, (RESAMPLE_POINTS, 3))
        chamfers.append(chamfer_distance(drawn, truth))
        baselines.append(chamfer_distance(box, truth))
    print(f"\nChamfer to the true surface (m): resampled {np.round(chamfers, 4).tolist()}, "
          f"bounding box {np.round(baselines, 4).tolist()}")
    assert np.all(np.array(chamfers) < np.array(baselines)), (chamfers, baselines)
    assert np.mean(chamfers) < MAX_CHAMFER_M, chamfers

    # Fewer ellipsoids replace the object's previous ones: the rest are deleted by id.
    def set_marker_level(value):
        request = SetParameters.Request(parameters=[ParameterMsg(name="marker_level", value=(
            ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)))])
        return probe.call(SetParameters, f"{NODE}/set_parameters", request).results[0]

    assert not set_marker_level(len(COMPONENTS)).successful  # beyond the model's depth
    assert set_marker_level(0).successful
    object_id, points, _ = held_out[0]
    cloud = object_cloud(points, object_id, "map", TimeMsg(sec=50))
    assert probe.publish_until(publisher, cloud, lambda: at(markers, 50), timeout=1.0)
    replaced = at(markers, 50).markers
    assert [(m.id, m.action) for m in replaced] == \
        [(k, Marker.ADD) for k in range(COMPONENTS[0])] \
        + [(k, Marker.DELETE) for k in range(COMPONENTS[0], COMPONENTS[-1])]
    assert all(m.ns == f"shape_model/{object_id}" for m in replaced)


def observed_nll(msg: GaussianMixture, points: np.ndarray) -> float:
    """Mean negative log-likelihood per point of `points` under the message's mixture (scipy)."""
    weights, means, covariances = msg_to_mixture(msg)
    log_joint = np.stack([np.log(w) + multivariate_normal(m, c).logpdf(points)
                          for w, m, c in zip(weights, means, covariances) if w > 0], axis=1)
    return float(-logsumexp(log_joint, axis=1).mean())


def test_the_refined_mixture_fits_the_observed_points_better_than_the_networks(
        probe, start_node, held_out):
    # issue 18's "done when": EM from the network's finest level, published over DDS
    node = start(start_node, "-p", "refine_iterations:=10")
    finest = probe.record(GaussianMixture, f"{NODE}/mixture/level_{len(COMPONENTS) - 1}")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()
    object_id, points, _ = held_out[0]

    def nll_at(sec: int) -> float:
        cloud = object_cloud(points, object_id, "map", TimeMsg(sec=sec))
        assert probe.publish_until(publisher, cloud, lambda: at(finest, sec), attempts=60,
                                   timeout=1.0), node.log()
        return observed_nll(at(finest, sec), points.astype(np.float64))

    refined = nll_at(1)
    request = SetParameters.Request(parameters=[ParameterMsg(name="refine_iterations", value=(
        ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=0)))])
    assert probe.call(SetParameters, f"{NODE}/set_parameters", request).results[0].successful
    unrefined = nll_at(2)  # the same cloud: the network's mixture as predicted
    print(f"\nNLL of the observed points (nats/point): refined {refined:.3f}, network "
          f"{unrefined:.3f}")
    assert refined < unrefined - 0.5, (refined, unrefined)


def test_unusable_clouds_are_rejected_and_the_node_carries_on(probe, start_node, held_out):
    node = start(start_node, "-p", "diagnostics_period:=0.2")
    resampled = probe.record(PointCloud2, f"{NODE}/resampled")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), node.log()
    nan = np.full((100, 3), np.nan, np.float32)
    five = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32) + [3.0, 0.5, 0.4]
    bad = [(np.zeros((0, 3), np.float32), "no finite points among 0"),
           (nan, "no finite points among 100"), (five, "5 points are too few")]
    for sec, (points, reason) in enumerate(bad, start=101):
        rejected = probe.diagnostic_count(NODE, "rejected")
        cloud = object_cloud(points, sec, "map", TimeMsg(sec=sec))
        assert probe.publish_until(
            publisher, cloud, lambda: probe.diagnostic_count(NODE, "rejected") > rejected,
            timeout=0.5), node.log()
        assert probe.wait(lambda: reason in node.log(), 5), node.log()
        probe.spin_for(1.1)  # past the node's 1 s throttle of the rejection warning
    good = object_cloud(held_out[0][1], 10, "map", TimeMsg(sec=104))
    assert probe.publish_until(publisher, good, lambda: at(resampled, 104), timeout=1.0), \
        node.log()
    assert not any(at(resampled, sec) for sec in (101, 102, 103))
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "processed") >= 1, 5)
    assert probe.diagnostic_count(NODE, "failed") == 0, probe.diagnostics[NODE]
    assert node.alive()
