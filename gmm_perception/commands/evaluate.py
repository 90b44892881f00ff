"""`gmm-perception evaluate BAG`: replay a bag through the scene pipeline and score it.

Offline mode runs the stages in-process, deterministically; live mode plays the bag into the
nodes as their own process. Both write report.md, metrics.json and PNG plots. A bag that lacks
topics, uses unknown frames or holds malformed clouds gives warnings and a partial report.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from gmm_perception.paths import share_dir

MODES = ("offline", "live", "both")
DEFAULT_PIPELINE = share_dir() / "config" / "scene_pipeline.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("--library", type=Path, default=None,
                        help="reference models, one file per object named like its "
                             "truth/<name> frame (default: <bag>/../library)")
    parser.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE,
                        help="pipeline YAML with segmentation_node and registration_node")
    parser.add_argument("--mode", choices=MODES, default="offline")
    parser.add_argument("--rate", type=float, default=0.25,
                        help="live mode: playback speed relative to the recording; faster than "
                             "the pipeline can follow, frames queue (latency) or drop")
    parser.add_argument("--output", type=Path, default=None,
                        help="report directory (default: <bag>/../evaluation)")
    parser.add_argument("--points-topic", default="/points")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    # Measured with bench/scene_latency.py (the robot demo bag at 1x on 2 cores, 2026-12-07):
    # one process per node answered in p50 80 / p95 184 ms with registration recall 54 %, one
    # process for all in 225 / 327 ms with 33 % (the surface and classification passes no longer
    # hold the registration's interpreter lock, and yield to it by their sessions' nice).
    parser.add_argument("--runner", choices=["processes", "single"], default="processes",
                        help="live mode: each node in its own process (default), or all in one")
    parser.add_argument("--no-progress", action="store_true")


def evaluate(args: argparse.Namespace) -> dict[str, dict]:
    """Run the requested modes; returns mode -> metrics (and writes one report per mode)."""
    from gmm_perception.evaluation.bag import read_bag
    from gmm_perception.evaluation.offline import sensor_path
    from gmm_perception.evaluation.report import write_report
    from gmm_perception.evaluation.scene_metrics import scene_metrics
    from gmm_perception.pipeline.register import load_library

    bag = args.bag
    library_dir = args.library or bag.resolve().parent / "library"
    output = args.output or bag.resolve().parent / "evaluation"
    contents = read_bag(bag, args.points_topic)
    library = load_library(library_dir)
    results, path = {}, None
    for mode in (("offline", "live") if args.mode == "both" else (args.mode,)):
        run = _run(mode, contents, args, library, library_dir)
        if path is None:  # the bag's sensor poses: the same for every mode
            path = sensor_path(contents, run.world_frame)
        run.sensor_path = path
        metrics, rows = scene_metrics(run, library)
        directory = output / mode if args.mode == "both" else output
        paths = write_report(run, metrics, rows, library, directory,
                             title=f"Scene evaluation ({mode}) of {bag.name}")
        metrics["report"] = str(paths.markdown)
        results[mode] = metrics
    return results


def _run(mode: str, contents, args, library: dict, library_dir: Path):
    if mode == "offline":
        from gmm_perception.evaluation.offline import run_offline
        from gmm_perception.evaluation.stages import build_scene

        scene = build_scene(args.pipeline, library, library_dir, args.device)
        return run_offline(contents, scene, library, progress=not args.no_progress)
    from gmm_perception.ros.live_evaluation import run_live

    return run_live(contents, args.pipeline, library_dir, rate=args.rate, device=args.device,
                    progress=not args.no_progress,
                    processes=args.runner == "processes")


def main(args: argparse.Namespace) -> int:
    from gmm_perception.ros.live_evaluation import LiveEvaluationError
    from gmm_perception.evaluation.report import summary_table
    from gmm_perception.pipeline_config import PipelineConfigError

    try:
        results = evaluate(args)
    except (FileNotFoundError, PipelineConfigError, LiveEvaluationError, ValueError) as exc:
        print(f"evaluate: {exc}")
        return 2
    for mode, metrics in results.items():
        print(f"\n{mode} evaluation of {args.bag}")
        print(summary_table(metrics))
        for warning in metrics["warnings"]:
            print(f"  warning: {warning}")
        print(f"report: {metrics['report']}")
    return 0
