"""Fetch Debian packages as .deb files and unpack them, without installing anything.

Dataset builders use this to get third-party data that the Debian archive carries (Sweet Home 3D
furniture, CGAL sample meshes) at set-up time, so that no model file ever enters the repository.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_UNPACKED_MARKER = ".unpacked"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"'{tool}' not found: fetching Debian packages needs a Debian/Ubuntu "
                           f"system with apt and dpkg (or put the .deb into the cache by hand)")
    return path


def cached_deb(package: str, cache_dir: str | Path) -> Path | None:
    """The newest already-downloaded .deb of `package` in `cache_dir`, if any."""
    debs = sorted(Path(cache_dir).glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    return debs[-1] if debs else None


def fetch_deb(package: str, cache_dir: str | Path) -> Path:
    """Path of `package`'s .deb in `cache_dir`, downloaded with `apt-get download` if not there.

    A .deb already in the cache is reused as is (no network, no version check). `apt-get update`
    runs only when the download fails because the package lists are missing or stale.
    """
    cache_dir = Path(cache_dir)
    existing = cached_deb(package, cache_dir)
    if existing is not None:
        return existing
    apt_get = _require("apt-get")
    cache_dir.mkdir(parents=True, exist_ok=True)

    def download() -> subprocess.CompletedProcess:
        return subprocess.run([apt_get, "download", package], cwd=cache_dir,
                              capture_output=True, text=True)

    result = download()
    if result.returncode != 0 and ("Unable to locate package" in result.stderr
                                   or "has no installation candidate" in result.stderr
                                   or "404" in result.stderr):
        update = subprocess.run([apt_get, "update"], capture_output=True, text=True)
        if update.returncode != 0:
            raise RuntimeError(f"apt-get update failed:\n{update.stderr.strip()}")
        result = download()
    if result.returncode != 0:
        raise RuntimeError(f"apt-get download {package} failed:\n{result.stderr.strip()}")
    deb = cached_deb(package, cache_dir)
    if deb is None:
        raise RuntimeError(f"apt-get download {package} succeeded but left no .deb in {cache_dir}")
    return deb


def deb_version(deb: str | Path) -> str:
    """The Version field of a .deb's control file."""
    result = subprocess.run([_require("dpkg-deb"), "--field", str(deb), "Version"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def unpack_deb(deb: str | Path, dest: str | Path) -> Path:
    """Extract the files of `deb` under `dest` (`dpkg -x`); does nothing if already done.

    A marker file naming the .deb is written last, so an interrupted extraction is redone.
    """
    deb, dest = Path(deb), Path(dest)
    marker = dest / _UNPACKED_MARKER
    if marker.is_file():
        if marker.read_text() == deb.name:
            return dest
        shutil.rmtree(dest)  # ours (it has the marker), but from another .deb: no stale files
    dest.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([_require("dpkg"), "-x", str(deb), str(dest)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg -x {deb} failed:\n{result.stderr.strip()}")
    marker.write_text(deb.name)
    return dest
