"""The `gmm-perception` command: one entry point for the offline and ROS tools."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from gmm_perception.commands.demo import main

    return main(args)


def _evaluate(args: argparse.Namespace) -> int:
    from gmm_perception.commands.evaluate import main

    return main(args)


def _train(args: argparse.Namespace) -> int:
    from gmm_perception.train.run import main

    return main(args)


def _data(args: argparse.Namespace) -> int:
    if args.source == "scene-objects":  # made by the scene pipeline's segmentation
        from gmm_perception.evaluation.scene_objects import main as scene_objects_main

        return scene_objects_main(args.options)
    from gmm_perception.data.cli import main

    return main([args.source, *args.options])


def _make_bag(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from gmm_perception.data.mesh_dataset import default_data_dir
    from gmm_perception.data.shape_set import MeshSet
    from gmm_perception.evaluation.bag import DEMO_PRESETS, make_demo

    meshes_path = args.meshes or default_data_dir() / "sh3d" / "sh3d_meshes.npz"
    if not Path(meshes_path).is_file():
        print(f"error: no mesh set at {meshes_path}; build it with `gmm-perception data sh3d` "
              "or pass --meshes", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        demo = make_demo(args.output, MeshSet.load(meshes_path), preset=args.preset,
                         storage=args.storage, sensor=args.sensor, frames=args.frames,
                         objects=args.objects, seed=args.seed, rate_hz=args.rate, progress=True,
                         overwrite=args.force)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    bag = demo.bag
    rate = DEMO_PRESETS[args.preset].rate_hz if args.rate is None else args.rate
    print(f"bag:     {bag.path} ({bag.storage}, preset {args.preset}, {bag.frames} frames at "
          f"{rate:g} Hz, {(bag.end_ns - bag.start_ns) / 1e9:.1f} s; messages "
          f"{bag.message_counts})")
    print(f"library: {Path(args.output) / 'library'} ({len(demo.library)} PLY meshes, metres, "
          "object frames)")
    print(f"sensor:  {demo.sensor} in frame '{demo.sensor_frame}'; ground truth on /tf_static "
          "as world -> truth/<object>")
    for obj in demo.scene.objects:
        x, y, z = obj.T_world_object[:3, 3]
        size = np.ptp(np.asarray(obj.mesh.vertices), axis=0)
        carried = "" if obj.present is None else \
            f"  present in frames {obj.present[0]}-{obj.present[1] - 1}"
        print(f"  {obj.name:<14} {obj.class_name:<10} {obj.model_id:<40} xyz ({x:+.2f}, "
              f"{y:+.2f}, {z:+.2f}) m  yaw {obj.yaw_deg:+6.1f} deg  size "
              f"{size[0]:.2f} x {size[1]:.2f} x {size[2]:.2f} m{carried}")
    counts = np.array(bag.points_per_frame)
    if len(counts):
        print(f"points per frame: min {counts.min()}, median {int(np.median(counts))}, "
              f"max {counts.max()}")
    print(f"done in {seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmm-perception", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    from gmm_perception.commands.demo import add_arguments as add_demo_arguments
    from gmm_perception.commands.evaluate import add_arguments as add_evaluate_arguments

    demo = verbs.add_parser("demo", help="write a simulated scene bag, evaluate the scene "
                                         "pipeline on it (live), print the summary")
    add_demo_arguments(demo)
    demo.set_defaults(run=_demo)

    evaluation = verbs.add_parser("evaluate", help="replay a bag through the scene pipeline "
                                                   "(offline or live) and write a report")
    add_evaluate_arguments(evaluation)
    evaluation.set_defaults(run=_evaluate)

    data = verbs.add_parser("data", help="build datasets: sh3d, cgal, pool, pairs, views, "
                            "seating, scene-objects (cached)")
    data.add_argument("source", choices=["sh3d", "cgal", "pool", "pairs", "views", "seating",
                                         "scene-objects"])
    data.add_argument("options", nargs=argparse.REMAINDER, help="options of that builder")
    data.set_defaults(run=_data)

    from gmm_perception.commands.compress import add_compress_arguments, \
        add_decompress_arguments, compress_main, decompress_main

    compressing = verbs.add_parser("compress", help="a dataset or a bag's object clouds as "
                                   "codes (neuralqaad, draco, pointgmm); prints the ratio")
    add_compress_arguments(compressing)
    compressing.set_defaults(run=compress_main)
    decompressing = verbs.add_parser("decompress", help="an archive of `compress` back to clouds")
    add_decompress_arguments(decompressing)
    decompressing.set_defaults(run=decompress_main)

    from gmm_perception.train.run import add_arguments as add_train_arguments

    training = verbs.add_parser("train", help="train a model from a YAML config (resumable)")
    add_train_arguments(training)
    training.set_defaults(run=_train)

    make_bag = verbs.add_parser("make-bag", help="write a demo rosbag2 of simulated scans of "
                                                 "held-out objects, with ground truth on TF")
    make_bag.add_argument("--output", type=Path, default=Path("demo"),
                          help="writes OUTPUT/bag and OUTPUT/library/*.ply (default: ./demo)")
    make_bag.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    make_bag.add_argument("--sensor", choices=["lidar", "depth"], default="lidar",
                          help="Ouster OS1-64 LiDAR or RealSense D435 depth at half resolution")
    from gmm_perception.evaluation.bag import DEFAULT_PRESET, DEMO_PRESETS

    make_bag.add_argument("--preset", choices=sorted(DEMO_PRESETS), default=DEFAULT_PRESET,
                          help="; ".join(f"{name}: {p.summary}"
                                         for name, p in DEMO_PRESETS.items())
                          + f" (default: {DEFAULT_PRESET}; orbit is the first demo's bag)")
    make_bag.add_argument("--frames", type=int, default=None,
                          help="scans along the sensor's path (default: the preset's)")
    make_bag.add_argument("--objects", type=int, default=None,
                          help="objects of distinct classes (default: the preset's)")
    make_bag.add_argument("--seed", type=int, default=0, help="scene, path and noise seed")
    make_bag.add_argument("--rate", type=float, default=None,
                          help="frames per second (default: the preset's)")
    make_bag.add_argument("--meshes", type=Path, default=None,
                          help="MeshSet .npz (default: <data dir>/sh3d/sh3d_meshes.npz)")
    make_bag.add_argument("--force", action="store_true",
                          help="replace an earlier OUTPUT/bag and OUTPUT/library")
    make_bag.set_defaults(run=_make_bag)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
