"""registration_node: the pose of an object (or the motion between scans) from any starting pose.

Input `points`; the reference comes from a model file, from a library of model files (the best
match by fitness wins), from the `reference` topic, or from the previous frame (scan-to-scan).
Publishes TF (cloud frame -> child_frame, the object's pose at the cloud's stamp), `~/result`
(RegistrationResult) and `~/aligned` (the matched reference in the cloud frame). Clouds from the
segmentation node carry an `object_id` field: each object then gets its own frame
`<child_frame>_<id>`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.formats import load_cloud
from gmm_perception.geometry.transforms import invert_transform, transform_points
from gmm_perception.models.deepgmr import MODEL_NAME
from gmm_perception.models.registry import build_model
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.pipeline.register import ICP_MODES, DeepGmrRegistrar, load_library
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.pointcloud import read_xyz, xyz_to_cloud
from gmm_perception.ros.preprocess_node import PREPROCESS_PARAMETERS, config_from_parameters
from gmm_perception.ros.segmentation_node import object_id_of
from gmm_perception.ros.tf import TfBroadcaster, make_transform_stamped, matrix_to_transform
from gmm_perception_msgs.msg import RegistrationResult

DEFAULT_CHECKPOINT = str(share_dir() / "checkpoints" / "deepgmr" / "deepgmr_sh3d.pt")

REGISTRATION_PARAMETERS = [
    ParameterSpec("checkpoint", DEFAULT_CHECKPOINT, "DeepGMR checkpoint file.", read_only=True),
    ParameterSpec("reference_mode", "file", "Where the reference comes from: a model file, "
                  "every model file of a directory (library: best match wins), the 'reference' "
                  "topic, or the previous frame (scan-to-scan).",
                  read_only=True, choices=("file", "library", "topic", "previous")),
    ParameterSpec("reference_file", "", "Reference model (PLY/PCD/OBJ/OFF/STL/NPY/XYZ) in "
                  "metres, for reference_mode 'file'.", read_only=True),
    ParameterSpec("library_dir", "", "Directory of reference models (same formats), for "
                  "reference_mode 'library'; each file's stem names its model.", read_only=True),
    ParameterSpec("reference_name", "", "Name reported in results (default: the file's stem)."),
    ParameterSpec("registration_points", 1024, "Points per cloud given to the network "
                  "(as in training).", read_only=True, min_value=64, max_value=8192),
    ParameterSpec("hypotheses", 2, "Pose hypotheses per reference kept by fitness: 1 = DeepGMR's "
                  "T only, 2 = also the inverse of its independent reverse estimate T_hat.",
                  min_value=1, max_value=2),
    ParameterSpec("upright_axis", [0.0, 0.0, 0.0], "Objects stand upright: the 'up' direction "
                  "[x, y, z] shared by the cloud frame and the models, so only turns about it are "
                  "tried (zeros: any rotation).", length=3),
    ParameterSpec("icp", "point_to_point", "Refinement after the global estimate.",
                  choices=ICP_MODES),
    ParameterSpec("icp_max_distance", 0.05, "ICP correspondence distance, metres.",
                  min_value=0.001, max_value=10.0),
    ParameterSpec("inlier_threshold", 0.05, "Distance for fitness and inlier RMSE, metres.",
                  min_value=0.001, max_value=10.0),
    ParameterSpec("child_frame", "object", "TF child frame of the registered object."),
    ParameterSpec("publish_tf", True, "Broadcast the object's pose on /tf."),
]


def configure_registrar(registrar: DeepGmrRegistrar, param) -> None:
    """The run-time parameters (shared by the node and the offline evaluator)."""
    registrar.icp = param("icp")
    registrar.icp_max_distance = param("icp_max_distance")
    registrar.inlier_threshold = param("inlier_threshold")
    registrar.hypotheses = param("hypotheses")
    up = np.asarray(param("upright_axis"), dtype=float)
    registrar.upright_axis = up / np.linalg.norm(up) if np.linalg.norm(up) > 0 else None


def registrar_from_parameters(param, model, device) -> DeepGmrRegistrar:
    registrar = DeepGmrRegistrar(model, device, param("registration_points"))
    configure_registrar(registrar, param)
    return registrar


class RegistrationNode(PerceptionNode):
    parameters = [*PREPROCESS_PARAMETERS, *REGISTRATION_PARAMETERS]

    def configure_node(self) -> None:
        payload = self.load_model_checkpoint(self.param("checkpoint"), MODEL_NAME)
        model = build_model(MODEL_NAME, payload["config"]["model"])
        model.load_state_dict(payload["state_dict"])
        self.registrar = registrar_from_parameters(self.param, model.to(self.device),
                                                   self.device)
        self.preprocess = Preprocessor(config_from_parameters(self.param))
        self.reconfigure()
        mode = self.param("reference_mode")
        self.reference_name = self.param("reference_name")
        if mode == "file":
            path = self.param("reference_file")
            self.reference_name = self.reference_name or Path(path).stem
            self.registrar.set_reference(load_cloud(path, num_points=4096), self.reference_name)
            self.registrar.register(self.registrar.reference[:256])  # warm-up
        elif mode == "library":
            self._load_library(Path(self.param("library_dir")))
        elif mode == "topic":
            self._pending_reference = None
            self._reference_subscription = self.create_subscription(
                PointCloud2, "reference", self._on_reference, 1)
        self.result_pub = self.create_output(RegistrationResult, "~/result")
        self.aligned_pub = self.create_output(PointCloud2, "~/aligned")
        self.tf_broadcaster = TfBroadcaster(self)

    def _load_library(self, directory: Path) -> None:
        self.registrar.references = []
        for name, points in load_library(directory).items():
            self.registrar.add_reference(points, name)
        self.get_logger().info(f"library of {len(self.registrar.references)} models: "
                               + ", ".join(ref.name for ref in self.registrar.references))

    def cleanup_node(self) -> None:
        subscription = getattr(self, "_reference_subscription", None)
        if subscription is not None:  # a later configure creates it again
            self.destroy_subscription(subscription)
            self._reference_subscription = None

    def reconfigure(self) -> None:
        configure_registrar(self.registrar, self.param)

    def _on_reference(self, msg: PointCloud2) -> None:
        self._pending_reference = msg  # converted on the worker, never in a callback

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        points = self.preprocess(cloud.points)
        mode = self.param("reference_mode")
        if mode == "topic" and self._pending_reference is not None:
            self.registrar.set_reference(read_xyz(self._pending_reference),
                                         self.reference_name or "topic")
            self._pending_reference = None
        if mode == "previous" and self.registrar.reference is None:
            self.registrar.set_reference(points, "previous_frame")  # the first scan starts the chain
            return
        if self.registrar.reference is None:
            raise RuntimeError("no reference cloud received yet on 'reference'")
        result = self.registrar.register(points)
        object_in_cloud = invert_transform(result.transform)  # reference frame -> cloud frame
        if mode == "previous":
            self.registrar.set_reference(points, "previous_frame")
        object_id = object_id_of(msg)
        child_frame = self.param("child_frame")
        if object_id is not None:
            child_frame = f"{child_frame}_{object_id}"
        self._publish(cloud, result, object_in_cloud, child_frame)

    def _publish(self, cloud, result, object_in_cloud: np.ndarray, child_frame: str) -> None:
        stamp = cloud.stamp
        if self.param("publish_tf"):
            self.tf_broadcaster.send(make_transform_stamped(
                object_in_cloud, cloud.frame_id, child_frame, stamp))
        message = RegistrationResult(
            source_frame=cloud.frame_id, target_frame=child_frame,
            transform=matrix_to_transform(result.transform),
            reference_name=result.reference_name, fitness=result.fitness,
            inlier_rmse=result.inlier_rmse, inlier_threshold=result.inlier_threshold,
            chamfer_distance=result.chamfer, latency_ms=result.seconds * 1e3,
            method=result.method)
        message.header.stamp, message.header.frame_id = stamp, cloud.frame_id
        self.result_pub.publish(message)
        reference = next(ref.points for ref in self.registrar.references
                         if ref.name == result.reference_name)
        aligned = transform_points(object_in_cloud, reference.astype(np.float32))
        self.aligned_pub.publish(xyz_to_cloud(aligned, cloud.frame_id, stamp))


def main(args=None) -> None:
    run_node(RegistrationNode, "registration", args)


if __name__ == "__main__":
    main()
