"""Scene latency benchmark: one demo bag played live into the scene pipeline at several rates,
every node in one process and each node in its own process, side by side in one run.

    python bench/scene_latency.py [--bag out/demo/bag] [--rates 1,2,4] [--modes single,processes]

The bag defaults to the demo's (`gmm-perception demo` or `make-bag` writes it; its library
beside it). Per rate and runner mode: end-to-end latency (a cloud's send to the pipeline's last
answer for it) p50/p95, registration recall, the share of detections answered by tracking, the
registration stage's time per object (registered / tracked, from the nodes' own reports) and
the frames the nodes dropped. Rates are multiples of the bag's recorded rate.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python bench/<name>.py): import `bench` from here
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench._report import environment, print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _stat(summary: dict | None, key: str) -> float:
    value = (summary or {}).get(key)
    return float("nan") if value is None else float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bag", type=Path, default=ROOT / "out" / "demo" / "bag")
    parser.add_argument("--library", type=Path, default=None,
                        help="default: <bag>/../library")
    parser.add_argument("--pipeline", type=Path,
                        default=ROOT / "config" / "scene_pipeline.yaml")
    parser.add_argument("--rates", default="1,2,4")
    parser.add_argument("--modes", default="single,processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "bench" / "results" / "scene_latency.json")
    args = parser.parse_args()
    if not args.bag.is_dir():
        sys.exit(f"no bag at {args.bag}: `gmm-perception demo` (or make-bag) writes one")

    from gmm_perception.evaluation.bag import read_bag
    from gmm_perception.evaluation.scene_metrics import scene_metrics
    from gmm_perception.pipeline.register import load_library
    from gmm_perception.ros.live_evaluation import run_live

    library_dir = args.library or args.bag.resolve().parent / "library"
    contents = read_bag(args.bag, "/points")
    library = load_library(library_dir)
    results, rows = [], []
    for rate in (float(r) for r in args.rates.split(",")):
        for mode in args.modes.split(","):
            run = run_live(contents, args.pipeline, library_dir, rate=rate, device=args.device,
                           progress=False, processes=mode == "processes")
            metrics, _ = scene_metrics(run, library)
            registration = metrics["registration"]
            latency = metrics["latency_ms"].get("end_to_end", {})
            per_object = registration.get("ms_per_object", {})
            result = {
                "rate": rate, "mode": mode, "frames": metrics["frames"]["total"],
                "statuses": metrics["frames"]["statuses"],
                "dropped_by_nodes": metrics["frames"]["dropped_by_nodes"],
                "latency_ms_p50": _stat(latency, "median"), "latency_ms_p95": _stat(latency, "p95"),
                "registration_recall": registration["recall"],
                "tracked_share": registration.get("tracked_share"),
                "registered_ms_median": _stat(per_object.get("registered"), "median"),
                "tracked_ms_median": _stat(per_object.get("tracked"), "median"),
                "tracked_ms_p95": _stat(per_object.get("tracked"), "p95")}
            results.append(result)
            print(f"rate {rate:g} {mode}: p95 {result['latency_ms_p95']:.0f} ms, recall "
                  f"{result['registration_recall']:.2f}", file=sys.stderr)
            tracked = result["tracked_share"]
            rows.append([f"{rate:g}x", mode, str(result["frames"]),
                         str(result["dropped_by_nodes"]), f"{result['latency_ms_p50']:.0f}",
                         f"{result['latency_ms_p95']:.0f}",
                         f"{result['registration_recall']:.1%}",
                         "n/a" if tracked is None else f"{tracked:.0%}",
                         f"{result['registered_ms_median']:.0f}",
                         f"{result['tracked_ms_median']:.1f}", f"{result['tracked_ms_p95']:.1f}"])
    print(f"\nbag {args.bag} ({len(contents.clouds)} clouds); pipeline {args.pipeline.name}; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print_table(["rate", "runner", "frames", "dropped by nodes", "latency p50 (ms)",
                 "p95 (ms)", "registration recall", "tracked", "registered ms/object",
                 "tracked ms/object", "tracked p95"], rows, "llrrrrrrrrr")
    write_json(args.json, {"environment": environment(), "bag": str(args.bag),
                           "pipeline": str(args.pipeline), "results": results})


if __name__ == "__main__":
    main()
