"""segmentation_node: a scene cloud in, one cloud per object out (robots see scenes, not objects).

Input `points`, preprocessed with the shared parameters, then segmented (ground plane removed,
DBSCAN clusters, ids tracked across frames; see gmm_perception/pipeline/segment.py). Publishes
per frame one `~/objects` PointCloud2 per object (x, y, z and a constant `object_id` field; use
:func:`object_id_of` to read it) and a `~/markers` MarkerArray (boxes and ids) for rviz.
Set `target_frame` to a fixed frame (map, odom): ids and accumulation assume one.
"""
from __future__ import annotations

import colorsys

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.pipeline.segment import SegmentConfig, SegmentedObject, Segmenter
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.pointcloud import MalformedCloudError, read_points, xyz_to_cloud
from gmm_perception.ros.preprocess_node import PREPROCESS_PARAMETERS, config_from_parameters
from gmm_perception.ros.qos import make_qos

OBJECT_ID_FIELD = "object_id"

SEGMENTATION_PARAMETERS = [
    ParameterSpec("plane_distance", 0.02, "RANSAC inlier distance of the ground plane, metres.",
                  min_value=0.001, max_value=1.0),
    ParameterSpec("plane_iterations", 200, "RANSAC hypotheses per plane search.",
                  min_value=1, max_value=100_000),
    ParameterSpec("min_plane_points", 0.1, "Inliers a plane needs to be removed: below 1 a "
                  "fraction of the cloud, from 1 a point count.", min_value=0.0, max_value=1e9),
    ParameterSpec("max_plane_tilt_deg", 30.0, "Only remove a plane whose normal is within this "
                  "angle of 'up' (90 accepts any plane).", min_value=0.0, max_value=90.0),
    ParameterSpec("up", [0.0, 0.0, 1.0], "Up direction [x, y, z] in the processing frame.",
                  length=3),
    ParameterSpec("cluster_eps", 0.05, "DBSCAN neighbourhood radius, metres.",
                  min_value=0.001, max_value=10.0),
    ParameterSpec("dbscan_min_points", 5, "DBSCAN density: neighbours within cluster_eps that "
                  "make a core point.", min_value=1, max_value=1000),
    ParameterSpec("min_cluster_points", 30, "Smaller clusters are noise.",
                  min_value=1, max_value=10_000_000),
    ParameterSpec("max_cluster_extent", 3.0, "Clusters with a longer box edge (walls) are "
                  "discarded, metres.", min_value=0.01, max_value=1000.0),
    ParameterSpec("max_objects", 32, "Largest clusters published per frame (also the history "
                  "depth of ~/objects).", read_only=True, min_value=1, max_value=1000),
    ParameterSpec("track_distance", 0.3, "Farthest centroid motion between frames that keeps "
                  "an object's id, metres.", min_value=0.001, max_value=100.0),
    ParameterSpec("track_timeout_frames", 10, "Frames an object may go unseen before its id "
                  "is dropped.", min_value=1, max_value=100_000),
    ParameterSpec("accumulate_frames", 1, "Frames whose non-ground points are clustered "
                  "together (1 = per frame; needs a fixed target_frame).",
                  min_value=1, max_value=100),
    ParameterSpec("accumulate_voxel", 0.0, "Voxel of the accumulated cloud, metres "
                  "(0 = cluster_eps / 2).", min_value=0.0, max_value=1.0),
]


def segment_config_from_parameters(param) -> SegmentConfig:
    names = [spec.name for spec in SEGMENTATION_PARAMETERS if spec.name != "up"]
    return SegmentConfig(up=tuple(param("up")), **{name: param(name) for name in names})


def object_cloud(points: np.ndarray, object_id: int, frame_id: str, stamp) -> PointCloud2:
    """One object's points with a UINT32 `object_id` field (the same value on every point)."""
    ids = np.full(len(points), object_id, dtype=np.uint32)
    return xyz_to_cloud(points, frame_id, stamp, fields={OBJECT_ID_FIELD: ids})


def object_id_of(msg: PointCloud2) -> int | None:
    """The object a cloud of `~/objects` holds; None for a cloud without ids (or points)."""
    field = next((f for f in msg.fields if f.name == OBJECT_ID_FIELD), None)
    if field is None:
        return None
    if field.count != 1:
        raise MalformedCloudError(f"{OBJECT_ID_FIELD} must have count 1, got {field.count}")
    ids = read_points(msg)[OBJECT_ID_FIELD]  # a view of the message: nothing is copied
    if ids.size == 0:
        return None
    if (ids != ids[0]).any():
        raise MalformedCloudError(f"cloud mixes objects {sorted(set(ids.tolist()))[:5]}")
    return int(ids[0])


def _box_edges(obj: SegmentedObject) -> list[Point]:
    """The 12 edges of the object's axis-aligned box as LINE_LIST point pairs."""
    low, high = obj.box_min.astype(float), obj.box_max.astype(float)
    corners = [Point(x=(high if i & 1 else low)[0], y=(high if i & 2 else low)[1],
                     z=(high if i & 4 else low)[2]) for i in range(8)]
    edges = [(i, i | bit) for i in range(8) for bit in (1, 2, 4) if not i & bit]
    return [corners[end] for edge in edges for end in edge]


def object_markers(objects: list[SegmentedObject], frame_id: str, stamp,
                   up: np.ndarray) -> MarkerArray:
    """DELETEALL (so vanished objects disappear), then a box and an id label per object."""
    markers = [Marker(action=Marker.DELETEALL)]
    for obj in objects:
        r, g, b = colorsys.hsv_to_rgb((obj.id * 0.618034) % 1.0, 0.8, 1.0)  # distinct per id
        box = Marker(ns="objects", id=obj.id, type=Marker.LINE_LIST, points=_box_edges(obj))
        box.scale.x, box.color.r, box.color.g, box.color.b, box.color.a = 0.01, r, g, b, 1.0
        label = Marker(ns="object_ids", id=obj.id, type=Marker.TEXT_VIEW_FACING, text=str(obj.id))
        above = obj.centroid + (0.5 * float(obj.extent.max()) + 0.1) * up
        label.pose.position = Point(x=float(above[0]), y=float(above[1]), z=float(above[2]))
        label.scale.z = 0.1
        label.color.r, label.color.g, label.color.b, label.color.a = r, g, b, 1.0
        markers += [box, label]
    for marker in markers:
        marker.header.frame_id, marker.header.stamp = frame_id, stamp
        marker.pose.orientation.w = 1.0
    return MarkerArray(markers=markers)


class SegmentationNode(PerceptionNode):
    """Subscribes `points`; publishes `~/objects` (one cloud per object) and `~/markers`."""

    parameters = [*PREPROCESS_PARAMETERS, *SEGMENTATION_PARAMETERS]

    def configure_node(self) -> None:
        self.preprocess = Preprocessor(config_from_parameters(self.param))
        self.segmenter = Segmenter(segment_config_from_parameters(self.param))
        if not self.param("target_frame"):
            self.get_logger().info("no target_frame: object ids and accumulation assume the "
                                   "input frame is fixed (not a moving sensor's)")
        # A frame's objects go out as a burst of up to max_objects messages: a history shorter
        # than that would let a reliable writer overwrite objects a reader has not acknowledged.
        depth = max(self.param("output_depth"), self.param("max_objects"))
        self.objects_pub = self.create_lifecycle_publisher(
            PointCloud2, "~/objects", make_qos(self.param("output_reliability"), depth))
        self.markers_pub = self.create_output(MarkerArray, "~/markers")

    def cleanup_node(self) -> None:
        if getattr(self, "objects_pub", None) is not None:  # the base destroys only its outputs
            self.destroy_lifecycle_publisher(self.objects_pub)
            self.objects_pub = None

    def reconfigure(self) -> None:
        try:
            preprocess = Preprocessor(config_from_parameters(self.param))
            config = segment_config_from_parameters(self.param)
        except ValueError as exc:  # e.g. up = [0, 0, 0], or crop_min > crop_max
            self.get_logger().error(f"keeping the previous parameters: {exc}")
            return
        self.preprocess = preprocess
        if config != self.segmenter.config:
            self.segmenter.reconfigure(config)  # keeps the tracks, so ids stay stable

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        result = self.segmenter(self.preprocess(cloud.points))
        for obj in result.objects:
            self.objects_pub.publish(object_cloud(obj.points, obj.id, cloud.frame_id, cloud.stamp))
        self.markers_pub.publish(object_markers(result.objects, cloud.frame_id, cloud.stamp,
                                                self.segmenter.config.unit_up))


def main(args=None) -> None:
    run_node(SegmentationNode, "segmentation", args)


if __name__ == "__main__":
    main()
