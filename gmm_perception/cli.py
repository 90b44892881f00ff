"""The `gmm-perception` command: one entry point for the offline and ROS tools."""
from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from gmm_perception.ros.demo import run_demo

    return run_demo(seconds=args.seconds, rate_hz=args.rate, points=args.points)


def _train(args: argparse.Namespace) -> int:
    from gmm_perception.train.run import main

    return main(args)


def _data(args: argparse.Namespace) -> int:
    from gmm_perception.data.cli import main

    return main([args.source, *args.options])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmm-perception", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    demo = verbs.add_parser("demo", help="run the pipeline on a simulated sensor stream and "
                                         "print a summary")
    demo.add_argument("--seconds", type=float, default=5.0, help="length of the stream")
    demo.add_argument("--rate", type=float, default=10.0, help="clouds per second")
    demo.add_argument("--points", type=int, default=200_000, help="points per cloud")
    demo.set_defaults(run=_demo)

    data = verbs.add_parser("data", help="build datasets: sh3d, cgal, pairs (cached)")
    data.add_argument("source", choices=["sh3d", "cgal", "pairs"])
    data.add_argument("options", nargs=argparse.REMAINDER, help="options of that builder")
    data.set_defaults(run=_data)

    from gmm_perception.train.run import add_arguments as add_train_arguments

    training = verbs.add_parser("train", help="train a model from a YAML config (resumable)")
    add_train_arguments(training)
    training.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
