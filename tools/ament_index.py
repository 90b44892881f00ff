#!/usr/bin/env python3
"""Register gmm_perception in the venv's ament index, laid out as a colcon install lays it out.

Run with the venv's Python after `pip install -e .` (tools/setup_env.sh does). Under the venv
prefix it makes

    share/ament_index/resource_index/packages/gmm_perception   (empty marker file)
    share/gmm_perception/{package.xml,launch,config,msg,checkpoints}   (links to the checkout)
    lib/gmm_perception/<script>   (links to bin/<script>, every console script of the package:
                                   launch_ros.actions.Node and `ros2 run` look there, not on PATH)

and a .pth file that adds the venv to AMENT_PREFIX_PATH (appended, only where it is not there
already) for every process the venv's Python starts, so that get_package_share_directory()
and launch_ros find the package with no sourcing. A prefix set before (a sourced workspace or
an explicit AMENT_PREFIX_PATH, as the colcon test sets) keeps its order and wins.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gmm_perception"
SHARED = ("package.xml", "launch", "config", "msg", "checkpoints")
PTH_NAME = "gmm_perception_ament.pth"
# One line: site.py executes .pth lines that start with "import".
PTH_LINE = ("import os, sys; _p = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split("
            "os.pathsep) if p]; sys.prefix in _p or os.environ.__setitem__("
            "'AMENT_PREFIX_PATH', os.pathsep.join(_p + [sys.prefix])); del _p\n")


def link(path: Path, target: Path | str) -> None:
    """Make `path` a symlink to `target`, replacing whatever was there."""
    if path.is_symlink() and os.readlink(path) == str(target):
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        raise SystemExit(f"{path} exists and is not a link: remove it and run set-up again")
    path.symlink_to(target)


def console_scripts() -> list[str]:
    """Every console script the installed distribution declares (setup.py's entry points)."""
    scripts = [ep.name for ep in metadata.distribution(PACKAGE).entry_points
               if ep.group == "console_scripts"]
    if not scripts:
        raise SystemExit(f"{PACKAGE} is not installed in {sys.prefix} (pip install -e . first)")
    return scripts


def register(prefix: Path) -> None:
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True, exist_ok=True)
    marker = index / PACKAGE
    if marker.is_symlink() or (marker.exists() and marker.stat().st_size):
        marker.unlink()
    marker.touch()

    share = prefix / "share" / PACKAGE
    share.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        link(share / name, ROOT / name)

    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    scripts = console_scripts()
    for script in scripts:
        if not (prefix / "bin" / script).is_file():
            raise SystemExit(f"console script {prefix / 'bin' / script} is missing")
        link(lib / script, Path("..") / ".." / "bin" / script)
    for stale in lib.iterdir():
        if stale.is_symlink() and stale.name not in scripts:
            stale.unlink()

    (Path(sysconfig.get_paths()["purelib"]) / PTH_NAME).write_text(PTH_LINE)
    print(f"registered {PACKAGE} in the ament index of {prefix} "
          f"(share/{PACKAGE}, lib/{PACKAGE}: {len(scripts)} executables)")


if __name__ == "__main__":
    if sys.prefix == sys.base_prefix:
        raise SystemExit("run this with the venv's python: it registers into sys.prefix")
    register(Path(sys.prefix))
