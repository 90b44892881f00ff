"""Where upsampling stops helping (issue 18, the upsampler's gate): the input's density against
what ShapeGF does to its Chamfer distance to the true surface.

    python bench/upsampling_density.py [--checkpoint PATH] [--max-models 12] [--threads 1]
                                       [--json PATH]

Validation shapes only (the shape pool's val split, its SH3D furniture: the threshold is a
parameter, chosen on validation data): each model at a real size (0.5-2 m across, one seeded
draw per model), in metres, two kinds of input at 128 to 8192 points: "surface", points of the
whole surface (an object accumulated from many views) and "view", points of one simulated
depth-camera view (one side only). Every input goes through the upsampling node's stage
(`pipeline.upsample.Upsampler`, the checkpoint's defaults, the gate off) and both the input and
the output are scored by their Chamfer distance (metres; sum of the two mean nearest distances)
to 20,000 fresh samples of the true surface. Density is the gate's own measure
(`geometry.points.surface_density`: points per square metre of the bounding surface).

Prints, per density bin and kind, the clouds, the median Chamfer of input and output and the
share the upsampler brought closer; the suggested threshold is the lower edge of the first bin
in which the upsampler brings fewer than half of either kind's clouds closer (the stage must
not make a cloud worse: the stricter kind decides).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench._report import environment, print_table, write_json  # noqa: E402
from bench._shape_data import limit_threads, sized_validation_objects  # noqa: E402
from gmm_perception.data.mesh_dataset import default_data_dir  # noqa: E402
from gmm_perception.geometry.points import surface_density  # noqa: E402
from gmm_perception.metrics.chamfer import chamfer_distance  # noqa: E402
from gmm_perception.pipeline.configs import UpsampleConfig  # noqa: E402
from gmm_perception.pipeline.scene import load_upsampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20_261_207
COUNTS = (128, 256, 512, 1024, 2048, 4096, 8192)
BIN_EDGES = (0.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, np.inf)
TRUTH_POINTS = 20_000


def measure(checkpoint: str, max_models: int, data_dir: Path) -> list[dict]:
    objects = sized_validation_objects(data_dir, max_models, SEED, max(COUNTS), TRUTH_POINTS)
    config = replace(UpsampleConfig(), checkpoint=checkpoint, density_threshold=0.0)
    upsampler, _ = load_upsampler(config, "cpu")
    rows = []
    for obj in tqdm(objects, desc="models", unit="model"):
        for count in COUNTS:
            for kind, points in obj.inputs(count).items():
                result = upsampler(points)
                rows.append({"model": obj.model_id, "kind": kind, "points": count,
                             "size_m": obj.size_m, "density": surface_density(points),
                             "chamfer_input_m": chamfer_distance(points, obj.truth),
                             "chamfer_output_m": chamfer_distance(result.points, obj.truth),
                             "ms": 1e3 * result.seconds})
    return rows


def summarise(rows: list[dict]) -> tuple[list[dict], float]:
    bins = []
    for low, high in zip(BIN_EDGES[:-1], BIN_EDGES[1:]):
        for kind in ("surface", "view"):
            inside = [r for r in rows if r["kind"] == kind and low <= r["density"] < high]
            if not inside:
                continue
            cd_in = np.array([r["chamfer_input_m"] for r in inside])
            cd_out = np.array([r["chamfer_output_m"] for r in inside])
            bins.append({"low": low, "high": high, "kind": kind, "clouds": len(inside),
                         "median_chamfer_input_m": float(np.median(cd_in)),
                         "median_chamfer_output_m": float(np.median(cd_out)),
                         "closer_share": float(np.mean(cd_out < cd_in))})
    threshold = 0.0  # 0 = upsampling helps at every density seen
    for low in BIN_EDGES[:-1]:
        here = [b for b in bins if b["low"] == low]
        if any(b["closer_share"] < 0.5 for b in here):
            threshold = low
            break
    return bins, threshold


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=UpsampleConfig().checkpoint)
    parser.add_argument("--max-models", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/upsampling_density.json")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    rows = measure(args.checkpoint, args.max_models, args.data_dir)
    bins, threshold = summarise(rows)
    print_table(["points/m^2", "input", "clouds", "input CD (m)", "upsampled CD (m)",
                 "brought closer"],
                [[f"{b['low']:g}-{b['high']:g}", b["kind"], str(b["clouds"]),
                  f"{b['median_chamfer_input_m']:.4f}", f"{b['median_chamfer_output_m']:.4f}",
                  f"{b['closer_share']:.2f}"] for b in bins], "llrrrr")
    print(f"\nsuggested density_threshold: {threshold:g} points/m^2 "
          f"(0 = upsampling helped at every density measured)")
    write_json(args.json, {"environment": environment(), "checkpoint": args.checkpoint,
                           "bins": bins, "suggested_threshold": threshold, "clouds": rows})


if __name__ == "__main__":
    main()
