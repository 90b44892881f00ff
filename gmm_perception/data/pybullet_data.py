"""The meshes of pybullet's `pybullet_data/`, read from its wheel (nothing installed).

`pip download --no-deps pybullet==3.2.7` fetches the manylinux wheel (about 100 MB, a zip);
only members under `pybullet_data/` are read, straight from the zip. `random_urdfs/000..999/`
hold 1000 random objects (one OBJ each); elsewhere about 200 more OBJ/STL meshes: robot links
(kuka, franka, xarm, quadrupeds), a racecar, toys, a table, a tray, a duck, a teddy. Each mesh
file is one shape; none has a category.

Licences: the wheel is zlib (Bullet's LICENSE.txt); a folder with its own LICENSE/license file
(bicycle: CC-BY-SA 3.0, franka_panda: Apache-2.0, laikago, domino: pybullet's with a citation
request) carries that note instead (its first line, and the file's path).
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

PACKAGE = "pybullet"
VERSION = "3.2.7"
DATA_PREFIX = "pybullet_data/"
MESH_SUFFIXES = (".obj", ".stl")
WHEEL_LICENCE = "zlib (pybullet wheel, Bullet examples)"
_LICENCE_NAMES = ("license.txt", "licence.txt", "license", "license.md")


def cached_wheel(cache_dir: str | Path) -> Path | None:
    wheels = sorted(Path(cache_dir).glob(f"{PACKAGE}-{VERSION}-*.whl"))
    return wheels[-1] if wheels else None


def fetch_wheel(cache_dir: str | Path) -> Path:
    """The pybullet wheel in `cache_dir`, downloaded with `pip download --no-deps` if absent."""
    cache_dir = Path(cache_dir)
    existing = cached_wheel(cache_dir)
    if existing is not None:
        return existing
    cache_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                             "--only-binary=:all:", "-d", str(cache_dir),
                             f"{PACKAGE}=={VERSION}"], capture_output=True, text=True)
    wheel = cached_wheel(cache_dir)
    if result.returncode != 0 or wheel is None:
        raise RuntimeError(f"pip download {PACKAGE}=={VERSION} failed:\n"
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return wheel


def mesh_members(names: list[str]) -> list[str]:
    """The OBJ/STL members under pybullet_data/, sorted (random_urdfs included)."""
    return sorted(n for n in names
                  if n.startswith(DATA_PREFIX) and n.lower().endswith(MESH_SUFFIXES))


def licence_notes(zf: zipfile.ZipFile, members: list[str]) -> dict[str, str]:
    """member -> licence note: the nearest enclosing folder's licence file, else the wheel's."""
    files = {str(PurePosixPath(n).parent): n for n in zf.namelist()
             if n.startswith(DATA_PREFIX) and PurePosixPath(n).name.lower() in _LICENCE_NAMES}
    first_lines: dict[str, str] = {}
    notes = {}
    for member in members:
        note = WHEEL_LICENCE
        for folder in PurePosixPath(member).parents:
            licence = files.get(str(folder))
            if licence is not None:
                if licence not in first_lines:
                    text = zf.read(licence).decode("utf-8", "replace").strip()
                    lines = [line.strip() for line in text.splitlines() if line.strip()]
                    first_lines[licence] = " ".join(lines[:2])[:200]
                note = f"{first_lines[licence]} (see {licence})"
                break
        notes[member] = note
    return notes
