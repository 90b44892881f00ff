"""The models we train and serve: name -> (class, config class). One place builds them."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from gmm_perception.models.checkpoint import CheckpointError, load_checkpoint
from gmm_perception.models.deepgmr import MODEL_NAME as DEEPGMR, DeepGmr, DeepGmrConfig
from gmm_perception.models.dgcnn_classifier import MODEL_NAME as DGCNN_CLS, DgcnnClassifier, \
    DgcnnClassifierConfig
from gmm_perception.models.gmcn import MODEL_NAME as GMCN, Gmcn, GmcnConfig
from gmm_perception.models.neuralqaad import MODEL_NAME as NEURALQAAD, NeuralQaad, \
    NeuralQaadConfig
from gmm_perception.models.pointgmm import MODEL_NAME as POINTGMM, PointGmm, PointGmmConfig
from gmm_perception.models.pointnet_classifier import MODEL_NAME as POINTNET_CLS, \
    PointNetClassifier, PointNetClassifierConfig
from gmm_perception.models.shapegf import MODEL_NAME as SHAPEGF, ShapeGf, ShapeGfConfig

MODELS: dict[str, tuple[type[torch.nn.Module], type]] = {
    DEEPGMR: (DeepGmr, DeepGmrConfig),
    DGCNN_CLS: (DgcnnClassifier, DgcnnClassifierConfig),
    GMCN: (Gmcn, GmcnConfig),
    NEURALQAAD: (NeuralQaad, NeuralQaadConfig),
    POINTGMM: (PointGmm, PointGmmConfig),
    POINTNET_CLS: (PointNetClassifier, PointNetClassifierConfig),
    SHAPEGF: (ShapeGf, ShapeGfConfig),
}

# The object classifiers (their checkpoints name classes and answer log-probabilities).
CLASSIFIERS = (GMCN, POINTNET_CLS, DGCNN_CLS)


def build_model(name: str, config: dict[str, Any]) -> torch.nn.Module:
    """A fresh model from its registry name and a config dict (unknown keys are an error)."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}' (known: {sorted(MODELS)})")
    model_class, config_class = MODELS[name]
    known = {f.name for f in fields(config_class)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"{name} config has unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return model_class(config_class(**config))


def load_model(path, name: str | tuple[str, ...] | None, device: torch.device | str = "cpu"
               ) -> tuple[torch.nn.Module, dict]:
    """A model in eval mode on `device` from a checked checkpoint, and the checkpoint payload.
    `name`: the registry name (or names) the file must hold; None accepts any registered model.
    Every failure is a CheckpointError naming the file, including a payload whose config or
    weights do not build the model it names."""
    payload = load_checkpoint(path, expected_model=name, map_location=device)
    try:
        return model_from_payload(payload, device), payload
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint '{path}' does not build its '{payload['model']}' "
                              f"model: {type(exc).__name__}: {exc}") from exc


def model_from_payload(payload: dict, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model of a loaded checkpoint payload: built, weights loaded, on `device`, eval mode."""
    model = build_model(payload["model"], payload["config"]["model"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
