"""`gmm-perception demo`: the whole package on an embedded default, in a few minutes on 2 cores.

Writes a simulated scene bag (held-out SH3D models on a floor, ground truth on /tf_static; by
default the `robot` preset: a LiDAR at 10 Hz on a robot driving past 5 objects, one carried in and
one out; `--preset orbit` is the first demo's orbiting LiDAR), plays it into the scene pipeline's
nodes (live mode, simulated time) with the shipped checkpoints, and prints the summary and the
report's path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gmm_perception.evaluation.bag import DEFAULT_PRESET, DEMO_PRESETS

    parser.add_argument("--output", type=Path, default=Path("out/demo"),
                        help="bag, library and report go here (default: out/demo)")
    parser.add_argument("--preset", choices=sorted(DEMO_PRESETS), default=DEFAULT_PRESET,
                        help="; ".join(f"{name}: {p.summary}" for name, p in DEMO_PRESETS.items())
                        + f" (default: {DEFAULT_PRESET})")
    parser.add_argument("--mode", choices=["live", "offline", "both"], default="live")
    parser.add_argument("--rate", type=float, default=None,
                        help="live playback speed relative to the recording (default: the "
                             "preset's: 1 for robot, the sensor's real rate; 0.25 for orbit)")
    parser.add_argument("--frames", type=int, default=None, help="default: the preset's")
    parser.add_argument("--objects", type=int, default=None, help="default: the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def main(args: argparse.Namespace) -> int:
    from gmm_perception.data.mesh_dataset import default_data_dir
    from gmm_perception.data.shape_set import MeshSet
    from gmm_perception.commands import evaluate
    from gmm_perception.evaluation.bag import DEMO_PRESETS, make_demo

    meshes = default_data_dir() / "sh3d" / "sh3d_meshes.npz"
    if not meshes.is_file():
        print(f"demo: no mesh set at {meshes}: build it with `gmm-perception data sh3d` "
              "(`make demo` does)", file=sys.stderr)
        return 2
    preset = DEMO_PRESETS[args.preset]
    rate = preset.playback_rate if args.rate is None else args.rate
    demo = make_demo(args.output, MeshSet.load(meshes), preset=args.preset, frames=args.frames,
                     objects=args.objects, seed=args.seed, progress=True, overwrite=True)

    def described(obj) -> str:
        carried = "" if obj.present is None else \
            f", frames {obj.present[0]}-{obj.present[1] - 1}"
        return f"{obj.name} ({obj.class_name}{carried})"

    print(f"demo bag: {demo.bag.path} (preset {args.preset}: {demo.bag.frames} frames at "
          f"{preset.rate_hz:g} Hz, {demo.sensor}, played at {rate:g}x); objects: "
          + ", ".join(described(obj) for obj in demo.scene.objects))
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    eval_args = parser.parse_args([str(demo.bag.path), "--mode", args.mode, "--rate",
                                   str(rate), "--device", args.device,
                                   "--output", str(args.output / "evaluation")])
    return evaluate.main(eval_args)
