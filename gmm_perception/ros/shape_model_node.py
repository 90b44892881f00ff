"""shape_model_node: PointGMM's hierarchical GMM of each object cloud (Hertz et al., CVPR 2020).

Input `points`: one object per message (the segmentation's `~/objects`; its `object_id` field
names the object). Publishes, in the input's frame and stamp:
  `~/mixture/level_<l>` one GaussianMixture per level, coarse (0, the roots) to fine, with
                        `level` set and, from level 1 on, `parent_indices` into level l - 1;
  `~/markers`           the ellipsoids of level `marker_level`, one namespace per object;
  `~/resampled`         `resample_points` points drawn from the finest level (with the input's
                        `object_id` field when it had one).
"""
from __future__ import annotations

from pathlib import Path

from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.models.pointgmm import MODEL_NAME
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.pipeline.shape_model import ShapeModeller
from gmm_perception.ros.mixture_msgs import ellipsoid_markers, mixture_to_msg
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.pointcloud import xyz_to_cloud
from gmm_perception.ros.preprocess_node import PREPROCESS_PARAMETERS, config_from_parameters
from gmm_perception.ros.segmentation_node import object_cloud, object_id_of
from gmm_perception_msgs.msg import GaussianMixture

DEFAULT_CHECKPOINT = str(share_dir() / "checkpoints" / "pointgmm" / "pointgmm_sh3d.pt")
MARKER_NAMESPACE = "shape_model"

SHAPE_MODEL_PARAMETERS = [
    ParameterSpec("checkpoint", DEFAULT_CHECKPOINT, "PointGMM checkpoint.", read_only=True),
    ParameterSpec("input_points", 0, "Points per object given to the model; 0 = as in training "
                  "(the checkpoint's data.num_points).", read_only=True, min_value=0,
                  max_value=16384),
    ParameterSpec("resample_points", 2048, "Points drawn from the finest level on ~/resampled.",
                  min_value=1, max_value=200_000),
    ParameterSpec("marker_level", -1, "Level drawn as ellipsoids on ~/markers: 0 (the roots) to "
                  "the model's depth; -1 = the finest.", min_value=-1, max_value=16),
]


def modeller_from_parameters(param, model, payload: dict, device) -> ShapeModeller:
    """The node's stage from its parameters (the offline evaluator builds it the same way)."""
    input_points = param("input_points") or payload["config"].get("data", {}).get("num_points")
    if not input_points:
        raise ValueError("the checkpoint does not say its training input size "
                         "(data.num_points): set input_points")
    return ShapeModeller(model, device, input_points, param("resample_points"), param("seed"))


class ShapeModelNode(PerceptionNode):
    parameters = [*PREPROCESS_PARAMETERS, *SHAPE_MODEL_PARAMETERS]

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.model = None
        self.add_on_set_parameters_callback(self._check_marker_level)

    def _check_marker_level(self, parameters) -> SetParametersResult:
        """Refuse a marker_level beyond the loaded model's depth at set time (the declared range
        cannot know the depth: it comes with the checkpoint)."""
        for parameter in parameters:
            if parameter.name == "marker_level" and self.model is not None \
                    and parameter.value > self.model.config.depth:
                return SetParametersResult(successful=False, reason=(
                    f"marker_level {parameter.value} exceeds the model's depth "
                    f"{self.model.config.depth}"))
        return SetParametersResult(successful=True)

    def configure_node(self) -> None:
        path = self.param("checkpoint")
        self.model, self.payload = self.load_model(path, expected_model=MODEL_NAME)
        self.model_name = f"{MODEL_NAME}:{Path(path).name}"
        self.preprocess, self.modeller, self.marker_level = self._stages()
        self._marker_counts: dict[str, int] = {}  # markers last published per namespace
        self.level_pubs = [self.create_output(GaussianMixture, f"~/mixture/level_{level}")
                           for level in range(self.model.config.depth + 1)]
        self.markers_pub = self.create_output(MarkerArray, "~/markers")
        self.resampled_pub = self.create_output(PointCloud2, "~/resampled")

    def _stages(self) -> tuple[Preprocessor, ShapeModeller, int]:
        depth = self.model.config.depth
        marker_level = self.param("marker_level")
        if marker_level > depth:
            raise ValueError(f"marker_level {marker_level} exceeds the model's depth {depth}")
        modeller = modeller_from_parameters(self.param, self.model, self.payload, self.device)
        return (Preprocessor(config_from_parameters(self.param)), modeller,
                depth if marker_level < 0 else marker_level)

    def reconfigure(self) -> None:
        try:
            self.preprocess, self.modeller, self.marker_level = self._stages()
        except ValueError as exc:  # e.g. crop_min > crop_max after a partial update
            self.get_logger().error(f"keeping the previous settings: {exc}")

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        object_id = object_id_of(msg)
        result = self.modeller(self.preprocess(cloud.points))
        header = Header(stamp=cloud.stamp, frame_id=cloud.frame_id)
        for level, (arrays, publisher) in enumerate(zip(result.levels, self.level_pubs)):
            publisher.publish(mixture_to_msg(
                arrays["weights"], arrays["means"], arrays["covariances"], header,
                model_name=self.model_name, level=level,
                parent_indices=arrays["parents"] if level else None))
        self.markers_pub.publish(self._markers(result.levels[self.marker_level], object_id,
                                               header))
        resampled = (xyz_to_cloud(result.resampled, cloud.frame_id, cloud.stamp)
                     if object_id is None else
                     object_cloud(result.resampled, object_id, cloud.frame_id, cloud.stamp))
        self.resampled_pub.publish(resampled)

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
