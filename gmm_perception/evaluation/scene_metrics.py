"""Scene metrics: registered objects against the bag's ground truth.

Matching: in each frame, detections are matched one-to-one to ground-truth objects by the
distance between the centres their models take at the estimated and the true pose (Hungarian,
gated at `match_distance`).

Pose error: ADD-S (Hinterstoisser et al. 2012; the BOP convention), the mean distance from each
true model point at the true pose to the nearest estimated model point at the estimated pose.
It does not punish the poses a symmetric object cannot tell apart (a four-legged table turned
by 90 degrees), which rotation error and ADD (mean distance between corresponding points) do;
both are reported too (and the RMSE of the same point distances, DeepGMR's measure), for the
detections whose model is right.

Success: the right library model and ADD-S below `success_fraction` (0.1) of the object's
diameter. Recall: successes over (ground-truth objects x frames evaluated), counting an object
only in the frames it is visible in (`TruthObject.visible_at`: all of them when the bag does not
record visibility). Detections are matched against every object, so one the pipeline still
holds while it is out of view is no false positive, but neither does it count towards recall.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from gmm_perception.evaluation.records import EvaluationRun, TruthObject
from gmm_perception.geometry.transforms import rotation_error_deg, transform_points
from gmm_perception.pipeline.fuse import UNKNOWN
from gmm_perception.evaluation.surfaces import surface_metrics

EVALUATED = ("ok", "no_objects")
# Issue 17's targets for a classification a robot can trust: shares of right fused labels.
CLASSIFICATION_TARGETS = {"final_label_accuracy": 0.9, "fused_accuracy": 0.8}


@dataclass(frozen=True)
class MatchRow:
    """One detection matched to a ground-truth object (the plots' and the report's rows)."""

    frame: int
    stamp_ns: int
    truth: str
    model: str
    object_id: int
    add_s: float
    add: float  # nan when the model is wrong
    rmse: float  # root mean square of the same point distances (DeepGMR's RMSE); nan likewise
    rotation_error_deg: float  # nan when the model is wrong
    translation_error: float  # nan when the model is wrong
    success: bool


def _centre(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return T[:3, :3] @ points.mean(axis=0) + T[:3, 3]


def match_frame(run: EvaluationRun, frame_index: int, library: dict[str, np.ndarray],
                match_distance: float, success_fraction: float) -> list[MatchRow]:
    frame = run.frames[frame_index]
    truths = [t for t in run.truth if t.model_points is not None]
    detections = [d for d in frame.detections if d.model in library]
    if not truths or not detections:
        return []
    cost = np.array([[np.linalg.norm(_centre(library[d.model], d.T_world_object)
                                     - _centre(t.model_points, t.T_world_object))
                      for t in truths] for d in detections])
    rows = []
    for i, j in zip(*linear_sum_assignment(cost)):
        if cost[i, j] > match_distance:
            continue
        rows.append(_score(frame.index, frame.stamp_ns, detections[i], truths[j],
                           library, success_fraction))
    return rows


def _score(frame: int, stamp_ns: int, detection, truth: TruthObject,
           library: dict[str, np.ndarray], success_fraction: float) -> MatchRow:
    true_points = transform_points(truth.T_world_object, truth.model_points)
    estimated = transform_points(detection.T_world_object, library[detection.model])
    add_s = float(cKDTree(estimated).query(true_points)[0].mean())
    right_model = detection.model == truth.name
    add = rmse = rotation = translation = float("nan")
    if right_model:
        moved = transform_points(detection.T_world_object, truth.model_points)
        distances = np.linalg.norm(moved - true_points, axis=1)
        add, rmse = float(distances.mean()), float(np.sqrt(np.mean(distances ** 2)))
        rotation = float(rotation_error_deg(detection.T_world_object[:3, :3],
                                            truth.T_world_object[:3, :3]))
        translation = float(np.linalg.norm(detection.T_world_object[:3, 3]
                                           - truth.T_world_object[:3, 3]))
    return MatchRow(frame, stamp_ns, truth.name, detection.model, detection.object_id, add_s,
                    add, rmse, rotation, translation,
                    right_model and add_s < success_fraction * truth.diameter)


def _summary(values) -> dict[str, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(values) == 0:
        return {"count": 0}
    return {"count": int(len(values)), "median": float(np.median(values)),
            "mean": float(values.mean()), "p95": float(np.percentile(values, 95)),
            "max": float(values.max())}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _right(pairs: list, fused: bool = False) -> int:
    """How many (truth, true class, ClassifiedObject) pairs are labelled right."""
    return sum(p[1] == (p[2].fused_label if fused else p[2].label) for p in pairs)


def surface_owner(cloud: np.ndarray, surfaces: list[cKDTree], label_distance: float,
          purity: float) -> int | None:
    """Index of the surface that owns at least `purity` of the cloud's points (a point belongs
    to the nearest surface within `label_distance`), or None. Scores a classification's box
    centre (one point) and labels a harvested cluster (evaluation/scene_objects.py)."""
    distances = np.stack([tree.query(cloud, distance_upper_bound=label_distance)[0]
                          for tree in surfaces])  # (S, N), inf beyond the bound
    nearest = np.where(np.isfinite(distances).any(axis=0), distances.argmin(axis=0), -1)
    counts = np.bincount(nearest[nearest >= 0], minlength=len(surfaces))
    best = int(counts.argmax()) if len(counts) else -1
    return best if best >= 0 and counts[best] >= purity * len(cloud) else None


class _TruthSurfaces:
    """Which ground-truth object a segmented object is: the visible truth whose posed model
    surface is nearest the centre of the object's box, within `match_distance`."""

    def __init__(self, truth: list[TruthObject], match_distance: float):
        self.match_distance = match_distance
        self.trees = {t.name: (t, cKDTree(transform_points(t.T_world_object, t.model_points)))
                      for t in truth if t.model_points is not None and len(t.model_points)}

    def at(self, centre: np.ndarray, stamp_ns: int) -> str | None:
        visible = [(truth.name, tree) for truth, tree in self.trees.values()
                   if truth.visible_at(stamp_ns)]
        if not visible:
            return None
        index = surface_owner(np.asarray(centre, dtype=float)[None], [t for _, t in visible],
                              self.match_distance, 1.0)
        return None if index is None else visible[index][0]


def _classification_metrics(run: EvaluationRun, evaluated: list[int], rows: list[MatchRow],
                            match_distance: float) -> dict:
    """Each classified object takes the ground truth at its segmented box's centre (the
    frame's `object_centres`; a classification does not depend on the registration, so it is
    scored where the registration failed too); in runs that did not record the centres, the
    truth its registration was matched to (same frame, same object id). Accuracy of each
    frame's own label against that truth's class.

    The fused labels (records that carry one) are scored the same way, with a fused "unknown"
    as no answer: the accuracy of the answered, the coverage (answered share) and the accuracy
    of all, unknown counted wrong. The final label of a ground-truth object is the fused label
    of its last placed record (unknown = wrong): what a robot acts on at the end of a track."""
    registered_as = {(row.frame, row.object_id): row.truth for row in rows}
    surfaces = _TruthSurfaces(run.truth, match_distance)
    class_of = {t.name: t.class_name for t in run.truth}
    pairs = []  # (truth name, true class, ClassifiedObject), in frame order
    classified = 0
    for i in evaluated:
        frame = run.frames[i]
        for item in frame.classifications:
            classified += 1
            centre = frame.object_centres.get(item.object_id)
            truth = (surfaces.at(centre, frame.stamp_ns) if centre is not None
                     else registered_as.get((frame.index, item.object_id)))
            if truth is not None and class_of.get(truth):
                pairs.append((truth, class_of[truth], item))
    fused = [p for p in pairs if p[2].fused_label]
    answered = [p for p in fused if p[2].fused_label != UNKNOWN]
    final = list({p[0]: p for p in fused}.values())  # the last fused record of each truth
    per_truth = {}
    for name in sorted({p[0] for p in pairs}):
        mine = [p for p in pairs if p[0] == name]
        mine_fused = [p for p in fused if p[0] == name]
        labels = Counter(p[2].label for p in mine)
        per_truth[name] = {
            "class": mine[0][1], "classified": len(mine),
            "accuracy": _right(mine) / len(mine),
            "most_common_label": labels.most_common(1)[0][0],
            "fused_accuracy": _share(_right(mine_fused, True), len(mine_fused)),
            "final_label": mine_fused[-1][2].fused_label if mine_fused else None}
    return {
        "classified": classified, "matched_to_truth": len(pairs),
        "accuracy": _share(_right(pairs), len(pairs)),
        "fused": {"observations": len(fused), "answered": len(answered),
                  "coverage": _share(len(answered), len(fused)),
                  "accuracy_answered": _share(_right(answered, True), len(answered)),
                  "accuracy": _share(_right(fused, True), len(fused))},
        "final_label": {"tracks": len(final), "right": _right(final, True),
                        "accuracy": _share(_right(final, True), len(final))},
        "targets": dict(CLASSIFICATION_TARGETS),
        "per_truth": per_truth}


def scene_metrics(run: EvaluationRun, library: dict[str, np.ndarray],
                  match_distance: float = 0.5, success_fraction: float = 0.1
                  ) -> tuple[dict, list[MatchRow]]:
    """The metrics dictionary (JSON-ready) and the matched rows it was computed from."""
    statuses = Counter(frame.status for frame in run.frames)
    evaluated = [i for i, frame in enumerate(run.frames) if frame.status in EVALUATED]
    rows = [row for i in evaluated
            for row in match_frame(run, i, library, match_distance, success_fraction)]
    scorable = [t for t in run.truth if t.model_points is not None]
    all_detections = [d for i in evaluated for d in run.frames[i].detections]
    detections = len(all_detections)
    # Recall counts an object only in the frames it is visible in.
    visible_frames = {t.name: [i for i in evaluated if t.visible_at(run.frames[i].stamp_ns)]
                      for t in scorable}
    opportunities = sum(len(frames) for frames in visible_frames.values())
    truth_of = {t.name: t for t in scorable}
    seen_rows = [row for row in rows if truth_of[row.truth].visible_at(row.stamp_ns)]
    last = evaluated[-1] if evaluated else None
    last_rows = [row for row in seen_rows
                 if last is not None and row.frame == run.frames[last].index]
    last_visible = [t for t in scorable
                    if last is not None and t.visible_at(run.frames[last].stamp_ns)]
    per_object = {}
    by_truth = defaultdict(list)
    for row in rows:
        by_truth[row.truth].append(row)
    for truth in scorable:
        mine = by_truth[truth.name]
        visible = len(visible_frames[truth.name])
        per_object[truth.name] = {
            "diameter_m": truth.diameter,
            "frames_matched": len(mine),
            "frames_visible": visible,
            "recall": (sum(r.success for r in mine if truth.visible_at(r.stamp_ns)) / visible
                       if visible else 0.0),
            "model_accuracy": (sum(r.model == truth.name for r in mine) / len(mine)
                               if mine else 0.0),
            "add_s_m": _summary(r.add_s for r in mine),
            "rmse_m": _summary(r.rmse for r in mine),
            "rotation_error_deg": _summary(r.rotation_error_deg for r in mine),
            "translation_error_m": _summary(r.translation_error for r in mine),
            "final_frame_success": any(r.success for r in last_rows if r.truth == truth.name),
        }
    classification = _classification_metrics(run, evaluated, rows, match_distance)
    for name, summary in classification.pop("per_truth").items():
        per_object.setdefault(name, {})["classification"] = summary
    stage_names = sorted({stage for frame in run.frames for stage in frame.stage_ms})
    metrics = {
        "mode": run.mode, "bag": run.bag, "world_frame": run.world_frame,
        "seconds": run.seconds,
        "frames": {"total": len(run.frames), "evaluated": len(evaluated),
                   "statuses": dict(statuses), "dropped_by_nodes": run.dropped_by_nodes,
                   "dropped_per_node": dict(run.dropped_per_node)},
        "truth_objects": [t.name for t in run.truth],
        "truth_without_model": [t.name for t in run.truth if t.model_points is None],
        "detection": {
            "detections": detections, "matched": len(rows),
            "precision": len(rows) / detections if detections else 0.0,
            "recall": len(seen_rows) / opportunities if opportunities else 0.0,
        },
        "registration": {
            "success_rule": f"right model and ADD-S < {success_fraction:g} x diameter",
            "recall": (sum(r.success for r in seen_rows) / opportunities
                       if opportunities else 0.0),
            "final_frame_recall": (sum(r.success for r in last_rows) / len(last_visible)
                                   if last_visible else 0.0),
            "model_accuracy": sum(r.model == r.truth for r in rows) / len(rows) if rows else 0.0,
            "add_s_m": _summary(r.add_s for r in rows),
            "add_m": _summary(r.add for r in rows),
            "rmse_m": _summary(r.rmse for r in rows),
            "rotation_error_deg": _summary(r.rotation_error_deg for r in rows),
            "translation_error_m": _summary(r.translation_error for r in rows),
            # Detections answered by tracking (ICP from the last pose) rather than by a global
            # registration, and the registration stage's time per detection in each mode.
            "tracked_share": (sum(d.mode == "tracked" for d in all_detections)
                              / len(all_detections) if all_detections else None),
            "ms_per_object": {mode: _summary(d.latency_ms for d in all_detections
                                             if d.mode == mode)
                              for mode in ("registered", "tracked")},
        },
        "classification": classification,
        "surfaces": surface_metrics(run, evaluated, match_distance),
        "per_object": per_object,
        "latency_ms": {stage: _summary(frame.stage_ms[stage] for frame in run.frames
                                       if stage in frame.stage_ms) for stage in stage_names},
        "warnings": list(run.warnings),
    }
    return metrics, rows
