"""segmentation_node as its own process: a scene cloud over DDS in, one cloud per object out."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.data.pointcloud2 import MalformedCloudError, object_id_of, read_fields
from gmm_perception.pipeline.segment import SegmentedObject
from gmm_perception.ros.pointcloud import object_cloud, xyz_to_cloud
from gmm_perception.ros.segmentation_node import object_markers

pytestmark = pytest.mark.integration

NODE = "/segmentation_it"
IN = "/it_scene"
OBJECTS, MARKERS = f"{NODE}/objects", f"{NODE}/markers"
CENTRES = [np.array([1.0, 0.0, 0.4]), np.array([-0.8, 0.7, 0.3]), np.array([0.0, -1.0, 0.3])]
RADII = [0.15, 0.12, 0.10]


def scene(seed: int, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A 4 m x 4 m noisy floor at z = 0 and three spheres above it, moved by `shift`."""
    rng = np.random.default_rng(seed)
    parts = [np.c_[rng.uniform(-2, 2, (12_000, 2)), rng.normal(0, 0.003, 12_000)]]
    for centre, radius in zip(CENTRES, RADII):
        directions = rng.normal(size=(1200, 3))
        parts.append(directions / np.linalg.norm(directions, axis=1, keepdims=True) * radius
                     + centre + shift)
    return np.vstack(parts).astype(np.float32)


def cloud(points: np.ndarray, sec: int) -> PointCloud2:
    return xyz_to_cloud(points, "map", TimeMsg(sec=sec))


def frame(objects: list, markers: list, sec: int):
    """The object clouds and the marker array of the input stamped `sec`."""
    clouds = [msg for msg in objects if msg.header.stamp.sec == sec]
    arrays = [msg for msg in markers if msg.markers and msg.markers[0].header.stamp.sec == sec]
    return clouds, arrays[0] if arrays else None


def complete(objects: list, markers: list, sec: int, count: int = 3) -> bool:
    """All of a frame's outputs are in: the topics are separate, so their order is not fixed."""
    clouds, array = frame(objects, markers, sec)
    return len(clouds) == count and array is not None


def ids_by_centre(clouds: list, shift=(0.0, 0.0, 0.0)) -> list[int]:
    """Each true centre's object id, checking the centroid (2 cm) and the id field."""
    found = {}
    for msg in clouds:
        fields = read_fields(msg, ["object_id"])
        object_id = object_id_of(msg)
        assert (fields["object_id"] == object_id).all()
        assert msg.header.frame_id == "map"
        found[object_id] = fields["xyz"].mean(axis=0)
    ids = []
    for centre in CENTRES:
        object_id, centroid = min(found.items(),
                                  key=lambda item: np.linalg.norm(item[1] - centre - shift))
        assert np.linalg.norm(centroid - centre - shift) < 0.02, (centre, centroid)
        ids.append(object_id)
    return ids


def check_markers(array: MarkerArray, ids: list[int]) -> None:
    assert array.markers[0].action == Marker.DELETEALL
    boxes = [m for m in array.markers[1:] if m.type == Marker.LINE_LIST]
    labels = [m for m in array.markers[1:] if m.type == Marker.TEXT_VIEW_FACING]
    assert sorted(m.id for m in boxes) == sorted(ids) and {m.ns for m in boxes} == {"objects"}
    assert sorted(int(m.text) for m in labels) == sorted(ids)
    assert all(len(m.points) == 24 for m in boxes)  # 12 edges
    assert all(m.header.frame_id == "map" for m in array.markers)


def test_scene_in_objects_out_with_stable_ids_and_bad_clouds_survived(probe, start_node):
    node = start_node("segmentation_node", "-r", "__node:=segmentation_it", "-r", f"points:={IN}",
                      "-p", "queue_size:=8", "-p", "input_depth:=8")
    objects = probe.record(PointCloud2, OBJECTS)
    markers = probe.record(MarkerArray, MARKERS)
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=20), node.log()
    # Best effort: repeat the (valid) first scene until one comes back (see test_preprocess_node).
    assert probe.publish_until(publisher, cloud(scene(0), sec=1), lambda: markers), \
        f"no round trip within 15 s\n{node.log()}"
    probe.spin_for(0.3)

    publisher.publish(cloud(scene(1), sec=10))
    assert probe.wait(lambda: complete(objects, markers, 10), 10), node.log()
    clouds, array = frame(objects, markers, 10)
    ids = ids_by_centre(clouds)
    assert sorted(ids) == [1, 2, 3]  # the warm-up frames found the same three objects
    check_markers(array, ids)

    shift = np.array([0.05, -0.04, 0.0])  # everything moved 6 cm: same objects, same ids
    publisher.publish(cloud(scene(2, shift), sec=11))
    assert probe.wait(lambda: complete(objects, markers, 11), 10), node.log()
    assert ids_by_centre(frame(objects, markers, 11)[0], shift) == ids

    publisher.publish(cloud(np.zeros((0, 3), dtype=np.float32), sec=12))
    probe.spin_for(0.05)
    publisher.publish(cloud(np.full((200, 3), np.nan, dtype=np.float32), sec=13))
    assert probe.wait(lambda: probe.diagnostic_count(NODE, "rejected") == 2, 10), \
        (probe.diagnostics.get(NODE), node.log())
    publisher.publish(cloud(scene(3, shift), sec=14))
    assert probe.wait(lambda: complete(objects, markers, 14), 10), node.log()
    assert ids_by_centre(frame(objects, markers, 14)[0], shift) == ids
    assert not frame(objects, markers, 12)[0] and not frame(objects, markers, 13)[0]
    assert probe.diagnostic_count(NODE, "failed") == 0 and node.alive()


def test_object_clouds_carry_their_id_and_boxes_have_twelve_edges():
    points = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    msg = object_cloud(points, 7, "map", TimeMsg(sec=3))
    assert object_id_of(msg) == 7 and msg.header.stamp.sec == 3
    assert [f.name for f in msg.fields] == ["x", "y", "z", "object_id"]
    np.testing.assert_array_equal(read_fields(msg)["xyz"], points)
    assert object_id_of(xyz_to_cloud(points)) is None  # not an object cloud
    assert object_id_of(object_cloud(points[:0], 7, "map", TimeMsg())) is None
    mixed = xyz_to_cloud(points, fields={"object_id": np.arange(50, dtype=np.uint32)})
    with pytest.raises(MalformedCloudError, match="mixes"):
        object_id_of(mixed)

    low, high = np.zeros(3, np.float32), np.array([1, 2, 3], np.float32)
    obj = SegmentedObject(id=5, points=np.stack([low, high]), centroid=(low + high) / 2.0,
                          box_min=low, box_max=high)
    array = object_markers([obj], "map", TimeMsg(sec=3), np.array([0.0, 0.0, 1.0]))
    box = array.markers[1]
    ends = np.array([[p.x, p.y, p.z] for p in box.points]).reshape(12, 2, 3)
    assert ((ends[:, 0] != ends[:, 1]).sum(axis=1) == 1).all()  # each edge along one axis
    assert len({tuple(map(tuple, edge)) for edge in ends}) == 12
    assert {tuple(c) for c in ends.reshape(-1, 3)} == \
        {(x, y, z) for x in (0, 1) for y in (0, 2) for z in (0, 3)}
    label = array.markers[2]
    assert label.text == "5" and label.pose.position.z > high[2]
