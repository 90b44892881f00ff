"""upsampling_node: a dense cloud of each sparse object cloud (ShapeGF gradient fields).

Input `points`: one object per message (the segmentation's `~/objects`, or any sparse cloud).
Publishes `~/dense` (PointCloud2): `output_points` points of the object's surface in the input's
frame with its stamp, and the input's `object_id` field when it had one, so that downstream
nodes can associate the dense cloud with the object (pipeline/upsample.py: the stage).
"""
from __future__ import annotations

from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import object_id_of
from gmm_perception.pipeline.configs import UpsampleConfig
from gmm_perception.pipeline.scene import load_upsampler
from gmm_perception.pipeline.upsample import Upsampler
from gmm_perception.ros.node_base import ModelNode, run_node
from gmm_perception.ros.pointcloud import object_cloud, xyz_to_cloud


class UpsamplingNode(ModelNode):
    executable = "upsampling_node"

    def configure_node(self) -> None:
        self.upsampler = self.load_stage(load_upsampler, self.configs[UpsampleConfig])
        self.apply_configs(self.configs)
        self.dense_pub = self.create_output(PointCloud2, "~/dense")

    def apply_configs(self, configs: dict) -> None:
        """Every parameter but the checkpoint may change at run time: the stage is cheap to
        rebuild around the loaded model."""
        if configs[UpsampleConfig] != self.upsampler.config:
            self.upsampler = Upsampler(configs[UpsampleConfig], self.upsampler.model, self.device)
        self.step = self.reused_step(configs, self.upsampler)

    def process(self, msg: PointCloud2) -> None:
        object_id = object_id_of(msg)  # a malformed id field is rejected before the work
        cloud = self.read_cloud(msg)
        dense = self.step(cloud.points, object_id, cloud.stamp, cloud.frame_id).points
        if not self.answer_is_new():
            return
        self.dense_pub.publish(
            xyz_to_cloud(dense, cloud.frame_id, cloud.stamp) if object_id is None
            else object_cloud(dense, object_id, cloud.frame_id, cloud.stamp))


def main(args=None) -> None:
    run_node(UpsamplingNode, "upsampling", args)


if __name__ == "__main__":
    main()
