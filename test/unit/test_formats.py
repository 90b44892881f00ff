"""Single-file readers: OFF (with ModelNet's glued header), OBJ, PLY ascii and binary, PCD ascii,
binary and binary_compressed (LZF) against files written here byte by byte, NPY/NPZ, XYZ/TXT,
the load_cloud dispatcher, and errors that name the file and the defect."""

import struct

import numpy as np
import pytest

from gmm_perception.data.formats import (
    DEFAULT_MESH_SAMPLES,
    FormatError,
    load_cloud,
    load_mesh,
    load_points,
    lzf_decompress,
    read_off,
    read_pcd,
)

# A unit cube centred on the origin: 8 corners, 6 quads (outward winding).
CUBE_VERTICES = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
CUBE_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
CLOUD = np.array([[0.0, 1.0, 2.0], [3.5, -4.25, 5.0], [-1.0, 0.5, 0.125]], dtype=np.float32)


def off_text(header: str) -> str:
    vertices = "\n".join(" ".join(f"{c:g}" for c in v) for v in CUBE_VERTICES)
    faces = "\n".join(f"4 {' '.join(map(str, q))}" for q in CUBE_QUADS)
    return f"{header}\n# a comment line\n{vertices}\n{faces}\n"


def fanned_quads() -> np.ndarray:
    return np.array([t for a, b, c, d in CUBE_QUADS for t in ((a, b, c), (a, c, d))])


def lzf_literals(data: bytes) -> bytes:
    """The simplest valid LZF stream: literal runs of at most 32 bytes."""
    out = bytearray()
    for i in range(0, len(data), 32):
        out += bytes([len(data[i:i + 32]) - 1]) + data[i:i + 32]
    return bytes(out)


def pcd_header(fields: str, size: str, type_: str, count: str, points: int, data: str) -> bytes:
    return (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {fields}\n"
            f"SIZE {size}\nTYPE {type_}\nCOUNT {count}\nWIDTH {points}\nHEIGHT 1\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}\n").encode()


def on_cube_surface(points: np.ndarray) -> bool:
    return bool(np.allclose(np.abs(points).max(axis=1), 0.5, atol=1e-6))


# ------------------------------------------------------------------------------------- OFF

def test_off_quads_are_fanned_into_triangles(tmp_path):
    path = tmp_path / "cube.off"
    path.write_text(off_text("OFF\n8 6 12"))
    vertices, faces = read_off(path)
    np.testing.assert_array_equal(vertices, CUBE_VERTICES)
    np.testing.assert_array_equal(faces, fanned_quads())
    mesh = load_mesh(path)
    assert mesh.is_watertight and mesh.volume == pytest.approx(1.0)


def test_off_modelnet_glued_header_reads_like_the_normal_one(tmp_path):
    normal, glued = tmp_path / "normal.off", tmp_path / "glued.off"
    normal.write_text(off_text("OFF\n8 6 0"))
    glued.write_text(off_text("OFF8 6 0"))
    for a, b in zip(read_off(normal), read_off(glued)):
        np.testing.assert_array_equal(a, b)


def test_off_colours_are_ignored_and_triangles_kept(tmp_path):
    path = tmp_path / "tri.off"
    path.write_text("COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n0 1 0 0 0 255 255\n"
                    "3 0 1 2 0.5 0.5 0.5\n")
    vertices, faces = read_off(path)
    np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(faces, [[0, 1, 2]])


@pytest.mark.parametrize("text, defect", [
    ("PLY\n3 1 0\n", "is not OFF"),
    ("OFF\nthree one\n", "malformed header"),
    ("OFF\n8 6 0\n0 0 0\n", "truncated"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "face index"),
    ("OFF\n3 1 0\n0 0\n1 0\n0 1\n3 0 1 2\n", "vertex rows"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", "face rows"),
])
def test_off_defects_are_named(tmp_path, text, defect):
    path = tmp_path / "bad.off"
    path.write_text(text)
    with pytest.raises(FormatError, match=defect) as info:
        read_off(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------- OBJ

def test_obj_polygons_slashes_and_negative_indices(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("mtllib missing.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
                    "usemtl none\nf 1/1/1 2/1/1 3/1/1 4/1/1\nv 0 0 1\nf -5 -4 -1\n")
    mesh = load_mesh(path)
    assert len(mesh.vertices) == 5 and len(mesh.faces) == 3
    assert mesh.area == pytest.approx(1.0 + 0.5)  # the unit quad and a right triangle
    np.testing.assert_array_equal(mesh.faces[-1], [0, 1, 4])


def test_obj_without_faces_gives_points_not_a_mesh(tmp_path):
    path = tmp_path / "cloud.obj"
    path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in CLOUD))
    np.testing.assert_array_equal(load_points(path), CLOUD)
    with pytest.raises(FormatError, match="no faces"):
        load_mesh(path)


# ------------------------------------------------------------------------------------- PLY

def test_ply_ascii_vertices_with_extra_properties(tmp_path):
    path = tmp_path / "cloud.ply"
    rows = "".join(f"{x} {y} {z} 0.5 255\n" for x, y, z in CLOUD)
    path.write_text("ply\nformat ascii 1.0\ncomment by hand\nelement vertex 3\n"
                    "property float x\nproperty float y\nproperty float z\n"
                    "property float intensity\nproperty uchar red\nend_header\n" + rows)
    np.testing.assert_array_equal(load_points(path), CLOUD)


def test_ply_binary_little_endian_mesh(tmp_path):
    path = tmp_path / "cube.ply"
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 8\nproperty double x\n"
              b"property double y\nproperty double z\nproperty uchar red\nelement face 6\n"
              b"property list uchar int vertex_indices\nend_header\n")
    body = b"".join(struct.pack("<dddB", *v, 200) for v in CUBE_VERTICES)
    body += b"".join(struct.pack("<B4i", 4, *q) for q in CUBE_QUADS)
    path.write_bytes(header + body)
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.vertices, CUBE_VERTICES)
    assert mesh.area == pytest.approx(6.0) and mesh.volume == pytest.approx(1.0)
    np.testing.assert_array_equal(load_points(path), CUBE_VERTICES.astype(np.float32))
    samples = load_points(path, sample=500, rng=np.random.default_rng(1))
    assert samples.shape == (500, 3) and on_cube_surface(samples)


def test_ply_binary_nan_vertices_are_dropped(tmp_path):
    path = tmp_path / "nan.ply"
    rows = np.vstack([CLOUD[:1], [[np.nan, 0, 0]], CLOUD[1:]]).astype(np.float32)
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 4\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n" + rows.tobytes())
    np.testing.assert_array_equal(load_points(path), CLOUD)


# ------------------------------------------------------------------------------------- PCD

def test_pcd_ascii_extra_fields_and_nan_rows(tmp_path):
    path = tmp_path / "a.pcd"
    rows = [f"{x} {y} {z} 4.2108e+06 1 2 3" for x, y, z in CLOUD]
    rows.insert(1, "nan nan nan 0 0 0 0")  # an invalid return, as organised clouds hold them
    path.write_bytes(pcd_header("x y z rgb normal", "4 4 4 4 4", "F F F F F", "1 1 1 1 3", 4,
                                "ascii") + "\n".join(rows).encode() + b"\n")
    raw = read_pcd(path)
    assert raw.shape == (4, 3) and np.isnan(raw[1]).all()
    np.testing.assert_array_equal(load_points(path), CLOUD)


def test_pcd_binary_fields_around_xyz_and_float64(tmp_path):
    path = tmp_path / "b.pcd"
    # intensity before x, padding and a u8 ring after: x/y/z offsets are 4, 12, 20 in 31 bytes
    body = b"".join(struct.pack("<fdddxxB", 7.0, *p, 3) for p in CLOUD)
    path.write_bytes(pcd_header("intensity x y z _ ring", "4 8 8 8 1 1", "F F F F U U",
                                "1 1 1 1 2 1", 3, "binary") + body)
    np.testing.assert_array_equal(load_points(path), CLOUD)


def test_pcd_binary_compressed_literal_runs(tmp_path):
    path = tmp_path / "c.pcd"
    points = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    intensity = np.arange(40, dtype=np.uint16)
    blocks = points[:, 0].tobytes() + points[:, 1].tobytes() + intensity.tobytes() + \
        points[:, 2].tobytes()  # binary_compressed stores each field as one block
    compressed = lzf_literals(blocks)
    path.write_bytes(pcd_header("x y intensity z", "4 4 2 4", "F F U F", "1 1 1 1", 40,
                                "binary_compressed")
                     + struct.pack("<II", len(compressed), len(blocks)) + compressed)
    np.testing.assert_array_equal(load_points(path), points)


def test_pcd_binary_compressed_back_reference(tmp_path):
    path = tmp_path / "r.pcd"
    y, z = np.array([1.0, 2.0, 3.0], np.float32), np.array([4.0, 5.0, 6.0], np.float32)
    one = np.float32(1.5).tobytes()
    # x block: 1.5 three times = 4 literal bytes, then 8 bytes copied from distance 4
    compressed = bytes([3]) + one + bytes([(8 - 2) << 5, 4 - 1]) + lzf_literals(
        y.tobytes() + z.tobytes())
    path.write_bytes(pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 3, "binary_compressed")
                     + struct.pack("<II", len(compressed), 36) + compressed)
    np.testing.assert_array_equal(load_points(path), np.stack([[1.5] * 3, y, z], axis=1))


def test_pcd_binary_compressed_written_by_open3d(tmp_path):
    """Data recorded from open3d 0.20's writer (PCL's LZF compressor): 15 back-references, 6 of
    them of extended length, as real files hold them."""
    path = tmp_path / "o3d.pcd"
    body = bytes.fromhex(
        "37000000000100000100006000033f000080200360002007e0240be002004037c003e00300c0134007e003"
        "00400f01803ee033030380808000e03103018000")
    path.write_bytes(pcd_header("x y z rgb", "4 4 4 4", "F F F U", "1 1 1 1", 16,
                                "binary_compressed") + body)
    expected = [[i % 3 * 0.5, (i // 3) % 2, 0.25] for i in range(16)]
    np.testing.assert_array_equal(load_points(path), np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("stream, expected", [
    (bytes([2]) + b"abc" + bytes([(6 - 2) << 5, 3 - 1]) + bytes([0]) + b"X", b"abcabcabcX"),
    (bytes([5]) + b"abcdef" + bytes([(3 - 2) << 5, 5 - 1]), b"abcdefbcd"),
    (bytes([1]) + b"ab" + bytes([7 << 5, 20 - 2 - 7, 2 - 1]), b"ab" * 11),  # extended length
])
def test_lzf_back_references(stream, expected):
    assert lzf_decompress(stream, len(expected)) == expected


@pytest.mark.parametrize("stream, size, defect", [
    (bytes([4]) + b"ab", 5, "past the end"),
    (bytes([0]) + b"a" + bytes([1 << 5, 9]), 4, "before the start"),
    (bytes([0]) + b"a" + bytes([1 << 5]), 4, "ends inside"),
    (bytes([0]) + b"a", 2, "header says 2"),
])
def test_lzf_corrupt_streams(stream, size, defect):
    with pytest.raises(ValueError, match=defect):
        lzf_decompress(stream, size)


@pytest.mark.parametrize("header, defect", [
    (pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 3, "lzma"), "DATA 'lzma'"),
    (pcd_header("x y", "4 4", "F F", "1 1", 3, "ascii"), "no 'z' field"),
    (pcd_header("x y z", "4 4", "F F F", "1 1 1", 3, "ascii"), "differ in length"),
    (pcd_header("x y z", "4 4 3", "F F F", "1 1 1", 3, "ascii"), "TYPE F SIZE 3"),
    (pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 3, "ascii").replace(b"POINTS 3", b"POINTS 5"),
     "POINTS 5"),
    (pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 3, "ascii").replace(b"FIELDS", b"FEELDS"),
     "unknown entry 'FEELDS'"),
    (b"VERSION 0.7\nFIELDS x y z\n", "no DATA line"),
    (pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 3, "binary") + b"\0" * 20, "truncated"),
    (pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 3, "ascii") + b"1 2 3\n4 5 6\n", "holds 6"),
    (pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 1, "binary_compressed")
     + struct.pack("<II", 2, 12) + bytes([0]) + b"a", "corrupt LZF"),
])
def test_pcd_defects_are_named(tmp_path, header, defect):
    path = tmp_path / "bad.pcd"
    path.write_bytes(header)
    with pytest.raises(FormatError, match=defect) as info:
        load_points(path)
    assert str(path) in str(info.value)


def test_pcd_all_nan_cloud_is_an_error(tmp_path):
    path = tmp_path / "nan.pcd"
    path.write_bytes(pcd_header("x y z", "4 4 4", "F F F", "1 1 1", 2, "ascii")
                     + b"nan nan nan\nnan nan nan\n")
    with pytest.raises(FormatError, match="no finite points"):
        load_points(path)


# ------------------------------------------------------------------------ NPY, NPZ, XYZ, TXT

def test_npy_first_three_columns_and_npz_names(tmp_path):
    np.save(tmp_path / "a.npy", np.hstack([CLOUD, np.ones((3, 2), np.float32)]))
    np.testing.assert_array_equal(load_points(tmp_path / "a.npy"), CLOUD)
    np.savez(tmp_path / "b.npz", normals=np.zeros((3, 3)), points=CLOUD)
    np.testing.assert_array_equal(load_points(tmp_path / "b.npz"), CLOUD)
    np.savez(tmp_path / "c.npz", CLOUD.astype(np.float64))
    np.testing.assert_array_equal(load_points(tmp_path / "c.npz"), CLOUD)


@pytest.mark.parametrize("write, defect", [
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((5, 2))), r"shape \(5, 2\)"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 5, 3))), r"shape \(2, 5, 3\)"),
    (lambda p: np.savez(p.with_suffix(".npz"), a=np.zeros((5, 3)), b=np.zeros((5, 3))),
     "expected one array"),
])
def test_array_file_defects(tmp_path, write, defect):
    write(tmp_path / "bad")
    path = next(tmp_path.glob("bad.*"))
    with pytest.raises(FormatError, match=defect):
        load_points(path)


def test_xyz_and_txt_whitespace_columns(tmp_path):
    (tmp_path / "a.xyz").write_text("".join(f"{x}\t{y}  {z}\n" for x, y, z in CLOUD))
    (tmp_path / "b.txt").write_text("# x y z r g b\n"
                                    + "".join(f"{x} {y} {z} 1 2 3\n" for x, y, z in CLOUD))
    np.testing.assert_array_equal(load_points(tmp_path / "a.xyz"), CLOUD)
    np.testing.assert_array_equal(load_points(tmp_path / "b.txt"), CLOUD)
    (tmp_path / "c.xyz").write_text("1 2 3\n4 five 6\n")
    with pytest.raises(FormatError, match="cannot be parsed"):
        load_points(tmp_path / "c.xyz")


# -------------------------------------------------------------------- dispatcher and errors

def test_load_cloud_samples_meshes_and_resamples_points(tmp_path):
    mesh_path, points_path = tmp_path / "cube.off", tmp_path / "cloud.npy"
    mesh_path.write_text(off_text("OFF\n8 6 0"))
    np.save(points_path, CLOUD)
    samples = load_cloud(mesh_path)
    assert samples.shape == (DEFAULT_MESH_SAMPLES, 3) and samples.dtype == np.float32
    assert on_cube_surface(samples)
    np.testing.assert_array_equal(load_cloud(mesh_path), samples)  # fixed default seed
    assert not np.array_equal(load_cloud(mesh_path, rng=np.random.default_rng(5)), samples)
    assert load_cloud(mesh_path, num_points=100).shape == (100, 3)
    np.testing.assert_array_equal(load_cloud(points_path), CLOUD)  # used as they are
    more = load_cloud(points_path, num_points=7)
    assert more.shape == (7, 3) and {tuple(p) for p in more} == {tuple(p) for p in CLOUD}


def test_load_cloud_mesh_with_zero_area_is_an_error(tmp_path):
    path = tmp_path / "flat.off"
    path.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    with pytest.raises(FormatError, match="no surface area"):
        load_cloud(path)


@pytest.mark.parametrize("name, content, defect", [
    ("model.dae", b"<xml/>", "unknown extension '.dae'"),
    ("empty.pcd", b"", "is empty"),
    ("empty.ply", b"", "is empty"),
    ("empty.npy", b"", "is empty"),
    ("blank.off", b"\n  \n", "is empty"),
    ("comments.xyz", b"# nothing\n", "holds no points"),
    ("bad.ply", b"plx\nformat ascii 1.0\nend_header\n", "cannot be parsed as PLY"),
])
def test_errors_name_the_file_and_the_defect(tmp_path, name, content, defect):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FormatError, match=defect) as info:
        load_cloud(path)
    assert str(path) in str(info.value)
