"""Training task of the registration model (DeepGMR) on DeepGMR-protocol pairs.

Every training batch is a fresh set of pairs (new poses, new point subsets, new jitter)
drawn from the training shapes; validation uses one fixed, seeded set of held-out pairs, made
from the models of `data.held_out.VALIDATION_SPLIT` (today the test split, for want of a
validation split).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gmm_perception.data.held_out import VALIDATION_SPLIT
from gmm_perception.data.registration_pairs import MESH_SETTINGS, make_pairs, split_categories
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.metrics.registration import pose_errors, recall, registration_rmse
from gmm_perception.models.deepgmr import MODEL_NAME, deepgmr_loss
from gmm_perception.models.registry import build_model

VALIDATION_SEED = 1_000_003


@dataclass
class RegistrationData:
    shapes: str  # ShapeSet .npz (MeshSet .npz for the settings that scan meshes)
    setting: str = "noisy"  # clean | noisy | scan_to_model: the training pairs' protocol
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
        mesh_setting = self.data.setting in MESH_SETTINGS
        shapes = (MeshSet if mesh_setting else ShapeSet).load(self.data.shapes)
        seen, unseen = split_categories(shapes.class_names)
        self.categories = seen if self.data.categories == "seen" else list(shapes.class_names)
        self.unseen_categories = unseen if self.data.categories == "seen" else []
        self.train_shapes = shapes.subset("train")
        # Validation pairs follow the training setting (noisy for the full-shape ones).
        self.val = make_pairs(shapes.subset(VALIDATION_SPLIT),
                              self.data.setting if mesh_setting else "noisy", self.data.val_pairs,
                              VALIDATION_SEED, self.data.num_points, categories=self.categories,
                              max_translation=self.data.max_translation, progress=False)

    def build(self) -> torch.nn.Module:
        return build_model(self.name, self.model)

    def model_config(self) -> dict[str, Any]:
        return dict(self.model)

    def data_description(self) -> dict[str, Any]:
        return {**vars(self.data), "train_categories": self.categories,
                "held_out_categories": self.unseen_categories,
                "train_models": int(np.isin(
                    np.asarray(self.train_shapes.class_names)[self.train_shapes.labels],
                    self.categories).sum())}

    def train_batch(self, rng: np.random.Generator, device: torch.device):
        pairs = make_pairs(self.train_shapes, self.data.setting, self.batch_size,
                           int(rng.integers(2**31)), self.data.num_points,
                           categories=self.categories, max_translation=self.data.max_translation,
                           progress=False)
        return tuple(torch.as_tensor(a, dtype=torch.float32, device=device)
                     for a in (pairs.source, pairs.target, pairs.T_gt))

    def loss(self, model, batch):
        source, target, T_gt = batch
        return deepgmr_loss(model(source, target), T_gt), {}

    def validate(self, model, device: torch.device) -> dict[str, float]:
        estimates, losses = [], []
        for start in range(0, len(self.val), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            source, target, T_gt = (torch.as_tensor(a[chunk], dtype=torch.float32, device=device)
                                    for a in (self.val.source, self.val.target, self.val.T_gt))
            output = model(source, target)
            losses.append(deepgmr_loss(output, T_gt).item() * len(source))
            estimates.append(output.transform.double().cpu().numpy())
        T_est = np.concatenate(estimates)
        rmse = registration_rmse(self.val.source, T_est, self.val.T_gt)
        rotation, _ = pose_errors(T_est, self.val.T_gt)
        return {"val_loss": float(np.sum(losses) / len(self.val)),
                "val_rmse": float(np.mean(rmse)),
                "val_recall": float(recall(rmse, self.data.recall_threshold)),
                "val_rotation_error_median_deg": float(np.median(rotation))}
