"""preprocess_node: crop, range-gate, voxel-downsample and resample clouds (the shared stage)."""
from __future__ import annotations

from sensor_msgs.msg import PointCloud2

from gmm_perception.pipeline.configs import PreprocessConfig
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.pointcloud import xyz_to_cloud


class PreprocessNode(PerceptionNode):
    """Subscribes `points`, publishes the preprocessed cloud on `~/points` (same stamp)."""

    executable = "preprocess_node"

    def configure_node(self) -> None:
        self.apply_configs(self.configs)
        self.output = self.create_output(PointCloud2, "~/points")

    def apply_configs(self, configs: dict) -> None:
        self.stage = Preprocessor(configs[PreprocessConfig])

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        self.output.publish(xyz_to_cloud(self.stage(cloud.points), cloud.frame_id, cloud.stamp))


def main(args=None) -> None:
    run_node(PreprocessNode, "preprocess", args)


if __name__ == "__main__":
    main()
