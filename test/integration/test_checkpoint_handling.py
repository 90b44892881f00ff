"""Missing, corrupt and mismatched checkpoints: the node reports ERROR and stays up; a good one runs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import PointCloud2

from checkpoint_node import MODEL_NAME, make_model
from gmm_perception.data.pointcloud2 import read_xyz
from gmm_perception.models.checkpoint import save_checkpoint
from ros_probe import Probe
from gmm_perception.ros.pointcloud import xyz_to_cloud

pytestmark = pytest.mark.integration
SCRIPT = str(Path(__file__).parents[1] / "support" / "checkpoint_node.py")
NODE = "/checkpoint_it"


def start(start_node, checkpoint: Path):
    return start_node([sys.executable, SCRIPT], "-r", "__node:=checkpoint_it",
                      "-r", "points:=/ckpt_points", "-p", f"checkpoint:={checkpoint}",
                      "-p", "device:=cuda")  # absent here: must fall back to the CPU, logged


def expect_error_status(probe: Probe, node, fragment: str) -> None:
    assert probe.wait(lambda: probe.diagnostic_levels.get(NODE) == int.from_bytes(
        DiagnosticStatus.ERROR, "little"), 20), node.log()
    message = probe.diagnostic_messages[NODE]
    assert fragment in message, message
    assert node.alive(), node.log()
    assert "configure failed" in node.log()


def test_missing_checkpoint_is_an_error_status_naming_the_file(probe, start_node, tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    node = start(start_node, missing)
    expect_error_status(probe, node, str(missing))


def test_corrupt_checkpoint_is_an_error_status(probe, start_node, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a torch archive" * 10)
    node = start(start_node, corrupt)
    expect_error_status(probe, node, "corrupt")


def test_checkpoint_of_another_model_is_an_error_status(probe, start_node, tmp_path):
    other = save_checkpoint(tmp_path / "other.pt", model="deepgmr",
                            state_dict=make_model().state_dict(), config={})
    node = start(start_node, other)
    expect_error_status(probe, node, "expected 'test_affine'")


def test_good_checkpoint_is_loaded_and_applied(probe, start_node, tmp_path):
    torch.manual_seed(0)
    model = make_model()
    path = save_checkpoint(tmp_path / "good.pt", model=MODEL_NAME, state_dict=model.state_dict(),
                           config={"note": "test"}, metadata={"dataset": "none"})
    node = start(start_node, path)
    outputs = probe.record(PointCloud2, f"{NODE}/points")
    publisher = probe.publisher(PointCloud2, "/ckpt_points")
    assert probe.wait_for_subscribers(publisher, timeout=30), node.log()
    points = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    for _ in range(50):
        publisher.publish(xyz_to_cloud(points, "sensor", TimeMsg(sec=1)))
        if probe.wait(lambda: outputs, timeout=0.3):
            break
    assert outputs, node.log()
    weight, bias = model.weight.detach().numpy(), model.bias.detach().numpy()
    np.testing.assert_allclose(read_xyz(outputs[0]), points @ weight.T + bias, atol=1e-5)
    assert probe.wait(lambda: "good.pt" in probe.diagnostics.get(NODE, {}).get("checkpoint", ""),
                      5), probe.diagnostics
    assert "CUDA is not available" in node.log()
