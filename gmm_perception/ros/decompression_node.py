"""decompression_node: CompressedCloud messages back into object clouds (issue 19).

Input `compressed` (CompressedCloud from compression_node). Publishes `~/points` (PointCloud2):
`output_points` points (0 = as many as were encoded) in the message's frame with its stamp and
object id. Draco and PointGMM messages decode anywhere; NeuralQAAD messages only with the network
that encoded them (the `checkpoint` whose digest is the message's model_id): another one is
rejected with that reason.
"""
from __future__ import annotations

from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import MalformedCloudError
from gmm_perception.pipeline.compress import Decompressor, load_decompressor
from gmm_perception.pipeline.configs import DecompressionConfig
from gmm_perception.ros.compression_msgs import msg_to_compressed
from gmm_perception.ros.node_base import ModelNode, run_node, stamp_problem
from gmm_perception.ros.pointcloud import object_cloud
from gmm_perception_msgs.msg import CompressedCloud


class DecompressionNode(ModelNode):
    executable = "decompression_node"
    input_type = CompressedCloud
    input_topic = "compressed"

    @staticmethod
    def queue_key(msg) -> int | None:
        return int(msg.object_id) if getattr(msg, "has_object_id", False) else None

    def configure_node(self) -> None:
        self.decoded = {"neuralqaad": 0, "draco": 0, "pointgmm": 0}
        self.decompressor = self.load_stage(load_decompressor, self.configs[DecompressionConfig])
        if self.decompressor.neuralqaad is None:  # draco and pointgmm codes still decode
            self.get_logger().warning(f"{self.decompressor.missing_network}: neuralqaad codes "
                                      "will be rejected")
        self.points_pub = self.create_output(PointCloud2, "~/points")

    def apply_configs(self, configs: dict) -> None:
        """output_points and seed apply at once; the network stays (read-only checkpoint)."""
        self.decompressor = Decompressor(configs[DecompressionConfig],
                                         self.decompressor.neuralqaad)

    def process(self, msg: CompressedCloud) -> None:
        problem = stamp_problem(msg.header.stamp)
        if problem:
            raise MalformedCloudError(problem)
        compressed, object_id = msg_to_compressed(msg)
        points = self.decompressor(compressed)
        self.decoded[compressed.codec] = self.decoded.get(compressed.codec, 0) + 1
        self.points_pub.publish(object_cloud(points, object_id, msg.header.frame_id,
                                             msg.header.stamp))

    def stage_diagnostics(self) -> dict:
        """Messages decoded per codec."""
        stage = getattr(self, "decompressor", None)
        return {**{f"decoded_{codec}": count for codec, count in getattr(self, "decoded",
                                                                          {}).items()},
                "neuralqaad_network": "none" if stage is None or stage.neuralqaad is None
                else stage.neuralqaad.model_id}


def main(args=None) -> None:
    run_node(DecompressionNode, "decompression", args)


if __name__ == "__main__":
    main()
