"""Start the nodes of a pipeline YAML (default: the preprocessing pipeline), one process each.

    ros2 launch gmm_perception pipeline.launch.py [pipeline:=<yaml>] [use_sim_time:=true]
                                                  [library_dir:=<dir>]

The same YAML runs in one process with `gmm_perception_runner <yaml>` where `launch` is absent.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from gmm_perception.pipeline_config import load_pipeline

DEFAULT_PIPELINE = os.path.join(
    get_package_share_directory("gmm_perception"), "config", "preprocess_pipeline.yaml")


def _nodes(context):
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    library_dir = LaunchConfiguration("library_dir").perform(context)
    entries = load_pipeline(LaunchConfiguration("pipeline").perform(context))
    return [
        Node(package="gmm_perception", executable=entry.executable, name=entry.name,
             namespace=entry.namespace,
             parameters=[*map(str, entry.parameter_files),
                         {**entry.parameters, "use_sim_time": use_sim_time,
                          **({"library_dir": library_dir}
                             if library_dir and entry.executable == "registration_node" else {})}],
             remappings=list(entry.remappings.items()), output="screen",
             additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": os.environ.get(
                 "FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(
                     get_package_share_directory("gmm_perception"), "config",
                     "fastdds_shm.xml"))})
        for entry in entries
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("pipeline", default_value=DEFAULT_PIPELINE,
                              description="pipeline YAML listing the nodes to start"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="run every node on /clock time"),
        DeclareLaunchArgument("library_dir", default_value="",
                              description="reference models of registration_node's library "
                                          "mode (empty keeps the pipeline's value)"),
        OpaqueFunction(function=_nodes),
    ])
