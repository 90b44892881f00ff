#!/usr/bin/env python3
"""Make ROS 2 `launch` usable in the venv from the upstream sources in ../shared/ros-launch.

Run with the venv's Python; `tools/setup_env.sh` does, when that folder is present
(development and CI; absent on a user's machine, where a ROS install provides launch).

- builds `composition_interfaces` (launch_ros imports its services) with rosidl into the
  venv, exactly as tools/build_interfaces.py builds tf2_msgs;
- puts the pure-Python packages launch, launch_ros, launch_xml and launch_yaml on the venv's
  path with a .pth file naming their folders (they are never copied into the project);
- checks in a fresh interpreter that `launch_ros.actions` imports from those folders.

Their PyPI dependencies (osrf-pycommon, lark) are pinned in requirements.txt.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_interfaces import (BUILD_DIR, VENV, build_and_install,  # noqa: E402
                              patch_wheel_cmake_exports, require_venv)

PYTHON_PACKAGES = ("launch", "launch_ros", "launch_xml", "launch_yaml")
PTH_NAME = "gmm_perception_ros_launch.pth"


def pth_path() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / PTH_NAME


def package_folders(ros_launch: Path) -> list[Path]:
    """The folders to put on sys.path: <ros_launch>/<name>, each holding the package <name>/."""
    folders = [ros_launch / name for name in PYTHON_PACKAGES]
    missing = [str(f / name / "__init__.py") for f, name in zip(folders, PYTHON_PACKAGES)
               if not (f / name / "__init__.py").is_file()]
    if missing:
        raise SystemExit(f"{ros_launch} lacks {', '.join(missing)}")
    return folders


def check_imports(ros_launch: Path) -> None:
    """Import launch and launch_ros in a fresh interpreter, as every later process will."""
    code = ("import launch, launch_ros.actions, launch_xml, launch_yaml, "
            "composition_interfaces.srv; print(launch.__file__); print(launch_ros.__file__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"launch_ros does not import in the venv:\n{result.stderr[-3000:]}")
    for line in result.stdout.split():
        if not Path(line).resolve().is_relative_to(ros_launch.resolve()):
            raise SystemExit(f"launch imports from {line}, not from {ros_launch}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ros_launch", type=Path, help="the folder of upstream sources")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    require_venv()
    ros_launch = args.ros_launch.resolve()
    folders = package_folders(ros_launch)
    patch_wheel_cmake_exports(VENV)  # no-op unless new wheels restored the builder's paths
    build_and_install("composition_interfaces", ros_launch / "composition_interfaces",
                      args.build_dir, args.jobs, module="composition_interfaces.srv")
    pth_path().write_text("".join(f"{folder}\n" for folder in folders))
    print(f"{pth_path().name}: {', '.join(PYTHON_PACKAGES)} from {ros_launch}")
    check_imports(ros_launch)
    print("launch and launch_ros import in the venv")


if __name__ == "__main__":
    main()
