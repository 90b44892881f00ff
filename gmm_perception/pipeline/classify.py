"""Classification stage: an object cloud -> calibrated class scores, with GMCN (or the PointNet
baseline).

The cloud is resampled to the point count the model was trained with, then the model's own
`prepare` (GMCN: the fitted input mixture; PointNet: centring and scaling) and forward pass.
Training rotated the objects about z only: clouds must be in a z-up frame (a segmentation's
fixed frame is).

Scores are softmax(logits / T): temperature scaling, fitted on validation views so that a score
of 0.8 is right about 80 % of the time. T is `ClassifyConfig.temperature`, or with 0 the
checkpoint's own calibration file (`calibration_path`: `<checkpoint stem>.calibration.json`
beside it, written by `python -m gmm_perception.train.calibrate`), so a retrained checkpoint
brings its own; a checkpoint without one is used as is (T = 1). The same file holds the
fusion's forgetting, the fused scores' temperature and the "unknown" threshold chosen on
validation for the fused answer (pipeline/fuse.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gmm_perception.geometry.points import object_points, resample
from gmm_perception.gmm import mixture as mx
from gmm_perception.pipeline.configs import FUSION_RULES, ClassifyConfig
from gmm_perception.pipeline.fuse import ClassFusion, FusedClass, FusingStage
from gmm_perception.pipeline.preprocess import ObjectStep
from gmm_perception.pipeline.reuse import reused_step

CALIBRATION_SUFFIX = ".calibration.json"
# The fusion's forgetting when neither the config nor a calibration file sets one (measured best
# on the pool's val tracks for gmcn_views.pt, ClassifyConfig.fusion_forgetting's comment).
DEFAULT_FORGETTING = 0.9


def calibration_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's calibration file is: beside it, `<stem>.calibration.json`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + CALIBRATION_SUFFIX)


def load_calibration(checkpoint: str | Path) -> dict | None:
    """The checkpoint's calibration (temperature, unknown_threshold, how they were fitted), or
    None when it has no file. A file that is not a calibration is an error (ValueError)."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text())
        temperature = float(calibration["temperature"])
        threshold = float(calibration.get("unknown_threshold", 0.0))
        fused = float(calibration.get("fused_temperature", 1.0))
        # The rule: "product" or "mean", with "fusion_forgetting"; files before the mean rule
        # name a product rule only by its forgetting ("forgetting 0.9").
        rule = str(calibration.get("fusion_rule", "product"))
        forgetting = float(calibration.get("fusion_forgetting", rule.split()[-1] if
                                           rule.startswith("forgetting ") else DEFAULT_FORGETTING))
        rule = "product" if rule.startswith("forgetting ") else rule
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"calibration file '{path}' is unreadable: {exc}") from exc
    if not (np.isfinite(temperature) and temperature > 0 and np.isfinite(fused) and fused > 0
            and 0.0 <= threshold <= 1.0 and 0.0 <= forgetting <= 1.0 and rule in FUSION_RULES):
        raise ValueError(f"calibration file '{path}': temperature and fused_temperature must "
                         f"be > 0, unknown_threshold and fusion_forgetting in [0, 1], "
                         f"fusion_rule one of {FUSION_RULES}, got {temperature}, {fused}, "
                         f"{threshold}, {forgetting}, {rule!r}")
    return {**calibration, "fusion_rule": rule, "fusion_forgetting": forgetting}


@dataclass(frozen=True)
class Classification:
    class_id: int
    label: str
    scores: np.ndarray  # (num_classes,) probabilities in class_names order
    # GMCN's fitted input mixture (weights (K,), means (K, 3), covariances (K, 3, 3)), in the
    # cloud's frame; None for models that take points.
    mixture: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    seconds: float
    # The object's class fused over its track (pipeline/fuse.FusingStage); None from the bare
    # stage.
    fused: FusedClass | None = None


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
        self.calibration = load_calibration(config.checkpoint) if (
            config.temperature == 0 or config.unknown_threshold < 0
            or config.fusion_forgetting < 0 or not config.fusion_rule) else None
        calibrated = self.calibration or {}
        # T: the config's, else the checkpoint's calibration, else 1 (uncalibrated).
        self.temperature = config.temperature or float(calibrated.get("temperature", 1.0))
        # The fused scores' temperature: the calibration's (fitted with its threshold), else 1.
        self.fused_temperature = float(calibrated.get("fused_temperature", 1.0))
        # The fusion's rule and forgetting: the config's, else the calibration's (its T_f was
        # fitted with them), else product with DEFAULT_FORGETTING.
        self.fusion_rule = config.fusion_rule or str(calibrated.get("fusion_rule", "product"))
        self.fusion_forgetting = (config.fusion_forgetting if config.fusion_forgetting >= 0
                                  else float(calibrated.get("fusion_forgetting",
                                                            DEFAULT_FORGETTING)))
        # The fused answer's "unknown" threshold: the config's, else the calibration's, else 0.
        self.unknown_threshold = (config.unknown_threshold if config.unknown_threshold >= 0
                                  else float(calibrated.get("unknown_threshold", 0.0)))

    def fusion(self, tracks: dict | None = None) -> ClassFusion:
        """A ClassFusion of this classifier's classes and settings (`tracks`: carry on those)."""
        return ClassFusion(self.class_names, self.fusion_forgetting,
                           self.config.fusion_timeout, self.unknown_threshold, tracks,
                           self.fused_temperature, self.fusion_rule)

    @torch.no_grad()
    def __call__(self, points: np.ndarray) -> Classification:
        started = time.perf_counter()
        points = object_points(points, "classify", self.config.min_points)
        sample = torch.from_numpy(resample(points, self.num_points, self._rng)[None]).to(
            self.device)
        prepared = self.model.prepare(sample)
        # The models answer log-probabilities: logits up to a constant, so scaling them by 1/T
        # is temperature scaling.
        logits = self.model(prepared)[0].double().cpu().numpy() / self.temperature
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        mixture = None
        if prepared.dim() == 4:  # a mixture tensor (B, C, K, 1 + d + d*d)
            mixture = tuple(t[0, 0].double().cpu().numpy() for t in mx.unpack(prepared))
        class_id = int(np.argmax(scores))
        return Classification(class_id, self.class_names[class_id], scores, mixture,
                              time.perf_counter() - started)


def fused_step(configs: dict, classifier: Classifier) -> ObjectStep:
    """The classification node's step, from its configs: `classifier` run again only when an
    object's cloud changed (reused_step), each answer fused over the object's track with the
    classifier's fusion (its classes, forgetting, timeout and unknown threshold). The node and
    the offline evaluator both build it here, so they fuse alike. Its `stage` is the
    `FusingStage` (`.fusion`), whose `stage` is the `ReusedStage`."""
    reused = reused_step(configs, classifier)
    return ObjectStep(reused.preprocess, FusingStage(reused.stage, classifier.fusion()),
                      keyed=True)
