"""The scene pipeline of a pipeline YAML, built as its nodes build their stages.

Each node's values come from its declared defaults, then its parameter files, then inline
values (pipeline_config.node_parameters), and are validated by the same configs the nodes
derive their parameters from (pipeline/configs.py): a value a node refuses, the offline
evaluator refuses with the same words. No rclpy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gmm_perception.device import resolve_device
from gmm_perception.pipeline.configs import ClassifyConfig, NodeConfig, PreprocessConfig, \
    RegistrationConfig, SegmentConfig, ShapeModelConfig, UpsampleConfig, default_values, \
    node_configs
from gmm_perception.pipeline.preprocess import ObjectStep, Preprocessor
from gmm_perception.pipeline.reuse import reused_step
from gmm_perception.pipeline.scene import ScenePipeline, load_classifier, \
    load_registrar, load_shape_modeller, load_upsampler
from gmm_perception.pipeline_config import NodeEntry, PipelineConfigError, load_pipeline, \
    node_parameters

SEGMENTATION, REGISTRATION = "segmentation_node", "registration_node"
CLASSIFICATION = "classification_node"  # optional in a scene pipeline
SHAPE_MODEL, UPSAMPLING = "shape_model_node", "upsampling_node"  # optional surface stages


def pipeline_entries(path: str | Path) -> dict[str, NodeEntry]:
    """The entries of a scene pipeline YAML by executable; it must segment and register."""
    entries = {entry.executable: entry for entry in load_pipeline(path)}
    for needed in (SEGMENTATION, REGISTRATION):
        if needed not in entries:
            raise PipelineConfigError(f"pipeline '{path}' has no {needed}: the scene "
                                      "evaluation needs segmentation and registration")
    return entries


def resolved_configs(entry: NodeEntry, overrides: dict[str, Any] | None = None
                     ) -> dict[type, Any]:
    """The validated configs a node of this entry would run with (ConfigError otherwise)."""
    values = node_parameters(entry, default_values(entry.executable))
    values.update(overrides or {})
    return node_configs(entry.executable, values)


def object_step(stage: str, configs: dict[type, Any], model_stage) -> ObjectStep:
    """A model stage's step as its node builds it (the same functions): run again for an
    object only when its cloud changed (ReuseConfig); classes also fused over the object's
    track (ClassifyConfig, the checkpoint's calibration file)."""
    if stage == "classification":
        from gmm_perception.pipeline.classify import fused_step  # torch: only when built

        return fused_step(configs, model_stage)
    return reused_step(configs, model_stage)


def build_scene(pipeline: str | Path, library: dict[str, np.ndarray], library_dir: str | Path,
                device: str = "auto") -> ScenePipeline:
    """The pipeline's stages in-process, on `device` (every node's `device` overridden, as the
    live evaluator does), registering against `library` (the models of `library_dir`)."""
    entries = pipeline_entries(pipeline)
    overrides = {"device": device}

    def configs(executable: str, extra: dict | None = None) -> dict[type, Any]:
        return resolved_configs(entries[executable], {**overrides, **(extra or {})})

    segmentation = configs(SEGMENTATION)
    registration = configs(REGISTRATION, {"reference_mode": "library",
                                          "library_dir": str(library_dir)})
    torch_device = resolve_device(registration[NodeConfig].device).device
    from gmm_perception.pipeline.track import PoseTracker  # torch and open3d: only when built

    registrar = load_registrar(registration[RegistrationConfig], torch_device, library)[0]
    steps = {"registration": ObjectStep(
        Preprocessor(registration[PreprocessConfig]), PoseTracker(registrar).register,
        keyed=True, viewpoint_frame=registration[RegistrationConfig].viewpoint_frame)}
    for executable, stage, config_class, load in (
            (CLASSIFICATION, "classification", ClassifyConfig, load_classifier),
            (SHAPE_MODEL, "shape_model", ShapeModelConfig, load_shape_modeller),
            (UPSAMPLING, "upsampling", UpsampleConfig, load_upsampler)):
        if executable in entries:
            node = configs(executable)
            steps[stage] = object_step(stage, node, load(node[config_class], torch_device)[0])
    return ScenePipeline(segmentation[NodeConfig].target_frame, segmentation[PreprocessConfig],
                         segmentation[SegmentConfig], steps)
