"""How close the surface stages' clouds come to the true surfaces: metrics and a figure.

The segmentation's object clouds are accumulated partial scans (the far side is never seen).
PointGMM's resampled mixture and ShapeGF's upsampled cloud are scored with the same Chamfer
distance to the true model surface as the input itself, so the table says whether a stage brings
the object closer to its true shape than the scan it was given. Each cloud takes the ground
truth whose centre is nearest its own (within `match_distance`); frames are those evaluated.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from gmm_perception.evaluation.records import SURFACE_KINDS, EvaluationRun
from gmm_perception.geometry.transforms import transform_points
from gmm_perception.metrics.chamfer import chamfer_distance

KIND_TITLES = {"input": "object cloud (input)", "shape_model": "PointGMM resampled",
               "upsampling": "ShapeGF upsampled"}


def _true_surfaces(run: EvaluationRun) -> dict[str, np.ndarray]:
    return {t.name: transform_points(t.T_world_object, t.model_points).astype(np.float32)
            for t in run.truth if t.model_points is not None}


def _nearest_truth(points: np.ndarray, centres: dict[str, np.ndarray], match_distance: float
                   ) -> str | None:
    if not centres:
        return None
    centre = points.mean(axis=0)
    name = min(centres, key=lambda n: np.linalg.norm(centres[n] - centre))
    return name if np.linalg.norm(centres[name] - centre) <= match_distance else None


def surface_rows(run: EvaluationRun, evaluated: list[int], match_distance: float = 0.5
                 ) -> list[dict]:
    """One row per surface cloud matched to a truth: frame, object id, kind, truth, points,
    Chamfer (m) to the true surface."""
    surfaces = _true_surfaces(run)
    centres = {name: points.mean(axis=0) for name, points in surfaces.items()}
    rows = []
    for i in evaluated:
        frame = run.frames[i]
        for cloud in frame.surfaces:
            if len(cloud.points) == 0:
                continue
            truth = _nearest_truth(cloud.points, centres, match_distance)
            if truth is None:
                continue
            rows.append({"frame": frame.index, "object_id": cloud.object_id, "kind": cloud.kind,
                         "truth": truth, "points": int(len(cloud.points)),
                         "chamfer_m": chamfer_distance(cloud.points, surfaces[truth])})
    return rows


def surface_metrics(run: EvaluationRun, evaluated: list[int], match_distance: float = 0.5
                    ) -> dict:
    """Median Chamfer per kind over all frames, and per truth object and kind in the last
    evaluated frame that has that kind (empty when the pipeline has no surface stage)."""
    rows = surface_rows(run, evaluated, match_distance)
    if not rows:
        return {}
    by_kind = defaultdict(list)
    final: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_kind[row["kind"]].append(row["chamfer_m"])
        final[row["truth"]][row["kind"]] = row  # rows are in frame order: the last one stays
    return {
        "rule": "Chamfer distance (sum of the two mean nearest distances, m) to the true "
                "model surface",
        "median_chamfer_m": {kind: float(np.median(by_kind[kind])) for kind in SURFACE_KINDS
                             if by_kind[kind]},
        "clouds": {kind: len(by_kind[kind]) for kind in SURFACE_KINDS if by_kind[kind]},
        "final_frame": {name: {kind: {"frame": row["frame"], "points": row["points"],
                                      "chamfer_m": row["chamfer_m"]}
                               for kind, row in kinds.items()}
                        for name, kinds in sorted(final.items())},
    }


def last_clouds(run: EvaluationRun, evaluated: list[int], match_distance: float = 0.5
                ) -> dict[str, dict[str, np.ndarray]]:
    """truth name -> kind -> the last evaluated frame's cloud of that kind (for the figure)."""
    surfaces = _true_surfaces(run)
    centres = {name: points.mean(axis=0) for name, points in surfaces.items()}
    clouds: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for i in evaluated:
        for cloud in run.frames[i].surfaces:
            truth = _nearest_truth(cloud.points, centres, match_distance) \
                if len(cloud.points) else None
            if truth is not None:
                clouds[truth][cloud.kind] = cloud.points
    return {name: {"truth": surfaces[name], **kinds} for name, kinds in sorted(clouds.items())}
