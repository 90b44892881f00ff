"""Readers for single point-cloud and mesh files: reference models for the nodes, dataset meshes.

Own parsers where the common readers fall short: OFF (ModelNet's glued `OFF<nv> <nf> <ne>` first
line, n-gons, numpy speed on large meshes) and PCD (header validation, `binary_compressed` through a
pure-Python LZF decompressor, so no PCL is needed). OBJ, PLY and STL go through trimesh.
Every failure raises FormatError naming the file and the defect.
"""
from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.geometry.points import EmptyCloudError, finite_points, resample

if TYPE_CHECKING:
    import trimesh

MESH_EXTENSIONS = (".off", ".obj", ".ply", ".stl")
POINT_EXTENSIONS = (".pcd", ".npy", ".npz", ".xyz", ".txt")
DEFAULT_MESH_SAMPLES = 2048  # load_cloud's surface samples per mesh when no count is given


class FormatError(ValueError):
    """A file that cannot be read; the message names the file and the defect."""

    def __init__(self, path: str | Path, defect: str):
        super().__init__(f"{path}: {defect}")


def _extension(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in MESH_EXTENSIONS + POINT_EXTENSIONS:
        raise FormatError(path, f"unknown extension '{path.suffix}' (readable: "
                                f"{', '.join(MESH_EXTENSIONS + POINT_EXTENSIONS)})")
    return ext


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if not data or data.isspace():
        raise FormatError(path, "is empty")
    return data


# --------------------------------------------------------------------------------------- OFF

_OFF_HEADER = re.compile(r"(?:ST)?C?N?OFF(.*)")  # OFF, COFF, NOFF, CNOFF, STOFF...


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(V,3) float64 vertices and (F,3) int64 triangles of an OFF file; polygons are fanned.

    Accepts ModelNet's defect where the counts are glued to the keyword (`OFF490 518 0`), comments,
    and per-vertex or per-face colours (ignored).
    """
    path = Path(path)
    text = _read_bytes(path).decode("ascii", errors="replace")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise FormatError(path, "holds only comments")
    match = _OFF_HEADER.fullmatch(lines[0])
    if match is None:
        raise FormatError(path, f"malformed header: first line '{lines[0][:40]}' is not OFF")
    if match.group(1).strip():  # ModelNet's glued `OFF<nv> <nf> <ne>`, or counts on one line
        counts_line, start = match.group(1).strip(), 1
    else:
        counts_line, start = (lines[1] if len(lines) > 1 else ""), 2
    try:
        n_vertices, n_faces = (int(c) for c in counts_line.split()[:2])
    except ValueError:
        raise FormatError(path, f"malformed header: counts line '{counts_line}' needs "
                                "'<vertices> <faces> [<edges>]'") from None
    if n_vertices < 0 or n_faces < 0 or len(lines) < start + n_vertices + n_faces:
        raise FormatError(path, f"truncated: header announces {n_vertices} vertices and "
                                f"{n_faces} faces, the file has {len(lines) - start} data lines")
    vertex_lines = lines[start:start + n_vertices]
    face_lines = lines[start + n_vertices:start + n_vertices + n_faces]
    try:
        tokens = " ".join(vertex_lines).split()
        if len(tokens) == 3 * n_vertices:  # plain x y z rows: one vectorised parse
            vertices = np.array(tokens, dtype=np.float64).reshape(n_vertices, 3)
        else:
            vertices = np.array([line.split()[:3] for line in vertex_lines], dtype=np.float64)
    except ValueError:
        raise FormatError(path, "malformed vertex rows (need at least 3 numbers each)") from None
    if vertices.shape != (n_vertices, 3):
        raise FormatError(path, "malformed vertex rows (need at least 3 numbers each)")
    faces = _off_faces(path, face_lines)
    _check_faces(path, faces, n_vertices)
    return vertices, faces


def _off_faces(path: Path, face_lines: list[str]) -> np.ndarray:
    try:
        tokens = " ".join(face_lines).split()
        if len(tokens) == 4 * len(face_lines):  # plain triangles, the common case: vectorised
            rows = np.array(tokens, dtype=np.int64).reshape(-1, 4)
            if (rows[:, 0] == 3).all():
                return rows[:, 1:]
        polygons = []
        for line in face_lines:
            row = line.split()
            size = int(row[0])
            polygons.append([int(i) for i in row[1:1 + size]])
            if len(polygons[-1]) != size:
                raise ValueError
    except ValueError:
        raise FormatError(path, "malformed face rows (need '<n> <i_1> ... <i_n>')") from None
    return np.array([(p[0], p[j], p[j + 1]) for p in polygons for j in range(1, len(p) - 1)],
                    dtype=np.int64).reshape(-1, 3)  # polygons fanned from their first vertex


def _check_faces(path: Path, faces: np.ndarray, n_vertices: int) -> None:
    if len(faces) and (faces.min() < 0 or faces.max() >= n_vertices):
        raise FormatError(path, f"face index outside the {n_vertices} vertices")


# --------------------------------------------------------------------------------------- PCD

_PCD_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT",
             "POINTS", "DATA")
_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4",
              ("I", 8): "<i8", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


def lzf_decompress(data: bytes, size: int) -> bytes:
    """liblzf's format: control byte < 32 starts a literal run of ctrl+1 bytes; otherwise a
    back-reference of length (ctrl >> 5) + 2 (7 extends with the next byte) at distance
    ((ctrl & 31) << 8 | next byte) + 1. Raises ValueError on corrupt input or a size mismatch."""
    out = bytearray()
    i, n = 0, len(data)
    try:
        while i < n:
            ctrl = data[i]
            i += 1
            if ctrl < 32:
                if i + ctrl + 1 > n:
                    raise ValueError("literal run past the end of the input")
                out += data[i:i + ctrl + 1]
                i += ctrl + 1
                continue
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            start = len(out) - ((ctrl & 31) << 8) - data[i] - 1
            i += 1
            length += 2
            if start < 0:
                raise ValueError("back-reference before the start of the output")
            if start + length <= len(out):
                out += out[start:start + length]
            else:  # overlapping copy: the last `distance` bytes repeat
                period = out[start:]
                out += (period * (length // len(period) + 1))[:length]
    except IndexError:
        raise ValueError("input ends inside a back-reference") from None
    if len(out) != size:
        raise ValueError(f"decompressed to {len(out)} bytes, header says {size}")
    return bytes(out)


class _PcdLayout(NamedTuple):
    dtypes: dict[str, str]  # x, y, z -> numpy dtype
    offsets: dict[str, int]  # x, y, z -> byte offset in a record (binary) / field block start
    columns: dict[str, int]  # x, y, z -> column in an ascii row
    row_values: int  # scalar values per point (sum of COUNT)
    record: int  # bytes per point
    points: int
    kind: str  # ascii | binary | binary_compressed


def read_pcd(path: str | Path) -> np.ndarray:
    """(WIDTH*HEIGHT, 3) float32 x, y, z of a PCD file, NaN rows kept (organised clouds).

    DATA ascii, binary and binary_compressed (per-field blocks, LZF); fields beyond x, y, z are
    skipped. The header is validated before any data is read.
    """
    path = Path(path)
    data = _read_bytes(path)
    header: dict[str, list[str]] = {}
    pos = 0
    while "DATA" not in header:
        end = data.find(b"\n", pos)
        if end < 0:
            raise FormatError(path, "malformed header: no DATA line")
        line = data[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        if key.upper() not in _PCD_KEYS:
            raise FormatError(path, f"malformed header: unknown entry '{key[:20]}'")
        header[key.upper()] = values
    layout = _pcd_layout(path, header)
    body, n = data[pos:], layout.points
    if layout.kind == "ascii":
        tokens = body.decode("ascii", errors="replace").split()
        if len(tokens) != n * layout.row_values:
            raise FormatError(path, f"ascii data holds {len(tokens)} values, the header announces "
                                    f"{n} points of {layout.row_values}")
        try:
            table = np.array(tokens, dtype=np.float64).reshape(n, layout.row_values)
        except ValueError:
            raise FormatError(path, "malformed ascii data (non-numeric value)") from None
        return table[:, [layout.columns[a] for a in "xyz"]].astype(np.float32)
    if layout.kind == "binary":
        if len(body) < n * layout.record:
            raise FormatError(path, f"truncated: binary data has {len(body)} bytes, needs "
                                    f"{n} points x {layout.record}")
        columns = [np.frombuffer(body, count=n, dtype=np.dtype({
            "names": ["v"], "formats": [layout.dtypes[a]], "offsets": [layout.offsets[a]],
            "itemsize": layout.record}))["v"] for a in "xyz"]
        return np.stack(columns, axis=1).astype(np.float32)
    if len(body) < 8:
        raise FormatError(path, "truncated: binary_compressed data lacks its sizes")
    compressed, size = struct.unpack("<II", body[:8])
    if len(body) < 8 + compressed:
        raise FormatError(path, f"truncated: {len(body) - 8} compressed bytes, header says "
                                f"{compressed}")
    if size != n * layout.record:
        raise FormatError(path, f"binary_compressed size {size} does not match {n} points of "
                                f"{layout.record} bytes")
    try:
        raw = lzf_decompress(body[8:8 + compressed], size)
    except ValueError as exc:
        raise FormatError(path, f"corrupt LZF data ({exc})") from None
    # Decompressed, the fields lie one after another, each a block over all points.
    columns = [np.frombuffer(raw, dtype=layout.dtypes[a], count=n, offset=n * layout.offsets[a])
               for a in "xyz"]
    return np.stack(columns, axis=1).astype(np.float32)


def _pcd_layout(path: Path, header: dict[str, list[str]]) -> _PcdLayout:
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH"):
        if key not in header:
            raise FormatError(path, f"malformed header: no {key} line")
    names = header["FIELDS"]
    try:
        sizes = [int(s) for s in header["SIZE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        width = int(header["WIDTH"][0])
        height = int(header.get("HEIGHT", ["1"])[0])
        points = int(header["POINTS"][0]) if "POINTS" in header else width * height
    except (ValueError, IndexError):
        raise FormatError(path, "malformed header: SIZE/COUNT/WIDTH/HEIGHT/POINTS must be "
                                "integers") from None
    types = [t.upper() for t in header["TYPE"]]
    if not len(names) == len(sizes) == len(types) == len(counts):
        raise FormatError(path, "malformed header: FIELDS, SIZE, TYPE and COUNT differ in length")
    if points != width * height or points < 0:
        raise FormatError(path, f"malformed header: POINTS {points} != WIDTH {width} x HEIGHT "
                                f"{height}")
    if points == 0:
        raise FormatError(path, "holds no points")
    kind = header["DATA"][0].lower() if header["DATA"] else ""
    if kind not in ("ascii", "binary", "binary_compressed"):
        raise FormatError(path, f"malformed header: DATA '{kind}' is not ascii, binary or "
                                "binary_compressed")
    dtypes, offsets, columns = {}, {}, {}
    offset = column = 0
    for name, size, type_, count in zip(names, sizes, types, counts):
        if (type_, size) not in _PCD_TYPES or count < 1:
            raise FormatError(path, f"malformed header: field '{name}' has TYPE {type_} SIZE "
                                    f"{size} COUNT {count}")
        if name in ("x", "y", "z"):
            if count != 1:
                raise FormatError(path, f"field '{name}' has COUNT {count}, expected 1")
            dtypes[name], offsets[name], columns[name] = _PCD_TYPES[type_, size], offset, column
        offset += size * count
        column += count
    missing = [a for a in "xyz" if a not in dtypes]
    if missing:
        raise FormatError(path, f"has no '{missing[0]}' field (fields: {' '.join(names)})")
    return _PcdLayout(dtypes, offsets, columns, column, offset, points, kind)


# ------------------------------------------------------------------------- other point formats

def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise FormatError(path, "is empty")


def _npz_array(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        named = [k for k in ("points", "xyz") if k in keys]
        if not named and len(keys) != 1:
            raise FormatError(path, f"holds arrays {keys}; expected one array, or one named "
                                    "'points' or 'xyz'")
        return archive[named[0] if named else keys[0]]


def _read_array_file(path: Path, ext: str) -> np.ndarray:
    """First three columns of an NPY/NPZ array or a whitespace-separated text table."""
    _check_not_empty(path)
    try:
        if ext == ".npy":
            array = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            array = _npz_array(path)
        else:
            with warnings.catch_warnings():  # "input contained no data" is reported below
                warnings.simplefilter("ignore", UserWarning)
                array = np.loadtxt(path, dtype=np.float64, comments="#", ndmin=2)
    except FormatError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(path, f"cannot be parsed ({exc})") from None
    if array.size == 0:
        raise FormatError(path, "holds no points")
    if array.ndim != 2 or array.shape[1] < 3:
        raise FormatError(path, f"holds an array of shape {array.shape}; expected (N, 3) or "
                                "(N, >=3)")
    return np.asarray(array[:, :3], dtype=np.float32)


# ---------------------------------------------------------------------- meshes and dispatcher

def _read_geometry(path: Path, ext: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices and triangles (None when the file holds only points) of a mesh-capable file."""
    if ext == ".off":
        return read_off(path)
    _check_not_empty(path)
    import trimesh  # here, not at the top: it takes seconds to import and PCD/NPY need none
    try:
        options = {"skip_materials": True} if ext == ".obj" else {}  # textures are not needed
        loaded = trimesh.load(str(path), file_type=ext[1:], process=False, **options)
    except Exception as exc:  # trimesh's loaders raise a variety of types on bad input
        raise FormatError(path, f"cannot be parsed as {ext[1:].upper()} ({exc})") from None
    if isinstance(loaded, trimesh.Scene):  # multi-object files: one mesh, or one cloud
        parts = loaded.dump()
        meshes = [g for g in parts if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        clouds = [g for g in parts if isinstance(g, trimesh.PointCloud)]
        if meshes:
            loaded = trimesh.util.concatenate(meshes)
        elif clouds:
            loaded = trimesh.PointCloud(np.concatenate([c.vertices for c in clouds]))
        else:
            raise FormatError(path, "holds no geometry")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    if len(vertices) == 0:
        raise FormatError(path, "holds no vertices")
    faces = np.asarray(loaded.faces, dtype=np.int64) if isinstance(loaded, trimesh.Trimesh) \
        else None
    if faces is not None:
        _check_faces(path, faces, len(vertices))
    return vertices, faces if faces is not None and len(faces) else None


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    """A triangle mesh from OFF, OBJ, PLY or STL, unprocessed (vertex order kept)."""
    path = Path(path)
    ext = _extension(path)
    if ext not in MESH_EXTENSIONS:
        raise FormatError(path, f"'{ext}' holds points, not a mesh")
    vertices, faces = _read_geometry(path, ext)
    if faces is None:
        raise FormatError(path, "has no faces")
    import trimesh

    return trimesh.Trimesh(vertices, faces, process=False)


class _Faces(NamedTuple):
    """What sample_surface reads of a mesh, without building a trimesh.Trimesh."""

    vertices: np.ndarray
    faces: np.ndarray


def _sample(path: Path, vertices: np.ndarray, faces: np.ndarray, count: int,
            rng: np.random.Generator) -> np.ndarray:
    try:
        return sample_surface(_Faces(vertices, faces), count, rng)
    except ValueError as exc:
        raise FormatError(path, str(exc)) from None


def _finite(path: Path, points: np.ndarray) -> np.ndarray:
    try:
        return finite_points(points)
    except EmptyCloudError as exc:
        raise FormatError(path, str(exc)) from None


def load_points(path: str | Path, sample: int | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """(N,3) float32 finite points of any supported file; rows with NaN/inf are dropped.

    Mesh files give their vertices, or `sample` area-weighted surface points when given and the
    file has faces. `rng` defaults to a fixed seed so a reference model loads identically.
    """
    path = Path(path)
    ext = _extension(path)
    if ext == ".pcd":
        return _finite(path, read_pcd(path))
    if ext in POINT_EXTENSIONS:
        return _finite(path, _read_array_file(path, ext))
    vertices, faces = _read_geometry(path, ext)
    if sample is not None and faces is not None:
        return _sample(path, vertices, faces, sample, rng or np.random.default_rng(0))
    return _finite(path, vertices)


def load_cloud(path: str | Path, num_points: int | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """The cloud the nodes use for a reference-model file.

    Meshes (files with faces) give `num_points` (default DEFAULT_MESH_SAMPLES) surface samples;
    point files give their finite points, resampled to exactly `num_points` when given.
    """
    path = Path(path)
    ext = _extension(path)
    rng = rng or np.random.default_rng(0)
    if ext in MESH_EXTENSIONS:
        vertices, faces = _read_geometry(path, ext)
        if faces is not None:
            return _sample(path, vertices, faces, num_points or DEFAULT_MESH_SAMPLES, rng)
        points = _finite(path, vertices)
    else:
        points = load_points(path)
    return points if num_points is None else resample(points, num_points, rng)
