"""Upsampling benchmark (issue 8): ShapeGF against classic ways of turning 512 points into 2048.

    python bench/upsampling.py [--checkpoint PATH] [--max-models 24] [--steps-per-level N]
                               [--start-sigma 0.03] [--no-pool] [--rows cross-source]
                               [--threads 2] [--json PATH]

Test sets (bench/_shape_data.load_benchmark_rows, i.e. gmm_perception.data.held_out), one row each:
"sh3d test" (the held-out SH3D models, as in earlier cards), then, when the shape pool is built
(`gmm-perception data pool`; --no-pool leaves them out), "pool test <source>" per training source
and "cross-source <source>" per source no training used. Per row --max-models models (a fixed
seeded subset; 0 = all, 74 in the SH3D row). The default 24 is meant to keep a row near 10
minutes on 2 idle cores (five rows with the pool: near 50): per model, the
methods take about 3 s per input and the metrics twice that (an exact 2048-point EMD costs about
1 s, more for clouds far from the truth, and there are 5 per input plus the oracle's). Measured
while two trainings shared the machine's 2 cores: 80 s per model. Two inputs per model,
512 points each: "sparse", 512 of the stored surface cloud, and "partial", 512 of one simulated
depth-camera scan (one side of the object only). Ground truth: 2048 fresh samples of the true mesh
surface, none of them an input point; the oracle row scores a second, independent 2048-point
sample of the same surface against it (the floor any method can reach: ShapeGF's Table 1).
Everything lives in the true shape's unit sphere.

Methods, all 512 -> 2048 on the same inputs:
  ShapeGF prior    annealed Langevin from the uniform prior, every noise level,
                   --steps-per-level (default the checkpoint's config);
  ShapeGF denoise  the chain starts from the input points (each an equal share) and runs the levels
                   sigma <= --start-sigma (default the stage's 0.03, chosen on pool val shapes);
  jitter           the input, then 3 copies of it with Gaussian noise of standard deviation
                   --jitter-fraction (0.5) times the input's mean nearest-neighbour spacing;
  GMM-64           2048 points drawn from a 64-component full-covariance EM fit to the input
                   (bench/em_baseline.fit_em: 8 points per component);
  Poisson          Open3D screened Poisson reconstruction (depth 8) from normals estimated on the
                   input (16 neighbours, turned to point away from the centroid: the input has no
                   sensor position), the least supported 10 % of vertices trimmed (the surface
                   Poisson invents far from any point), then 2048 area-weighted samples of the
                   mesh;
  guide only       (checkpoints with input_guide) the denoise chain with the decoder's correction
                   zeroed: the closed-form (MLS) guide alone, to show what the network adds;
  input            the 512 points themselves: Chamfer only (EMD needs equal sizes).
ShapeGF (prior, denoise, guide only) runs through the upsampling node's stage
(pipeline.upsample.Upsampler), seeded per model, so its times are what the node spends.
Metrics against the ground truth: CD (metrics.chamfer: sum of the two mean nearest distances,
unsquared), EMD (exact Hungarian, mean matched distance, metrics.emd), EM-kD (metrics.emkd, leaf
1024: an upper bound of the EMD), and milliseconds per cloud (batch 1, median, --threads threads).
When a method fails on an input (Poisson: exception, empty or area-less mesh; EM: fewer distinct
points than components), the jitter output stands in for it and the failure is counted.
Targets (per row): ShapeGF has the lowest EMD (oracle excluded) and upsamples 512 -> 2048 in
<= 1 s. Writes a figure of one model's clouds per method and row beside the JSON:
upsampling_example.png for the SH3D row, upsampling_example_<row>.png for the others.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open3d as o3d
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench._report import environment, print_table, print_targets, write_json  # noqa: E402
from bench._shape_data import SH3D_ROW, limit_threads, load_benchmark_rows, plot_clouds, \
    time_summary, timed  # noqa: E402
from bench.em_baseline import fit_em  # noqa: E402
from gmm_perception.data.mesh_ops import sample_surface  # noqa: E402
from gmm_perception.gmm.hierarchical import sample  # noqa: E402
from gmm_perception.metrics.chamfer import chamfer_distance  # noqa: E402
from gmm_perception.metrics.emd import earth_movers_distance  # noqa: E402
from gmm_perception.metrics.emkd import em_kd  # noqa: E402
from gmm_perception.models.registry import load_model  # noqa: E402
from gmm_perception.models.shapegf import guide_only  # noqa: E402
from gmm_perception.pipeline.configs import UpsampleConfig  # noqa: E402
from gmm_perception.pipeline.upsample import Upsampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INPUT_POINTS = 512
OUTPUT_POINTS = 2048
GMM_COMPONENTS = 64
POISSON_DEPTH = 8
POISSON_TRIM_QUANTILE = 0.1
NORMAL_NEIGHBOURS = 16
TIME_TARGET_MS = 1000.0
SHAPEGF = ("ShapeGF prior", "ShapeGF denoise")


def jitter_upsample(points: np.ndarray, count: int, fraction: float,
                    rng: np.random.Generator) -> np.ndarray:
    """The input, then copies of it with isotropic Gaussian noise of `fraction` times its mean
    nearest-neighbour spacing (the scale at which new points could still lie on the surface)."""
    spacing = cKDTree(points).query(points, k=2)[0][:, 1].mean()
    noise = rng.normal(0.0, fraction * spacing, (count, 3))
    noise[:len(points)] = 0.0
    return points[np.arange(count) % len(points)] + noise


def gmm_upsample(points: np.ndarray, count: int, threads: int,
                 generator: torch.Generator) -> np.ndarray:
    level = fit_em(points, GMM_COMPONENTS, threads=threads).to_level()
    return sample(level, count=count, generator=generator)[0].numpy()


def poisson_upsample(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Screened Poisson surface of the input, sampled uniformly (module docstring). Raises
    RuntimeError when no usable surface comes out."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(NORMAL_NEIGHBOURS))
    normals = np.asarray(cloud.normals)
    inward = np.sum((points - points.mean(0)) * normals, axis=1) < 0
    normals[inward] *= -1
    cloud.normals = o3d.utility.Vector3dVector(normals)
    mesh, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        cloud, depth=POISSON_DEPTH)
    density = np.asarray(density)
    if len(density) == 0:
        raise RuntimeError("Poisson reconstruction returned an empty mesh")
    mesh.remove_vertices_by_mask(density < np.quantile(density, POISSON_TRIM_QUANTILE))
    triangles = SimpleNamespace(vertices=np.asarray(mesh.vertices),
                                faces=np.asarray(mesh.triangles))
    if len(triangles.faces) == 0:
        raise RuntimeError("no triangles left after trimming")
    try:
        return sample_surface(triangles, count, rng)
    except ValueError as error:  # no area to sample
        raise RuntimeError(str(error)) from error


def distances(cloud: np.ndarray, truth: np.ndarray, threads: int) -> dict[str, float]:
    """CD always; EMD and EM-kD only for clouds of the truth's size (they are bijections)."""
    out = {"cd": chamfer_distance(cloud, truth), "emd": np.nan, "emkd": np.nan}
    if len(cloud) == len(truth):
        out["emd"] = earth_movers_distance(cloud, truth)
        out["emkd"] = em_kd(cloud, truth, workers=threads)
    return out


def stage(model, mode: str, seed: int, args) -> Upsampler:
    """The upsampling node's stage around `model`, in `mode`, seeded (the stage takes 31 bits)."""
    # No density gate: the benchmark measures the upsampler on every input (the unit-sphere
    # clouds' density per square unit is not the scene's per square metre).
    return Upsampler(UpsampleConfig(output_points=OUTPUT_POINTS,
                                    steps_per_level=args.steps_per_level, mode=mode,
                                    start_sigma=args.start_sigma, density_threshold=0.0,
                                    seed=seed % 2**31),
                     model, torch.device("cpu"))


def evaluate(model, inputs: np.ndarray, truth: np.ndarray, args, shapes, stream: int, tag: str
             ) -> tuple[dict[str, dict[str, list]], dict[str, np.ndarray], dict[str, int]]:
    """Per-model distances and times of every method on one input kind, the first model's
    outputs (for the figure) and the failures per method (the jitter output stood in)."""
    records: dict[str, dict[str, list]] = {}
    example: dict[str, np.ndarray] = {}
    failures: dict[str, int] = {}
    model.upsample(torch.from_numpy(inputs[0]), OUTPUT_POINTS, 1)  # warm-up
    guide = guide_only(model)
    for row in tqdm(range(len(inputs)), desc=f"{tag} inputs", unit="model"):
        x = inputs[row]
        rng = shapes.rng(row, stream)
        seed = int(rng.integers(2**62))
        generator = torch.Generator().manual_seed(seed)
        prior, denoise = (stage(model, mode, seed, args) for mode in ("prior", "denoise"))
        guided = None if guide is None else stage(guide, "denoise", seed, args)
        runs = {
            "ShapeGF prior": lambda: prior(x).points,
            "ShapeGF denoise": lambda: denoise(x).points,
            **({} if guided is None else {"guide only": lambda: guided(x).points}),
            "jitter": lambda: jitter_upsample(x, OUTPUT_POINTS, args.jitter_fraction, rng),
            f"GMM-{GMM_COMPONENTS}": lambda: gmm_upsample(x, OUTPUT_POINTS, args.threads,
                                                          generator),
            "Poisson": lambda: poisson_upsample(x, OUTPUT_POINTS, rng),
            "input": lambda: x,
        }
        for name, run in runs.items():
            try:
                cloud, ms = timed(run)
            except (RuntimeError, ValueError):  # Poisson: no surface; EM: too few points
                failures[name] = failures.get(name, 0) + 1
                cloud, ms = timed(jitter_upsample, x, OUTPUT_POINTS, args.jitter_fraction, rng)
            record = records.setdefault(name, {"cd": [], "emd": [], "emkd": [], "ms": []})
            for key, value in distances(cloud, truth[row], args.threads).items():
                record[key].append(value)
            record["ms"].append(ms if name != "input" else np.nan)
            if row == 0:
                example[name] = cloud
    return records, example, failures


def summarise(record: dict[str, list]) -> dict:
    means = {f"{key}_mean": float(np.mean(record[key])) for key in ("cd", "emd", "emkd")}
    return {**means, **time_summary(record["ms"]), "per_model": record}


def fmt(value, spec: str) -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def targets(results: dict) -> list[str]:
    """Met / missed lines with their numbers."""
    lines = []
    for kind, methods in results.items():
        if kind == "oracle":
            continue
        ranked = sorted((s["emd_mean"], name) for name, s in methods.items()
                        if np.isfinite(s["emd_mean"]))
        best_emd, best = ranked[0]
        other = next((v, n) for v, n in ranked if (n in SHAPEGF) != (best in SHAPEGF))
        lines.append(f"{kind}: lowest EMD {best} {best_emd:.4f} (best "
                     f"{'other' if best in SHAPEGF else 'ShapeGF'}: {other[1]} {other[0]:.4f}; "
                     f"target: ShapeGF): {'met' if best in SHAPEGF else 'missed'}")
        for name in SHAPEGF:
            ms = methods[name]["ms_median"]
            lines.append(f"{kind}: {name} {INPUT_POINTS} -> {OUTPUT_POINTS} median {ms:.0f} ms "
                         f"(target <= {TIME_TARGET_MS:.0f} ms): "
                         f"{'met' if ms <= TIME_TARGET_MS else 'missed'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path,
                        default=ROOT / "checkpoints" / "shapegf" / "shapegf_sh3d.pt")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--max-models", type=int, default=24,
                        help="models per row, a fixed seeded subset (0 = every model)")
    parser.add_argument("--no-pool", action="store_true", help="only the SH3D test row")
    parser.add_argument("--rows", default="",
                        help="comma-separated parts of row names: only the rows naming one "
                             "(e.g. 'cross-source' for the issue's target rows); '' = every row")
    parser.add_argument("--steps-per-level", type=int, default=None,
                        help="Langevin steps per noise level (default: the checkpoint's config)")
    parser.add_argument("--start-sigma", type=float, default=UpsampleConfig().start_sigma,
                        help="largest noise level of the denoise mode")
    parser.add_argument("--jitter-fraction", type=float, default=0.5,
                        help="jitter standard deviation / mean nearest-neighbour spacing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench" / "results" / "upsampling.json")
    args = parser.parse_args()
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    model, payload = load_model(args.checkpoint, "shapegf")
    args.steps_per_level = args.steps_per_level or model.config.steps_per_level
    sets, _ = load_benchmark_rows(args.data_dir, args.max_models, (OUTPUT_POINTS, OUTPUT_POINTS),
                                  pool=not args.no_pool)
    wanted = [part for part in args.rows.split(",") if part]
    sets = {name: shapes for name, shapes in sets.items()
            if not wanted or any(part in name for part in wanted)}
    if not sets:
        parser.error(f"no row names any of {wanted}")
    limit_threads(args.threads)
    report = {"environment": environment(), "threads": args.threads,
              "checkpoint": str(args.checkpoint), "epoch": payload["metadata"].get("epoch"),
              "checkpoint_metrics": payload["metadata"].get("metrics", {}),
              "steps_per_level": args.steps_per_level, "start_sigma": args.start_sigma,
              "jitter_fraction": args.jitter_fraction,
              "models": {name: shapes.model_ids.tolist() for name, shapes in sets.items()},
              "results": {}, "failures": {}, "targets": []}
    rows, figures = [], []
    for set_name, shapes in sets.items():
        truth, oracle = shapes.surfaces
        inputs = {"sparse": shapes.cut(shapes.stored, INPUT_POINTS, 100),
                  "partial": shapes.cut(shapes.scans[:, 0], INPUT_POINTS, 101)}
        results = report["results"][set_name] = {}
        failed = report["failures"][set_name] = {}
        figure = {}
        for stream, (kind, clouds) in enumerate(inputs.items(), start=102):
            records, example, failed[kind] = evaluate(model, clouds, truth, args, shapes, stream,
                                                      f"{set_name} {kind}")
            results[kind] = {name: summarise(r) for name, r in records.items()}
            figure[kind] = {"input": example.pop("input"), **example, "true surface": truth[0]}
        oracle_record = {"cd": [], "emd": [], "emkd": [], "ms": [np.nan] * len(shapes)}
        for a, b in zip(oracle, truth):
            for key, value in distances(a, b, args.threads).items():
                oracle_record[key].append(value)
        results["oracle"] = {"oracle": summarise(oracle_record)}
        for kind, methods in results.items():
            for name, s in methods.items():
                rows.append([set_name, kind if kind != "oracle" else "-", name,
                             fmt(s["cd_mean"], ".4f"), fmt(s["emd_mean"], ".4f"),
                             fmt(s["emkd_mean"], ".4f"), fmt(s["ms_median"], ".0f"),
                             fmt(s["ms_p95"], ".0f")])
        report["targets"] += [f"{set_name}: {line}" for line in targets(results)]
        suffix = "" if set_name == SH3D_ROW else "_" + set_name.replace(" ", "_").replace("/", "-")
        figures.append(plot_clouds(
            args.json.with_name(f"upsampling_example{suffix}.png"), figure,
            f"{set_name}, {shapes.model_ids[0]}: {INPUT_POINTS} points in, {OUTPUT_POINTS} out"))
    counts = ", ".join(f"{name} {len(shapes)}" for name, shapes in sets.items())
    print(f"\nheld-out models per set: {counts}; {INPUT_POINTS} -> {OUTPUT_POINTS} points; "
          f"batch 1, {args.threads} threads; checkpoint epoch {report['epoch']}, "
          f"{args.steps_per_level} steps per level, denoise from sigma {args.start_sigma}; load "
          f"average {report['environment']['load_average_1_5_15'][0]:.1f}\n")
    print_table(["set", "input", "method", "CD", "EMD", "EM-kD", "ms median", "ms p95"], rows,
                "lllrrrrr")
    print(f"\nfailures, jitter output used instead: {report['failures']}")
    print_targets(report["targets"])
    print("\nwrote " + ", ".join(str(path) for path in figures))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
