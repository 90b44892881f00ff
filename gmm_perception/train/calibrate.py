"""Calibrate a classifier checkpoint on validation views: the temperature of its scores, the rule
that fuses a track's frames, and the confidence below which the fused answer is "unknown".

    python -m gmm_perception.train.calibrate [--checkpoint PATH] [--views 20] [--sequences 3]
                                             [--precision 0.9] [--threads 2] [--dry-run]

Data: the shape pool's `val` split (docs/data.md), its categorised shapes whose class the
checkpoint knows (matched by name), never the test or cross splits (`calibration_clouds`). For a
model trained on sensor views: per shape its full cloud and `sequences` tracks of `views` steps
from the view pool (D435 and OS1-64 views at realistic ranges and point counts, each step the
track's last TRACK_WINDOW views accumulated, as the scene pipeline accumulates frames), at the
sizes it trained on; otherwise per model the stored surface cloud and `views * sequences`
simulated D435 scans (partial_scans). Each model turned about z by a seeded angle (seed SEED).

1. Temperature T: minimises the NLL of softmax(logits / T) over every single view and full cloud
   (metrics.calibration.fit_temperature); ECE (15 bins) and NLL before and after are reported.
2. Fusion: the tracks through the stage's rules (pipeline.fuse: product and mean, each with
   forgetting 1.0 / 0.9 / 0.7) and none (each frame alone), with calibrated probabilities. Views
   of one object are not independent, so each rule's fused scores take their own fused
   temperature T_f (softmax(L / T_f), minimising their NLL over every step of the val tracks).
   Per rule: the accuracy of every fused label (all steps of all tracks), of the final labels,
   the fused NLL and ECE. The rule with the lowest fused NLL is chosen (the fused confidence
   decides "unknown": its calibration counts as much as its top class) and written as
   `fusion_rule` and `fusion_forgetting` with its `fused_temperature`, which the stage uses
   unless ClassifyConfig sets them.
3. Unknown threshold: the lowest fused confidence (with T_f) at which the answered fused labels
   (every step, the chosen rule) are right at least `precision` of the time; its coverage.

Writes `<checkpoint stem>.calibration.json` beside the checkpoint (read by the classification
stage when `temperature` is 0 / `unknown_threshold` is -1; `--dry-run` only prints). The
checkpoint itself is only read.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmm_perception.geometry.points import MIN_OBJECT_POINTS
from gmm_perception.metrics.calibration import ECE_BINS, expected_calibration_error, \
    fit_temperature, log_softmax, negative_log_likelihood, unknown_threshold
from gmm_perception.pipeline.configs import FUSION_RULES
from gmm_perception.pipeline.fuse import fuse_sequence

SEED = 20_261_207  # none of the training's, validation's or benchmarks' seeds
SPLIT = "val"
FORGETTING_CHOICES = (1.0, 0.9, 0.7)
NO_FUSION = "none (each frame alone)"
PRECISION = 0.9
TRACK_WINDOW = 3  # views accumulated per track step (view-trained checkpoints)
FULL_STREAM = 100  # HeldOutSet.rng stream of the full clouds' point subsets
SIZE_STREAM = 101  # HeldOutSet.rng stream of the class-size spread (models at real sizes)


def validation_set(data_dir: Path, class_names: list[str], views: int, num_points: int,
                   seed: int = SEED, progress: bool = True):
    """The pool's val models of `class_names` (HeldOutSet, labels indexing class_names)."""
    from gmm_perception.data.held_out import held_out_set
    from gmm_perception.data.pool import load_pool, select

    shapes = select(load_pool(data_dir), split=SPLIT)
    meshes = load_pool(data_dir, meshes=True)
    categories = [c for c in shapes.class_names if c in class_names]
    held = held_out_set(shapes, meshes, split=SPLIT, seed=seed, categories=categories,
                        views=views, scan_points=num_points, progress=progress)
    held.labels = np.array([class_names.index(held.class_names[label]) for label in held.labels],
                           dtype=np.int64)
    held.class_names = list(class_names)
    return held


@dataclass
class CalibrationClouds:
    full: np.ndarray  # (M, N, 3) one full cloud per val model
    tracks: np.ndarray  # (M * sequences, steps, N, 3)
    labels: np.ndarray  # (M,) indexing the checkpoint's classes
    model_ids: list[str]
    description: str


def calibration_clouds(data: dict, data_dir: Path, steps: int, sequences: int,
                       progress: bool = True) -> CalibrationClouds:
    """The val clouds a checkpoint is calibrated on, from its training config `data`: for a
    model trained on sensor views, the view pool's val shapes as a robot sees them
    (ViewSource.tracks: its sensors, ranges and point counts, accumulated over a window of
    views as the scene pipeline does, at the sizes it trained on); otherwise simulated D435
    scans of the pool's val models (validation_set), one view per step."""
    from gmm_perception.data.class_sizes import trained_size_spread

    class_names, num_points = list(data["class_names"]), int(data["num_points"])
    if data.get("view_pool"):
        from gmm_perception.data.shape_set import MeshSet, ShapeSet
        from gmm_perception.train.classification_views import ViewMix, ViewSource

        def path(name: str) -> Path:  # the config's paths are relative to the source root
            return data_dir.parent / name if not Path(name).is_absolute() else Path(name)

        source = ViewSource(ShapeSet.load(path(data["shapes"])), MeshSet.load(path(data["meshes"])),
                            class_names, str(path(data["view_pool"])),
                            int(data["views_per_shape"]), int(data["pool_seed"]), num_points,
                            ViewMix(0.5, 0.3, (2, 6)), val_split=SPLIT, progress=progress,
                            size_spread=trained_size_spread(data))
        full, tracks, labels = source.tracks(sequences, steps, TRACK_WINDOW, SEED)
        return CalibrationClouds(full, tracks, labels, [str(m) for m in source.val.model_ids],
                                 f"the view pool's sensor views (D435 and OS1-64 at realistic "
                                 f"ranges, {data['view_pool']}), each step the last "
                                 f"{TRACK_WINDOW} views of its track accumulated, {num_points} "
                                 f"points, seed {SEED}, turned about z")
    held = validation_set(data_dir, class_names, steps * sequences, num_points, progress=progress)
    # A model trained on clouds at real sizes is calibrated on clouds at real sizes.
    sized = held.at_class_sizes(trained_size_spread(data), SIZE_STREAM)
    return CalibrationClouds(
        sized.cut(sized.stored, num_points, FULL_STREAM),
        sized.scans.reshape(len(held) * sequences, steps, num_points, 3), held.labels,
        held.model_ids.tolist(),
        f"simulated D435 depth scans (data.partial_scans), {num_points} points, seed {SEED}, "
        "turned about z")


def classify_logits(classifier, clouds: np.ndarray) -> np.ndarray:
    """(N, C) log-probabilities (logits up to a constant) of an uncalibrated (T = 1) stage."""
    return np.stack([np.log(np.maximum(classifier(cloud).scores, 1e-300)) for cloud in clouds])


def rule_name(rule: str, forgetting: float) -> str:
    return f"{rule}, forgetting {forgetting:g}"


def parse_rule(name: str) -> tuple[str, float]:
    """(rule, forgetting) of a `rule_name`."""
    rule, forgetting = name.split(", forgetting ")
    return rule, float(forgetting)


def fusion_rules(fused_temperatures: dict[str, float] | None = None) -> dict:
    """Rule name -> (T, C) probabilities of one track -> (T, C) fused posteriors: the stage's
    rules (`FUSION_RULES` x FORGETTING_CHOICES, each with its fused temperature, 1 unless
    given) and none (each frame alone)."""
    temperatures = fused_temperatures or {}
    rules = {}
    for rule in FUSION_RULES:
        for f in FORGETTING_CHOICES:
            name = rule_name(rule, f)
            rules[name] = (lambda seq, rule=rule, f=f, t=temperatures.get(name, 1.0):
                           fuse_sequence(seq, f, t, rule))
    rules[NO_FUSION] = lambda seq: seq
    return rules


def fused_temperature(probabilities: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """T_f minimising the NLL of the `rule`'s fused posteriors at every step of tracks
    (S, T, C) with labels (S,); 1 for no fusion."""
    if rule == NO_FUSION:
        return 1.0
    fused = np.stack([fusion_rules()[rule](seq) for seq in probabilities])
    log_posterior = np.log(np.maximum(fused.reshape(-1, fused.shape[-1]), 1e-300))
    return fit_temperature(log_posterior, np.repeat(labels, probabilities.shape[1]))


def fusion_measurement(probabilities: np.ndarray, labels: np.ndarray,
                       precision: float = PRECISION) -> dict[str, dict]:
    """Per rule, over tracks (S, T, C) of calibrated probabilities with labels (S,), each rule
    with its own fitted fused temperature: accuracy of every fused label, of the final ones,
    mean fused NLL, ECE, and the unknown threshold for `precision` with its coverage."""
    temperatures = {name: fused_temperature(probabilities, labels, name)
                    for name in fusion_rules()}
    rules = fusion_rules(temperatures)
    steps = probabilities.shape[1]
    out = {}
    for name, rule in rules.items():
        fused = np.stack([rule(seq) for seq in probabilities])  # (S, T, C)
        flat = fused.reshape(-1, fused.shape[-1])
        flat_labels = np.repeat(labels, steps)
        correct = flat.argmax(1) == flat_labels
        per_step = (fused.argmax(2) == labels[:, None]).mean(0)
        out[name] = {
            "fused_temperature": temperatures[name],
            "accuracy_all_steps": float(correct.mean()),
            "accuracy_final": float(per_step[-1]),
            "accuracy_per_step": per_step.round(4).tolist(),
            "nll": float(-np.mean(np.log(np.maximum(flat[np.arange(len(flat)), flat_labels],
                                                    1e-300)))),
            "ece": expected_calibration_error(flat, flat_labels),
            "unknown": unknown_threshold(flat.max(1), correct, precision)}
    return out


def choose_rule(measurement: dict[str, dict]) -> str:
    """The stage's rule (not 'none') with the lowest fused NLL at its fused temperature: the
    fused confidence decides "unknown", so how well it is calibrated counts as much as the top
    class (the NLL, a proper score, weighs both); ties: the best accuracy over all steps."""
    candidates = [name for name in measurement if name != NO_FUSION]
    return min(candidates, key=lambda n: (round(measurement[n]["nll"], 4),
                                          -measurement[n]["accuracy_all_steps"]))


def _without_cache(argv: list[str]) -> list[str]:
    """The arguments less --logits (a cache: it does not change the result)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--logits="):
            skip = False
            continue
        skip = arg == "--logits"
        if not skip:
            out.append(arg)
    return out


def _provenance(payload: dict) -> str:
    """What the checkpoint's training saw of these val shapes (from its own data config)."""
    data = payload["config"]["data"]
    if data.get("val_split") == SPLIT:
        return ("the checkpoint trained on the pool's train split and was selected on its own "
                "views of these val shapes (other sensors' seeds than these scans)")
    return ("the checkpoint trained on the SH3D set's training split, which holds every "
            "categorised pool val shape: these views are new, the shapes are not")


def main(argv: list[str] | None = None) -> None:
    import torch

    from gmm_perception.models.registry import CLASSIFIERS, load_model
    from gmm_perception.paths import SOURCE_ROOT
    from gmm_perception.pipeline.classify import Classifier, calibration_path
    from gmm_perception.pipeline.configs import ClassifyConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path,
                        default=Path(ClassifyConfig().checkpoint))
    parser.add_argument("--data-dir", type=Path, default=SOURCE_ROOT / "data")
    parser.add_argument("--views", type=int, default=20, help="views per fused track")
    parser.add_argument("--sequences", type=int, default=3, help="tracks per model")
    parser.add_argument("--precision", type=float, default=PRECISION,
                        help="accuracy the answered fused labels must reach")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    parser.add_argument("--logits", type=Path, default=None,
                        help="an .npz keeping the validation logits: read when it holds this "
                             "run's (same checkpoint, views, sequences), else written")
    args = parser.parse_args(argv)
    if args.views < 1 or args.sequences < 1:
        parser.error("--views and --sequences must be >= 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, payload = load_model(args.checkpoint, CLASSIFIERS)
    data = payload["config"]["data"]
    class_names, num_points = list(data["class_names"]), int(data["num_points"])
    checkpoint_hash = hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()[:16]
    key = f"{checkpoint_hash} {args.views}x{args.sequences} {SEED} {TRACK_WINDOW}"
    clouds = calibration_clouds(data, args.data_dir, args.views, args.sequences)
    if args.logits is not None and args.logits.is_file() and \
            str(np.load(args.logits)["key"]) == key:
        with np.load(args.logits) as kept:
            full, views = kept["full"], kept["views"]
    else:
        # Uncalibrated (T = 1) and never "unknown": the logits as the model gives them, of
        # every cloud (a voxelised accumulation may hold fewer points than the node's min_points).
        classifier = Classifier(ClassifyConfig(checkpoint=str(args.checkpoint),
                                               classification_points=num_points,
                                               temperature=1.0, unknown_threshold=0.0,
                                               min_points=MIN_OBJECT_POINTS),
                                model, class_names, torch.device("cpu"))
        full = classify_logits(classifier, clouds.full)
        views = classify_logits(classifier, clouds.tracks.reshape(-1, num_points, 3)).reshape(
            len(clouds.labels), args.views * args.sequences, -1)
        if args.logits is not None:
            np.savez(args.logits, full=full, views=views, key=key)
    held_labels = clouds.labels
    view_labels = np.repeat(held_labels, views.shape[1])
    logits = np.concatenate([full, views.reshape(-1, views.shape[-1])])
    labels = np.concatenate([held_labels, view_labels])
    temperature = fit_temperature(logits, labels)

    def summary(z, y, t):
        p = np.exp(log_softmax(z, t))
        return {"samples": len(y), "accuracy": float(np.mean(p.argmax(1) == y)),
                "nll": negative_log_likelihood(z, y, t),
                "ece": expected_calibration_error(p, y)}
    validation = {name: {"before": summary(z, y, 1.0), "after": summary(z, y, temperature)}
                  for name, (z, y) in {"single views": (views.reshape(-1, views.shape[-1]),
                                                        view_labels),
                                       "full clouds": (full, held_labels),
                                       "both": (logits, labels)}.items()}
    calibrated = np.exp(log_softmax(views, temperature)).reshape(
        len(held_labels) * args.sequences, args.views, -1)
    track_labels = np.repeat(held_labels, args.sequences)
    measurement = fusion_measurement(calibrated, track_labels, args.precision)
    chosen = choose_rule(measurement)
    tempered = measurement[chosen]
    fused_t = tempered["fused_temperature"]
    threshold = tempered["unknown"]
    rule, forgetting = parse_rule(chosen)
    out = {
        "temperature": round(temperature, 4),
        "fused_temperature": round(fused_t, 4),
        "unknown_threshold": threshold["threshold"],  # exact: it is a cut between samples
        "unknown_precision": args.precision,
        "fusion_rule": rule,
        "fusion_forgetting": forgetting,
        "checkpoint": args.checkpoint.name,
        "checkpoint_sha256": checkpoint_hash,
        "fitted_on": {
            "data": f"shape pool split '{SPLIT}', categorised shapes of the checkpoint's classes "
                    f"(never test or cross)",
            "models": len(held_labels), "model_ids": clouds.model_ids,
            "full_clouds": len(held_labels), "single_views": int(views.shape[0] * views.shape[1]),
            "views": clouds.description,
            "note": _provenance(payload),
        },
        "validation": validation,
        "fusion_measurement": {"tracks": int(calibrated.shape[0]),
                               "views_per_track": args.views, "rules": measurement,
                               "chosen": chosen},
        "ece_bins": ECE_BINS,
        "command": ("python -m gmm_perception.train.calibrate " + shlex.join(_without_cache(
            sys.argv[1:] if argv is None else argv))).strip(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{len(held_labels)} val models, {views.shape[0] * views.shape[1]} views + {len(held_labels)} full "
          f"clouds; T = {temperature:.3f}")
    for name, item in validation.items():
        print(f"  {name:13s} acc {item['before']['accuracy']:.3f}  ECE {item['before']['ece']:.3f}"
              f" -> {item['after']['ece']:.3f}  NLL {item['before']['nll']:.3f} -> "
              f"{item['after']['nll']:.3f}")
    print(f"fusion over {calibrated.shape[0]} tracks of {args.views} views (each rule at its "
          "fused temperature T_f):")
    for name, item in measurement.items():
        unknown = item["unknown"]
        print(f"  {name:24s} T_f {item['fused_temperature']:6.3f}  acc all steps "
              f"{item['accuracy_all_steps']:.3f}  final {item['accuracy_final']:.3f}  NLL "
              f"{item['nll']:.3f}  ECE {item['ece']:.3f}  unknown < {unknown['threshold']:.3f}: "
              f"coverage {unknown['coverage']:.3f} acc {unknown['accuracy']:.3f}")
    print(f"chosen: {chosen} (lowest fused NLL), fused temperature {fused_t:.3f}; unknown "
          f"threshold {threshold['threshold']:.3f} (precision {args.precision}): coverage "
          f"{threshold['coverage']:.3f}")
    if not args.dry_run:
        path = calibration_path(args.checkpoint)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
