"""A tiny `ros2 launch`: run one launch file of a package in this process's main thread.

    python ros2_launch.py <package> <launch file> [name:=value ...]

Finds `share/<package>/launch/<launch file>` through the ament index (as `ros2 launch` does),
includes it with the arguments and runs a LaunchService until the launch ends or SIGINT.
LaunchService refuses to run outside the main thread, so tests start this as a child process.
Non-interactive (as `ros2 launch --noninteractive`): on SIGINT, launch itself sends SIGINT to
each process it started, as it does where no terminal sent the Ctrl-C to the process group.
Exits with LaunchService.run()'s code (0 unless launch itself failed).
"""
from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not all(":=" in arg for arg in argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import AnyLaunchDescriptionSource

    package, file_name, *arguments = argv
    # A shell without job control starts background commands with SIGINT ignored, and launch
    # only hears SIGINT through Python's own handler: restore it, as a terminal would have it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    path = os.path.join(get_package_share_directory(package), "launch", file_name)
    launch_arguments = [tuple(arg.split(":=", 1)) for arg in arguments]
    service = LaunchService(argv=arguments, noninteractive=True)
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(path),
                                 launch_arguments=launch_arguments)]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
