"""compression_node: each object cloud as a compact CompressedCloud (issue 19).

Input `points`: one object per message (the segmentation's `~/objects`, or any cloud). Publishes
`~/compressed` (CompressedCloud): the codec's code or bytes, with the input's header and object
id; decompression_node decodes it. The `codec` parameter picks neuralqaad, draco or pointgmm
(pipeline/compress.py), so the three can be compared on one stream.
"""
from __future__ import annotations

from sensor_msgs.msg import PointCloud2

from gmm_perception.data.pointcloud2 import object_id_of
from gmm_perception.pipeline.compress import Compressor, load_compressor
from gmm_perception.pipeline.configs import CompressionConfig
from gmm_perception.ros.compression_msgs import compressed_to_msg
from gmm_perception.ros.node_base import ModelNode, run_node
from gmm_perception_msgs.msg import CompressedCloud


class CompressionNode(ModelNode):
    executable = "compression_node"

    def configure_node(self) -> None:
        self.bytes_out = 0
        self.compressor = self.load_stage(load_compressor, self.configs[CompressionConfig])
        self.compressed_pub = self.create_output(CompressedCloud, "~/compressed")

    def apply_configs(self, configs: dict) -> None:
        """Everything but the codec and checkpoints may change at run time."""
        config = configs[CompressionConfig]
        codec = self.compressor.codec
        if hasattr(codec, "encode_steps"):
            codec.encode_steps, codec.headings = config.encode_steps, config.headings
        if hasattr(codec, "bits"):
            codec.bits, codec.level = config.draco_quantization_bits, \
                config.draco_compression_level
        self.compressor = Compressor(config, codec)

    def process(self, msg: PointCloud2) -> None:
        object_id = object_id_of(msg)
        cloud = self.read_cloud(msg)
        compressed = self.compressor(cloud.points)
        self.bytes_out += compressed.payload_bytes
        out = compressed_to_msg(compressed, msg.header, object_id)
        out.header.frame_id = cloud.frame_id
        self.compressed_pub.publish(out)

    def stage_diagnostics(self) -> dict:
        """The codec and the payload bytes sent so far."""
        return {"codec": self.configs[CompressionConfig].codec,
                "payload_bytes": getattr(self, "bytes_out", 0)}


def main(args=None) -> None:
    run_node(CompressionNode, "compression", args)


if __name__ == "__main__":
    main()
