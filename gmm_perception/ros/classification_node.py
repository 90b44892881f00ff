"""classification_node: the class of each object cloud (GMCN, or the PointNet baseline).

Input `points`: one object per message (the segmentation's `~/objects`; its `object_id` field
names the object). Publishes `~/classification` (ObjectClassification), `~/markers` (the label
above the object) and, when `publish_mixture` is set, `~/mixture` (GMCN's fitted input GMM).
"""
from __future__ import annotations

from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.models.registry import model_from_payload
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.classify import Classifier
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.ros.mixture_msgs import mixture_to_msg
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.preprocess_node import PREPROCESS_PARAMETERS, config_from_parameters
from gmm_perception.ros.segmentation_node import object_id_of
from gmm_perception_msgs.msg import GaussianMixture, ObjectClassification

DEFAULT_CHECKPOINT = str(share_dir() / "checkpoints" / "gmcn" / "gmcn_sh3d.pt")
CLASSIFIERS = ("gmcn", "pointnet_cls")

CLASSIFICATION_PARAMETERS = [
    ParameterSpec("checkpoint", DEFAULT_CHECKPOINT, "Classifier checkpoint (GMCN or "
                  "pointnet_cls).", read_only=True),
    ParameterSpec("classification_points", 2048, "Points per object given to the model (as in "
                  "training).", read_only=True, min_value=64, max_value=16384),
    ParameterSpec("publish_mixture", False, "Publish GMCN's fitted input mixture on ~/mixture."),
    ParameterSpec("marker_height", 0.15, "Label marker above the object's top, metres.",
                  min_value=0.0, max_value=10.0),
]


class ClassificationNode(PerceptionNode):
    parameters = [*PREPROCESS_PARAMETERS, *CLASSIFICATION_PARAMETERS]

    def configure_node(self) -> None:
        path = self.param("checkpoint")
        payload = self.load_model_checkpoint(path, expected_model=None)
        if payload["model"] not in CLASSIFIERS:
            raise ValueError(f"{path} holds a '{payload['model']}' model, not a classifier "
                             f"({', '.join(CLASSIFIERS)})")
        # Not self.load_model: the kind is checked before building, so that an unregistered
        # model name is this ValueError (a configure failure), not the registry's KeyError.
        model = model_from_payload(payload, self.device)
        self.model_name = f"{payload['model']}:{path.rsplit('/', 1)[-1]}"
        self.classifier = Classifier(model, payload["config"]["data"]["class_names"],
                                     self.device, self.param("classification_points"))
        self.preprocess = Preprocessor(config_from_parameters(self.param))
        self.result_pub = self.create_output(ObjectClassification, "~/classification")
        self.markers_pub = self.create_output(MarkerArray, "~/markers")
        self.mixture_pub = self.create_output(GaussianMixture, "~/mixture")

    def reconfigure(self) -> None:
        self.preprocess = Preprocessor(config_from_parameters(self.param))

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        points = self.preprocess(cloud.points)
        result = self.classifier(points)
        object_id = object_id_of(msg)
        header = Header(stamp=cloud.stamp, frame_id=cloud.frame_id)
        self.result_pub.publish(ObjectClassification(
            header=header, object_id="" if object_id is None else str(object_id),
            class_id=result.class_id, label=result.label,
            class_labels=self.classifier.class_names,
            scores=result.scores.astype(float).tolist(), model_name=self.model_name))
        self.markers_pub.publish(self._label_marker(points, result, object_id, header))
        if self.param("publish_mixture") and result.mixture is not None:
            self.mixture_pub.publish(mixture_to_msg(*result.mixture, header,
                                                    model_name=f"{self.model_name}:input_fit"))

    def _label_marker(self, points, result, object_id, header) -> MarkerArray:
        top = points.mean(axis=0)
        top[2] = points[:, 2].max() + self.param("marker_height")
        marker = Marker(header=header, ns="classification",
                        id=0 if object_id is None else object_id,
                        type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                        text=f"{result.label} {result.scores[result.class_id]:.0%}")
        marker.pose.position = Point(x=float(top[0]), y=float(top[1]), z=float(top[2]))
        marker.pose.orientation.w = 1.0
        marker.scale.z = 0.12
        marker.color.r = marker.color.g = marker.color.b = marker.color.a = 1.0
        return MarkerArray(markers=[marker])


def main(args=None) -> None:
    run_node(ClassificationNode, "classification", args)


if __name__ == "__main__":
    main()
