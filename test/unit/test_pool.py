"""The shape pool, built from tiny fake sources written on the fly in the real layouts: an SH3D
tree (.sh3f libraries), a pybullet wheel (a zip with pybullet_data/), a libcgal-demo tree
(data.tar.gz), and procedural shapes. No test needs the real packages or the built pool."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from fake_packages import boxes, catalog_text, furniture_entry, obj_text, write_archive

from gmm_perception.data import pool, pybullet_data, sh3d
from gmm_perception.data.mesh_dataset import model_rng, prepare_mesh
from gmm_perception.data.shape_set import MeshSet, ShapeSet

POINTS = 64


def chair_y_up() -> tuple[np.ndarray, np.ndarray]:
    """Seat, backrest and a post, y up (SH3D's convention), 1.0 tall, 0.4 wide and deep."""
    return boxes(((0, 0.45, 0), (0.4, 0.05, 0.4)), ((0, 0.5, 0), (0.4, 0.5, 0.05)),
                 ((0.17, 0, 0.17), (0.06, 0.45, 0.06)))


def tower() -> tuple[np.ndarray, np.ndarray]:
    return boxes(((0, 0, 0), (0.2, 0.2, 2.0)))


def l_shape() -> tuple[np.ndarray, np.ndarray]:
    return boxes(((0, 0, 0), (1, 0.2, 0.2)), ((0, 0, 0.2), (0.2, 0.2, 0.8)))


def moved_copy(vertices: np.ndarray, faces: np.ndarray, rotation: np.ndarray,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same surface rotated by `rotation`, scaled by 3.7, moved, its vertices permuted."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(vertices))
    new_index = np.argsort(order)
    moved = (vertices @ rotation.T) * 3.7 + np.array([5.0, -2.0, 11.0])
    return moved[order], new_index[faces][:, ::1]


def write_sh3d(root: Path, library: str, models: dict[str, tuple[str, str, str]]) -> None:
    """A .sh3f library: key -> (name, category, OBJ text)."""
    entries, files = [], {}
    for key, (name, category, text) in models.items():
        path = f"{library.lower()}/{key}/{key}.obj"
        entry = furniture_entry(key, name, category, path)
        entry["id"] = f"{library}#{key}"
        entries.append(entry)
        files[path] = text
    header = {"id": f"SweetHome3D#{library}", "name": library, "license": f"CC0 {library}"}
    write_archive(root / f"{sh3d.FURNITURE_DIR}/{library}.sh3f", sh3d.PLUGIN_CATALOG,
                  catalog_text(header, entries), files)


def write_wheel(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pybullet-3.2.7.dist-info/LICENSE.txt", "zlib")
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def write_cgal(root: Path, meshes: dict[str, str]) -> Path:
    tarball = root / "usr/share/doc/libcgal-dev/data.tar.gz"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as tar:
        for name, text in meshes.items():
            data = text.encode()
            info = tarfile.TarInfo(f"data/meshes/{name}.off")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def off_text(vertices: np.ndarray, faces: np.ndarray) -> str:
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += ["3 " + " ".join(map(str, f)) for f in faces]
    return "\n".join(lines) + "\n"


PLANE = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n"
# Four non-coplanar vertices, but every triangle repeats a vertex: no area.
ZERO_AREA = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 1 2\nf 3 4 4\n"
TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
BROKEN = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n"


def random_blob(seed: int) -> str:
    """A small random closed shape (a perturbed convex hull), like random_urdfs' objects."""
    rng = np.random.default_rng(seed)
    hull = trimesh.convex.convex_hull(rng.normal(size=(20, 3)) * [1.0, 0.6, 0.3])
    return obj_text(np.asarray(hull.vertices), np.asarray(hull.faces), material=False)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> pool.Inputs:
    tmp = tmp_path_factory.mktemp("pool_sources")
    sh3d_root = tmp / "sh3d"
    write_sh3d(sh3d_root, "Alpha", {
        "chair": ("Chair", "Living room", obj_text(*chair_y_up())),
        "thing": ("Thing", "Miscellaneous", obj_text(*l_shape())),
        "plane": ("Rug", "Living room", PLANE),
    })
    write_sh3d(sh3d_root, "KatorLegaz", {"desk": ("Desk", "Office", obj_text(*tower()))})
    # pybullet: the SH3D chair again, as SH3D's builder turns it (z up), moved, scaled and
    # with its vertices reordered: a duplicate across sources.
    copy = moved_copy(*chair_y_up(), sh3d.SH3D_TO_ROS)
    wheel = write_wheel(tmp / "pybullet-3.2.7-cp311-none-any.whl", {
        **{f"pybullet_data/random_urdfs/{k:03d}/{k:03d}.obj": random_blob(k) for k in range(6)},
        "pybullet_data/objects/chair_copy.obj": obj_text(*copy, material=False),
        "pybullet_data/plane.obj": PLANE,
        "pybullet_data/junk/zero.obj": ZERO_AREA,
        "pybullet_data/junk/triangle.obj": TRIANGLE,
        "pybullet_data/junk/broken.obj": BROKEN,
        "pybullet_data/junk/lines.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nl 1 2\nl 3 4\n",
        "pybullet_data/bicycle/LICENSE.txt": "Bicycle by someone, CC-BY-SA 3.0\nmore text",
        "pybullet_data/bicycle/frame.obj": obj_text(*l_shape()) .replace("v 0.", "v 0.5"),
        "pybullet_data/bicycle/readme.md": "not a mesh",
    })
    cgal_root = write_cgal(tmp / "cgal", {"tower_copy": off_text(*tower()),
                                          "blob": off_text(*_hull(7))})
    return pool.Inputs([sh3d_root], wheel, cgal_root, {"test": "1"})


def _hull(seed: int) -> tuple[np.ndarray, np.ndarray]:
    hull = trimesh.convex.convex_hull(np.random.default_rng(seed).normal(size=(30, 3)))
    return np.asarray(hull.vertices), np.asarray(hull.faces)


def build(inputs: pool.Inputs, out: Path, items=None, **kwargs) -> tuple[ShapeSet, MeshSet]:
    items = pool.gather_items(inputs) if items is None else items
    options = dict(points=POINTS, inputs=inputs.versions, progress=False)
    points_path, meshes_path = pool.build_from_items(items, out, **{**options, **kwargs})
    return ShapeSet.load(points_path), MeshSet.load(meshes_path)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> tuple[ShapeSet, MeshSet]:
    return build(sources, tmp_path_factory.mktemp("pool_out"))


def by_id(shapes: ShapeSet, shape_id: str) -> int:
    return int(np.flatnonzero(shapes.model_ids == shape_id)[0])


# ----------------------------------------------------------------------------- dedup/hash

def test_geometry_hash_ignores_position_scale_and_vertex_order():
    vertices, faces = chair_y_up()
    copy_v, copy_f = moved_copy(vertices, faces, np.eye(3), seed=3)
    hashes = [prepare_mesh(trimesh.Trimesh(v, f, process=False), np.eye(3), 16,
                           model_rng(0, "x")).geometry_hash
              for v, f in ((vertices, faces), (copy_v, copy_f), (copy_v, copy_f[::-1]),
                           l_shape())]
    assert hashes[0] == hashes[1] == hashes[2]
    assert hashes[3] != hashes[0]


def test_same_mesh_in_two_sources_kept_once(built):
    shapes, _ = built
    skipped = shapes.meta["skipped"]
    assert skipped["pybullet:pybullet_data/objects/chair_copy.obj"] == \
        "duplicate: of sh3d/Alpha:Alpha#chair"
    # The tower is in SH3D's KatorLegaz (turned z up from y up) and in CGAL (as in its file):
    # different poses, so both stay (the hash is not rotation invariant, by design).
    assert "cgal:data/meshes/tower_copy.off" in shapes.model_ids
    assert len(set(shapes.shape_meta["geometry_hash"])) == len(shapes)
    assert shapes.meta["skipped_counts"]["duplicate"] == 1


# --------------------------------------------------------------------------- normalisation

def test_points_and_meshes_centred_in_the_unit_sphere(built):
    shapes, meshes = built
    assert len(shapes) == len(meshes) > 0
    for i in range(len(meshes)):
        vertices = meshes.vertices[i].astype(np.float64)
        centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
        np.testing.assert_allclose(centre, 0, atol=1e-5)
        assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(shapes.points[i], axis=1).max() <= 1.0 + 1e-3
    assert shapes.points.shape[1:] == (POINTS, 3)


def test_sh3d_turned_z_up_others_as_in_their_files(built):
    shapes, meshes = built
    chair = meshes.vertices[meshes.index_of("sh3d/Alpha:Alpha#chair")]
    extent = np.ptp(chair, axis=0)
    assert np.argmax(extent) == 2  # 1.0 tall along y in the OBJ: z now
    tower = meshes.vertices[meshes.index_of("cgal:data/meshes/tower_copy.off")]
    assert np.argmax(np.ptp(tower, axis=0)) == 2  # z in its file, left so
    up = dict(zip(shapes.model_ids, shapes.shape_meta["up_known"]))
    assert up["sh3d/Alpha:Alpha#chair"] == "true"
    assert up["cgal:data/meshes/tower_copy.off"] == "false"
    assert up["pybullet:pybullet_data/random_urdfs/000/000.obj"] == "false"


# ----------------------------------------------------------------------------- degenerate

def test_degenerate_meshes_skipped_with_their_reason(built):
    skipped = built[0].meta["skipped"]
    assert skipped["sh3d/Alpha:Alpha#plane"].startswith("coplanar")
    assert skipped["pybullet:pybullet_data/plane.obj"].startswith("coplanar")
    assert skipped["pybullet:pybullet_data/junk/zero.obj"] == "zero area"
    assert skipped["pybullet:pybullet_data/junk/triangle.obj"].startswith("too few vertices")
    assert skipped["pybullet:pybullet_data/junk/broken.obj"].startswith("load failed")
    assert "/tmp" not in skipped["pybullet:pybullet_data/junk/broken.obj"]
    assert skipped["pybullet:pybullet_data/junk/lines.obj"] == "no faces"
    counts = built[0].meta["skipped_counts"]
    assert counts["coplanar"] == 2 and counts["zero area"] == 1 and counts["load failed"] == 1


def test_degenerate_reason_keeps_a_tetrahedron():
    tetra = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]],
                            [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], process=False)
    assert pool.degenerate_reason(tetra) is None


# ---------------------------------------------------------------------------------- splits

def test_split_same_seed_same_split_and_roughly_the_fractions():
    ids = [f"pybullet:shape{i}" for i in range(2000)]
    first = [pool.assign_split(i, "pybullet", 0) for i in ids]
    assert first == [pool.assign_split(i, "pybullet", 0) for i in ids]
    assert first != [pool.assign_split(i, "pybullet", 1) for i in ids]
    fractions = {s: first.count(s) / len(ids) for s in pool.TRAIN_SPLITS}
    for split, expected in pool.SPLIT_FRACTIONS.items():
        assert fractions[split] == pytest.approx(expected, abs=0.03)


def test_adding_a_shape_keeps_every_other_split(sources, built, tmp_path):
    shapes, _ = built
    extra = pool.Item("pybullet:pybullet_data/extra.obj", "pybullet", "extra",
                      "pybullet_data/extra.obj", pool.UNCATEGORISED, "zlib", False,
                      pool._IDENTITY, arrays=_hull(99))
    grown, _ = build(sources, tmp_path, items=[extra, *pool.gather_items(sources)])
    assert len(grown) == len(shapes) + 1
    before = dict(zip(shapes.model_ids, shapes.split))
    after = dict(zip(grown.model_ids, grown.split))
    assert all(after[k] == v for k, v in before.items())


def test_cross_sources_never_in_train_or_val(built):
    shapes, _ = built
    source = shapes.shape_meta["source"]
    cross = np.isin(source, pool.CROSS_SOURCES)
    assert cross.any() and (shapes.split[cross] == "cross").all()
    assert (shapes.split[~cross] != "cross").all()
    for split in ("train", "val"):
        assert not set(pool.select(shapes, split=split).shape_meta["source"]) & \
            set(pool.CROSS_SOURCES)
    assert shapes.meta["split_version"] == pool.SPLIT_VERSION


def test_the_split_is_written_once(sources, built, tmp_path):
    shapes, _ = built
    build(sources, tmp_path)
    with pytest.raises(ValueError, match="resplit"):
        build(sources, tmp_path, split_seed=5)
    resplit, _ = build(sources, tmp_path, split_seed=5, resplit=True)
    assert resplit.meta["split_seed"] == 5


def test_a_current_pool_is_not_rebuilt(sources, tmp_path):
    points_path, _ = pool.build_from_items(pool.gather_items(sources), tmp_path, points=POINTS,
                                           inputs={"test": "1"}, progress=False)
    stamp = points_path.stat().st_mtime_ns
    pool.build_from_items([], tmp_path, points=POINTS, inputs={"test": "1"}, progress=False)
    assert points_path.stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------ metadata and use

def test_metadata_round_trips_through_save_and_load(built, tmp_path):
    shapes, meshes = built
    for key in pool.SHAPE_META_KEYS:
        assert len(shapes.shape_meta[key]) == len(shapes)
        np.testing.assert_array_equal(shapes.shape_meta[key], meshes.shape_meta[key])
    i = by_id(shapes, "sh3d/Alpha:Alpha#chair")
    assert shapes.shape_meta["source"][i] == "sh3d/Alpha"
    assert shapes.shape_meta["file"][i] == f"{sh3d.FURNITURE_DIR}/Alpha.sh3f!alpha/chair/chair.obj"
    assert shapes.class_names[shapes.labels[i]] == "chair"
    assert shapes.shape_meta["category"][i] == "chair"
    assert shapes.shape_meta["licence"][i] == "CC0 Alpha (SH3D Alpha)"
    thing = by_id(shapes, "sh3d/Alpha:Alpha#thing")
    assert shapes.shape_meta["category"][thing] == pool.UNCATEGORISED
    again = ShapeSet.load(shapes.save(tmp_path / "again.npz"))
    for key, values in shapes.shape_meta.items():
        np.testing.assert_array_equal(again.shape_meta[key], values)
    sub = meshes.select(meshes.split == "cross")
    assert MeshSet.load(sub.save(tmp_path / "m.npz")).shape_meta["source"].tolist() == \
        sub.shape_meta["source"].tolist()


def test_sets_without_shape_meta_still_load(tmp_path):
    plain = ShapeSet(np.zeros((2, 4, 3)), [0, 0], ["a"], ["train", "test"], ["x", "y"])
    loaded = ShapeSet.load(plain.save(tmp_path / "plain.npz"))
    assert loaded.shape_meta == {} and loaded.subset("test").model_ids.tolist() == ["y"]
    with pytest.raises(ValueError, match="one entry per shape"):
        ShapeSet(np.zeros((2, 4, 3)), [0, 0], ["a"], ["train", "test"], ["x", "y"],
                 shape_meta={"source": ["only one"]})


def test_pybullet_licences_and_select(built):
    shapes, _ = built
    licence = dict(zip(shapes.model_ids, shapes.shape_meta["licence"]))
    assert licence["pybullet:pybullet_data/random_urdfs/000/000.obj"] == pybullet_data.WHEEL_LICENCE
    assert licence["pybullet:pybullet_data/bicycle/frame.obj"].startswith(
        "Bicycle by someone, CC-BY-SA 3.0 more text (see pybullet_data/bicycle/LICENSE.txt)")
    sh3d_all = pool.select(shapes, source="sh3d")
    assert set(sh3d_all.shape_meta["source"]) == {"sh3d/Alpha", "sh3d/KatorLegaz"}
    cross = pool.select(shapes, split="cross", source="cgal")
    assert len(cross) == 2 and set(cross.split) == {"cross"}
    assert len(pool.select(shapes, up_known=True)) == len(sh3d_all)


def test_procedural_only_on_request_and_never_counted(sources, tmp_path):
    items = pool.gather_items(sources, procedural_per_class=1)
    shapes, _ = build(sources, tmp_path, items=items)
    procedural = shapes.shape_meta["source"] == "procedural"
    assert procedural.sum() == len(pool.procedural_items(1))
    assert not pool.select(shapes).shape_meta["source"].tolist().count("procedural")
    assert len(pool.select(shapes, include_test_only=True)) == len(shapes)
    table = pool.count_table(shapes.meta)
    assert "procedural (tests only, not counted)" in table
    total = table.split("| **all** |")[1].split("\n")[0]
    assert int(total.strip(" |").split("|")[-1]) == int((~procedural).sum())


def test_card_names_sources_splits_and_rebuild(built, tmp_path):
    shapes, _ = built
    points_path = shapes.save(tmp_path / "pool_points_64.npz")
    text = pool.write_card(points_path, tmp_path / "README.md").read_text()
    for word in ("sh3d/KatorLegaz", "cgal", "pybullet", pool.SPLIT_VERSION, "gmm-perception data pool"):
        assert word in text


def test_models_of_the_sh3d_set_keep_their_role_in_the_pool():
    """Its test models stay held out from pool training; its training models never become pool
    test shapes (earlier checkpoints trained on them)."""
    from gmm_perception.data.pool import assign_split

    sh3d_splits = {f"Lib#model{k}": ("test" if k % 5 == 0 else "train") for k in range(400)}
    splits = {name: assign_split(f"sh3d/Scopia:{name}", "sh3d/Scopia", sh3d_splits=sh3d_splits)
              for name in sh3d_splits}
    assert all(splits[n] == "test" for n, s in sh3d_splits.items() if s == "test")
    trained = [splits[n] for n, s in sh3d_splits.items() if s == "train"]
    assert set(trained) == {"train", "val"} and trained.count("val") > 10
    # A cross-source library stays cross whatever the SH3D set did with its models.
    assert assign_split("sh3d/KatorLegaz:Lib#model0", "sh3d/KatorLegaz",
                        sh3d_splits=sh3d_splits) == "cross"
    # Shapes outside the SH3D set are split as before.
    others = {assign_split(f"pybullet:{k}", "pybullet", sh3d_splits=sh3d_splits)
              for k in range(200)}
    assert others == {"train", "val", "test"}
