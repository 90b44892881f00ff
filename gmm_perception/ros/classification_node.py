"""classification_node: the class of each object cloud (GMCN, or the PointNet baseline).

Input `points`: one object per message (the segmentation's `~/objects`; its `object_id` field
names the object). Publishes `~/classification` (ObjectClassification: the frame's calibrated
answer and the object's class fused over its frames, which may be "unknown"), `~/markers` (the
fused label above the object) and, when `publish_mixture` is set, `~/mixture` (GMCN's fitted
input GMM). A frame whose answer is reused (the object's cloud did not change, ReuseConfig) adds
no evidence to the fused class.
"""
from __future__ import annotations

from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.data.pointcloud2 import object_id_of
from gmm_perception.pipeline.classify import Classifier, fused_step
from gmm_perception.pipeline.configs import ClassificationOutputConfig, ClassifyConfig
from gmm_perception.pipeline.preprocess import stamp_seconds
from gmm_perception.pipeline.scene import load_classifier
from gmm_perception.ros.mixture_msgs import mixture_to_msg
from gmm_perception.ros.node_base import ModelNode, run_node
from gmm_perception_msgs.msg import GaussianMixture, ObjectClassification


class ClassificationNode(ModelNode):
    executable = "classification_node"

    def configure_node(self) -> None:
        self.classifier = self.load_stage(load_classifier, self.configs[ClassifyConfig])
        self.apply_configs(self.configs)
        self.result_pub = self.create_output(ObjectClassification, "~/classification")
        self.markers_pub = self.create_output(MarkerArray, "~/markers")
        self.mixture_pub = self.create_output(GaussianMixture, "~/mixture")

    def apply_configs(self, configs: dict) -> None:
        if configs[ClassifyConfig] != self.classifier.config:  # the seed: the model stays
            self.classifier = Classifier(configs[ClassifyConfig], self.classifier.model,
                                         self.classifier.class_names, self.device)
        # Any new configuration starts the fused classes anew, as it does the reused answers
        # (its first frame per object runs the stage again: it must not count twice). The
        # offline evaluator builds its step with the same function.
        self.step = fused_step(configs, self.classifier)
        self.fusion, self.reuse = self.step.stage.fusion, self.step.stage.stage
        self.output_config = configs[ClassificationOutputConfig]

    def stage_diagnostics(self) -> dict:
        """The reuse counts, the objects with a fused class, the frames fused and the tracks
        restarted (unseen for fusion_timeout or stamps went back), and the temperature used."""
        fusion = getattr(self, "fusion", None)
        if fusion is None:
            return super().stage_diagnostics()
        return {**super().stage_diagnostics(), "fused_objects": len(fusion.tracks),
                "fused_observations": fusion.observations, "fusion_restarts": fusion.restarts,
                "temperature": f"{self.classifier.temperature:.3f}"}

    def process(self, msg: PointCloud2) -> None:
        object_id = object_id_of(msg)  # a malformed id field is rejected before the work
        cloud = self.read_cloud(msg)
        points = self.step.preprocess(cloud.points)  # the marker stands on them
        result = self.step.stage(points, object_id, stamp_seconds(cloud.stamp), cloud.frame_id)
        if not self.answer_is_new():
            return
        header = Header(stamp=cloud.stamp, frame_id=cloud.frame_id)
        fused = result.fused
        self.result_pub.publish(ObjectClassification(
            header=header, object_id="" if object_id is None else str(object_id),
            class_id=result.class_id, label=result.label,
            class_labels=self.classifier.class_names,
            scores=result.scores.astype(float).tolist(), model_name=self.model_name,
            fused_class_id=fused.class_id, fused_label=fused.label,
            fused_scores=fused.scores.astype(float).tolist(), observations=fused.observations))
        if self.wanted(self.markers_pub):
            self.markers_pub.publish(self._label_marker(points, result, object_id, header))
        if self.output_config.publish_mixture and result.mixture is not None and \
                self.wanted(self.mixture_pub):
            self.mixture_pub.publish(mixture_to_msg(*result.mixture, header,
                                                    model_name=f"{self.model_name}:input_fit"))

    def _label_marker(self, points, result, object_id, header) -> MarkerArray:
        top = points.mean(axis=0)
        top[2] = points[:, 2].max() + self.output_config.marker_height
        marker = Marker(header=header, ns="classification",
                        id=0 if object_id is None else object_id,
                        type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                        text=f"{result.fused.label} {result.fused.confidence:.0%}")
        marker.pose.position = Point(x=float(top[0]), y=float(top[1]), z=float(top[2]))
        marker.pose.orientation.w = 1.0
        marker.scale.z = 0.12
        marker.color.r = marker.color.g = marker.color.b = marker.color.a = 1.0
        return MarkerArray(markers=[marker])


def main(args=None) -> None:
    run_node(ClassificationNode, "classification", args)


if __name__ == "__main__":
    main()
