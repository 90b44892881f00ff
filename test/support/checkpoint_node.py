"""A minimal model-serving node for tests of the base class's checkpoint handling.

Its "model" is a torch Linear layer applied to every point; run it as a script:
    python test/support/checkpoint_node.py --ros-args -p checkpoint:=<file>
"""
from __future__ import annotations

import torch
from sensor_msgs.msg import PointCloud2

from gmm_perception.ros.node_base import PerceptionNode, run_node
from gmm_perception.ros.parameters import ParameterSpec
from gmm_perception.ros.pointcloud import xyz_to_cloud

MODEL_NAME = "test_affine"


def make_model() -> torch.nn.Linear:
    return torch.nn.Linear(3, 3)


class CheckpointNode(PerceptionNode):
    parameters = [ParameterSpec("checkpoint", "", "Checkpoint of the test affine model.",
                                read_only=True)]

    def configure_node(self) -> None:
        payload = self.load_model_checkpoint(self.param("checkpoint"), MODEL_NAME)
        self.model = make_model().to(self.device)
        self.model.load_state_dict(payload["state_dict"])
        self.model.eval()
        self.output = self.create_output(PointCloud2, "~/points")

    def process(self, msg: PointCloud2) -> None:
        cloud = self.read_cloud(msg)
        with torch.no_grad():
            moved = self.model(torch.from_numpy(cloud.points).to(self.device)).cpu().numpy()
        self.output.publish(xyz_to_cloud(moved, cloud.frame_id, cloud.stamp))


if __name__ == "__main__":
    run_node(CheckpointNode, "checkpoint_node")
