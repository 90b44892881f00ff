"""segmentation_node: a scene cloud in, one cloud per object out (robots see scenes, not objects).

Input `points`, preprocessed with the shared parameters, then segmented (ground plane removed,
DBSCAN clusters, ids tracked across frames; see gmm_perception/pipeline/segment.py). Publishes
per frame one `~/objects` PointCloud2 per object (x, y, z and a constant `object_id` field;
`data.pointcloud2.object_id_of` reads it) and a `~/markers` MarkerArray (boxes and ids).
Set `target_frame` to a fixed frame (map, odom): ids and accumulation assume one.
"""
from __future__ import annotations

import colorsys

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.pipeline.configs import PreprocessConfig, SegmentConfig
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.pipeline.segment import SegmentedObject, Segmenter
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.pointcloud import object_cloud


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

    executable = "segmentation_node"

    def configure_node(self) -> None:
        self.segmenter = None
        self.apply_configs(self.configs)
        if not self.settings.target_frame:
            self.get_logger().info("no target_frame: object ids and accumulation assume the "
                                   "input frame is fixed (not a moving sensor's)")
        # A frame's objects go out as a burst of up to max_objects messages: a history shorter
        # than that would let a reliable writer overwrite objects a reader has not acknowledged.
        self.objects_pub = self.create_output(PointCloud2, "~/objects", depth=max(
            self.settings.output_depth, self.configs[SegmentConfig].max_objects))
        self.markers_pub = self.create_output(MarkerArray, "~/markers")

    def apply_configs(self, configs: dict) -> None:
        self.preprocess = Preprocessor(configs[PreprocessConfig])
        if self.segmenter is None:
            self.segmenter = Segmenter(configs[SegmentConfig])
        elif configs[SegmentConfig] != self.segmenter.config:
            self.segmenter.reconfigure(configs[SegmentConfig])  # keeps the tracks: stable ids

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        result = self.segmenter(self.preprocess(cloud.points), cloud.origin)
        for obj in result.objects:
            self.objects_pub.publish(object_cloud(obj.points, obj.id, cloud.frame_id, cloud.stamp))
        self.markers_pub.publish(object_markers(result.objects, cloud.frame_id, cloud.stamp,
                                                self.segmenter.config.unit_up))


def main(args=None) -> None:
    run_node(SegmentationNode, "segmentation", args)


if __name__ == "__main__":
    main()
