"""upsampling_node: a dense cloud of each sparse object cloud (ShapeGF gradient fields, issue 8).

Input `points`: one object per message (the segmentation's `~/objects`, or any sparse cloud).
Publishes `~/dense` (PointCloud2): `output_points` points of the object's surface in the input's
frame with its stamp, and the input's `object_id` field when it had one, so that downstream
nodes can associate the dense cloud with the object (pipeline/upsample.py: the stage).
"""
from __future__ import annotations

from sensor_msgs.msg import PointCloud2

from gmm_perception.models.shapegf import MODEL_NAME
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.pipeline.upsample import MIN_POINTS, MODES, Upsampler
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.pointcloud import xyz_to_cloud
from gmm_perception.ros.preprocess_node import PREPROCESS_PARAMETERS, config_from_parameters
from gmm_perception.ros.segmentation_node import object_cloud, object_id_of

DEFAULT_CHECKPOINT = str(share_dir() / "checkpoints" / "shapegf" / "shapegf_sh3d.pt")

UPSAMPLING_PARAMETERS = [
    ParameterSpec("checkpoint", DEFAULT_CHECKPOINT, "ShapeGF checkpoint.", read_only=True),
    ParameterSpec("output_points", 2048, "Points of each dense cloud.", min_value=1,
                  max_value=65536),
    ParameterSpec("steps_per_level", 5, "Langevin steps per noise level: the cost is linear "
                  "in it (the paper's 10).", min_value=1, max_value=50),
    ParameterSpec("mode", "denoise", "prior: annealed Langevin from the uniform prior over "
                  "every level (the paper's sampler); denoise: from the input points over the "
                  "levels <= start_sigma (cheaper, keeps the input's layout).", choices=MODES),
    ParameterSpec("start_sigma", 0.0, "denoise mode: largest noise level run, in the model's "
                  "normalised units (shape radius 1); 0 = the model's default (0.1).",
                  min_value=0.0, max_value=1.0),
    ParameterSpec("max_input_points", 1024, "Larger inputs are resampled down to this many "
                  "points (the model was trained on 256-1024).", min_value=MIN_POINTS,
                  max_value=65536),
]


def upsampler_from_parameters(param, model, device) -> Upsampler:
    """The node's stage from its parameters (the offline evaluator builds it the same way)."""
    return Upsampler(model, device, param("output_points"), param("steps_per_level"),
                     param("mode"), param("start_sigma") or None, param("max_input_points"),
                     param("seed"))


class UpsamplingNode(PerceptionNode):
    parameters = [*PREPROCESS_PARAMETERS, *UPSAMPLING_PARAMETERS]

    def configure_node(self) -> None:
        path = self.param("checkpoint")
        self.model, _ = self.load_model(path, expected_model=MODEL_NAME)
        self._build_stages()
        self.dense_pub = self.create_output(PointCloud2, "~/dense")

    def reconfigure(self) -> None:
        """Every parameter but the checkpoint may change at run time: the stages are cheap to
        rebuild around the loaded model."""
        try:
            self._build_stages()
        except ValueError as exc:  # e.g. crop_min > crop_max after a partial update
            self.get_logger().error(f"keeping the previous stages: {exc}")

    def _build_stages(self) -> None:
        """Preprocessor and upsampler from the parameters; `seed` seeds both."""
        preprocess = Preprocessor(config_from_parameters(self.param))
        self.upsampler = upsampler_from_parameters(self.param, self.model, self.device)
        self.preprocess = preprocess

    def process(self, msg: PointCloud2) -> None:
        object_id = object_id_of(msg)  # a malformed id field is rejected before the work
        cloud = self.read_cloud(msg)
        dense = self.upsampler(self.preprocess(cloud.points)).points
        self.dense_pub.publish(
            xyz_to_cloud(dense, cloud.frame_id, cloud.stamp) if object_id is None
            else object_cloud(dense, object_id, cloud.frame_id, cloud.stamp))


def main(args=None) -> None:
    run_node(UpsamplingNode, "upsampling", args)


if __name__ == "__main__":
    main()
