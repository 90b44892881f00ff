"""Tiny stand-ins for the Debian packages the dataset builders read: OBJ/OFF text, SH3D furniture
libraries in the real .sh3f/.jar layout, and real .deb files made with dpkg-deb."""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

# Unit-cube corners and its 12 triangles (outward), 0-based.
CUBE_CORNERS = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
CUBE_TRIANGLES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                           [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def boxes(*specs: tuple[Sequence[float], Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of axis-aligned boxes given as (minimum corner, size)."""
    vertices, faces = [], []
    for k, (corner, size) in enumerate(specs):
        vertices.append(np.asarray(corner) + CUBE_CORNERS * np.asarray(size))
        faces.append(CUBE_TRIANGLES + 8 * k)
    return np.concatenate(vertices), np.concatenate(faces)


def obj_text(vertices: np.ndarray, faces: np.ndarray, material: bool = True) -> str:
    """OBJ as SH3D libraries write it: mtllib/usemtl (the MTL may be absent), 1-based faces."""
    lines = ["# test model", "mtllib model.mtl", "g part"] if material else ["g part"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += ["usemtl wood"] if material else []
    lines += ["f " + " ".join(str(i + 1) for i in face) for face in faces]
    return "\n".join(lines) + "\n"


def catalog_text(header: dict[str, str], entries: Sequence[dict[str, str]]) -> str:
    """A furniture catalogue .properties: header keys, then `key#N=value` for entry N (1-based)."""
    lines = ["# PluginFurnitureCatalog.properties", "#"]
    lines += [f"{k}={v}" for k, v in header.items()]
    for n, entry in enumerate(entries, start=1):
        lines.append("")
        lines += [f"{k}#{n}={v}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def furniture_entry(key: str, name: str, category: str, model_path: str,
                    rotation: str | None = None, creator: str = "Test") -> dict[str, str]:
    """One catalogue entry with the keys the real libraries use."""
    entry = {"id": f"Test#{key}", "name": name, "tags": "", "creationDate": "2020-01-01",
             "category": category, "icon": f"/{model_path.rsplit('/', 1)[0]}.png",
             "model": f"/{model_path}", "multiPartModel": "true", "width": "50", "depth": "50",
             "height": "90", "movable": "true", "doorOrWindow": "false", "creator": creator}
    if rotation is not None:
        entry["modelRotation"] = rotation
    return entry


def write_archive(path: Path, catalog_member: str, catalog: str, files: dict[str, str]) -> Path:
    """A zip (.sh3f or .jar) holding the catalogue (ISO-8859-1, as Java writes it) and files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(catalog_member, catalog.encode("latin-1"))
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def make_deb(tree: Path, package: str, version: str, out_dir: Path) -> Path:
    """A real .deb of `tree`'s files (dpkg-deb --build), named as apt-get download names it."""
    staging = out_dir / f".{package}-staging"
    shutil.copytree(tree, staging)
    (staging / "DEBIAN").mkdir()
    (staging / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test package\n")
    deb = out_dir / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(staging), str(deb)],
                   check=True, capture_output=True)
    shutil.rmtree(staging)
    return deb
