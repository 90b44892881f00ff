"""Single scanned and sculpted meshes from CGAL's sample data (Debian `libcgal-demo`).

The package's usr/share/doc/libcgal-dev/data.tar.gz holds data/meshes/*.off: about 140 meshes,
from classic scans (bunny, armadillo, bear, cow, elephant, ...) and CAD parts (fandisk, rotor,
anchor, ...) down to CGAL's test fixtures (a cube, a single triangle). Files without their own
notice are CC0 per CGAL. They are not categories, so the set is one class, "cgal", all in the
"test" split: material for scan simulation, registration and fitting, not for classification.

Every OFF that loads and has surface area is kept (open and non-manifold meshes too; the
project's OFF reader also takes the polygon and coloured files trimesh 5.2 fails on). Meshes are
in the orientation of their files (no upright axis is known: the bunny and the armadillo are y
up, others z up), centred and scaled into the unit sphere. Files that hold the same shape as an
earlier one (e.g. cube-shuffled, a vertex permutation of cube) are dropped; meta["duplicates"]
maps them to the kept name and `cgal_mesh` resolves them.
"""
from __future__ import annotations

import datetime
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import trimesh
from tqdm import tqdm

from gmm_perception.data.debian import cached_deb, deb_version, fetch_deb, unpack_deb
from gmm_perception.data.formats import FormatError, load_mesh
from gmm_perception.data.mesh_dataset import (MAX_FACES, builder_parser, default_data_dir,
                                              model_rng, outputs_current, prepare_mesh,
                                              print_outputs, read_meta, save_outputs)
from gmm_perception.data.shape_set import MeshSet

PACKAGE = "libcgal-demo"
TARBALL_GLOB = "usr/share/doc/*/data.tar.gz"  # libcgal-dev/ in Debian's 5.x packages
MESH_DIR = "data/meshes"
CLASS_NAME = "cgal"
BUILDER_VERSION = 1  # bump when a change to this module changes the output


def find_tarball(root: str | Path) -> Path:
    """The data.tar.gz with data/meshes/ under an unpacked libcgal-demo tree."""
    candidates = sorted(Path(root).glob(TARBALL_GLOB))
    if not candidates:
        raise FileNotFoundError(f"no {TARBALL_GLOB} under {root}")
    return candidates[0]


def output_paths(out_dir: Path, points_per_model: int) -> tuple[Path, Path]:
    return out_dir / f"cgal_points_{points_per_model}.npz", out_dir / "cgal_meshes.npz"


def _config(points_per_model: int, seed: int, packages: dict[str, str], max_faces: int) -> dict:
    return {"builder": "cgal", "builder_version": BUILDER_VERSION,
            "points_per_model": points_per_model, "seed": seed, "packages": dict(packages),
            "max_faces": max_faces}


def build_from_tree(root: str | Path, out_dir: str | Path, points_per_model: int = 2048,
                    seed: int = 0, packages: dict[str, str] | None = None, force: bool = False,
                    max_faces: int = MAX_FACES, progress: bool = True) -> tuple[Path, Path]:
    """Build (points .npz, meshes .npz) from an unpacked libcgal-demo tree; returns at once when
    both exist with the same config. `packages` (name -> version) only goes into config/meta."""
    out_dir = Path(out_dir)
    paths = output_paths(out_dir, points_per_model)
    config = _config(points_per_model, seed, packages or {}, max_faces)
    if not force and outputs_current(*paths, config):
        return paths
    started = time.monotonic()
    tarball = find_tarball(root)
    prepared, names, skipped, duplicates = [], [], {}, {}
    first_of_hash: dict[str, str] = {}
    with tarfile.open(tarball) as tar, tempfile.TemporaryDirectory() as tmp:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and str(PurePosixPath(m.name).parent) == MESH_DIR
                          and m.name.endswith(".off")), key=lambda m: m.name)
        if not members:
            raise FileNotFoundError(f"{tarball}: no {MESH_DIR}/*.off")
        for member in tqdm(members, desc="CGAL meshes", unit="mesh", disable=not progress):
            name = PurePosixPath(member.name).stem
            path = Path(tmp) / PurePosixPath(member.name).name
            path.write_bytes(tar.extractfile(member).read())
            try:
                result = prepare_mesh(load_mesh(path), np.eye(3), points_per_model,
                                      model_rng(seed, name), max_faces)
            except (FormatError, ValueError) as exc:
                skipped[name] = f"broken: {str(exc).replace(str(path), path.name)}"
                continue
            finally:
                path.unlink()
            if result.geometry_hash in first_of_hash:
                duplicates[name] = first_of_hash[result.geometry_hash]
                continue
            first_of_hash[result.geometry_hash] = name
            prepared.append(result)
            names.append(name)
    if not prepared:
        raise ValueError(f"{tarball}: none of the {len(members)} meshes could be used")
    meta = {
        "source": "cgal", "config": config,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "frame": "as in the files (up axis unknown); centred, unit sphere",
        "counts": {"files": len(members), "kept": len(names), "broken": len(skipped),
                   "duplicates": len(duplicates)},
        "skipped": skipped, "duplicates": duplicates,
        "models": {n: {"faces": len(p.faces), "original_faces": p.original_faces,
                       "simplified": p.simplified} for n, p in zip(names, prepared)},
    }
    return save_outputs(*paths, prepared, [0] * len(names), [CLASS_NAME], ["test"] * len(names),
                        names, meta)


def build_cgal(data_dir: str | Path | None = None, points_per_model: int = 2048, seed: int = 0,
               force: bool = False, progress: bool = True) -> tuple[Path, Path]:
    """Fetch and unpack libcgal-demo into `data_dir` (default: $GMM_PERCEPTION_DATA or
    <repo>/data) and build `<data_dir>/cgal/cgal_points_{P}.npz` and `cgal_meshes.npz`.

    Returns without touching the network when the outputs match (P, seed, package version); with
    no .deb in `<data_dir>/debs`, the version the outputs record is accepted.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    deb_dir = data_dir / "debs"
    paths = output_paths(data_dir / "cgal", points_per_model)
    if not force:
        cached = cached_deb(PACKAGE, deb_dir)
        recorded = (read_meta(paths[0]) or {}).get("config", {}).get("packages", {})
        known = {PACKAGE: deb_version(cached)} if cached is not None else {}
        if outputs_current(*paths, _config(points_per_model, seed, {**recorded, **known},
                                          MAX_FACES)):
            return paths
    deb = fetch_deb(PACKAGE, deb_dir)
    root = unpack_deb(deb, data_dir / "pkgs" / deb.stem)
    return build_from_tree(root, data_dir / "cgal", points_per_model, seed,
                           {PACKAGE: deb_version(deb)}, force=force, progress=progress)


def _resolve(name: str, available: Sequence[str], duplicates: dict[str, str]) -> str:
    """Exact name, a dropped duplicate's kept twin, or a unique prefix ('bunny' -> 'bunny00')."""
    if name in available:
        return name
    if name in duplicates:
        return duplicates[name]
    matches = [n for n in available if n.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    hint = f"it prefixes {sorted(matches)}" if matches else f"available: {sorted(available)}"
    raise KeyError(f"no CGAL mesh '{name}' ({hint})")


def cgal_mesh(name: str, data_dir: str | Path | None = None) -> trimesh.Trimesh:
    """One normalised CGAL mesh by file stem, e.g. cgal_mesh('bunny'), building the set if needed.

    Meshes above MAX_FACES triangles come decimated (meta['models'][name]['original_faces']).
    """
    _, meshes_path = build_cgal(data_dir, progress=False)
    meshes = MeshSet.load(meshes_path)
    return meshes.mesh(meshes.index_of(_resolve(name, list(meshes.model_ids),
                                                meshes.meta.get("duplicates", {}))))


def main(argv: list[str] | None = None) -> int:
    args = builder_parser(__doc__.split("\n\n")[0], "mesh").parse_args(argv)
    paths = build_cgal(args.data_dir, args.points, args.seed, args.force)
    meta = read_meta(paths[0]) or {}
    print(f"CGAL: {meta.get('counts')}; broken: {meta.get('skipped')}; "
          f"duplicates: {meta.get('duplicates')}")
    print_outputs(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
