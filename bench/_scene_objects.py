"""The classification benchmark's scene-object row: the clouds the scene pipeline's own
segmentation makes on simulated robot drives through scenes of the pool's TEST shapes
(`gmm-perception data scene-objects --split test --scenes 40`, evaluation/scene_objects.py),
what a robot's classification node is given (ground cut, accumulated, partial, far, noisy).

Per model: accuracy and mean class accuracy of every cloud, ECE raw and calibrated, accuracy by
points and by range, and each object's clouds in frame order fused as one track as the node fuses
them (the checkpoint's calibration: rule, forgetting, fused temperature, "unknown" threshold):
the accuracy of every fused label, of each track's final label, and the coverage and accuracy
of the answered at the threshold. Clouds of classes a model lacks are dropped (noted); clouds
under the stage's min_points are not classified, as the node refuses them (counted).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from bench._classification_views import COUNT_NAMES, RANGE_EDGES, binned_accuracy, bin_index, \
    COUNT_EDGES, RANGE_NAMES
from gmm_perception.data.scene_objects import SceneObjects
from gmm_perception.metrics.calibration import answered_at, log_softmax
from gmm_perception.metrics.classification import labels_by_name
from gmm_perception.pipeline.fuse import fuse_sequence

Run = Callable[[list[np.ndarray], np.ndarray], tuple[dict, np.ndarray]]


def score_scene_objects(objects: SceneObjects, class_names: list[str], run: Run,
                        temperature: float, fusion: dict, min_points: int) -> dict | None:
    """One model on the scene objects; `fusion`: rule, forgetting, fused_temperature,
    threshold (the checkpoint's). None when the model knows none of their classes."""
    labels = labels_by_name(objects.class_name, class_names)
    counts = objects.point_counts()
    keep = np.flatnonzero((labels >= 0) & (counts >= min_points))
    if not len(keep):
        return None
    unknown = sorted(set(objects.class_name[labels < 0].tolist()))
    metrics, logits = run([objects.cloud(int(k)) for k in keep], labels[keep])
    correct = logits.argmax(1) == labels[keep]
    out = {"clouds": int(len(keep)), "small": int(np.sum((labels >= 0) & (counts < min_points))),
           "dropped": (f"{int(np.sum(labels < 0))} clouds of classes the model lacks "
                       f"({', '.join(unknown)})" if unknown else ""),
           **{k: metrics[k] for k in ("accuracy", "mean_class_accuracy", "ece_raw",
                                      "ece_calibrated")},
           "by_points": binned_accuracy(correct, bin_index(counts[keep], COUNT_EDGES),
                                        COUNT_NAMES),
           "by_range": binned_accuracy(correct, bin_index(objects.range_m[keep], RANGE_EDGES),
                                       RANGE_NAMES)}
    probabilities = np.exp(log_softmax(logits, temperature))
    fused_correct, fused_confidence, final = [], [], []
    tracks = objects.tracks(keep)  # one track per object of a scene, in frame order
    for rows in tracks.values():
        fused = fuse_sequence(probabilities[rows], fusion["forgetting"],
                              fusion["fused_temperature"], fusion["rule"])
        right = fused.argmax(1) == labels[keep[rows]]
        fused_correct += right.tolist()
        fused_confidence += fused.max(1).tolist()
        final.append(bool(right[-1]))
    at = answered_at(np.array(fused_confidence), np.array(fused_correct), fusion["threshold"])
    out["fused"] = {"tracks": len(tracks), "accuracy_all_steps": float(np.mean(fused_correct)),
                    "accuracy_final": float(np.mean(final)), "coverage": at["coverage"],
                    "accuracy_answered": at["accuracy"]}
    return out


def print_scene_tables(results: dict[str, dict], path: Path, print_table: Callable) -> None:
    """The scene-object tables of `results` ({model: score_scene_objects(...)})."""
    print(f"\nScene objects ({path.name}: the scene pipeline's own clouds of test shapes):\n")
    print_table(["model", "clouds", "under min_points", "dropped (not a class)", "acc.",
                 "mean class acc.", "ECE raw / cal.", "fused acc. all steps / final",
                 "coverage", "acc. answered"],
                [[model, str(r["clouds"]), str(r["small"]), r["dropped"] or "-",
                  f"{r['accuracy']:.3f}", f"{r['mean_class_accuracy']:.3f}",
                  f"{r['ece_raw']:.3f} / {r['ece_calibrated']:.3f}",
                  f"{r['fused']['accuracy_all_steps']:.3f} / {r['fused']['accuracy_final']:.3f}",
                  f"{r['fused']['coverage']:.3f}", f"{r['fused']['accuracy_answered']:.3f}"]
                 for model, r in results.items()], "lrrlrrrrrr")
    for title, key, names in (("by points", "by_points", COUNT_NAMES),
                              ("by range, sensor to the cloud's box centre", "by_range",
                               RANGE_NAMES)):
        print(f"\nScene objects: accuracy (clouds) {title}:\n")
        print_table(["model", *names],
                    [[model, *("-" if e["accuracy"] is None else
                               f"{e['accuracy']:.3f} ({e['count']})" for e in r[key])]
                     for model, r in results.items()], "l" + "r" * len(names))
