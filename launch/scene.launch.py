"""The scene pipeline (segmentation; per object registration against a model library,
classification, PointGMM shape model and ShapeGF upsampling).

    ros2 launch gmm_perception scene.launch.py library_dir:=<dir> [use_sim_time:=true]

The same nodes and parameters as `gmm_perception_runner config/scene_pipeline.yaml` and as
`gmm-perception evaluate --mode live`: this file only points pipeline.launch.py at that YAML.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

SHARE = get_package_share_directory("gmm_perception")
DEFAULT_PIPELINE = os.path.join(SHARE, "config", "scene_pipeline.yaml")


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("library_dir", default_value="",
                              description="directory of reference models (PLY/PCD/OBJ/...)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="run every node on /clock time (bag replay)"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "pipeline.launch.py")),
            launch_arguments={"pipeline": DEFAULT_PIPELINE,
                              "library_dir": LaunchConfiguration("library_dir"),
                              "use_sim_time": LaunchConfiguration("use_sim_time")}.items()),
    ])
