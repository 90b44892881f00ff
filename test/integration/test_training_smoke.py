"""The training command end to end on procedural shapes: trains, checkpoints, reloads, resumes."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gmm_perception.data.procedural import procedural_meshes, procedural_shapes
from gmm_perception.models.registry import load_model
from tiny_configs import DEEPGMR_TINY

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "gmm-perception")


def run_training(config: Path, *overrides: str) -> str:
    args = [CLI, "train", "registration", "--config", str(config)]
    for item in overrides:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_registration_training_smoke_run_checkpoints_reloads_and_resumes(tmp_path):
    shapes_path = procedural_shapes(3, num_points=256, seed=0).save(tmp_path / "shapes.npz")
    output = tmp_path / "run"
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump({
        "model": DEEPGMR_TINY,
        "data": {"shapes": str(shapes_path), "setting": "noisy", "categories": "all",
                 "num_points": 128, "val_pairs": 8},
        "train": {"output_dir": str(output), "epochs": 2, "steps_per_epoch": 3,
                  "batch_size": 4, "device": "cpu"},
    }))
    run_training(config)
    rows = list(csv.DictReader(open(output / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["val_recall"]) <= 1.0 for r in rows)

    model, payload = load_model(output / "best.pt", "deepgmr")
    assert payload["config"]["model"]["feature_dim"] == 32
    assert "training_state" not in payload  # the shippable checkpoint stays small
    with torch.no_grad():
        source = torch.randn(1, 128, 3)
        transform = model(source, source).transform
    assert transform.shape == (1, 4, 4)

    resumed = run_training(config, "train.epochs=3")
    assert "resuming deepgmr at epoch 2" in resumed
    rows = list(csv.DictReader(open(output / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]

    fresh = tmp_path / "continued"
    started = run_training(config, f"train.output_dir={fresh}",
                           f"train.init_checkpoint={output / 'best.pt'}", "train.epochs=1")
    assert "starting deepgmr from the weights of" in started
    assert (fresh / "best.pt").is_file()


def test_registration_training_mixes_settings_and_validates_on_the_validation_split(tmp_path):
    """Mixed batches (whole surfaces and single views) on meshes that carry a val split (as the
    shape pool does): validation reports each setting, on the val shapes only."""
    meshes = procedural_meshes(4, seed=0)
    split = np.array(["train", "val", "test", "train"] * (len(meshes) // 4 + 1))[:len(meshes)]
    meshes.split = split
    meshes_path = meshes.save(tmp_path / "meshes.npz")
    output = tmp_path / "mixed"
    config = tmp_path / "mixed.yaml"
    config.write_text(yaml.safe_dump({
        "model": DEEPGMR_TINY,
        "data": {"shapes": str(meshes_path), "setting": "noisy,partial", "categories": "all",
                 "num_points": 128, "val_pairs": 6},
        "train": {"output_dir": str(output), "epochs": 1, "steps_per_epoch": 2,
                  "batch_size": 2, "device": "cpu"},
    }))
    run_training(config)
    (row,) = list(csv.DictReader(open(output / "log.csv")))
    assert 0.0 <= float(row["val_recall_noisy"]) <= 1.0
    assert 0.0 <= float(row["val_recall_partial"]) <= 1.0
    _, payload = load_model(output / "best.pt", "deepgmr")
    assert payload["config"]["data"]["validation_split"] == "val"
