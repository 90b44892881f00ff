"""The distributed (DDP) training path run for real: `torchrun --nproc_per_node 2` on CPU (gloo)
trains the registration model for a few steps, and both ranks end with identical weights.

The loop seeds each rank differently (model init `seed + rank`, batches `[seed, rank]`), so the
ranks draw different batches: the test checks that (their training losses differ), which is what
makes identical final weights a proof that DDP broadcast the initial weights and averaged the
gradients; without that the replicas would drift apart.
"""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from gmm_perception.data.procedural import procedural_shapes
from gmm_perception.models.checkpoint import load_checkpoint
from tiny_configs import DEEPGMR_TINY

pytestmark = pytest.mark.integration
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
WORLD_SIZE = 2


def _require_gloo() -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    if not torch.distributed.is_gloo_available():
        pytest.skip("the gloo backend is not available in this torch build")


def test_two_rank_ddp_training_on_cpu_ends_with_identical_weights_on_both_ranks(tmp_path):
    _require_gloo()
    shapes_path = procedural_shapes(3, num_points=256, seed=0).save(tmp_path / "shapes.npz")
    output = tmp_path / "ddp"
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({
        "model": DEEPGMR_TINY,
        "data": {"shapes": str(shapes_path), "setting": "noisy", "categories": "all",
                 "num_points": 128, "val_pairs": 4},
        "train": {"output_dir": str(output), "epochs": 1, "steps_per_epoch": 3,
                  "batch_size": 4, "device": "cpu", "threads": 1, "lr": 1e-2,
                  "save_rank_states": True},
    }))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    args = [*TORCHRUN, "--standalone", "--nproc_per_node", str(WORLD_SIZE),
            "-m", "gmm_perception.cli", "train", "registration", "--config", str(config)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    states = [torch.load(output / f"rank{rank}.pt", weights_only=True)
              for rank in range(WORLD_SIZE)]
    assert [s["world_size"] for s in states] == [WORLD_SIZE] * WORLD_SIZE  # DDP was on
    assert [s["rank"] for s in states] == list(range(WORLD_SIZE))
    # Each rank trained the full epoch on its own batches: its losses differ from the other's.
    losses = [s["train_losses"] for s in states]
    assert all(len(rank_losses) == 3 and all(map(math.isfinite, rank_losses))
               for rank_losses in losses)
    assert losses[0] != losses[1], "the ranks drew the same batches: the check would prove nothing"

    reference, other = (s["state_dict"] for s in states)
    assert reference.keys() == other.keys()
    parameters = [k for k in reference if not k.endswith(("running_mean", "running_var",
                                                          "num_batches_tracked"))]
    assert parameters
    differing = [k for k in reference if not torch.equal(reference[k], other[k])]
    assert not differing, f"the ranks' weights differ in {differing[:5]}"

    # Rank 0 alone wrote the log and the checkpoints, and they hold these weights.
    (row,) = list(csv.DictReader(open(output / "log.csv")))
    assert int(row["epoch"]) == 1
    saved = load_checkpoint(output / "last.pt", expected_model="deepgmr")["state_dict"]
    assert all(torch.equal(saved[k], reference[k]) for k in reference)
