"""Where the package's shared files (config, launch, msg) are: source checkout or installed share."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE = "gmm_perception"
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """The source checkout when running from one (venv, editable), else the ament share dir."""
    if (SOURCE_ROOT / "package.xml").is_file() and (SOURCE_ROOT / "config").is_dir():
        return SOURCE_ROOT
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE))


def config_path(name: str) -> Path:
    """A file under config/, e.g. config_path('preprocess.yaml')."""
    return share_dir() / "config" / name
