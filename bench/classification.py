"""Classification benchmark: GMCN (ours) against the PointNet baseline on the same held-out clouds.

    python bench/classification.py [--gmcn PATH] [--pointnet PATH] [--views 4] [--json PATH]

Test set: every held-out SH3D model (the test split), as a full cloud (2048 surface points) and as
simulated depth-camera partial scans (--views per model, a seed the training never used), each
turned about z at random. Per model: overall and mean per-class accuracy, parameters, and
milliseconds per object at batch 1 on 2 threads from the raw cloud (fitting included for GMCN),
as the classification node runs it. Training minutes per epoch come from each checkpoint's log.
Writes the confusion matrices (PNG) beside the JSON.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from _report import environment, print_table, write_json  # noqa: E402

from gmm_perception.data.registration_pairs import PartialViews, _partial_view  # noqa: E402
from gmm_perception.data.shape_set import MeshSet, ShapeSet  # noqa: E402
from gmm_perception.geometry.transforms import rotation_z  # noqa: E402
from gmm_perception.metrics.classification import accuracy, confusion_matrix, \
    per_class_accuracy, plot_confusion_matrix  # noqa: E402
from gmm_perception.models.registry import load_model  # noqa: E402
from gmm_perception.pipeline.classify import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20_261_122  # not the training's pool or validation seeds


def test_clouds(data_dir: Path, views: int, num_points: int):
    shapes = ShapeSet.load(data_dir / "sh3d" / "sh3d_points_2048.npz").subset("test")
    meshes = MeshSet.load(data_dir / "sh3d" / "sh3d_meshes.npz")
    rng = np.random.default_rng(SEED)
    full = np.stack([shapes.points[k, rng.choice(shapes.points.shape[1], num_points,
                                                 replace=False)] for k in range(len(shapes))])
    partial, partial_labels = [], []
    camera = PartialViews()
    for k in tqdm(range(len(shapes)), desc="partial scans", unit="model"):
        mesh = meshes.mesh(meshes.index_of(shapes.model_ids[k]))
        for _ in range(views):
            partial.append(_partial_view(mesh, camera, num_points, rng))
            partial_labels.append(shapes.labels[k])

    def turned(clouds):
        clouds = np.asarray(clouds)
        return (clouds @ rotation_z(rng.uniform(0, 2 * np.pi, len(clouds))).transpose(0, 2, 1)
                ).astype(np.float32)

    return shapes.class_names, {"full": (turned(full), shapes.labels),
                                "partial": (turned(partial), np.array(partial_labels))}


def evaluate(classifier: Classifier, clouds: np.ndarray, labels: np.ndarray, n: int) -> dict:
    classifier(clouds[0])  # warm-up
    predictions, times = [], []
    for cloud in clouds:
        started = time.perf_counter()
        predictions.append(classifier(cloud).class_id)
        times.append((time.perf_counter() - started) * 1e3)
    predictions = np.array(predictions)
    return {"objects": len(labels), "accuracy": accuracy(labels, predictions),
            "mean_class_accuracy": float(np.nanmean(per_class_accuracy(labels, predictions, n))),
            "confusion": confusion_matrix(labels, predictions, n).tolist(),
            "ms_median": float(np.median(times)), "ms_p95": float(np.percentile(times, 95))}


def minutes_per_epoch(checkpoint: Path) -> float:
    import csv

    # A shipped checkpoint's log sits beside it; a run folder's is log.csv.
    log = next((path for path in (checkpoint.with_name(checkpoint.stem + "_training_log.csv"),
                                  checkpoint.with_name("log.csv")) if path.is_file()), None)
    if log is None:
        return float("nan")
    rows = list(csv.DictReader(log.open()))
    return float(rows[-1]["elapsed_min"]) / float(rows[-1]["epoch"]) if rows else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gmcn", type=Path, default=ROOT / "checkpoints" / "gmcn" / "gmcn_sh3d.pt")
    # The baseline's 14 MB checkpoint is not committed: train it with
    # config/train/pointnet_cls.yaml (same budget as GMCN), which writes this file.
    parser.add_argument("--pointnet", type=Path,
                        default=ROOT / "checkpoints" / "pointnet_cls" / "run" / "best.pt")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--views", type=int, default=4, help="partial scans per test model")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench" / "results" / "classification.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = {"environment": environment(), "results": {}}
    rows = []
    class_names = clouds = None
    for name, path, model_name in (("GMCN (ours)", args.gmcn, "gmcn"),
                                   ("PointNet", args.pointnet, "pointnet_cls")):
        model, payload = load_model(path, model_name)
        if clouds is None:
            class_names, clouds = test_clouds(args.data_dir, args.views,
                                              payload["config"]["data"]["num_points"])
        classifier = Classifier(model, payload["config"]["data"]["class_names"],
                                torch.device("cpu"), payload["config"]["data"]["num_points"])
        params = sum(p.numel() for p in model.parameters())
        result = {"checkpoint": str(path), "epoch": payload["metadata"].get("epoch"),
                  "parameters": params, "minutes_per_epoch": minutes_per_epoch(path)}
        for setting, (data, labels) in clouds.items():
            result[setting] = evaluate(classifier, data, labels, len(class_names))
            plot_confusion_matrix(np.array(result[setting]["confusion"]), class_names,
                                  args.json.with_name(f"confusion_{model_name}_{setting}.png"))
        report["results"][name] = result
        rows.append([name, f"{params:,}", f"{result['full']['accuracy']:.3f}",
                     f"{result['full']['mean_class_accuracy']:.3f}",
                     f"{result['partial']['accuracy']:.3f}",
                     f"{result['partial']['mean_class_accuracy']:.3f}",
                     f"{result['full']['ms_median']:.0f}", f"{result['full']['ms_p95']:.0f}",
                     f"{result['minutes_per_epoch']:.2f}"])
    full, partial = (len(clouds[s][1]) for s in ("full", "partial"))
    print(f"\n{full} held-out models, {partial} partial scans; batch 1, 2 threads; load average "
          f"{report['environment']['load_average_1_5_15'][0]:.1f}\n")
    print_table(["model", "parameters", "full acc.", "full mean class acc.", "partial acc.",
                 "partial mean class acc.", "ms/object median", "ms/object p95",
                 "train min/epoch"], rows, "lrrrrrrrr")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
