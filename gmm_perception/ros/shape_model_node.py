"""shape_model_node: PointGMM's hierarchical GMM of each object cloud (Hertz et al., CVPR 2020),
refined on the cloud's points by `refine_iterations` EM iterations (0: the network's mixture as
predicted; pipeline/shape_model.py).

Input `points`: one object per message (the segmentation's `~/objects`; its `object_id` field
names the object). Publishes, in the input's frame and stamp:
  `~/mixture/level_<l>` one GaussianMixture per level, coarse (0, the roots) to fine, with
                        `level` set and, from level 1 on, `parent_indices` into level l - 1;
  `~/markers`           the ellipsoids of level `marker_level`, one namespace per object;
  `~/resampled`         `resample_points` points drawn from the finest level (with the input's
                        `object_id` field when it had one).
"""
from __future__ import annotations

from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.data.pointcloud2 import object_id_of
from gmm_perception.pipeline.configs import ShapeModelConfig, ShapeModelOutputConfig
from gmm_perception.pipeline.scene import load_shape_modeller
from gmm_perception.pipeline.shape_model import ShapeModeller
from gmm_perception.ros.mixture_msgs import ellipsoid_markers, mixture_to_msg
from gmm_perception.ros.node_base import ModelNode, run_node
from gmm_perception.ros.pointcloud import object_cloud
from gmm_perception_msgs.msg import GaussianMixture

MARKER_NAMESPACE = "shape_model"


class ShapeModelNode(ModelNode):
    executable = "shape_model_node"

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.modeller = None
        self.add_on_set_parameters_callback(self._check_marker_level)

    def _check_marker_level(self, parameters) -> SetParametersResult:
        """Refuse a marker_level beyond the loaded model's depth at set time (the declared range
        cannot know the depth: it comes with the checkpoint)."""
        for parameter in parameters:
            if parameter.name == "marker_level" and self.modeller is not None \
                    and parameter.value > self.depth:
                return SetParametersResult(successful=False, reason=(
                    f"marker_level {parameter.value} exceeds the model's depth {self.depth}"))
        return SetParametersResult(successful=True)

    @property
    def depth(self) -> int:
        return self.modeller.model.config.depth

    def configure_node(self) -> None:
        self.modeller = self.load_stage(load_shape_modeller, self.configs[ShapeModelConfig])
        self.apply_configs(self.configs)
        self._marker_counts: dict[str, int] = {}  # markers last published per namespace
        self.level_pubs = [self.create_output(GaussianMixture, f"~/mixture/level_{level}")
                           for level in range(self.depth + 1)]
        self.markers_pub = self.create_output(MarkerArray, "~/markers")
        self.resampled_pub = self.create_output(PointCloud2, "~/resampled")

    def apply_configs(self, configs: dict) -> None:
        marker_level = configs[ShapeModelOutputConfig].marker_level
        if marker_level > self.depth:
            raise ValueError(f"marker_level {marker_level} exceeds the model's depth {self.depth}")
        if configs[ShapeModelConfig] != self.modeller.config:
            self.modeller = ShapeModeller(configs[ShapeModelConfig], self.modeller.model,
                                          self.device, self.modeller.num_points)
        self.step = self.reused_step(configs, self.modeller)
        self.marker_level = self.depth if marker_level < 0 else marker_level

    def process(self, msg: PointCloud2) -> None:
        object_id = object_id_of(msg)  # a malformed id field is rejected before the work
        cloud = self.read_cloud(msg)
        result = self.step(cloud.points, object_id, cloud.stamp, cloud.frame_id)
        if not self.answer_is_new():
            return
        header = Header(stamp=cloud.stamp, frame_id=cloud.frame_id)
        for level, (arrays, publisher) in enumerate(zip(result.levels, self.level_pubs)):
            if not self.wanted(publisher):
                continue
            publisher.publish(mixture_to_msg(
                arrays["weights"], arrays["means"], arrays["covariances"], header,
                model_name=self.model_name, level=level,
                parent_indices=arrays["parents"] if level else None))
        if self.wanted(self.markers_pub):
            self.markers_pub.publish(self._markers(result.levels[self.marker_level], object_id,
                                                   header))
        self.resampled_pub.publish(object_cloud(result.resampled, object_id, cloud.frame_id,
                                                cloud.stamp))

    def _markers(self, arrays: dict, object_id: int | None, header: Header) -> MarkerArray:
        """The level's ellipsoids in the object's own namespace, replacing its previous ones.

        No DELETEALL (it would also wipe the other objects' ellipsoids): ADD overwrites ids
        0..K-1, and ids left over from a previous, larger level are deleted one by one."""
        namespace = MARKER_NAMESPACE if object_id is None else f"{MARKER_NAMESPACE}/{object_id}"
        markers = [marker for marker in ellipsoid_markers(
            arrays["weights"], arrays["means"], arrays["covariances"], header, namespace).markers
                   if marker.action != Marker.DELETEALL]
        previous = self._marker_counts.get(namespace, 0)
        for stale in range(len(markers), previous):
            markers.append(Marker(header=header, ns=namespace, id=stale, action=Marker.DELETE))
        self._marker_counts[namespace] = len(arrays["weights"])
        return MarkerArray(markers=markers)


def main(args=None) -> None:
    run_node(ShapeModelNode, "shape_model", args)


if __name__ == "__main__":
    main()
