"""Steps shared by the builders that turn a package of meshes into a cached ShapeSet + MeshSet.

Each model becomes (a) P surface points sampled from the full-resolution normalised mesh and
(b) the same mesh, decimated to at most `max_faces` triangles, for ray-cast scans. Both live in
one frame (z up, bounding-box centre at the origin, farthest vertex on the unit sphere). The
decimated mesh keeps that frame rather than being re-normalised, so its points and the sampled
points line up; decimation may pull its extremes slightly inside the unit sphere.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import trimesh

from gmm_perception.data.mesh_ops import normalize_mesh, sample_surface
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.paths import SOURCE_ROOT

DATA_ENV = "GMM_PERCEPTION_DATA"
MAX_FACES = 20_000
HASH_GRID = 1e-5  # vertex positions are compared on this grid (unit-sphere shapes)
SIMPLIFY_CHECK_POINTS = 2048
# float16 on unit shapes: spacing 2**-10 just below 1, so at most 4.9e-4 error per coordinate.
POINTS_FLOAT16_MAX_ERROR = 2.0 ** -11


def default_data_dir() -> Path:
    """$GMM_PERCEPTION_DATA, else `<repo>/data` (gitignored)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else SOURCE_ROOT / "data"


def builder_parser(description: str, item: str) -> argparse.ArgumentParser:
    """The options every dataset builder's command line shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="where debs, unpacked packages and outputs go "
                             "(default: $GMM_PERCEPTION_DATA or <repo>/data)")
    parser.add_argument("--points", type=int, default=2048, help=f"surface points per {item}")
    parser.add_argument("--seed", type=int, default=0, help="sampling (and split) seed")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    return parser


def print_outputs(paths: Sequence[Path]) -> None:
    for path in paths:
        print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")


def model_rng(seed: int, model_id: str) -> np.random.Generator:
    """Per-model stream: a model's points do not depend on which other models were built."""
    return np.random.default_rng([seed, zlib.crc32(model_id.encode())])


@dataclass
class PreparedMesh:
    """One model ready for the two files: its sampled points and its (decimated) mesh."""

    points: np.ndarray  # (P, 3) float32, from the full-resolution mesh
    vertices: np.ndarray  # (V, 3) float32, decimated mesh
    faces: np.ndarray  # (F, 3) int32
    original_faces: int
    geometry_hash: str  # see geometry_hash()
    simplified: dict[str, Any] | None  # simplify()'s report, None if the mesh was kept as is


def geometry_hash(mesh: trimesh.Trimesh) -> str:
    """SHA-256 of a mesh's surface: its distinct vertex positions (on a HASH_GRID grid) and its
    triangles as sets of those positions. Independent of vertex, face and corner order and of
    duplicated vertices; different for a different tessellation or pose.

    Not trimesh's identifier_hash: its few rounded invariants (area, Euler number, hull ratios)
    collide on small meshes (CGAL's 'prim' and 'cube_poly' both hash as a cube).
    """
    grid = np.round(np.asarray(mesh.vertices) / HASH_GRID).astype(np.int64)
    positions, rank = np.unique(grid, axis=0, return_inverse=True)
    triangles = np.sort(rank.reshape(-1)[np.asarray(mesh.faces)], axis=1)
    triangles = triangles[np.lexsort(triangles.T[::-1])]
    return hashlib.sha256(positions.tobytes() + triangles.astype(np.int64).tobytes()).hexdigest()


def _surface_distances(o3d_mesh, points: np.ndarray) -> np.ndarray:
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o3d_mesh))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def simplify(mesh: trimesh.Trimesh,
             max_faces: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """(vertices, faces, report) of a unit-sphere `mesh` cut to at most max_faces triangles.

    Two candidates: Open3D's quadric decimation, and vertex clustering on a grid coarsened from
    1/200 of the radius until it fits. The one whose surface is closer to SIMPLIFY_CHECK_POINTS
    points of the original (99th percentile distance) wins. Quadric decimation is usually ~10x
    closer, but on SH3D models with many loose parts it can leave 6x too many faces (a lily of
    123k separate pieces) or move whole parts by up to 0.7 (a bed, a planter, shelves), where
    clustering stays within ~0.03. The report (None when the mesh was small enough) names the
    method and its 99th-percentile distance.
    """
    if len(mesh.faces) <= max_faces:
        return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32), None
    import open3d as o3d  # heavy import, only for the large meshes

    source = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices),
                                       o3d.utility.Vector3iVector(mesh.faces))
    candidates = []
    quadric = source.simplify_quadric_decimation(target_number_of_triangles=max_faces)
    quadric.remove_degenerate_triangles()
    if len(quadric.triangles) <= max_faces:
        candidates.append(("quadric", quadric))
    voxel = 0.005
    while True:
        clustered = source.simplify_vertex_clustering(voxel_size=voxel)
        clustered.remove_degenerate_triangles()
        if len(clustered.triangles) <= max_faces:
            break
        voxel *= 1.25
    candidates.append(("clustering", clustered))
    # A fixed sample, not the model's points: the mesh file must not depend on the point count.
    check = sample_surface(mesh, SIMPLIFY_CHECK_POINTS, np.random.default_rng(0))
    errors = [float(np.percentile(_surface_distances(c, check), 99)) for _, c in candidates]
    best = int(np.argmin(errors))
    method, small = candidates[best]
    small.remove_unreferenced_vertices()
    report = {"method": method, "p99_distance": round(errors[best], 5)}
    return (np.asarray(small.vertices, np.float32), np.asarray(small.triangles, np.int32),
            report)


def prepare_mesh(mesh: trimesh.Trimesh, rotation: np.ndarray, points_per_model: int,
                 rng: np.random.Generator, max_faces: int = MAX_FACES) -> PreparedMesh:
    """Rotate by `rotation` (3x3, to this package's z-up frame), normalise, sample, decimate.

    Raises ValueError naming the defect for meshes that cannot give a shape (no faces, non-finite
    or coincident vertices, zero area).
    """
    if len(mesh.faces) == 0:
        raise ValueError("no faces")
    original_faces = len(mesh.faces)
    mesh = mesh.copy()
    mesh.remove_unreferenced_vertices()  # stray vertices would shift the centre and the scale
    transform = np.eye(4)
    transform[:3, :3] = rotation
    mesh.apply_transform(transform)
    mesh = normalize_mesh(mesh, up_axis="z")
    # Split at OBJ texture/normal seams otherwise: a larger file and a worse decimation.
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    points = sample_surface(mesh, points_per_model, rng)
    vertices, faces, report = simplify(mesh, max_faces)
    return PreparedMesh(points, vertices, faces, original_faces, geometry_hash(mesh), report)


def stratified_split(classes: Sequence[str], model_ids: Sequence[str], test_fraction: float,
                     seed: int) -> np.ndarray:
    """'train'/'test' per model: round(test_fraction * n) of each class's n models go to test
    (at least one when n >= 2). Depends only on the seed, the class name and its model ids, so
    adding or dropping other classes or models of other classes leaves a class's split alone."""
    classes = np.asarray(classes, dtype=str)
    ids = np.asarray(model_ids, dtype=str)
    split = np.full(len(ids), "train", dtype="<U5")
    for name in np.unique(classes):
        members = np.flatnonzero(classes == name)
        members = members[np.argsort(ids[members], kind="stable")]
        n = len(members)
        n_test = min(max(round(test_fraction * n), 1), n - 1) if n >= 2 else 0
        rng = np.random.default_rng([seed, zlib.crc32(str(name).encode())])
        split[members[rng.permutation(n)[:n_test]]] = "test"
    return split


def read_meta(path: Path) -> dict[str, Any] | None:
    """The meta dict of a saved ShapeSet/MeshSet (reads only that entry), None if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    except (OSError, KeyError, ValueError):
        return None


def mesh_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a build config the mesh file depends on: all but the point count, so that
    building another point count does not make the shared mesh file look stale."""
    return {k: v for k, v in config.items() if k != "points_per_model"}


def outputs_current(points_path: Path, meshes_path: Path, config: dict[str, Any]) -> bool:
    """True when both files exist and were built with this config."""
    for path, expected in ((points_path, config), (meshes_path, mesh_config(config))):
        meta = read_meta(path) if path.is_file() else None
        if meta is None or meta.get("config") != expected:
            return False
    return True


def save_outputs(points_path: Path, meshes_path: Path, prepared: Sequence[PreparedMesh],
                 labels: Sequence[int], class_names: list[str], split: Sequence[str],
                 model_ids: Sequence[str], meta: dict[str, Any]) -> tuple[Path, Path]:
    """The ShapeSet (points stored as float16) and the MeshSet; one meta (with its "config")
    for both, less the point count in the MeshSet's."""
    meta = {**meta, "points_dtype": "float16",
            "points_max_abs_error": POINTS_FLOAT16_MAX_ERROR}
    shapes = ShapeSet(np.stack([p.points for p in prepared]), labels, class_names, split,
                      model_ids, meta)
    meshes = MeshSet([p.vertices for p in prepared], [p.faces for p in prepared], labels,
                     class_names, split, model_ids, {**meta, "config": mesh_config(meta["config"])})
    meshes.save(meshes_path)
    shapes.save(points_path, half_precision=True)
    return points_path, meshes_path


def unique_prepared(ids: Sequence[str], results: Iterable[PreparedMesh | str],
                    skipped: dict[str, str], duplicate: str = "duplicate of {}"
                    ) -> list[tuple[int, PreparedMesh]]:
    """(index, mesh) of every prepared mesh that is the first of its geometry, in order; the
    reason of each other one (broken: the string `results` holds; a duplicate: `duplicate`
    formatted with the first one's id) goes into `skipped` under its id."""
    kept, first_of_hash = [], {}
    for index, (shape_id, result) in enumerate(zip(ids, results)):
        if isinstance(result, str):
            skipped[shape_id] = result
        elif result.geometry_hash in first_of_hash:
            skipped[shape_id] = duplicate.format(first_of_hash[result.geometry_hash])
        else:
            first_of_hash[result.geometry_hash] = shape_id
            kept.append((index, result))
    return kept


# Per process: reopening a package's 60-100 MB zip for every model costs more than the model.
_open_archives: dict[str, Any] = {}  # archive path -> zipfile.ZipFile


def archive_member(archive: str | Path, member: str) -> bytes:
    """The bytes of `member` in the zip `archive`, kept open for the process's next reads
    (KeyError when the member is absent)."""
    import zipfile

    key = str(archive)
    if key not in _open_archives:
        _open_archives[key] = zipfile.ZipFile(archive)
    return _open_archives[key].read(member)


def close_archives() -> None:
    for archive in _open_archives.values():
        archive.close()
    _open_archives.clear()


def prepare_in_parallel(prepare: Callable[[Any], Any], tasks: Sequence[Any], workers: int,
                        progress: bool, desc: str, unit: str, chunksize: int) -> Iterator[Any]:
    """`prepare` over `tasks` in order, in `workers` processes (one: in this one, closing the
    archives it opened afterwards), with a tqdm bar. Spawned, not forked: the parent may hold
    OpenMP/Open3D threads that a fork would deadlock on."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    bar = dict(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    if workers <= 1:
        try:
            yield from tqdm(map(prepare, tasks), **bar)
        finally:
            close_archives()
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from tqdm(pool.map(prepare, tasks, chunksize=chunksize), **bar)
