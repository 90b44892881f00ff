"""The shape pool: every usable mesh of the reachable sources, one file, split by shape and source.

Sources (nothing third-party committed; all cached under <data_dir>):
- `sh3d/<library>`: every model of Sweet Home 3D's furniture libraries (Debian
  `sweethome3d-furniture`: Scopia, BlendSwap-CC-0, BlendSwap-CC-BY, KatorLegaz, Reallusion) and of
  `sweethome3d.jar` (`sh3d/sweethome3d`, Debian `sweethome3d`). Category from sh3d.classify()
  where the catalogue name maps to a class, else "uncategorised". y-up OBJ turned z up, x forward
  as sh3d.py does (`up_known` true). Licence: the library catalogue's `license`.
- `pybullet`: the OBJ/STL meshes under `pybullet_data/` of the pybullet 3.2.7 wheel
  (pybullet_data.py): random_urdfs' 1000 objects and ~200 object and robot-link meshes. Up
  axis unknown (stored as in the files). Licence: zlib, or the folder's own licence file.
- `cgal`: CGAL's sample meshes (Debian `libcgal-demo`, cgal.py's tarball). Up axis unknown.
  CC0 per CGAL unless a file says otherwise.
- `procedural`: procedural.py's classes, only when asked for (tests); never in the default pool
  and never counted in reported numbers.

Each shape: surface points (P per shape, from the full-resolution normalised mesh) in a
ShapeSet, the mesh (decimated to MAX_FACES as the other builders do) in a MeshSet, both centred
on the bounding-box centre and scaled into the unit sphere; per-shape metadata arrays
(`shape_meta`): source, library, file (path inside the package; `archive!member` for files in
zips and tarballs), category, licence, up_known ("true"/"false"), geometry_hash.

Skipped, each with its reason: load failures, meshes without faces, zero area, fewer than 4
distinct or non-coplanar vertices, and duplicates (same geometry_hash as an earlier shape in
SOURCE order, i.e. the same normalised surface at another position, scale or vertex order).

Splits (SPLIT_VERSION, written into the pool file once): the CROSS_SOURCES are all "cross"
(never trained on or validated with); every other shape goes to train / val / test by a hash of
(SPLIT_VERSION, split seed, shape id) against SPLIT_FRACTIONS, so a shape's split never depends
on which other shapes exist. A rebuild keeps the splits recorded in the existing pool file and
refuses another split version or seed unless asked to resplit.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import trimesh

from gmm_perception.data import cgal, pybullet_data, sh3d
from gmm_perception.data.debian import cached_deb, deb_version, fetch_deb, unpack_deb
from gmm_perception.data.formats import FormatError, load_mesh
from gmm_perception.data.mesh_dataset import (MAX_FACES, POINTS_FLOAT16_MAX_ERROR,
                                              PreparedMesh, archive_member, default_data_dir,
                                              mesh_config, model_rng, outputs_current,
                                              prepare_in_parallel, prepare_mesh, read_meta,
                                              unique_prepared)
from gmm_perception.data.shape_set import MeshSet, ShapeSet

BUILDER_VERSION = 2  # bump when a change to this module changes the output
# Bump (with --resplit) only to change the split rule. v2: shapes of the SH3D set keep its role
# (its test models are pool test, its training models pool train/val), so the SH3D rows that
# earlier model cards report stay held out from every model trained on the pool.
SPLIT_VERSION = "pool-split-v2"
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
TRAIN_SPLITS = ("train", "val", "test")  # the parts within the training sources
CROSS_SPLIT = "cross"
CROSS_SOURCES = ("cgal", "sh3d/KatorLegaz")
CROSS_WHY = {
    "cgal": "scanned and sculpted surfaces (bunny, armadillo, animals, CAD parts): a different "
            "kind of geometry from the CAD furniture and random objects trained on",
    "sh3d/KatorLegaz": "one whole SH3D library by other authors (90 models, every category): "
                       "same kind of objects, another modelling style, no model seen in training",
}
TEST_ONLY_SOURCES = ("procedural",)  # built only on request, never in reported numbers
UNCATEGORISED = "uncategorised"
SH3D_PACKAGES = sh3d.PACKAGES
CGAL_PACKAGE = cgal.PACKAGE
CGAL_LICENCE = "CC0 (CGAL sample data; files without their own notice)"
CLI_WORKERS = min(2, os.cpu_count() or 1)
SHAPE_META_KEYS = ("source", "library", "file", "category", "licence", "up_known",
                   "geometry_hash")
COPLANAR_TOLERANCE = 1e-9  # smallest / largest singular value of the centred vertices


@dataclass(frozen=True)
class Item:
    """One candidate shape: where its mesh is and what is known about it."""

    shape_id: str  # unique, stable: the split hashes it
    source: str
    library: str
    file: str  # path inside the package
    category: str
    licence: str
    up_known: bool
    rotation: tuple[float, ...]  # row-major 3x3, to z up
    archive: str = ""  # a zip to read `member` from, or "" when `data`/`arrays` hold the mesh
    member: str = ""
    data: bytes | None = None  # file bytes (tarball members), named by `member`'s suffix
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # (vertices, faces) for procedural


_IDENTITY = tuple(np.eye(3).ravel())


# ------------------------------------------------------------------------------- sources

def sh3d_items(roots: Sequence[Path]) -> list[Item]:
    """Every catalogue entry of the SH3D libraries and jar under the unpacked package roots."""
    items = []
    for archive, catalog in sh3d.find_catalogs([Path(r) for r in roots]):
        with zipfile.ZipFile(archive) as zf:
            header = sh3d.parse_properties(zf.read(catalog).decode("latin-1"))
        licence = header.get("license", "see the catalogue") + f" (SH3D {archive.stem})"
        root = next(Path(r) for r in roots if Path(archive).is_relative_to(r))
        inside = Path(archive).relative_to(root).as_posix()
        for entry in sh3d.read_catalog(archive, catalog):
            rotation = np.eye(3) if entry.rotation is None else np.reshape(entry.rotation, (3, 3))
            category, _ = sh3d.classify(entry.name, entry.category)
            items.append(Item(
                f"sh3d/{entry.library}:{entry.model_id}", f"sh3d/{entry.library}", entry.library,
                f"{inside}!{entry.model}", category or UNCATEGORISED, licence, True,
                tuple((sh3d.SH3D_TO_ROS @ rotation).ravel()), str(archive), entry.model))
    return items


def pybullet_items(wheel: Path) -> list[Item]:
    """Every OBJ/STL under pybullet_data/ in the wheel (read from the zip, not installed)."""
    with zipfile.ZipFile(wheel) as zf:
        members = pybullet_data.mesh_members(zf.namelist())
        notes = pybullet_data.licence_notes(zf, members)
    return [Item(f"pybullet:{m}", "pybullet", PurePosixPath(m).parts[1], m, UNCATEGORISED,
                 notes[m], False, _IDENTITY, str(wheel), m) for m in members]


def cgal_items(root: Path) -> list[Item]:
    """Every OFF of data/meshes/ in libcgal-demo's data.tar.gz (read here: tarballs are slow
    to seek, so the bytes travel with the item)."""
    tarball = cgal.find_tarball(root)
    inside = tarball.relative_to(root).as_posix()
    items = []
    with tarfile.open(tarball) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if (member.isfile() and str(PurePosixPath(member.name).parent) == cgal.MESH_DIR
                    and member.name.endswith(".off")):
                items.append(Item(f"cgal:{member.name}", "cgal", "meshes",
                                  f"{inside}!{member.name}", UNCATEGORISED, CGAL_LICENCE, False,
                                  _IDENTITY, member=member.name,
                                  data=tar.extractfile(member).read()))
    return items


def procedural_items(n_per_class: int, seed: int = 0) -> list[Item]:
    """procedural.py's shapes (z up, made here): for tests only."""
    from gmm_perception.data.procedural import procedural_meshes

    meshes = procedural_meshes(n_per_class, seed)
    return [Item(f"procedural:{mid}", "procedural", "procedural", mid,
                 meshes.class_names[int(meshes.labels[i])], "generated (this package)", True,
                 _IDENTITY, arrays=(meshes.vertices[i], meshes.faces[i]))
            for i, mid in enumerate(meshes.model_ids)]


# ---------------------------------------------------------------------------- one shape

def degenerate_reason(mesh: trimesh.Trimesh) -> str | None:
    """Why `mesh` cannot be a shape ('zero area', 'coplanar', ...), or None."""
    faces = np.asarray(mesh.faces)
    if len(faces) == 0:
        return "no faces"
    vertices = np.asarray(mesh.vertices, dtype=np.float64)[np.unique(faces)]
    if not np.isfinite(vertices).all():
        return "non-finite vertices"
    distinct = np.unique(vertices, axis=0)
    if len(distinct) < 4:
        return f"too few vertices: {len(distinct)} distinct"
    centred = distinct - distinct.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False)
    if singular[0] <= 0 or singular[2] <= COPLANAR_TOLERANCE * singular[0]:
        return "coplanar: fewer than 4 non-coplanar vertices"
    triangles = np.asarray(mesh.vertices, dtype=np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0],
                                         triangles[:, 2] - triangles[:, 0]), axis=1).sum()
    scale = float(np.ptp(distinct, axis=0).max())
    if not area > 1e-12 * scale ** 2:
        return "zero area"
    return None


class _Task(NamedTuple):
    item: Item
    points: int
    seed: int
    max_faces: int


def _load(item: Item) -> trimesh.Trimesh:
    if item.arrays is not None:
        return trimesh.Trimesh(item.arrays[0], item.arrays[1], process=False)
    data = item.data
    if data is None:
        data = archive_member(item.archive, item.member)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PurePosixPath(item.member).name
        path.write_bytes(data)
        return load_mesh(path)


def prepare(task: _Task) -> PreparedMesh | str:
    """The prepared shape, or 'reason: detail' why it is skipped."""
    item = task.item
    try:
        mesh = _load(item)
    except FormatError as exc:
        if "has no faces" in str(exc):
            return "no faces"
        return f"load failed: {str(exc).split(': ', 1)[-1]}"[:300]  # not the temporary path
    except Exception as exc:  # any reader failure is a skip reason, not a failed build
        return f"load failed: {type(exc).__name__}: {exc}"[:300]
    reason = degenerate_reason(mesh)
    if reason is not None:
        return reason
    try:
        return prepare_mesh(mesh, np.reshape(item.rotation, (3, 3)), task.points,
                            model_rng(task.seed, item.shape_id), task.max_faces)
    except ValueError as exc:
        return f"degenerate: {exc}"


def _prepare_all(tasks: list[_Task], workers: int, progress: bool) -> Iterator[PreparedMesh | str]:
    # Small chunks keep the two workers balanced.
    return prepare_in_parallel(prepare, tasks, workers, progress, "pool shapes", "shape", 4)


# --------------------------------------------------------------------------------- splits

def assign_split(shape_id: str, source: str, split_seed: int = 0,
                 cross_sources: Sequence[str] = CROSS_SOURCES,
                 sh3d_splits: dict[str, str] | None = None) -> str:
    """'cross' for a cross-source shape; for a model of the SH3D set (`sh3d_splits`: its model
    id -> its split), 'test' when it is an SH3D test model, else train or val; for the others
    train/val/test. Each by a hash of the shape id alone, so no shape moves when others come."""
    if source in cross_sources:
        return CROSS_SPLIT
    digest = hashlib.sha256(f"{SPLIT_VERSION}|{split_seed}|{shape_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    fractions = dict(SPLIT_FRACTIONS)
    sh3d_split = (sh3d_splits or {}).get(shape_id.split(":", 1)[-1]) \
        if source.startswith("sh3d/") else None
    if sh3d_split == "test":
        return "test"
    if sh3d_split is not None:  # an SH3D training model: never in the pool's test split
        fractions.pop("test")
        u *= sum(fractions.values())
    total = 0.0
    for split, fraction in fractions.items():
        total += fraction
        if u < total:
            return split
    return "test"


def sh3d_set_splits(data_dir: Path) -> dict[str, str]:
    """The SH3D set's model id -> split (built first if needed: `gmm-perception data sh3d`)."""
    points_path, _ = sh3d.build_sh3d(data_dir)
    with np.load(points_path, allow_pickle=False) as data:
        return dict(zip(data["model_ids"].tolist(), data["split"].tolist()))


def _recorded_splits(points_path: Path, split_seed: int, resplit: bool) -> dict[str, str]:
    """shape id -> split of an existing pool file (the split is written once)."""
    if not points_path.is_file():
        return {}
    meta = read_meta(points_path) or {}
    recorded = (meta.get("split_version"), meta.get("split_seed"))
    if recorded != (SPLIT_VERSION, split_seed):
        if resplit:
            return {}
        raise ValueError(f"{points_path} holds split {recorded}, not {(SPLIT_VERSION, split_seed)}"
                         ": pass resplit=True (--resplit) to replace it")
    with np.load(points_path, allow_pickle=False) as data:
        return dict(zip(data["model_ids"].tolist(), data["split"].tolist()))


# ---------------------------------------------------------------------------------- build

def output_paths(out_dir: Path, points: int) -> tuple[Path, Path]:
    return out_dir / f"pool_points_{points}.npz", out_dir / "pool_meshes.npz"


def _config(points: int, seed: int, split_seed: int, inputs: dict[str, str], max_faces: int,
            include_procedural: bool) -> dict[str, Any]:
    return {"builder": "pool", "builder_version": BUILDER_VERSION, "points_per_model": points,
            "seed": seed, "split_seed": split_seed, "split_version": SPLIT_VERSION,
            "inputs": dict(sorted(inputs.items())), "max_faces": max_faces,
            "include_procedural": include_procedural}


def build_from_items(items: Sequence[Item], out_dir: str | Path, *, points: int = 2048,
                     seed: int = 0, split_seed: int = 0, inputs: dict[str, str] | None = None,
                     max_faces: int = MAX_FACES, force: bool = False, resplit: bool = False,
                     workers: int = 1, progress: bool = True,
                     extra_meta: dict[str, Any] | None = None,
                     sh3d_splits: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Prepare, deduplicate and split `items` (in their order: the first of equal geometry is
    kept) into `<out_dir>/pool_points_{P}.npz` and `pool_meshes.npz`; returns at once when both
    exist with this config (`inputs`: what the items came from, e.g. package versions)."""
    out_dir = Path(out_dir)
    paths = output_paths(out_dir, points)
    include_procedural = any(i.source in TEST_ONLY_SOURCES for i in items)
    config = _config(points, seed, split_seed, inputs or {}, max_faces, include_procedural)
    if not force and outputs_current(*paths, config):
        return paths
    ids = [i.shape_id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"shape ids repeat: {[k for k, n in Counter(ids).items() if n > 1][:5]}")
    recorded = _recorded_splits(paths[0], split_seed, resplit)
    started = time.monotonic()
    tasks = [_Task(item, points, seed, max_faces) for item in items]
    skipped: dict[str, str] = {}
    kept = [(items[k], result) for k, result in unique_prepared(
        ids, _prepare_all(tasks, workers, progress), skipped, "duplicate: of {}")]
    if not kept:
        raise ValueError(f"none of the {len(items)} shapes could be used")
    splits = [recorded.get(i.shape_id)
              or assign_split(i.shape_id, i.source, split_seed, sh3d_splits=sh3d_splits)
              for i, _ in kept]
    class_names = sorted({i.category for i, _ in kept} - {UNCATEGORISED}) + [UNCATEGORISED]
    sources = sorted({i.source for i, _ in kept})
    counts = {s: dict(Counter(sp for (i, _), sp in zip(kept, splits) if i.source == s))
              for s in sources}
    meta = {
        "source": "pool", "config": config,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "frame": "centred (bounding box), unit sphere; z up where up_known, else as in the file",
        "split_version": SPLIT_VERSION, "split_seed": split_seed,
        "split_fractions": SPLIT_FRACTIONS, "cross_sources": list(CROSS_SOURCES),
        "cross_why": CROSS_WHY, "test_only_sources": list(TEST_ONLY_SOURCES),
        "counts": counts, "items": len(items), "kept": len(kept),
        "skipped_counts": dict(Counter(r.split(":")[0] for r in skipped.values())),
        "skipped": skipped,
        "licences": {s: sorted({i.licence for i, _ in kept if i.source == s}) for s in sources},
        **(extra_meta or {}),
    }
    shape_meta = {
        "source": [i.source for i, _ in kept], "library": [i.library for i, _ in kept],
        "file": [i.file for i, _ in kept], "category": [i.category for i, _ in kept],
        "licence": [i.licence for i, _ in kept],
        "up_known": ["true" if i.up_known else "false" for i, _ in kept],
        "geometry_hash": [p.geometry_hash for _, p in kept],
    }
    prepared = [p for _, p in kept]
    labels = [class_names.index(i.category) for i, _ in kept]
    model_ids = [i.shape_id for i, _ in kept]
    meta |= {"points_dtype": "float16", "points_max_abs_error": POINTS_FLOAT16_MAX_ERROR}
    shape_meta = {k: np.asarray(v, dtype=str) for k, v in shape_meta.items()}
    points_path, meshes_path = paths
    MeshSet([p.vertices for p in prepared], [p.faces for p in prepared], labels, class_names,
            splits, model_ids, {**meta, "config": mesh_config(config)},
            shape_meta).save(meshes_path)
    ShapeSet(np.stack([p.points for p in prepared]), labels, class_names, splits, model_ids,
             meta, shape_meta).save(points_path, half_precision=True)
    return points_path, meshes_path


@dataclass
class Inputs:
    """The unpacked inputs the pool is built from (any may be absent) and their versions."""

    sh3d_roots: list[Path]
    pybullet_wheel: Path | None
    cgal_root: Path | None
    versions: dict[str, str]


def gather_items(inputs: Inputs, procedural_per_class: int = 0) -> list[Item]:
    """All candidate shapes in SOURCE order: SH3D libraries, SH3D jar, pybullet, CGAL(,
    procedural)."""
    items = sh3d_items(inputs.sh3d_roots) if inputs.sh3d_roots else []
    if inputs.pybullet_wheel is not None:
        items += pybullet_items(inputs.pybullet_wheel)
    if inputs.cgal_root is not None:
        items += cgal_items(inputs.cgal_root)
    if procedural_per_class:
        items += procedural_items(procedural_per_class)
    return items


def _cached_versions(data_dir: Path) -> dict[str, str]:
    versions = {p: deb_version(d) for p in (*SH3D_PACKAGES, CGAL_PACKAGE)
                if (d := cached_deb(p, data_dir / "debs")) is not None}
    wheel = pybullet_data.cached_wheel(data_dir / "wheels")
    if wheel is not None:
        versions["pybullet"] = wheel.name
    return versions


def fetch_inputs(data_dir: Path) -> Inputs:
    """Download (once, cached in <data_dir>/debs and /wheels) and unpack the packages."""
    debs = {p: fetch_deb(p, data_dir / "debs") for p in (*SH3D_PACKAGES, CGAL_PACKAGE)}
    roots = {p: unpack_deb(d, data_dir / "pkgs" / d.stem) for p, d in debs.items()}
    wheel = pybullet_data.fetch_wheel(data_dir / "wheels")
    versions = {p: deb_version(d) for p, d in debs.items()} | {"pybullet": wheel.name}
    return Inputs([roots[p] for p in SH3D_PACKAGES], wheel, roots[CGAL_PACKAGE], versions)


def build_pool(data_dir: str | Path | None = None, points: int = 2048, seed: int = 0,
               split_seed: int = 0, force: bool = False, resplit: bool = False,
               workers: int = 1, progress: bool = True) -> tuple[Path, Path]:
    """Fetch the inputs and build `<data_dir>/pool/pool_points_{P}.npz`, `pool_meshes.npz` and
    the data card `README.md`; returns at once, without network, when they are current."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    out_dir = data_dir / "pool"
    paths = output_paths(out_dir, points)
    if not force:
        recorded = (read_meta(paths[0]) or {}).get("config", {}).get("inputs", {})
        config = _config(points, seed, split_seed, {**recorded, **_cached_versions(data_dir)},
                         MAX_FACES, False)
        if outputs_current(*paths, config):
            if not (out_dir / "README.md").is_file():
                write_card(paths[0], out_dir / "README.md")
            return paths
    started = time.monotonic()
    inputs = fetch_inputs(data_dir)
    fetched = round(time.monotonic() - started, 1)
    items = gather_items(inputs)
    paths = build_from_items(items, out_dir, points=points, seed=seed, split_seed=split_seed,
                             inputs=inputs.versions, force=force, resplit=resplit,
                             workers=workers, progress=progress,
                             extra_meta={"fetch_seconds": fetched},
                             sh3d_splits=sh3d_set_splits(data_dir))
    write_card(paths[0], out_dir / "README.md")
    return paths


# ----------------------------------------------------------------------------------- use

def load_pool(data_dir: str | Path | None = None, points: int = 2048,
              meshes: bool = False) -> ShapeSet | MeshSet:
    """The built pool's ShapeSet (or MeshSet); raises FileNotFoundError naming the command."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    points_path, meshes_path = output_paths(data_dir / "pool", points)
    path = meshes_path if meshes else points_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `gmm-perception data pool`")
    return (MeshSet if meshes else ShapeSet).load(path)


def select(shapes, split: str | Sequence[str] | None = None,
           source: str | Sequence[str] | None = None, up_known: bool | None = None,
           include_test_only: bool = False):
    """The shapes of a ShapeSet/MeshSet pool in these splits and sources ('sh3d' matches every
    'sh3d/<library>'). Test-only sources (procedural) only when asked for."""
    mask = np.ones(len(shapes), dtype=bool)
    src = shapes.shape_meta["source"]
    if split is not None:
        mask &= np.isin(shapes.split, [split] if isinstance(split, str) else list(split))
    if source is not None:
        wanted = [source] if isinstance(source, str) else list(source)
        mask &= np.array([any(s == w or s.startswith(w + "/") for w in wanted) for s in src],
                         dtype=bool)
    if not include_test_only:
        mask &= ~np.isin(src, TEST_ONLY_SOURCES)
    if up_known is not None:
        mask &= shapes.shape_meta["up_known"] == ("true" if up_known else "false")
    return shapes.select(mask)


# ------------------------------------------------------------------------ table and card

def count_table(meta: dict[str, Any]) -> str:
    """Shapes per source and split (test-only sources listed apart), skipped per reason."""
    columns = (*TRAIN_SPLITS, CROSS_SPLIT)
    lines = [f"| source | {' | '.join(columns)} | total |", "|---" * (len(columns) + 2) + "|"]
    totals = Counter()
    for source, counts in sorted(meta["counts"].items()):
        row = [counts.get(c, 0) for c in columns]
        name = source + (" (tests only, not counted)" if source in TEST_ONLY_SOURCES else "")
        lines.append(f"| {name} | {' | '.join(map(str, row))} | {sum(row)} |")
        if source not in TEST_ONLY_SOURCES:
            totals.update(dict(zip(columns, row)))
    row = [totals.get(c, 0) for c in columns]
    lines.append(f"| **all** | {' | '.join(map(str, row))} | {sum(row)} |")
    lines += ["", "| skipped | shapes |", "|---|---|"]
    lines += [f"| {r} | {n} |" for r, n in sorted(meta["skipped_counts"].items())]
    lines.append(f"| **all** | {sum(meta['skipped_counts'].values())} |")
    return "\n".join(lines)


def write_card(points_path: Path, card_path: Path) -> Path:
    """The generated data card: sources, counts, licences, splits and why, how to rebuild."""
    meta = read_meta(points_path) or {}
    inputs = meta.get("config", {}).get("inputs", {})
    lines = [
        "# The shape pool (generated by `gmm-perception data pool`; do not edit)", "",
        f"Built {meta.get('built')} in {meta.get('build_seconds')} s "
        f"(+ {meta.get('fetch_seconds', 0)} s fetching/unpacking); split version "
        f"`{meta.get('split_version')}`, split seed {meta.get('split_seed')}.", "",
        "## Counts", "", count_table(meta), "",
        "## Sources and licences", "",
        "Inputs: " + ", ".join(f"`{k}` {v}" for k, v in inputs.items()) + ".", "",
    ]
    for source, licences in sorted(meta.get("licences", {}).items()):
        shown = licences[:6] + ([f"... {len(licences) - 6} more"] if len(licences) > 6 else [])
        lines.append(f"- `{source}`: " + "; ".join(shown))
    lines += [
        "", "Each shape's own licence note is in the pool's `shape_meta['licence']`. Models are "
        "not redistributed: the pool is built from the packages on each machine.", "",
        "## Splits", "",
        "Within the training sources: " + ", ".join(
            f"{k} {v:.0%}" for k, v in meta.get("split_fractions", {}).items())
        + " by a hash of (split version, seed, shape id): a shape's split never depends on the "
          "other shapes, and is written into the pool file once (a rebuild keeps it).", "",
        "Cross-source test (`cross`, never used for training or checkpoint selection):", "",
    ]
    lines += [f"- `{s}`: {why}" for s, why in meta.get("cross_why", {}).items()]
    lines += [
        "", "Frames: centred on the bounding-box centre, scaled into the unit sphere; z up, x "
        "forward for SH3D (`up_known` true); CGAL and pybullet as in their files (`up_known` "
        "false). Duplicates (same geometry after normalisation) keep the first in source order.",
        "", "## Rebuild", "", "```", "make data            # or: .venv/bin/gmm-perception data pool"
        " [--force] [--workers 2]", "```", "",
        "Cached: debs in `data/debs`, the pybullet wheel in `data/wheels`, unpacked trees in "
        "`data/pkgs`; a second run returns in seconds.", "",
    ]
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text("\n".join(lines))
    return card_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="gmm-perception data pool",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--points", type=int, default=2048, help="surface points per shape")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--resplit", action="store_true",
                        help="replace a pool file's recorded split version/seed")
    parser.add_argument("--workers", type=int, default=CLI_WORKERS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    points_path, meshes_path = build_pool(args.data_dir, args.points, args.seed, args.split_seed,
                                          args.force, args.resplit, args.workers)
    meta = read_meta(points_path) or {}
    print(count_table(meta))
    print(f"\nthis run: {time.monotonic() - started:.1f} s; the pool's build: "
          f"{meta.get('build_seconds')} s processing + {meta.get('fetch_seconds', 0)} s "
          f"fetching/unpacking (built {meta.get('built')})")
    for path in (points_path, meshes_path, points_path.parent / "README.md"):
        print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
