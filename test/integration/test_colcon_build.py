"""The same sources build with colcon, as in an ordinary ROS 2 workspace, with no edits.

The venv's ROS wheels play the role of the /opt/ros underlay here. Documented command:
    colcon build --base-paths src src/gmm_perception/gmm_perception_msgs
(the interface package sits inside the repository, below the gmm_perception package, and
colcon does not crawl into a package's subfolders on its own).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gmm_perception.node_registry import NODES

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("colcon_ws")
    (workspace / "src").mkdir()
    (workspace / "src" / "gmm_perception").symlink_to(ROOT)
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}
    result = subprocess.run(
        [str(VENV / "bin" / "colcon"), "build", "--merge-install",
         "--base-paths", "src", "src/gmm_perception/gmm_perception_msgs",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workspace / "install"


def test_colcon_builds_both_packages(colcon_install):
    index = colcon_install / "share" / "ament_index" / "resource_index" / "packages"
    assert (index / "gmm_perception").is_file() and (index / "gmm_perception_msgs").is_file()


def test_colcon_installs_executables_launch_config_and_msgs(colcon_install):
    for executable in [*NODES, "gmm_perception_runner"]:
        assert (colcon_install / "lib" / "gmm_perception" / executable).is_file(), executable
    share = colcon_install / "share" / "gmm_perception"
    for name in ["package.xml", "launch/pipeline.launch.py", "config/preprocess.yaml",
                 "config/preprocess_pipeline.yaml", "config/fastdds_shm.xml"]:
        assert (share / name).is_file(), name
    assert {p.name for p in (share / "msg").glob("*.msg")} == \
        {p.name for p in (ROOT / "msg").glob("*.msg")}


def test_colcon_built_interfaces_match_the_venv_build(colcon_install):
    """Same sources, same type hashes: nodes from either build talk to each other."""
    for msg in (ROOT / "msg").glob("*.msg"):
        relative = Path("share") / "gmm_perception_msgs" / "msg" / f"{msg.stem}.json"
        colcon_hashes = json.loads((colcon_install / relative).read_text())["type_hashes"]
        venv_hashes = json.loads((VENV / relative).read_text())["type_hashes"]
        assert colcon_hashes == venv_hashes, msg.stem


def test_colcon_install_finds_its_share_dir_through_the_ament_index(colcon_install):
    site = colcon_install / "lib" / PYTHON_DIR / "site-packages"
    env = {**os.environ, "PYTHONPATH": str(site),
           "AMENT_PREFIX_PATH": f"{colcon_install}{os.pathsep}{VENV}",
           "LD_LIBRARY_PATH": f"{colcon_install / 'lib'}{os.pathsep}"
                              f"{os.environ.get('LD_LIBRARY_PATH', '')}"}
    code = ("import gmm_perception.paths as p, gmm_perception_msgs.msg as m; "
            "print(p.__file__); print(p.share_dir()); print(m.__file__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    module_file, share, msg_module = out.stdout.split()
    assert module_file.startswith(str(site))
    assert Path(share) == colcon_install / "share" / "gmm_perception"
    assert msg_module.startswith(str(site))
