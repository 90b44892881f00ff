"""What one evaluation run records, the same in the offline and the live mode.

Both modes reduce to a list of frames, each with the objects the pipeline registered (pose in
the fixed frame, the library model it chose, its fit) and the time each stage took, so one
metrics function and one report serve both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Frame outcomes besides "ok": why a frame produced no registrations.
FRAME_STATUSES = ("ok", "no_objects", "unknown_frame", "malformed", "empty", "dropped", "failed")


@dataclass(frozen=True)
class Detection:
    """One registered object of one frame."""

    object_id: int  # the segmentation's stable id
    model: str  # the library model the registration chose
    T_world_object: np.ndarray  # (4, 4) estimated pose of the model's frame in the fixed frame
    fitness: float
    inlier_rmse: float
    latency_ms: float  # registration of this object (as the node reports it)
    mode: str = "registered"  # "registered" (global) or "tracked" (from the last pose)


@dataclass(frozen=True)
class ClassifiedObject:
    """One object's class in one frame."""

    object_id: int
    label: str  # this frame's own answer
    score: float  # the winning class's probability
    # The class fused over the object's track so far (pipeline/fuse.py): its label ("unknown"
    # while unsure), top fused probability and the frames fused. "" / 0 where the run did not
    # fuse (records made before the fused answer existed).
    fused_label: str = ""
    fused_score: float = 0.0
    observations: int = 0


# What a surface cloud of an object is: the segmented input, PointGMM's resampled mixture, or
# ShapeGF's upsampled cloud.
SURFACE_KINDS = ("input", "shape_model", "upsampling")


@dataclass(frozen=True)
class SurfaceCloud:
    """One object's cloud of one kind in one frame, in the fixed frame."""

    object_id: int
    kind: str  # one of SURFACE_KINDS
    points: np.ndarray  # (M, 3) float32

    def __post_init__(self):
        if self.kind not in SURFACE_KINDS:
            raise ValueError(f"kind must be one of {SURFACE_KINDS}, got {self.kind!r}")


@dataclass
class FrameRecord:
    index: int
    stamp_ns: int
    status: str = "ok"
    detections: list[Detection] = field(default_factory=list)
    classifications: list[ClassifiedObject] = field(default_factory=list)
    # The segmentation's objects: id -> centre of its box in the run's world frame. A
    # classification is scored against the ground truth found there (not only where the
    # registration matched the object); empty where the run did not record them.
    object_centres: dict[int, np.ndarray] = field(default_factory=dict)
    # Object clouds of the surface stages (shape model, upsampling) and their inputs; empty
    # when the pipeline has neither.
    surfaces: list[SurfaceCloud] = field(default_factory=list)
    stage_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    message: str = ""  # why the frame was not "ok"
    failed_answers: list[str] = field(default_factory=list)  # object stages that raised, why

    def __post_init__(self):
        if self.status not in FRAME_STATUSES:
            raise ValueError(f"status must be one of {FRAME_STATUSES}, got {self.status!r}")


@dataclass(frozen=True)
class TruthObject:
    """A ground-truth object: its model's frame in the fixed frame and the model's points."""

    name: str
    T_world_object: np.ndarray
    model_points: np.ndarray | None  # (M, 3) in the model frame; None if the library lacks it
    class_name: str = ""  # for classification scores; "" when the bag does not say
    # Stamps (ns) of the frames it is visible in; None: visible in every frame (bags that do
    # not record visibility). Out of view, it cannot be detected, so recall does not count it.
    visible_ns: frozenset[int] | None = None

    def visible_at(self, stamp_ns: int) -> bool:
        return self.visible_ns is None or stamp_ns in self.visible_ns

    @property
    def diameter(self) -> float:
        if self.model_points is None:
            return float("nan")
        extent = self.model_points.max(axis=0) - self.model_points.min(axis=0)
        return float(np.linalg.norm(extent))


@dataclass
class EvaluationRun:
    mode: str  # "offline" or "live"
    bag: str
    world_frame: str
    frames: list[FrameRecord] = field(default_factory=list)
    truth: list[TruthObject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped_by_nodes: int = 0  # frames the nodes' queues dropped (live mode, from diagnostics)
    dropped_per_node: dict[str, int] = field(default_factory=dict)  # the same, by node
    sensor_path: list[list[float]] = field(default_factory=list)  # sensor xyz per frame
    seconds: float = 0.0
