"""A minimal model-serving node for tests of the base class's checkpoint handling.

Its "model" is a torch Linear layer applied to every point; run it as a script:
    python test/support/checkpoint_node.py --ros-args -p checkpoint:=<file>
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from sensor_msgs.msg import PointCloud2

from gmm_perception.config import setting, validate
from gmm_perception.models.checkpoint import load_checkpoint
from gmm_perception.pipeline.configs import NodeConfig
from gmm_perception.ros.node_base import ModelNode, run_node
from gmm_perception.ros.pointcloud import xyz_to_cloud

MODEL_NAME = "test_affine"


def make_model() -> torch.nn.Linear:
    return torch.nn.Linear(3, 3)


@dataclass(frozen=True)
class AffineConfig:
    checkpoint: str = setting("", "Checkpoint of the test affine model.", read_only=True)

    def __post_init__(self):
        validate(self)


def load_affine(config: AffineConfig, device):
    payload = load_checkpoint(config.checkpoint, expected_model=MODEL_NAME, map_location=device)
    model = make_model().to(device)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


class CheckpointNode(ModelNode):
    executable = "checkpoint_node"
    config_classes = (NodeConfig, AffineConfig)

    def configure_node(self) -> None:
        self.model = self.load_stage(load_affine, self.configs[AffineConfig])
        self.output = self.create_output(PointCloud2, "~/points")

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        with torch.no_grad():
            moved = self.model(torch.from_numpy(cloud.points).to(self.device)).cpu().numpy()
        self.output.publish(xyz_to_cloud(moved, cloud.frame_id, cloud.stamp))


if __name__ == "__main__":
    run_node(CheckpointNode, "checkpoint_node")
