"""The scene pipeline's stages built from the same pipeline YAML the live nodes read.

The offline evaluator runs these in-process; the live evaluator starts the nodes. Both take
each node's declared defaults, then its parameter files, then inline values (node_parameters),
and build the stages with the nodes' own config functions, so the two run the same settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gmm_perception.device import resolve_device
from gmm_perception.models.deepgmr import MODEL_NAME
from gmm_perception.models.registry import load_model
from gmm_perception.pipeline.classify import Classifier
from gmm_perception.pipeline.preprocess import Preprocessor
from gmm_perception.pipeline.register import DeepGmrRegistrar, load_library
from gmm_perception.pipeline.segment import Segmenter
from gmm_perception.pipeline_config import NodeEntry, PipelineConfigError, load_pipeline, \
    node_parameters

SEGMENTATION, REGISTRATION = "segmentation_node", "registration_node"
CLASSIFICATION = "classification_node"  # optional in a scene pipeline
SHAPE_MODEL, UPSAMPLING = "shape_model_node", "upsampling_node"  # optional surface stages


@dataclass
class SceneStages:
    world_frame: str  # the segmentation's target_frame: where objects are tracked
    preprocess: Preprocessor  # of the segmentation node (scene clouds)
    segmenter: Segmenter
    object_preprocess: Preprocessor  # of the registration node (object clouds)
    registrar: DeepGmrRegistrar
    library: dict  # model name -> (M, 3) points in the model frame
    classifier: Classifier | None = None  # when the pipeline has a classification node
    classify_preprocess: Preprocessor | None = None
    # Surface stages (shape model, upsampling): kind -> (preprocess, object points -> points)
    surfaces: dict[str, tuple[Preprocessor, Callable[[np.ndarray], np.ndarray]]] = field(
        default_factory=dict)


def pipeline_entries(path: str | Path) -> dict[str, NodeEntry]:
    """The segmentation and registration entries of a scene pipeline YAML."""
    entries = {entry.executable: entry for entry in load_pipeline(path)}
    for needed in (SEGMENTATION, REGISTRATION):
        if needed not in entries:
            raise PipelineConfigError(f"pipeline '{path}' has no {needed}: the scene "
                                      "evaluation needs segmentation and registration")
    return entries


def resolved_parameters(entry: NodeEntry, overrides: dict | None = None):
    """A parameter getter with the node's declared defaults, files, inline values, overrides."""
    from gmm_perception.ros.node_base import BASE_PARAMETERS
    from gmm_perception.ros.runner import node_class

    specs = [*BASE_PARAMETERS, *node_class(entry.executable).parameters]
    values = node_parameters(entry, {spec.name: spec.default for spec in specs})
    values.update(overrides or {})
    return values.__getitem__


def build_stages(pipeline: str | Path, library_dir: str | Path, device: str = "auto"
                 ) -> SceneStages:
    # The node modules hold the parameter declarations and config functions; importing them
    # loads rclpy's Python bindings but starts no middleware.
    from gmm_perception.ros.preprocess_node import config_from_parameters
    from gmm_perception.ros.registration_node import registrar_from_parameters
    from gmm_perception.ros.segmentation_node import segment_config_from_parameters

    entries = pipeline_entries(pipeline)
    segmentation = resolved_parameters(entries[SEGMENTATION])
    registration = resolved_parameters(entries[REGISTRATION])
    torch_device = resolve_device(device).device
    model, _ = load_model(registration("checkpoint"), MODEL_NAME, torch_device)
    registrar = registrar_from_parameters(registration, model, torch_device)
    library = load_library(library_dir)
    for name, points in library.items():
        registrar.add_reference(points, name)
    classifier = classify_preprocess = None
    if CLASSIFICATION in entries:
        classification = resolved_parameters(entries[CLASSIFICATION])
        model, payload = load_model(classification("checkpoint"), None, torch_device)
        classifier = Classifier(model, payload["config"]["data"]["class_names"], torch_device,
                                classification("classification_points"))
        classify_preprocess = Preprocessor(config_from_parameters(classification))
    surfaces = {}
    if SHAPE_MODEL in entries:
        from gmm_perception.ros.shape_model_node import modeller_from_parameters

        shape = resolved_parameters(entries[SHAPE_MODEL])
        model, payload = load_model(shape("checkpoint"), "pointgmm", torch_device)
        modeller = modeller_from_parameters(shape, model, payload, torch_device)
        surfaces["shape_model"] = (Preprocessor(config_from_parameters(shape)),
                                   lambda points: modeller(points).resampled)
    if UPSAMPLING in entries:
        from gmm_perception.ros.upsampling_node import upsampler_from_parameters

        upsampling = resolved_parameters(entries[UPSAMPLING])
        model, _ = load_model(upsampling("checkpoint"), "shapegf", torch_device)
        upsampler = upsampler_from_parameters(upsampling, model, torch_device)
        surfaces["upsampling"] = (Preprocessor(config_from_parameters(upsampling)),
                                  lambda points: upsampler(points).points)
    return SceneStages(
        surfaces=surfaces, classifier=classifier, classify_preprocess=classify_preprocess,
        world_frame=segmentation("target_frame"),
        preprocess=Preprocessor(config_from_parameters(segmentation)),
        segmenter=Segmenter(segment_config_from_parameters(segmentation)),
        object_preprocess=Preprocessor(config_from_parameters(registration)),
        registrar=registrar, library=library)
