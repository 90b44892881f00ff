"""View pool and loader benchmark: cache build time per shape, loader pairs/s, one DeepGMR step.

    python bench/view_loader.py [--shapes 40] [--views 8] [--batch 16] [--points 1024]
                                [--batches 30] [--workers 2] [--json bench/results/view_loader.json]

(a) Builds the view pool (data.views) of --shapes SH3D training shapes (an even spread of the
    set) with --views views each, in a process pool of --workers, into a temporary file: wall time
    per shape, and the ray-casting time per shape summed over the workers; then loads it again
    from the cache (the key matches: no ray casting).
(b) Loader throughput (data.view_loader, one process, one thread: the loader's own cost), per
    setting: registration pairs (view_to_view, scan_to_model, noisy) and (partial, full)
    completion pairs, in batches of --batch at --points points.
(c) One DeepGMR training step (forward, loss, backward, Adam) on a loader batch with the shipped
    checkpoint's model config (models.registry), torch on --workers threads: the pairs/s that
    training consumes, against which (b) is compared.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(REPO_ROOT)

from bench._report import environment, print_table, print_targets, write_json  # noqa: E402
from gmm_perception.data.mesh_dataset import default_data_dir  # noqa: E402
from gmm_perception.data.shape_set import MeshSet, ShapeSet  # noqa: E402
from gmm_perception.data.view_loader import ViewLoader  # noqa: E402
from gmm_perception.data.views import cached_view_pool  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "view_loader.json"
CHECKPOINT = REPO_ROOT / "checkpoints" / "deepgmr" / "deepgmr_sh3d.pt"
SETTINGS = ("view_to_view", "scan_to_model", "noisy")


def bench_build(meshes: MeshSet, ids: list[str], views: int, workers: int) -> tuple[dict, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "views.npz"
        start = time.perf_counter()
        pool = cached_view_pool(path, meshes, ids, views, seed=0, workers=workers,
                                progress=True)
        wall = time.perf_counter() - start
        start = time.perf_counter()
        cached_view_pool(path, meshes, ids, views, seed=0, workers=workers, progress=False)
        cached = time.perf_counter() - start
        size = path.stat().st_size
    per_shape = np.asarray(pool.config["build_seconds"])
    counts = pool.point_count(np.arange(pool.num_views))
    return {"shapes": len(ids), "views_per_shape": views, "workers": workers,
            "wall_s": wall, "wall_s_per_shape": wall / len(ids),
            "scan_s_per_shape_median": float(np.median(per_shape)),
            "scan_s_per_shape_max": float(per_shape.max()),
            "cached_load_s": cached, "file_mib": size / 2**20,
            "points_per_view_min": int(counts.min()), "points_per_view_median":
            float(np.median(counts)), "points_per_view_max": int(counts.max()),
            "lidar_views": int((pool.sensor_kind == 1).sum()), "views": pool.num_views,
            "diameter_m_min": float(2 * pool.scale.min()),
            "diameter_m_max": float(2 * pool.scale.max())}, pool


def bench_loader(loader: ViewLoader, batch: int, batches: int, points: int) -> list[dict]:
    rows = []
    for setting in SETTINGS + ("completion",):
        def one():
            if setting == "completion":
                loader.completion_pairs(batch, points, 2048)
            else:
                loader.registration_pairs(batch, setting)
        one()  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            one()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append({"setting": setting, "batch": batch, "points": points,
                     "batch_ms": 1e3 * wall / batches, "pairs_per_s": batch * batches / wall,
                     "cpu_per_wall": cpu / wall})
    return rows


def bench_deepgmr(loader: ViewLoader, batch: int, threads: int, steps: int) -> dict:
    import torch

    from gmm_perception.models.checkpoint import load_checkpoint
    from gmm_perception.models.deepgmr import deepgmr_loss
    from gmm_perception.models.registry import build_model

    torch.set_num_threads(threads)
    payload = load_checkpoint(CHECKPOINT, expected_model="deepgmr", map_location="cpu")
    model = build_model(payload["model"], payload["config"]["model"])
    model.load_state_dict(payload["state_dict"])
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 1):
        pairs = loader.registration_pairs(batch, "view_to_view")
        source, target, T_gt = (torch.as_tensor(a, dtype=torch.float32)
                                for a in (pairs.source, pairs.target, pairs.T_gt))
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss = deepgmr_loss(model(source, target), T_gt)
        loss.backward()
        optimiser.step()
        if step:  # the first step warms up
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {"batch": batch, "points": loader.num_points, "threads": threads, "steps": steps,
            "step_s_median": step_s, "pairs_per_s_consumed": batch / step_s,
            "model_config": payload["config"]["model"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=40)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)

    sh3d = default_data_dir() / "sh3d"
    if not (sh3d / "sh3d_meshes.npz").is_file():
        print("SH3D data missing: run `gmm-perception data sh3d` first", file=sys.stderr)
        return 1
    meshes = MeshSet.load(sh3d / "sh3d_meshes.npz")
    shapes = ShapeSet.load(sh3d / "sh3d_points_2048.npz")
    train = np.flatnonzero(meshes.split == "train")
    pick = train[np.linspace(0, len(train) - 1, min(args.shapes, len(train))).astype(int)]
    ids = [str(meshes.model_ids[k]) for k in pick]

    build, pool = bench_build(meshes, ids, args.views, args.workers)
    print(f"\n(a) view cache: {build['shapes']} shapes x {build['views_per_shape']} views, "
          f"{build['workers']} workers")
    print_table(["quantity", "value"], [
        ["build wall time per shape", f"{build['wall_s_per_shape']:.2f} s"],
        ["ray casting per shape (one worker), median / max",
         f"{build['scan_s_per_shape_median']:.2f} / {build['scan_s_per_shape_max']:.2f} s"],
        ["build wall time, all", f"{build['wall_s']:.1f} s"],
        ["load from cache", f"{build['cached_load_s']:.2f} s"],
        ["cache file", f"{build['file_mib']:.1f} MiB"],
        ["points per view min / median / max", f"{build['points_per_view_min']} / "
         f"{build['points_per_view_median']:.0f} / {build['points_per_view_max']}"],
        ["LiDAR views", f"{build['lidar_views']} / {build['views']}"],
        ["diameters", f"{build['diameter_m_min']:.2f} - {build['diameter_m_max']:.2f} m"],
    ], "lr")

    loader = ViewLoader(pool, shapes, split="train", seed=0, num_points=args.points)
    loader_rows = bench_loader(loader, args.batch, args.batches, args.points)
    deepgmr = bench_deepgmr(loader, args.batch, args.workers, args.steps)
    consumed = deepgmr["pairs_per_s_consumed"]
    print(f"\n(b, c) loader (1 process) vs one DeepGMR training step ({args.workers} threads), "
          f"batch {args.batch}, {args.points} points")
    print_table(["setting", "batch ms", "pairs/s", "x DeepGMR's consumption",
                 "data share of a step"],
                [[r["setting"], f"{r['batch_ms']:.1f}", f"{r['pairs_per_s']:.0f}",
                  f"{r['pairs_per_s'] / consumed:.0f}x",
                  f"{100 * r['batch_ms'] / (r['batch_ms'] + 1e3 * deepgmr['step_s_median']):.1f}%"]
                 for r in loader_rows]
                + [["DeepGMR step (forward+backward+Adam)", f"{1e3 * deepgmr['step_s_median']:.0f}",
                    f"{consumed:.1f} consumed", "", ""]], "lrrrr")
    slowest = min(r["pairs_per_s"] for r in loader_rows)
    verdict = "met" if slowest > 10 * consumed else "missed"
    print_targets([f"loader >= 10x DeepGMR's consumption: {verdict} (slowest setting "
                   f"{slowest:.0f} pairs/s vs {consumed:.1f} consumed)"])
    write_json(args.json, {"environment": environment(), "args": {k: str(v) for k, v in
                                                                  vars(args).items()},
                           "build": build, "loader": loader_rows, "deepgmr_step": deepgmr})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
