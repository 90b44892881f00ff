"""Classification benchmark: GMCN (ours) against the PointNet baseline on the same held-out clouds.

    python bench/classification.py [--gmcn PATH] [--pointnet PATH] [--model NAME=PATH ...]
                                   [--views 4] [--range-views 8] [--max-models N] [--no-pool]
                                   [--threads 2] [--json PATH] [--no-diagram]

Test sets (bench/_shape_data.load_benchmark_rows, i.e. gmm_perception.data.held_out), one row
each: "sh3d test" (every held-out SH3D model, as in earlier cards), then, when the shape pool is
built (`gmm-perception data pool`; --no-pool leaves them out), "pool test <source>" per training
source and "cross-source <source>" per source no training used. A row keeps the models whose
category is one of the classifier's classes (matched by name; the pool's "uncategorised" shapes
and any other category are dropped, and the row says how many); a row with none left is printed
as missing with the reason. Each model (or a fixed seeded subset of --max-models per row) as a
full cloud (the stored surface points) and as simulated depth-camera partial scans (--views per
model), with a seed the training never used, each model turned about z by a seeded angle. Per
model and row: overall and mean per-class accuracy, parameters, and milliseconds per object at
batch 1 on --threads threads (default 2) from the raw cloud (fitting included for GMCN), through
the classification node's stage (pipeline.classify.Classifier). Training minutes per epoch come from
each checkpoint's log. Writes the confusion matrices (PNG) beside the JSON:
confusion_<model>_<setting>.png for the SH3D row, confusion_<model>_<setting>_<row>.png for the
others.

Calibration (issue 17), per model and row: the expected calibration error (ECE, 15 equal-width
bins) and NLL of the raw scores (T = 1) and of the calibrated ones (the temperature of the
checkpoint's calibration file, `<stem>.calibration.json`, fitted on validation views by
`python -m gmm_perception.train.calibrate`; the test views here never take part in it); then each
model's --views scans fused as one track as the node fuses them (pipeline.fuse, with the file's
rule, forgetting and fused temperature):
the accuracy of every fused label and of the final ones, and at the file's "unknown" threshold
the coverage (share of fused labels answered) and the accuracy of those answered. The
reliability diagram of the SH3D row (raw and calibrated, partial scans and full clouds) is
written beside the checkpoint as `<stem>_reliability.png` (--no-diagram: not written).

Sensor views (issue 17: from how far away, and from how many points, can a robot trust the
classifier), bench/_classification_views.py: --range-views D435 / OS1-64 views per categorised
shape of the pool's test and cross-source rows (200-20,000 returns, real sizes and ranges, cached
under data/views with this SEED), in the upright object frame in metres with sensor noise, and
accumulations of 3 views; per model and row accuracy and mean class accuracy, single views binned
by returns, range and sensor, accumulations by points, each bin with its count; the single-view
accuracy against returns and range is plotted to views_accuracy.png beside the JSON. 0 leaves
them out.

Scene objects (bench/_scene_objects.py): the clouds the scene pipeline's own segmentation makes
on simulated robot drives through scenes of the pool's test shapes (--scene-objects, built by
`gmm-perception data scene-objects --split test --scenes 40`): accuracy, ECE, accuracy by points
and range, and each object's clouds fused as one track as the node fuses them.

Models: --gmcn and --pointnet, and any number of --model NAME=PATH (a GMCN or PointNet
checkpoint, e.g. a snapshot at equal epochs); each is a row of every table. Labels are matched to
each checkpoint's own class list by name, so checkpoints of other class orders score alike.

A checkpoint that is missing or unusable leaves its model's row out with the reason (the PointNet
baseline's is not committed: train it with config/train/pointnet_cls.yaml); the others still run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import _classification_views as views_bench  # noqa: E402
from bench._scene_objects import print_scene_tables, score_scene_objects  # noqa: E402
from bench._report import environment, print_table, write_json  # noqa: E402
from bench._shape_data import SH3D_ROW, load_benchmark_rows  # noqa: E402
from gmm_perception.data.class_sizes import trained_size_spread  # noqa: E402
from gmm_perception.data.scene_objects import SceneObjects  # noqa: E402
from gmm_perception.geometry.points import MIN_OBJECT_POINTS  # noqa: E402
from gmm_perception.metrics.calibration import answered_at, expected_calibration_error, \
    log_softmax, negative_log_likelihood, plot_reliability_diagram  # noqa: E402
from gmm_perception.metrics.classification import accuracy, confusion_matrix, \
    per_class_accuracy, plot_confusion_matrix  # noqa: E402
from gmm_perception.models.checkpoint import CheckpointError  # noqa: E402
from gmm_perception.models.registry import CLASSIFIERS, load_model  # noqa: E402
from gmm_perception.pipeline.classify import Classifier  # noqa: E402
from gmm_perception.pipeline.configs import ClassifyConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20_261_122  # not the training's pool or validation seeds, nor the other benchmarks'
FULL_STREAM = 100  # HeldOutSet.rng stream of the full clouds' point subsets
SIZE_STREAM = 101  # HeldOutSet.rng stream of the class-size spread (metric models)


def test_clouds(data_dir: Path, views: int, num_points: int, class_names: list[str],
                max_models: int = 0, pool: bool = True, size_spread: float | None = None):
    """({row: {"full": (clouds, labels), "partial": (clouds, labels)}}, {row: note}) of every
    benchmark row, labels indexing `class_names` (the classifier's); a row with no model of those
    classes is left out, its note says why. Clouds are unit shapes, or with `size_spread` each
    model at its class's real size in metres (for models trained so: data.metric_sizes)."""
    sets, notes = load_benchmark_rows(data_dir, max_models, (), num_points, seed=SEED,
                                      views=views, unit_sphere=False, pool=pool,
                                      classes=class_names)
    clouds = {}
    for name, held in sets.items():
        held = held.at_class_sizes(size_spread, SIZE_STREAM)
        clouds[name] = {"full": (held.cut(held.stored, num_points, FULL_STREAM), held.labels),
                        "partial": (held.scans.reshape(-1, num_points, 3),
                                    np.repeat(held.labels, views))}
    return clouds, notes


def evaluate(classifier: Classifier, clouds: np.ndarray, labels: np.ndarray, n: int,
             temperature: float = 1.0) -> tuple[dict, np.ndarray]:
    """(the metrics, (N, C) log-probabilities) of `classifier` (uncalibrated, T = 1) on the
    clouds; ECE and NLL raw and at `temperature`."""
    classifier(clouds[0])  # warm-up
    predictions, times, logits = [], [], []
    for cloud in clouds:
        started = time.perf_counter()
        result = classifier(cloud)
        times.append((time.perf_counter() - started) * 1e3)
        predictions.append(result.class_id)
        logits.append(np.log(np.maximum(result.scores, 1e-300)))
    predictions, logits = np.array(predictions), np.array(logits)
    return {"objects": len(labels), "accuracy": accuracy(labels, predictions),
            "mean_class_accuracy": float(np.nanmean(per_class_accuracy(labels, predictions, n))),
            "confusion": confusion_matrix(labels, predictions, n).tolist(),
            "ms_median": float(np.median(times)), "ms_p95": float(np.percentile(times, 95)),
            **calibration_metrics(logits, labels, temperature)}, logits


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """ECE (15 bins) and NLL of softmax(logits) and of softmax(logits / temperature)."""
    return {f"{name}_{when}": value
            for when, t in (("raw", 1.0), ("calibrated", temperature))
            for name, value in (("ece", expected_calibration_error(
                np.exp(log_softmax(logits, t)), labels)),
                ("nll", negative_log_likelihood(logits, labels, t)))}


def fused_tracks(logits: np.ndarray, labels: np.ndarray, temperature: float, forgetting: float,
                 threshold: float, fused_temperature: float = 1.0, rule: str = "product") -> dict:
    """Each model's views (logits (M, V, C), labels (M,)) fused as one track, as the stage
    fuses them (rule and forgetting, then the fused scores' temperature): accuracy of every fused label
    and of the final ones; coverage and accuracy of the answered at `threshold`, fused and per
    frame."""
    from gmm_perception.pipeline.fuse import fuse_sequence

    probabilities = np.exp(log_softmax(logits, temperature))
    fused = np.stack([fuse_sequence(track, forgetting, fused_temperature, rule)
                      for track in probabilities])  # (M, V, C)
    steps = np.repeat(labels, logits.shape[1])
    fused_flat, frames = fused.reshape(-1, fused.shape[-1]), probabilities.reshape(
        -1, fused.shape[-1])
    fused_correct, frame_correct = fused_flat.argmax(1) == steps, frames.argmax(1) == steps
    at = answered_at(fused_flat.max(1), fused_correct, threshold)
    alone = answered_at(frames.max(1), frame_correct, threshold)
    return {"tracks": len(labels), "views_per_track": int(logits.shape[1]),
            "rule": rule, "forgetting": forgetting, "fused_temperature": fused_temperature,
            "threshold": threshold,
            "accuracy_all_steps": float(fused_correct.mean()),
            "accuracy_final": float(np.mean(fused[:, -1].argmax(1) == labels)),
            "coverage": at["coverage"], "accuracy_answered": at["accuracy"],
            "per_frame_coverage": alone["coverage"],
            "per_frame_accuracy_answered": alone["accuracy"]}


def named_checkpoint(text: str) -> tuple[str, Path]:
    """'NAME=PATH' of --model -> (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got '{text}'")
    return name.strip(), Path(path.strip())


def file_tag(name: str) -> str:
    """A model's name as a file-name part ('views @40' -> 'views_40')."""
    return "_".join("".join(c if c.isalnum() or c in "-." else " " for c in name).split())


def minutes_per_epoch(checkpoint: Path) -> float:
    import csv

    # A shipped checkpoint's log sits beside it; a run folder's is log.csv.
    log = next((path for path in (checkpoint.with_name(checkpoint.stem + "_training_log.csv"),
                                  checkpoint.with_name("log.csv")) if path.is_file()), None)
    if log is None:
        return float("nan")
    rows = list(csv.DictReader(log.open()))
    if not rows:
        return float("nan")
    # elapsed_min restarts with each resumed run: add up the runs' last values.
    elapsed = [float(row["elapsed_min"]) for row in rows]
    total = sum(a for a, b in zip(elapsed, elapsed[1:] + [0.0]) if b < a)
    return total / float(rows[-1]["epoch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gmcn", type=Path, default=ROOT / "checkpoints" / "gmcn" / "gmcn_sh3d.pt")
    # The baseline's 14 MB checkpoint is not committed: train it with
    # config/train/pointnet_cls.yaml (same budget as GMCN), which writes this file.
    parser.add_argument("--pointnet", type=Path,
                        default=ROOT / "checkpoints" / "pointnet_cls" / "run" / "best.pt")
    parser.add_argument("--model", type=named_checkpoint, action="append", default=[],
                        metavar="NAME=PATH", help="one more GMCN or PointNet checkpoint "
                        "(repeatable), a row of every table under NAME")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--views", type=int, default=4, help="partial scans per test model")
    parser.add_argument("--range-views", type=int, default=8,
                        help="sensor views per shape of the views rows (0: no views rows)")
    parser.add_argument("--scene-objects", type=Path, default=ROOT / "data" / "scene_objects" /
                        "pool_test_40scenes_seed0.npz",
                        help="the scene pipeline's object clouds of test shapes (`gmm-perception "
                        "data scene-objects --split test --scenes 40`); no row when missing")
    parser.add_argument("--max-models", type=int, default=0,
                        help="models per row, a fixed seeded subset (0 = all)")
    parser.add_argument("--no-pool", action="store_true",
                        help="only the SH3D test row (no pool rows, no views rows)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (timings)")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench" / "results" / "classification.json")
    parser.add_argument("--no-diagram", action="store_true",
                        help="do not write the reliability diagram beside the checkpoint")
    args = parser.parse_args()
    if args.views < 1:
        parser.error("--views must be >= 1")
    if args.range_views < 0:
        parser.error("--range-views must be >= 0")
    if args.no_pool:
        args.range_views = 0  # the views rows are pool rows
    names = [name for name, _ in args.model]
    if len(set(names)) != len(names) or set(names) & {"GMCN (ours)", "PointNet"}:
        parser.error("--model names must be unique and not 'GMCN (ours)' or 'PointNet'")
    torch.set_num_threads(args.threads)
    report = {"environment": environment(), "threads": args.threads, "results": {}, "missing": {},
              "dropped": {}, "missing_rows": {}}
    rows_by_set: dict[str, list[list[str]]] = {}
    calibration_rows: list[list[str]] = []
    # (points, sorted class names) -> test_clouds(...): shared by the checkpoints, whatever
    # their class order (the clouds do not depend on it; labels are remapped per checkpoint).
    held_out = {}
    view_rows: dict | None = None  # built at the first usable checkpoint, scored by every one
    report["views"] = {"views_per_shape": args.range_views, "results": {}, "missing_rows": {}}
    scene_objects = (SceneObjects.load(args.scene_objects) if args.scene_objects.is_file()
                     else None)
    report["scene_objects"] = {"file": str(args.scene_objects), "results": {}} if scene_objects \
        else {"missing": f"no {args.scene_objects}: `gmm-perception data scene-objects --split "
                         "test --scenes 40` builds it"}
    for name, path, model_name, tag in (("GMCN (ours)", args.gmcn, "gmcn", "gmcn"),
                                        ("PointNet", args.pointnet, "pointnet_cls",
                                         "pointnet_cls"),
                                        *((n, p, CLASSIFIERS, file_tag(n))
                                          for n, p in args.model)):
        try:
            model, payload = load_model(path, model_name)
        except CheckpointError as error:
            hint = (" (not committed: train it with config/train/pointnet_cls.yaml)"
                    if model_name == "pointnet_cls" else "")
            report["missing"][name] = f"{error}{hint}"
            print(f"{name}: no row, {error}{hint}", file=sys.stderr)
            continue
        num_points = payload["config"]["data"]["num_points"]
        class_names = list(payload["config"]["data"]["class_names"])
        spread = trained_size_spread(payload["config"].get("data", {}))
        key = (num_points, tuple(sorted(class_names)), spread)
        if key not in held_out:
            held_out[key] = test_clouds(args.data_dir, args.views, num_points, list(key[1]),
                                        args.max_models, pool=not args.no_pool,
                                        size_spread=spread)
        sorted_clouds, notes = held_out[key]
        # Labels index the sorted names: map them to this checkpoint's class order by name.
        to_model = np.array([class_names.index(c) for c in key[1]], dtype=np.int64)
        clouds = {row: {setting: (data, to_model[labels])
                        for setting, (data, labels) in settings.items()}
                  for row, settings in sorted_clouds.items()}
        for set_name, note in notes.items():
            target = report["missing_rows"] if set_name not in clouds else report["dropped"]
            target.setdefault(set_name, {})[name] = note
        # The classification node's stage, given the checkpoint's training input size, raw
        # (T = 1): the calibrated scores are softmax(logits / T) of the same logits.
        # Every cloud is scored (min_points at its least: a voxelised accumulation may hold
        # fewer than the node's 200); the scene-object row applies the node's min_points.
        config = ClassifyConfig(checkpoint=str(path), classification_points=num_points,
                                temperature=1.0, unknown_threshold=0.0, fusion_forgetting=-1.0,
                                fusion_rule="", min_points=MIN_OBJECT_POINTS)
        classifier = Classifier(config, model, class_names, torch.device("cpu"))
        calibration = classifier.calibration or {}  # loaded for its fusion
        temperature = float(calibration.get("temperature", 1.0))
        threshold = float(calibration.get("unknown_threshold", 0.0))
        forgetting = classifier.fusion_forgetting  # the calibration's, as the node's
        report.setdefault("calibration", {})[name] = {
            "file": str(path.with_name(path.stem + ".calibration.json")) if calibration
            else None, "temperature": temperature, "unknown_threshold": threshold,
            "fusion_rule": classifier.fusion_rule, "fusion_forgetting": forgetting}
        params = sum(p.numel() for p in model.parameters())
        for set_name, settings in clouds.items():
            result = {"checkpoint": str(path), "epoch": payload["metadata"].get("epoch"),
                      "parameters": params, "minutes_per_epoch": minutes_per_epoch(path),
                      "dropped": notes.get(set_name, "")}
            suffix = "" if set_name == SH3D_ROW else "_" + set_name.replace(" ", "_").replace(
                "/", "-")
            logits = {}
            for setting, (data, labels) in settings.items():
                result[setting], logits[setting] = evaluate(classifier, data, labels,
                                                            len(class_names), temperature)
                plot_confusion_matrix(
                    np.array(result[setting]["confusion"]), class_names,
                    args.json.with_name(f"confusion_{tag}_{setting}{suffix}.png"))
            result["fused"] = fused_tracks(
                logits["partial"].reshape(len(settings["full"][1]), args.views, -1),
                settings["full"][1], temperature, forgetting, threshold,
                classifier.fused_temperature, classifier.fusion_rule)
            if set_name == SH3D_ROW and not args.no_diagram:
                curves = {f"{setting} {when}": (np.exp(log_softmax(logits[setting], t)),
                                                settings[setting][1])
                          for setting in ("partial", "full")
                          for when, t in (("raw", 1.0), (f"T={temperature:.2f}", temperature))}
                result["reliability_diagram"] = str(plot_reliability_diagram(
                    curves, path.with_name(path.stem + "_reliability.png"),
                    f"{name}, {set_name}: raw and calibrated"))
            report["results"].setdefault(set_name, {})[name] = result
            fused = result["fused"]
            calibration_rows.append([
                set_name, name, f"{temperature:.2f}",
                f"{result['full']['ece_raw']:.3f} / {result['full']['ece_calibrated']:.3f}",
                f"{result['partial']['ece_raw']:.3f} / {result['partial']['ece_calibrated']:.3f}",
                f"{result['partial']['accuracy']:.3f}",
                f"{fused['accuracy_all_steps']:.3f} / {fused['accuracy_final']:.3f}",
                f"{threshold:.3f}", f"{fused['coverage']:.3f}",
                f"{fused['accuracy_answered']:.3f}"])
            rows_by_set.setdefault(set_name, []).append([
                set_name, name, str(result["full"]["objects"]),
                str(result["partial"]["objects"]), notes.get(set_name) or "-", f"{params:,}",
                f"{result['full']['accuracy']:.3f}",
                f"{result['full']['mean_class_accuracy']:.3f}",
                f"{result['partial']['accuracy']:.3f}",
                f"{result['partial']['mean_class_accuracy']:.3f}",
                f"{result['full']['ms_median']:.0f}", f"{result['full']['ms_p95']:.0f}",
                f"{result['minutes_per_epoch']:.2f}"])
        if scene_objects is not None:
            scored = score_scene_objects(
                scene_objects, class_names, lambda data, labels: evaluate(
                    classifier, data, labels, len(class_names), temperature),
                temperature, {"rule": classifier.fusion_rule, "forgetting": forgetting,
                              "fused_temperature": classifier.fused_temperature,
                              "threshold": threshold}, ClassifyConfig().min_points)
            if scored is not None:
                report["scene_objects"]["results"][name] = scored
        if args.range_views:
            if view_rows is None:
                view_rows, view_notes = views_bench.view_rows(
                    args.data_dir, args.range_views, SEED, args.max_models,
                    workers=args.threads)
                report["views"]["rows"] = view_notes
            for set_name, row in view_rows.items():
                if spread is not None:
                    row = views_bench.at_class_sizes(row, spread, SEED)
                scored = views_bench.score_row(
                    row, class_names, lambda data, labels: evaluate(
                        classifier, data, labels, len(class_names), temperature))
                if scored is None:
                    report["views"]["missing_rows"].setdefault(set_name, {})[name] = (
                        "none of the row's classes is the model's")
                else:
                    report["views"]["results"].setdefault(set_name, {})[name] = scored
    if not held_out:
        raise SystemExit("no usable checkpoint: " + "; ".join(report["missing"].values()))
    print(f"\n{args.views} partial scans per model; batch 1, {args.threads} threads; load average "
          f"{report['environment']['load_average_1_5_15'][0]:.1f}\n")
    print_table(["set", "model", "models", "partial scans", "dropped (not a class)", "parameters",
                 "full acc.", "full mean class acc.", "partial acc.", "partial mean class acc.",
                 "ms/object median", "ms/object p95", "train min/epoch"],
                [row for set_rows in rows_by_set.values() for row in set_rows],
                "llrrlrrrrrrrr")
    print(f"\nCalibration (temperature from each checkpoint's calibration file, fitted on "
          f"validation views) and fusion of each model's {args.views} scans as one track "
          f"(each checkpoint's fusion rule, from the same file); coverage and accuracy of the "
          "answered fused labels at the 'unknown' threshold:\n")
    print_table(["set", "model", "T", "full ECE raw / cal.", "partial ECE raw / cal.",
                 "partial acc. per frame", "fused acc. all steps / final", "unknown below",
                 "coverage", "acc. answered"], calibration_rows, "llrrrrrrrr")
    for set_name, reasons in report["missing_rows"].items():
        for reason in dict.fromkeys(reasons.values()):  # one line per distinct reason
            models = ", ".join(n for n, r in reasons.items() if r == reason)
            print(f"\n{set_name}: row missing ({models}): {reason}")
    for name, reason in report["missing"].items():
        print(f"\n{name}: row missing: {reason}")
    if args.range_views:
        views_report = report["views"]
        if views_report["results"]:
            views_bench.print_view_tables(views_report["results"], args.range_views, print_table)
            views_report["figure"] = str(views_bench.plot_view_accuracy(
                views_report["results"], args.json.with_name("views_accuracy.png")))
        for set_name, note in views_report.get("rows", {}).items():
            if set_name not in views_report["results"] and note:
                print(f"\nviews, {set_name}: row missing: {note}")
        for set_name, reasons in views_report["missing_rows"].items():
            for model, reason in reasons.items():
                print(f"\nviews, {set_name}, {model}: row missing: {reason}")
    if scene_objects is not None and report["scene_objects"]["results"]:
        print_scene_tables(report["scene_objects"]["results"], args.scene_objects, print_table)
    elif scene_objects is None:
        print(f"\nscene objects: row missing: {report['scene_objects']['missing']}")
    write_json(args.json, report)

if __name__ == "__main__":
    main()
