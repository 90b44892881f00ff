"""Training task of the registration model (DeepGMR) on DeepGMR-protocol pairs.

Every training batch is a fresh set of pairs (new poses, new point subsets, new jitter)
drawn from the training shapes, in one of the configured settings (`setting` may list several,
e.g. "noisy,partial,scan_to_model": each batch draws one, so training mixes whole surfaces,
single views and scans against models). Validation uses one fixed, seeded set of held-out pairs
per setting: on the shape pool (data/pool.py) from its validation split
(`held_out.POOL_VALIDATION_SPLIT`), on the SH3D set from `held_out.VALIDATION_SPLIT` (its test
split, for want of a validation split).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gmm_perception.data.held_out import validation_split
from gmm_perception.data.registration_pairs import MESH_SETTINGS, make_pairs, split_categories
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.metrics.registration import pose_errors, recall, registration_rmse
from gmm_perception.models.deepgmr import MODEL_NAME, deepgmr_loss
from gmm_perception.models.registry import build_model

VALIDATION_SEED = 1_000_003


@dataclass
class RegistrationData:
    shapes: str  # ShapeSet .npz (MeshSet .npz for the settings that scan meshes)
    # clean | noisy | partial | scan_to_model, or several separated by commas (mixed batches)
    setting: str = "noisy"
    categories: str = "seen"  # seen: the training half of split_categories; all: every class
    num_points: int = 1024
    max_translation: float = 0.5
    val_pairs: int = 256
    recall_threshold: float = 0.2


@dataclass
class RegistrationTask:
    model: dict[str, Any]
    data: RegistrationData
    batch_size: int = 32
    name: str = field(default=MODEL_NAME, init=False)

    def __post_init__(self):
        self.settings = [s.strip() for s in self.data.setting.split(",") if s.strip()]
        meshes_needed = any(s in MESH_SETTINGS for s in self.settings)
        shapes = (MeshSet if meshes_needed else ShapeSet).load(self.data.shapes)
        seen, unseen = split_categories(shapes.class_names)
        self.categories = seen if self.data.categories == "seen" else list(shapes.class_names)
        self.unseen_categories = unseen if self.data.categories == "seen" else []
        self.train_shapes = shapes.subset("train")
        self.validation_split = validation_split(shapes)
        # Validation pairs per training setting (noisy for the full-shape ones), a fixed share
        # of val_pairs each.
        per_setting = max(1, self.data.val_pairs // len(self.settings))
        val_settings = dict.fromkeys(s if s in MESH_SETTINGS else "noisy" for s in self.settings)
        self.val = {setting: make_pairs(
            shapes.subset(self.validation_split), setting, per_setting, VALIDATION_SEED + k,
            self.data.num_points, categories=self.categories,
            max_translation=self.data.max_translation, progress=False)
            for k, setting in enumerate(val_settings)}

    def build(self) -> torch.nn.Module:
        return build_model(self.name, self.model)

    def model_config(self) -> dict[str, Any]:
        return dict(self.model)

    def data_description(self) -> dict[str, Any]:
        return {**vars(self.data), "train_categories": self.categories,
                "held_out_categories": self.unseen_categories,
                "validation_split": self.validation_split,
                "train_models": int(np.isin(
                    np.asarray(self.train_shapes.class_names)[self.train_shapes.labels],
                    self.categories).sum())}

    def train_batch(self, rng: np.random.Generator, device: torch.device):
        setting = self.settings[int(rng.integers(len(self.settings)))]
        pairs = make_pairs(self.train_shapes, setting, self.batch_size,
                           int(rng.integers(2**31)), self.data.num_points,
                           categories=self.categories, max_translation=self.data.max_translation,
                           progress=False)
        return tuple(torch.as_tensor(a, dtype=torch.float32, device=device)
                     for a in (pairs.source, pairs.target, pairs.T_gt))

    def loss(self, model, batch):
        source, target, T_gt = batch
        return deepgmr_loss(model(source, target), T_gt), {}

    def validate(self, model, device: torch.device) -> dict[str, float]:
        """Loss, RMSE and recall over every validation pair (what selects the checkpoint), and
        the recall per setting beside them."""
        losses, rmses, rotations, metrics = [], [], [], {}
        for setting, val in self.val.items():
            estimates = []
            for start in range(0, len(val), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                source, target, T_gt = (torch.as_tensor(a[chunk], dtype=torch.float32,
                                                        device=device)
                                        for a in (val.source, val.target, val.T_gt))
                output = model(source, target)
                losses.append(deepgmr_loss(output, T_gt).item() * len(source))
                estimates.append(output.transform.double().cpu().numpy())
            T_est = np.concatenate(estimates)
            rmse = registration_rmse(val.source, T_est, val.T_gt)
            rmses.append(rmse)
            rotations.append(pose_errors(T_est, val.T_gt)[0])
            if len(self.val) > 1:
                metrics[f"val_recall_{setting}"] = float(recall(rmse, self.data.recall_threshold))
        rmse, rotation = np.concatenate(rmses), np.concatenate(rotations)
        return {"val_loss": float(np.sum(losses) / len(rmse)),
                "val_rmse": float(np.mean(rmse)),
                "val_recall": float(recall(rmse, self.data.recall_threshold)),
                "val_rotation_error_median_deg": float(np.median(rotation)), **metrics}
