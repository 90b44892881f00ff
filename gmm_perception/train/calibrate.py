"""Calibrate a classifier checkpoint on validation views: the temperature of its scores, the rule
that fuses a track's frames, and the confidence below which the fused answer is "unknown".

    python -m gmm_perception.train.calibrate [--checkpoint PATH] [--views 20] [--sequences 3]
                                             [--precision 0.9] [--threads 2] [--dry-run]

Data: the shape pool's `val` split (docs/data.md), its categorised shapes whose class the
checkpoint knows (matched by name), never the test or cross splits. Per model, the stored
surface cloud and `views * sequences` simulated depth-camera scans (partial_scans, the D435 of
the held-out sets), each model turned about z by a seeded angle (data.held_out, seed SEED).

1. Temperature T: minimises the NLL of softmax(logits / T) over every single view and full cloud
   (metrics.calibration.fit_temperature); ECE (15 bins) and NLL before and after are reported.
2. Fusion: per model, `sequences` tracks of `views` views each (one object seen from one view
   after another) through the fusion rules forgetting 1.0 / 0.9 / 0.7 (pipeline.fuse), the mean
   of the probabilities, and none (each frame alone), with calibrated probabilities. Per rule:
   the accuracy of every fused label (all steps of all tracks), of the final labels, the fused
   NLL and ECE. The forgetting rule with the best accuracy over all steps is chosen (then the
   final labels', then the NLL) and written as `fusion_forgetting`, which the stage uses unless
   ClassifyConfig.fusion_forgetting sets one (its fused temperature was fitted for that rule).
3. Fused temperature: views of one object are not independent, so the chosen rule's fused
   log-posteriors are over-confident; a second temperature T_f minimises their NLL over every
   step of the val tracks (pipeline.fuse: fused scores softmax(L / T_f)).
4. Unknown threshold: the lowest fused confidence (with T_f) at which the answered fused labels
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
from pathlib import Path

import numpy as np

from gmm_perception.metrics.calibration import ECE_BINS, expected_calibration_error, \
    fit_temperature, log_softmax, negative_log_likelihood, unknown_threshold
from gmm_perception.pipeline.fuse import fuse_sequence

SEED = 20_261_207  # none of the training's, validation's or benchmarks' seeds
SPLIT = "val"
FORGETTING_CHOICES = (1.0, 0.9, 0.7)
FORGETTING_RULE = "forgetting "  # + the factor: the rules the stage's fusion implements
MEAN_RULE = "mean of probabilities"
NO_FUSION = "none (each frame alone)"
PRECISION = 0.9
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


def classify_logits(classifier, clouds: np.ndarray) -> np.ndarray:
    """(N, C) log-probabilities (logits up to a constant) of an uncalibrated (T = 1) stage."""
    return np.stack([np.log(np.maximum(classifier(cloud).scores, 1e-300)) for cloud in clouds])


def mean_rule(probabilities: np.ndarray) -> np.ndarray:
    """(T, C) running mean of the probabilities: the fused posterior of the mean rule."""
    return np.cumsum(probabilities, axis=0) / np.arange(1, len(probabilities) + 1)[:, None]


def fusion_rules(fused_temperature: float = 1.0) -> dict:
    """Rule name -> (T, C) probabilities of one track -> (T, C) fused posteriors."""
    rules = {f"{FORGETTING_RULE}{f:g}": (lambda seq, f=f: fuse_sequence(seq, f, fused_temperature))
             for f in FORGETTING_CHOICES}
    rules[MEAN_RULE] = mean_rule
    rules[NO_FUSION] = lambda seq: seq
    return rules


def fused_temperature(probabilities: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """T_f minimising the NLL of the `rule`'s fused posteriors at every step of tracks
    (S, T, C) with labels (S,); 1 for rules that are not a product of likelihoods."""
    if not rule.startswith(FORGETTING_RULE):
        return 1.0
    fused = np.stack([fusion_rules()[rule](seq) for seq in probabilities])
    log_posterior = np.log(np.maximum(fused.reshape(-1, fused.shape[-1]), 1e-300))
    return fit_temperature(log_posterior, np.repeat(labels, probabilities.shape[1]))


def fusion_measurement(probabilities: np.ndarray, labels: np.ndarray,
                       precision: float = PRECISION, fused_temperature: float = 1.0,
                       only: str | None = None) -> dict[str, dict]:
    """Per rule (or `only` that one), over tracks (S, T, C) of calibrated probabilities with
    labels (S,): accuracy of every fused label, of the final ones, mean fused NLL, ECE, and the
    unknown threshold for `precision` with its coverage."""
    rules = fusion_rules(fused_temperature)
    if only is not None:
        rules = {only: rules[only]}
    steps = probabilities.shape[1]
    out = {}
    for name, rule in rules.items():
        fused = np.stack([rule(seq) for seq in probabilities])  # (S, T, C)
        flat = fused.reshape(-1, fused.shape[-1])
        flat_labels = np.repeat(labels, steps)
        correct = flat.argmax(1) == flat_labels
        per_step = (fused.argmax(2) == labels[:, None]).mean(0)
        out[name] = {
            "accuracy_all_steps": float(correct.mean()),
            "accuracy_final": float(per_step[-1]),
            "accuracy_per_step": per_step.round(4).tolist(),
            "nll": float(-np.mean(np.log(np.maximum(flat[np.arange(len(flat)), flat_labels],
                                                    1e-300)))),
            "ece": expected_calibration_error(flat, flat_labels),
            "unknown": unknown_threshold(flat.max(1), correct, precision)}
    return out


def choose_rule(measurement: dict[str, dict]) -> str:
    """The forgetting rule (the stage's fusion; the mean rule and 'none' are only reported) with
    the best accuracy over all steps, then over the final labels, then the lowest NLL."""
    candidates = [name for name in measurement if name.startswith(FORGETTING_RULE)]
    return max(candidates, key=lambda n: (round(measurement[n]["accuracy_all_steps"], 4),
                                          round(measurement[n]["accuracy_final"], 4),
                                          -measurement[n]["nll"]))


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

    from gmm_perception.data.class_sizes import trained_size_spread
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
    class_names = list(payload["config"]["data"]["class_names"])
    num_points = int(payload["config"]["data"]["num_points"])
    held = validation_set(args.data_dir, class_names, args.views * args.sequences, num_points)
    checkpoint_hash = hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()[:16]
    key = f"{checkpoint_hash} {args.views}x{args.sequences} {SEED}"
    if args.logits is not None and args.logits.is_file() and \
            str(np.load(args.logits)["key"]) == key:
        with np.load(args.logits) as kept:
            full, views = kept["full"], kept["views"]
    else:
        # Uncalibrated (T = 1) and never "unknown": the logits as the model gives them.
        classifier = Classifier(ClassifyConfig(checkpoint=str(args.checkpoint),
                                               classification_points=num_points,
                                               temperature=1.0, unknown_threshold=0.0),
                                model, class_names, torch.device("cpu"))
        # A model trained on clouds at real sizes is calibrated on clouds at real sizes.
        sized = held.at_class_sizes(trained_size_spread(payload["config"]["data"]), SIZE_STREAM)
        full = classify_logits(classifier, sized.cut(sized.stored, num_points, FULL_STREAM))
        views = classify_logits(classifier, sized.scans.reshape(-1, num_points, 3)).reshape(
            len(held), args.views * args.sequences, -1)
        if args.logits is not None:
            np.savez(args.logits, full=full, views=views, key=key)
    view_labels = np.repeat(held.labels, views.shape[1])
    logits = np.concatenate([full, views.reshape(-1, views.shape[-1])])
    labels = np.concatenate([held.labels, view_labels])
    temperature = fit_temperature(logits, labels)

    def summary(z, y, t):
        p = np.exp(log_softmax(z, t))
        return {"samples": len(y), "accuracy": float(np.mean(p.argmax(1) == y)),
                "nll": negative_log_likelihood(z, y, t),
                "ece": expected_calibration_error(p, y)}
    validation = {name: {"before": summary(z, y, 1.0), "after": summary(z, y, temperature)}
                  for name, (z, y) in {"single views": (views.reshape(-1, views.shape[-1]),
                                                        view_labels),
                                       "full clouds": (full, held.labels),
                                       "both": (logits, labels)}.items()}
    calibrated = np.exp(log_softmax(views, temperature)).reshape(
        len(held) * args.sequences, args.views, -1)
    measurement = fusion_measurement(calibrated, np.repeat(held.labels, args.sequences),
                                     args.precision)
    chosen = choose_rule(measurement)
    track_labels = np.repeat(held.labels, args.sequences)
    fused_t = fused_temperature(calibrated, track_labels, chosen)
    tempered = fusion_measurement(calibrated, track_labels, args.precision, fused_t,
                                  only=chosen)[chosen]
    threshold = tempered["unknown"]
    out = {
        "temperature": round(temperature, 4),
        "fused_temperature": round(fused_t, 4),
        "unknown_threshold": threshold["threshold"],  # exact: it is a cut between samples
        "unknown_precision": args.precision,
        "fusion_rule": chosen,
        "fusion_forgetting": float(chosen[len(FORGETTING_RULE):]),
        "checkpoint": args.checkpoint.name,
        "checkpoint_sha256": checkpoint_hash,
        "fitted_on": {
            "data": f"shape pool split '{SPLIT}', categorised shapes of the checkpoint's classes "
                    f"(never test or cross)",
            "models": len(held), "model_ids": held.model_ids.tolist(),
            "full_clouds": len(held), "single_views": int(views.shape[0] * views.shape[1]),
            "views": "simulated D435 depth scans (data.partial_scans), "
                     f"{num_points} points, seed {SEED}, turned about z",
            "note": _provenance(payload),
        },
        "validation": validation,
        "fusion_measurement": {"tracks": int(calibrated.shape[0]),
                               "views_per_track": args.views, "rules": measurement,
                               "chosen_with_fused_temperature": tempered},
        "ece_bins": ECE_BINS,
        "command": ("python -m gmm_perception.train.calibrate " + shlex.join(_without_cache(
            sys.argv[1:] if argv is None else argv))).strip(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{len(held)} val models, {views.shape[0] * views.shape[1]} views + {len(held)} full "
          f"clouds; T = {temperature:.3f}")
    for name, item in validation.items():
        print(f"  {name:13s} acc {item['before']['accuracy']:.3f}  ECE {item['before']['ece']:.3f}"
              f" -> {item['after']['ece']:.3f}  NLL {item['before']['nll']:.3f} -> "
              f"{item['after']['nll']:.3f}")
    print(f"fusion over {calibrated.shape[0]} tracks of {args.views} views:")
    for name, item in measurement.items():
        unknown = item["unknown"]
        print(f"  {name:24s} acc all steps {item['accuracy_all_steps']:.3f}  final "
              f"{item['accuracy_final']:.3f}  NLL {item['nll']:.3f}  ECE {item['ece']:.3f}  "
              f"unknown < {unknown['threshold']:.3f}: coverage {unknown['coverage']:.3f} acc "
              f"{unknown['accuracy']:.3f}")
    print(f"chosen: {chosen}; fused temperature {fused_t:.3f}: NLL {tempered['nll']:.3f}, ECE "
          f"{tempered['ece']:.3f}; unknown threshold {threshold['threshold']:.3f} (precision "
          f"{args.precision}): coverage {threshold['coverage']:.3f}")
    if not args.dry_run:
        path = calibration_path(args.checkpoint)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
