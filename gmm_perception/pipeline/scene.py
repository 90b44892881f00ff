"""The scene pipeline without ROS: segmentation, then per object registration, classification,
shape model and upsampling, each built from its validated configs.

The nodes and the offline evaluator run the same code:
* `preprocess.cloud_in_frame` is every node's (and the evaluator's) road from a received cloud
  to finite points in the processing frame;
* a `preprocess.ObjectStep` is one object node's work (its preprocessing, then its stage);
  each node calls its step per message, the evaluator calls every step per object;
* `ScenePipeline.process_frame` is one frame of the whole pipeline, for the offline evaluator.
Model stages are loaded from their configs here (`load_*`), with the checkpoint checked to hold
the right kind of model, so a node and the evaluator load them alike.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from gmm_perception.geometry.points import EmptyCloudError
from gmm_perception.pipeline.configs import PreprocessConfig, SegmentConfig
from gmm_perception.pipeline.preprocess import Lookup, ObjectStep, Preprocessor, cloud_in_frame
from gmm_perception.pipeline.segment import Segmentation, Segmenter

# Checkpoint model names each stage accepts.
REGISTRATION_MODELS = ("deepgmr",)
SHAPE_MODELS = ("pointgmm",)
UPSAMPLING_MODELS = ("shapegf",)

# Per-object stages of a scene, in the order a frame runs them.
OBJECT_STAGES = ("registration", "classification", "shape_model", "upsampling")

def load_registrar(config, device, references: Mapping[str, np.ndarray] | None = None):
    """(registrar, checkpoint payload) of `config`, holding the references `config` names
    (file or library) unless `references` are given."""
    from gmm_perception.models.registry import load_model
    from gmm_perception.pipeline.register import DeepGmrRegistrar, configured_references

    model, payload = load_model(config.checkpoint, REGISTRATION_MODELS, device)
    registrar = DeepGmrRegistrar(config, model, device)
    for name, points in (configured_references(config) if references is None
                         else references).items():
        registrar.add_reference(points, name)
    return registrar, payload


def load_classifier(config, device):
    """(classifier, checkpoint payload) of `config`: GMCN or a baseline (PointNet, DGCNN)."""
    from gmm_perception.models.registry import CLASSIFIERS, load_model
    from gmm_perception.pipeline.classify import Classifier

    model, payload = load_model(config.checkpoint, CLASSIFIERS, device)
    class_names = payload["config"].get("data", {}).get("class_names")
    if not class_names:
        raise ValueError(f"checkpoint '{config.checkpoint}' names no classes "
                         "(config.data.class_names)")
    return Classifier(config, model, class_names, device), payload


def load_shape_modeller(config, device):
    """(PointGMM shape modeller, checkpoint payload) of `config`."""
    from gmm_perception.models.registry import load_model
    from gmm_perception.pipeline.shape_model import ShapeModeller

    model, payload = load_model(config.checkpoint, SHAPE_MODELS, device)
    return ShapeModeller(config, model, device,
                         payload["config"].get("data", {}).get("num_points")), payload


def load_upsampler(config, device):
    """(ShapeGF upsampler, checkpoint payload) of `config`."""
    from gmm_perception.models.registry import load_model
    from gmm_perception.pipeline.upsample import Upsampler

    model, payload = load_model(config.checkpoint, UPSAMPLING_MODELS, device)
    return Upsampler(config, model, device), payload


@dataclass
class ObjectAnswer:
    """What one object stage answered for one object of a frame (or why it did not)."""

    object_id: int
    stage: str  # one of OBJECT_STAGES
    result: Any = None  # the stage's result; None when the object was refused or failed
    refused: str = ""  # why the stage refused the object (too few points after preprocessing)
    failed: str = ""  # the error a stage raised (a node counts the frame failed, carries on)
    milliseconds: float = 0.0


@dataclass
class SceneFrame:
    """One frame through the pipeline."""

    frame_id: str  # the processing (fixed) frame
    segmentation: Segmentation
    answers: list[ObjectAnswer] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)


class ScenePipeline:
    """Segmentation of a scene cloud, then each object through the object steps."""

    def __init__(self, world_frame: str, preprocess: PreprocessConfig, segment: SegmentConfig,
                 object_steps: Mapping[str, ObjectStep]):
        unknown = set(object_steps) - set(OBJECT_STAGES)
        if unknown:
            raise ValueError(f"unknown object stages {sorted(unknown)} (known: {OBJECT_STAGES})")
        self.world_frame = world_frame
        self.preprocess = Preprocessor(preprocess)
        self.segmenter = Segmenter(segment)
        self.object_steps = {name: object_steps[name] for name in OBJECT_STAGES
                             if name in object_steps}

    def process_frame(self, points: np.ndarray, frame_id: str, stamp: Any,
                      lookup: Lookup | None) -> SceneFrame:
        """One scene cloud: into the world frame, preprocessed, segmented, then every object
        through every object step in id order. Raises what a node would reject the cloud for
        (EmptyCloudError, TransformError); an object a step refuses is recorded as refused."""
        points, frame, sensor = cloud_in_frame(points, frame_id, stamp, self.world_frame, lookup)
        tick = time.perf_counter()
        scene = self.preprocess(points)
        stage_ms = {"preprocess": _ms_since(tick)}
        tick = time.perf_counter()
        segmentation = self.segmenter(scene, sensor)
        stage_ms["segmentation"] = _ms_since(tick)
        result = SceneFrame(frame, segmentation, stage_ms=stage_ms)
        viewpoints = {}
        for name, step in self.object_steps.items():
            stage_ms[name] = 0.0
            try:
                viewpoints[name] = step.viewpoint(frame, stamp, lookup)
            except Exception:  # noqa: BLE001 - as the node: the step runs without it
                viewpoints[name] = None
        for obj in segmentation.objects:
            for name, step in self.object_steps.items():
                tick = time.perf_counter()
                answer = ObjectAnswer(obj.id, name)
                try:
                    answer.result = step(obj.points, obj.id, stamp, frame, viewpoints[name])
                except EmptyCloudError as exc:  # too few points: a node rejects it the same way
                    answer.refused = str(exc)
                except Exception as exc:  # noqa: BLE001 - as a node's worker: record, go on
                    answer.failed = f"{type(exc).__name__}: {exc}"
                answer.milliseconds = _ms_since(tick)
                stage_ms[name] += answer.milliseconds
                result.answers.append(answer)
        return result


def _ms_since(tick: float) -> float:
    return (time.perf_counter() - tick) * 1e3
