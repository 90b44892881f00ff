"""The CGAL sample-mesh builder, on a tiny data.tar.gz in the real package layout.

One slow test builds from the real libcgal-demo .deb when it is already in <repo>/data/debs
(`python -m gmm_perception.data.cgal` puts it there); no test downloads.
"""
from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from fake_packages import make_deb

from gmm_perception.data import cgal
from gmm_perception.data.cgal import build_cgal, build_from_tree, cgal_mesh
from gmm_perception.data.shape_set import MeshSet, ShapeSet

REPO_DEBS = Path(__file__).resolve().parents[2] / "data" / "debs"
TARBALL = "usr/share/doc/libcgal-dev/data.tar.gz"

BOX = """# a box: quads, per-face colours
OFF
8 6 0
0 0 0
2 0 0
2 1 0
0 1 0
0 0 1
2 0 1
2 1 1
0 1 1
4 0 3 2 1 255 0 0
4 4 5 6 7 255 0 0
4 0 1 5 4 0 255 0
4 2 3 7 6 0 255 0
4 1 2 6 5 0 0 255
4 3 0 4 7 0 0 255
"""
# The same box: vertices permuted, scaled by 3, moved; faces and corners renumbered.
BOX_COPY = """OFF
8 6 0
7 4 5
1 1 2
7 1 2
1 4 2
7 4 2
1 1 5
1 4 5
7 1 5
4 1 3 4 2
4 5 7 0 6
4 1 2 7 5
4 4 3 6 0
4 2 4 0 7
4 3 1 5 6
"""


def pyramid(height: float) -> str:
    return (f"OFF\n5 5 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0.5 0.5 {height}\n"
            "4 0 3 2 1\n3 0 1 4\n3 1 2 4\n3 2 3 4\n3 3 0 4\n")


MESHES = {
    "box.off": BOX,
    "box_copy.off": BOX_COPY,
    "pyramid.off": pyramid(1.0),
    "pyramid_tall.off": pyramid(3.0),
    "broken.off": "OFF\n8 6 0\n0 0 0\n1 0 0\n",  # truncated
    "point.off": "OFF\n3 1 0\n1 1 1\n1 1 1\n1 1 1\n3 0 1 2\n",  # all vertices coincide
}


def write_tree(root: Path) -> Path:
    """An unpacked libcgal-demo: the tarball also holds files the builder must ignore."""
    path = root / TARBALL
    path.parent.mkdir(parents=True)
    files = {f"data/meshes/{name}": text for name, text in MESHES.items()}
    files |= {"data/meshes/README.txt": "not a mesh\n", "data/points_3/kitten.xyz": "0 0 0\n"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A data dir whose cgal/ outputs (2048 points, seed 0) are built from the fake tree, as
    build_cgal leaves them; build_cgal and cgal_mesh then use them as they are."""
    root = write_tree(tmp_path / "tree")
    build_from_tree(root, tmp_path / "data" / "cgal", progress=False)
    return tmp_path / "data"


def test_builds_one_test_class_of_usable_distinct_meshes(data_dir):
    shapes = ShapeSet.load(data_dir / "cgal" / "cgal_points_2048.npz")
    meshes = MeshSet.load(data_dir / "cgal" / "cgal_meshes.npz")
    assert shapes.class_names == ["cgal"] and set(shapes.split) == {"test"}
    assert list(shapes.model_ids) == ["box", "pyramid", "pyramid_tall"]
    assert list(meshes.model_ids) == list(shapes.model_ids)
    assert shapes.meta["duplicates"] == {"box_copy": "box"}
    assert set(shapes.meta["skipped"]) == {"broken", "point"}
    assert "truncated" in shapes.meta["skipped"]["broken"]
    assert shapes.meta["counts"] == {"files": 6, "kept": 3, "broken": 2, "duplicates": 1}
    assert len(meshes.faces[meshes.index_of("pyramid")]) == 6  # the quad base fanned in two
    for vertices in meshes.vertices:
        np.testing.assert_allclose(0.5 * (vertices.min(0) + vertices.max(0)), 0, atol=1e-6)
        assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(shapes.points, axis=2).max() <= 1 + 2.0 ** -10
    # Orientation kept: the box's long side (x in the file) stays along x.
    assert np.argmax(np.ptp(meshes.vertices[meshes.index_of("box")], axis=0)) == 0


def test_build_is_cached_by_config(data_dir):
    root = data_dir.parent / "tree"
    paths = build_from_tree(root, data_dir / "cgal", progress=False)
    stamp = paths[0].stat().st_mtime_ns
    assert build_from_tree(root, data_dir / "cgal", progress=False) == paths
    assert paths[0].stat().st_mtime_ns == stamp
    build_from_tree(root, data_dir / "cgal", seed=1, progress=False)
    assert ShapeSet.load(paths[0]).meta["config"]["seed"] == 1


def test_cgal_mesh_resolves_names(data_dir):
    pyramid = cgal_mesh("pyramid", data_dir)
    assert len(pyramid.faces) == 6
    tall = cgal_mesh("pyramid_t", data_dir)  # a unique prefix
    assert np.ptp(tall.vertices[:, 2]) > np.ptp(pyramid.vertices[:, 2])
    np.testing.assert_array_equal(cgal_mesh("box_copy", data_dir).vertices,
                                  cgal_mesh("box", data_dir).vertices)
    with pytest.raises(KeyError, match="prefixes"):
        cgal_mesh("pyr", data_dir)
    with pytest.raises(KeyError, match="available"):
        cgal_mesh("bunny", data_dir)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to make a .deb")
def test_build_cgal_from_a_cached_deb(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "debs").mkdir(parents=True)
    make_deb(write_tree(tmp_path / "tree"), cgal.PACKAGE, "5.5.1-2", data_dir / "debs")
    points_path, _ = build_cgal(data_dir, points_per_model=32, progress=False)
    shapes = ShapeSet.load(points_path)
    assert shapes.meta["config"]["packages"] == {cgal.PACKAGE: "5.5.1-2"}
    assert shapes.points.shape == (3, 32, 3)
    assert len(cgal_mesh("box", data_dir).faces) == 12


@pytest.mark.slow
@pytest.mark.skipif(not any(REPO_DEBS.glob(f"{cgal.PACKAGE}_*.deb")),
                    reason=f"the {cgal.PACKAGE} .deb is not in {REPO_DEBS}; "
                           "`python -m gmm_perception.data.cgal` downloads it")
def test_real_package(tmp_path):
    (tmp_path / "debs").mkdir()
    deb = sorted(REPO_DEBS.glob(f"{cgal.PACKAGE}_*.deb"))[-1]
    (tmp_path / "debs" / deb.name).symlink_to(deb)
    points_path, meshes_path = build_cgal(tmp_path, points_per_model=256, progress=False)
    shapes, meshes = ShapeSet.load(points_path), MeshSet.load(meshes_path)
    assert len(shapes) >= 100
    assert max(len(f) for f in meshes.faces) <= cgal.MAX_FACES
    for name in ("bunny", "armadillo", "fandisk", "elephant"):
        mesh = cgal_mesh(name, tmp_path)
        assert np.linalg.norm(mesh.vertices, axis=1).max() == pytest.approx(1.0, abs=1e-3)
        assert 1000 <= len(mesh.faces) <= cgal.MAX_FACES, name
