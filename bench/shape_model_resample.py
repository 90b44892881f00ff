"""How far the shape model's resampled cloud may stray from the observed points (issue 18): the
rule `resample_max_distance` against the Chamfer distance to the true surface.

    python bench/shape_model_resample.py [--checkpoint PATH] [--max-models 12] [--threads 1]
                                         [--json PATH]

Validation shapes only (the shape pool's val split, its SH3D furniture: the rule's factor is a
parameter, chosen on validation data), at real sizes (0.5-2 m across), two kinds of input at
256, 1024 and 4096 points: "surface" (points of the whole surface: an object accumulated from
many views) and "view" (one simulated depth-camera view: one side only). Each input goes
through the shape-model node's stage (`pipeline.shape_model.ShapeModeller`, the node's defaults
but `resample_max_distance`), for factors 0 (plain draws of the finest level) and 0.5-5 times
the input's spacing. Per factor and kind: the median Chamfer distance (metres; sum of the two
mean nearest distances) of the resampled cloud and of the input to 20,000 fresh samples of the
true surface, the share of inputs whose resampled cloud is closer than the input, the 95th
percentile of a resampled point's distance to the observed points in input spacings.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench._report import environment, print_table, write_json  # noqa: E402
from bench._shape_data import limit_threads, sized_validation_objects  # noqa: E402
from gmm_perception.data.mesh_dataset import default_data_dir  # noqa: E402
from gmm_perception.metrics.chamfer import chamfer_distance  # noqa: E402
from gmm_perception.pipeline.configs import ShapeModelConfig  # noqa: E402
from gmm_perception.pipeline.scene import load_shape_modeller  # noqa: E402
from gmm_perception.pipeline.shape_model import point_spacing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20_261_207
COUNTS = (256, 1024, 4096)
FACTORS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
TRUTH_POINTS = 20_000


def measure(checkpoint: str, max_models: int, data_dir: Path) -> list[dict]:
    objects = sized_validation_objects(data_dir, max_models, SEED, max(COUNTS), TRUTH_POINTS)
    modellers = {factor: load_shape_modeller(replace(ShapeModelConfig(), checkpoint=checkpoint,
                                                     resample_max_distance=factor), "cpu")[0]
                 for factor in FACTORS}
    rows = []
    for obj in tqdm(objects, desc="models", unit="model"):
        for count in COUNTS:
            for kind, points in obj.inputs(count).items():
                spacing = point_spacing(points)
                cd_input = chamfer_distance(points, obj.truth)
                for factor, modeller in modellers.items():
                    resampled = modeller(points).resampled
                    strays, _ = cKDTree(points).query(resampled)
                    rows.append({"model": obj.model_id, "kind": kind, "points": count,
                                 "factor": factor,
                                 "chamfer_input_m": cd_input,
                                 "chamfer_resampled_m": chamfer_distance(resampled, obj.truth),
                                 "p95_stray_spacings": float(np.percentile(strays, 95)
                                                             / spacing)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for kind in ("surface", "view"):
        for factor in FACTORS:
            inside = [r for r in rows if r["kind"] == kind and r["factor"] == factor]
            cd_in = np.array([r["chamfer_input_m"] for r in inside])
            cd_out = np.array([r["chamfer_resampled_m"] for r in inside])
            table.append({"kind": kind, "factor": factor, "clouds": len(inside),
                          "median_chamfer_input_m": float(np.median(cd_in)),
                          "median_chamfer_resampled_m": float(np.median(cd_out)),
                          "closer_share": float(np.mean(cd_out < cd_in)),
                          "median_p95_stray_spacings": float(np.median(
                              [r["p95_stray_spacings"] for r in inside]))})
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=ShapeModelConfig().checkpoint)
    parser.add_argument("--max-models", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench/results/shape_model_resample.json")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    rows = measure(args.checkpoint, args.max_models, args.data_dir)
    table = summarise(rows)
    print_table(["input", "max distance (spacings)", "clouds", "input CD (m)",
                 "resampled CD (m)", "closer than input", "p95 stray (spacings)"],
                [[t["kind"], "off" if t["factor"] == 0 else f"{t['factor']:g}", str(t["clouds"]),
                  f"{t['median_chamfer_input_m']:.4f}", f"{t['median_chamfer_resampled_m']:.4f}",
                  f"{t['closer_share']:.2f}", f"{t['median_p95_stray_spacings']:.1f}"] for t in table],
                "lrrrrrr")
    write_json(args.json, {"environment": environment(), "checkpoint": args.checkpoint,
                           "table": table, "clouds": rows})


if __name__ == "__main__":
    main()
