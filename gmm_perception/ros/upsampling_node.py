"""upsampling_node: a dense cloud of each sparse object cloud (ShapeGF gradient fields).

Input `points`: one object per message (the segmentation's `~/objects`, or any sparse cloud).
Publishes `~/dense` (PointCloud2): `output_points` points of the object's surface in the input's
frame with its stamp, and the input's `object_id` field when it had one, so that downstream
nodes can associate the dense cloud with the object (pipeline/upsample.py: the stage). An object
already denser than `density_threshold` is passed through: its own finite points. Every point
carries a UINT8 `upsampled` field, 1 when the cloud is ShapeGF's and 0 when passed through, and
the diagnostics count both.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import object_id_of
from gmm_perception.pipeline.configs import UpsampleConfig
from gmm_perception.pipeline.scene import load_upsampler
from gmm_perception.pipeline.upsample import Upsampler
from gmm_perception.ros.node_base import ModelNode, run_node
from gmm_perception.ros.pointcloud import object_cloud

UPSAMPLED_FIELD = "upsampled"  # per point: 1 = ShapeGF's output, 0 = the input passed through


class UpsamplingNode(ModelNode):
    executable = "upsampling_node"

    def configure_node(self) -> None:
        self.counts = {"upsampled": 0, "passed_through": 0}
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
        result = self.step(cloud.points, object_id, cloud.stamp, cloud.frame_id)
        if not self.answer_is_new():
            return
        self.counts["upsampled" if result.upsampled else "passed_through"] += 1
        flag = np.full(len(result.points), result.upsampled, dtype=np.uint8)
        self.dense_pub.publish(object_cloud(result.points, object_id, cloud.frame_id, cloud.stamp,
                                            fields={UPSAMPLED_FIELD: flag}))

    def stage_diagnostics(self) -> dict:
        """The stage's runs and reuses, and how many answers were upsampled or passed through
        (dense enough already)."""
        return {**super().stage_diagnostics(), **getattr(self, "counts", {})}


def main(args=None) -> None:
    run_node(UpsamplingNode, "upsampling", args)


if __name__ == "__main__":
    main()
