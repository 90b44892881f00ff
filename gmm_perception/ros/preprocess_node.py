"""preprocess_node: crop, range-gate, voxel-downsample and resample clouds (the shared stage)."""
from __future__ import annotations

import math

from sensor_msgs.msg import PointCloud2

from gmm_perception.pipeline.preprocess import PreprocessConfig, Preprocessor
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.pointcloud import xyz_to_cloud

_BIG = 1.0e6  # metres: "no limit" for crop boxes and ranges, representable in YAML

PREPROCESS_PARAMETERS = [
    ParameterSpec("crop_min", [-_BIG, -_BIG, -_BIG], "Lower corner [x, y, z] of the crop box "
                  "in the processing frame, metres.", length=3),
    ParameterSpec("crop_max", [_BIG, _BIG, _BIG], "Upper corner [x, y, z] of the crop box, "
                  "metres.", length=3),
    ParameterSpec("min_range", 0.0, "Drop points closer than this to the frame origin, metres.",
                  min_value=0.0, max_value=_BIG),
    ParameterSpec("max_range", _BIG, "Drop points farther than this from the frame origin, metres.",
                  min_value=0.0, max_value=_BIG),
    ParameterSpec("voxel_size", 0.0, "Voxel grid edge in metres (0 disables downsampling).",
                  min_value=0.0, max_value=10.0),
    ParameterSpec("num_points", 0, "Resample the result to exactly this many points "
                  "(0 keeps the count).", min_value=0, max_value=10_000_000),
    ParameterSpec("seed", 0, "Seed of the resampling generator.", min_value=0,
                  max_value=2**31 - 1),
]


def config_from_parameters(param) -> PreprocessConfig:
    """PreprocessConfig from a parameter getter (shared by every node that preprocesses)."""
    return PreprocessConfig(
        crop_min=tuple(param("crop_min")), crop_max=tuple(param("crop_max")),
        min_range=param("min_range"),
        max_range=math.inf if param("max_range") >= _BIG else param("max_range"),
        voxel_size=param("voxel_size"), num_points=param("num_points"), seed=param("seed"))


class PreprocessNode(PerceptionNode):
    """Subscribes `points`, publishes the preprocessed cloud on `~/points` (same stamp)."""

    parameters = PREPROCESS_PARAMETERS

    def configure_node(self) -> None:
        self.stage = Preprocessor(config_from_parameters(self.param))
        self.output = self.create_output(PointCloud2, "~/points")

    def reconfigure(self) -> None:
        try:
            self.stage = Preprocessor(config_from_parameters(self.param))
        except ValueError as exc:  # e.g. crop_min > crop_max after a partial update
            self.get_logger().error(f"keeping the previous preprocessing: {exc}")

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        self.output.publish(xyz_to_cloud(self.stage(cloud.points), cloud.frame_id, cloud.stamp))


def main(args=None) -> None:
    run_node(PreprocessNode, "preprocess", args)


if __name__ == "__main__":
    main()
