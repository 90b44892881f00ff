"""Classification stage: an object cloud -> class scores, with GMCN (or the PointNet baseline).

The cloud is resampled to the point count the model was trained with, then the model's own
`prepare` (GMCN: the fitted input mixture; PointNet: centring and scaling) and forward pass.
Training rotated the objects about z only: clouds must be in a z-up frame (a segmentation's
fixed frame is).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gmm_perception.geometry.points import MIN_OBJECT_POINTS, object_points, resample
from gmm_perception.gmm import mixture as mx
from gmm_perception.pipeline.configs import ClassifyConfig

MIN_POINTS = MIN_OBJECT_POINTS  # re-exported: the least cloud the stage takes


@dataclass(frozen=True)
class Classification:
    class_id: int
    label: str
    scores: np.ndarray  # (num_classes,) probabilities in class_names order
    # GMCN's fitted input mixture (weights (K,), means (K, 3), covariances (K, 3, 3)), in the
    # cloud's frame; None for models that take points.
    mixture: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    seconds: float


class Classifier:
    def __init__(self, config: ClassifyConfig, model: torch.nn.Module, class_names: list[str],
                 device: torch.device):
        if len(class_names) != model.config.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model of "
                             f"{model.config.num_classes} classes")
        self.config = config
        self.model, self.class_names, self.device = model.eval(), list(class_names), device
        self.num_points = config.classification_points
        self._rng = np.random.default_rng(config.seed)

    @torch.no_grad()
    def __call__(self, points: np.ndarray) -> Classification:
        started = time.perf_counter()
        points = object_points(points, "classify", MIN_POINTS)
        sample = torch.from_numpy(resample(points, self.num_points, self._rng)[None]).to(
            self.device)
        prepared = self.model.prepare(sample)
        scores = self.model(prepared).exp()[0].double().cpu().numpy()
        mixture = None
        if prepared.dim() == 4:  # a mixture tensor (B, C, K, 1 + d + d*d)
            mixture = tuple(t[0, 0].double().cpu().numpy() for t in mx.unpack(prepared))
        class_id = int(np.argmax(scores))
        return Classification(class_id, self.class_names[class_id], scores, mixture,
                              time.perf_counter() - started)
