"""gmm_perception_runner: start a pipeline of our nodes in one process (a component container).

`launch` is not installable from PyPI, so this runner gives venv users what a launch file and a
component container give on a real ROS install, from the same pipeline YAML.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.parameter import Parameter

from gmm_perception.node_registry import NODES
from gmm_perception.pipeline_config import NodeEntry, load_pipeline
from gmm_perception.ros.middleware import use_default_dds_profile
from gmm_perception.ros.node_base import close_nodes, stop_on_first_sigint


def node_class(executable: str):
    module, class_name, _ = NODES[executable]
    return getattr(importlib.import_module(module), class_name)


def create_node(entry: NodeEntry, use_sim_time: bool = False, context=None):
    """Instantiate one pipeline entry as `ros2 run` with the same arguments would."""
    overrides = [Parameter(key, value=value) for key, value in entry.parameters.items()]
    if use_sim_time:
        overrides.append(Parameter("use_sim_time", value=True))
    return node_class(entry.executable)(
        entry.name, namespace=entry.namespace or None, cli_args=entry.ros_arguments(),
        parameter_overrides=overrides, context=context)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else ["gmm_perception_runner", *argv]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="pipeline YAML (see config/*_pipeline.yaml)")
    parser.add_argument("--threads", type=int, default=4, help="executor threads")
    parser.add_argument("--use-sim-time", action="store_true", help="every node on /clock time")
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    entries = load_pipeline(args.pipeline)

    use_default_dds_profile()
    stop_on_first_sigint()
    rclpy.init(args=argv)  # global --ros-args apply to every node
    executor = MultiThreadedExecutor(num_threads=args.threads)
    nodes = []
    try:
        for entry in entries:
            try:
                nodes.append(create_node(entry, args.use_sim_time))
            except Exception as exc:  # one broken node must not take the others down
                print(f"[gmm_perception_runner] could not start {entry.executable} "
                      f"'{entry.name}': {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                continue
            executor.add_node(nodes[-1])
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        close_nodes(nodes)


if __name__ == "__main__":
    main()
