"""`gmm-perception demo`: the whole package on an embedded default, in a few minutes on 2 cores.

Writes a simulated scene bag (held-out SH3D models on a floor, an orbiting LiDAR, ground truth
on /tf_static), plays it into the scene pipeline's nodes (live mode, simulated time) with the
shipped checkpoints, and prints the summary and the report's path.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("out/demo"),
                        help="bag, library and report go here (default: out/demo)")
    parser.add_argument("--mode", choices=["live", "offline", "both"], default="live")
    parser.add_argument("--rate", type=float, default=0.25,
                        help="live playback speed relative to the recording (the 5 Hz demo "
                             "scans at 0.25 leave the 2-core pipeline time for each frame)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def main(args: argparse.Namespace) -> int:
    from gmm_perception.data.mesh_dataset import default_data_dir
    from gmm_perception.data.shape_set import MeshSet
    from gmm_perception.commands import evaluate
    from gmm_perception.evaluation.bag import make_demo

    meshes = default_data_dir() / "sh3d" / "sh3d_meshes.npz"
    if not meshes.is_file():
        print(f"demo: no mesh set at {meshes}: build it with `gmm-perception data sh3d` "
              "(`make demo` does)", file=sys.stderr)
        return 2
    demo = make_demo(args.output, MeshSet.load(meshes), frames=args.frames,
                     objects=args.objects, seed=args.seed, progress=True, overwrite=True)
    print(f"demo bag: {demo.bag.path} ({demo.bag.frames} frames, {demo.sensor}); objects: "
          + ", ".join(f"{obj.name} ({obj.class_name})" for obj in demo.scene.objects))
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    eval_args = parser.parse_args([str(demo.bag.path), "--mode", args.mode, "--rate",
                                   str(args.rate), "--device", args.device,
                                   "--output", str(args.output / "evaluation")])
    return evaluate.main(eval_args)
