#!/usr/bin/env python3
"""Build our ROS 2 interface packages with rosidl inside a venv of ROS 2 PyPI wheels.

Run with the venv's Python. Builds `gmm_perception_msgs` (sources in the repository's msg/)
and, when the wheels lack it, `tf2_msgs` from its upstream one-line definition, then installs
both into the venv so that they import with no sourcing. In a colcon workspace none of this
is needed: colcon builds gmm_perception_msgs from the same sources and tf2_msgs comes from apt.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
BUILD_DIR = ROOT / "build" / "venv-interfaces"

# Upstream tf2_msgs/msg/TFMessage.msg (ros2/geometry2, kilted), verbatim: its type hash must match.
TF2_MSGS_TFMESSAGE = "geometry_msgs/TransformStamped[] transforms\n"
TF2_MSGS_PACKAGE_XML = """<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.41.0</version>
  <description>tf2_msgs/TFMessage, built by gmm_perception's set-up because the PyPI wheels lack it.</description>
  <maintainer email="gmm-perception@example.org">gmm_perception developers</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""
TF2_MSGS_CMAKELISTS = """cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""

# The wheels' exported cmake files name the wheel builder's Python; generation fails with
# "includes non-existent path" until they name this venv's Python and numpy instead.
_BUILDER_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
_BUILDER_NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")


def patch_wheel_cmake_exports(prefix: Path) -> int:
    """Point the wheels' cmake exports at this interpreter's include dirs; returns files changed."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for cmake_file in prefix.glob("share/*/cmake/*.cmake"):
        text = cmake_file.read_text()
        patched = _BUILDER_NUMPY_INCLUDE.sub(numpy_include, text)
        patched = _BUILDER_PYTHON_INCLUDE.sub(python_include, patched)
        if patched != text:
            cmake_file.write_text(patched)
            changed += 1
    return changed


def is_importable(module: str) -> bool:
    """Import in a fresh interpreter: this process may have stale import caches."""
    return subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True).returncode == 0


def write_tf2_msgs_package(path: Path) -> Path:
    (path / "msg").mkdir(parents=True, exist_ok=True)
    (path / "msg" / "TFMessage.msg").write_text(TF2_MSGS_TFMESSAGE)
    (path / "package.xml").write_text(TF2_MSGS_PACKAGE_XML)
    (path / "CMakeLists.txt").write_text(TF2_MSGS_CMAKELISTS)
    return path


def cmake_build_install(source: Path, build: Path, prefix: Path, jobs: int) -> None:
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    env["CMAKE_PREFIX_PATH"] = str(prefix)
    configure = ["cmake", "-S", str(source), "-B", str(build),
                 f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DCMAKE_PREFIX_PATH={prefix}",
                 f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
                 "-DCMAKE_BUILD_TYPE=Release"]
    for command in (configure,
                    ["cmake", "--build", str(build), "--parallel", str(jobs)],
                    ["cmake", "--install", str(build)]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-6000:] + result.stderr[-6000:])
            raise SystemExit(f"interface build failed: {' '.join(command)}")


def build_and_install(name: str, source: Path, build_root: Path, jobs: int,
                      module: str | None = None, prefix: Path = VENV) -> None:
    """Build one rosidl package (cmake configure, build, install into `prefix`) and check that
    its Python module (`<name>.msg` unless named) imports from a fresh interpreter."""
    print(f"building {name} with rosidl ...", flush=True)
    cmake_build_install(source, build_root / name, prefix, jobs)
    if not is_importable(module or f"{name}.msg"):
        raise SystemExit(f"{name} was built but does not import from {prefix}")
    print(f"installed {name} into {prefix}")


def require_venv() -> None:
    if sys.prefix == sys.base_prefix:
        raise SystemExit("run this with the venv's python: it installs into sys.prefix")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    require_venv()
    patched = patch_wheel_cmake_exports(VENV)
    print(f"patched {patched} cmake export file(s) of the ROS wheels")

    packages = [("gmm_perception_msgs", ROOT / "gmm_perception_msgs")]
    if not is_importable("tf2_msgs.msg"):
        packages.insert(0, ("tf2_msgs", write_tf2_msgs_package(args.build_dir / "src" / "tf2_msgs")))
    for name, source in packages:
        build_and_install(name, source, args.build_dir, args.jobs)


if __name__ == "__main__":
    main()
