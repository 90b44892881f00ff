"""The Sweet Home 3D dataset builder, on tiny libraries written in the real .sh3f/.jar layout.

One slow test builds from the real Debian packages when their .debs are already in
<repo>/data/debs (`python -m gmm_perception.data.sh3d` puts them there); no test downloads.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_packages import (boxes, catalog_text, furniture_entry, make_deb, obj_text,
                           write_archive)

from gmm_perception.data import sh3d
from gmm_perception.data.sh3d import (JAR, JAR_CATALOG, PLUGIN_CATALOG, build_from_tree,
                                      build_sh3d, classify, find_catalogs, parse_properties,
                                      read_catalog)
from gmm_perception.data.shape_set import MeshSet, ShapeSet

REPO_DEBS = Path(__file__).resolve().parents[2] / "data" / "debs"
LIBRARY = f"{sh3d.FURNITURE_DIR}/Test.sh3f"
PACKAGES = {"sweethome3d-furniture": "1.0", "sweethome3d": "1.0"}


def chair_y_up(width: float, seat: float, back: float, scale: float = 1.0,
               offset: tuple[float, float, float] = (0, 0, 0)) -> str:
    """A seat and a backrest in SH3D's frame: y up, front +z, so the backrest lies at low z."""
    v, f = boxes(((0, seat, 0), (width, 0.05, 0.4)),
                 ((0, seat + 0.05, 0), (width, back, 0.05)),
                 ((width / 2 - 0.03, 0, 0.17), (0.06, seat, 0.06)))
    return obj_text(v * scale + np.asarray(offset), f)


def chair_z_up() -> str:
    """A chair modelled z up with its front at -y (backrest at high y): the catalogue's
    modelRotation '1 0 0 0 0 1 0 -1 0' (v' = (x, z, -y)) makes it y up, front +z."""
    v, f = boxes(((0, 0, 0.45), (0.42, 0.4, 0.05)), ((0, 0.35, 0.5), (0.42, 0.05, 0.5)),
                 ((0.18, 0.17, 0), (0.06, 0.06, 0.45)))
    return obj_text(v, f)


def table(width: float, depth: float, height: float) -> str:
    v, f = boxes(((0, height - 0.05, 0), (width, 0.05, depth)),
                 ((width / 2 - 0.05, 0, depth / 2 - 0.05), (0.1, height - 0.05, 0.1)))
    return obj_text(v, f, material=False)


LINES_ONLY = "v 0 0 0\nv 1 0 0\nv 0 1 0\nl 1 2\nl 2 3\n"

# key, name, category, OBJ text (None: missing from the archive), modelRotation
LIBRARY_MODELS = [
    ("chair1", "Chair", "Living room", chair_y_up(0.4, 0.45, 0.5), None),
    ("chair2", "Oak chair", "Living room", chair_y_up(0.46, 0.42, 0.55), None),
    ("chair3", "Chair", "Living room", chair_z_up(), "1 0 0 0 0 1 0 -1 0"),
    ("chair-copy", "Chair", "Living room", chair_y_up(0.4, 0.45, 0.5, 2.0, (1, 2, 3)), None),
    ("table1", "Table", "Living room", table(1.2, 0.8, 0.75), None),
    ("table2", "Coffee table", "Living room", table(1.0, 0.5, 0.4), None),
    ("toaster", "Toaster", "Kitchen", table(0.3, 0.2, 0.2), None),
    ("bedside", "Bedside table", "Bedroom", table(0.4, 0.4, 0.5), None),
    ("lamp-lines", "Lamp", "Lights", LINES_ONLY, None),
    ("lamp-missing", "Desk lamp", "Lights", None, None),
    ("sofa", "Sofa", "Living room", table(1.8, 0.9, 0.8), None),
]


def write_library(root: Path, models=LIBRARY_MODELS) -> None:
    entries, files = [], {}
    for key, name, category, text, rotation in models:
        path = f"test/{key}/{key}.obj"
        entries.append(furniture_entry(key, name, category, path, rotation))
        if text is not None:
            files[path] = text
    header = {"id": "SweetHome3D#Test", "name": "Test catalog", "version": "1.0",
              "license": "CC0 \u00a9 test", "provider": "test"}
    write_archive(root / LIBRARY, PLUGIN_CATALOG, catalog_text(header, entries), files)


def write_jar(root: Path, tables: list[tuple[str, float, float, float]]) -> None:
    """sweethome3d.jar's default catalogue: flat OBJ files under io/resources, ids 'eTeks#...'."""
    entries, files = [], {}
    for key, width, depth, height in tables:
        path = f"com/eteks/sweethome3d/io/resources/{key}.obj"
        entry = furniture_entry(key, "Round table", "Living room", path)
        entry["id"] = f"eTeks#{key}"
        entries.append(entry)
        files[path] = table(width, depth, height)
    write_archive(root / JAR, JAR_CATALOG,
                  catalog_text({"id": "SweetHome3D#DefaultModels"}, entries), files)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sh3d_tree")
    write_library(root)
    write_jar(root, [("roundTable", 1.1, 1.1, 0.74)])
    return root


def build(tree: Path, out: Path, **kwargs) -> tuple[Path, Path]:
    options = dict(points_per_model=128, seed=0, packages=PACKAGES, min_models=2,
                   progress=False)
    return build_from_tree([tree], out, **{**options, **kwargs})


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory) -> tuple[ShapeSet, MeshSet]:
    points_path, meshes_path = build(tree, tmp_path_factory.mktemp("sh3d_out"))
    return ShapeSet.load(points_path), MeshSet.load(meshes_path)


def test_parse_properties_java_syntax():
    text = ("# comment\n! also a comment\nid=Lib\nname#1 = Chair \\\n    with arms\n"
            "category#1: Living room\nicon#1 /x.png\nname#2=Caf\\u00e9 table\n"
            "key\\=with\\:colon=value\nlicense=\u00a9 2008\n")
    props = parse_properties(text)
    assert props["id"] == "Lib"
    assert props["name#1"] == "Chair with arms"
    assert props["category#1"] == "Living room"
    assert props["icon#1"] == "/x.png"
    assert props["name#2"] == "Caf\u00e9 table"
    assert props["key=with:colon"] == "value"
    assert props["license"] == "\u00a9 2008"


@pytest.mark.parametrize("name, category, expected", [
    ("Chair", "Living room", "chair"),
    ("Armchair", "Office", "armchair"),
    ("Desk lamp", "Lights", "lamp"),
    ("Desk", "Office", "table"),
    ("Glass door cabinet", "Kitchen", "cabinet"),
    ("Christmas tree", "Living room", "plant"),
    ("Pine", "Exterior", "tree"),
    ("Tulips", "Living room", "plant"),
    ("Sliding window", "Doors and windows", "window"),
    ("Double door with panes", "Doors and windows", "door"),
    ("Sitting female", "Characters", "person"),
    ("Car model", "Bedroom", "car"),
    ("Futon couch", "Living room", "sofa"),
    ("Bedside table", "Bedroom", None),  # ambiguous
    ("Opened convertible sofa BZ", "Bedroom", None),  # ambiguous
    ("Blue light source", "Lights", None),  # SH3D's light marker
    ("Door frame", "Doors and windows", None),
    ("Shower door", "Bathroom", None),  # doors only count in 'Doors and windows'
    ("Tablet", "Miscellaneous", None),  # 'table' must match a whole word
    ("Wheelchair", "Miscellaneous", None),
    ("Stone lantern", "Exterior", None),  # lamps only count in 'Lights'
])
def test_classify(name, category, expected):
    cls, reason = classify(name, category)
    assert cls == expected
    assert (reason == "") == (expected is not None)


def test_classify_tells_ambiguous_from_unmapped():
    assert classify("Bedside table", "Bedroom")[1].startswith("ambiguous")
    assert classify("Toaster", "Kitchen")[1].startswith("unmapped")


def test_read_catalog_real_layout(tree):
    catalogs = find_catalogs([tree])
    assert [(a.name, m) for a, m in catalogs] == [("Test.sh3f", PLUGIN_CATALOG),
                                                   ("sweethome3d.jar", JAR_CATALOG)]
    entries = read_catalog(*catalogs[0])
    assert [e.model_id for e in entries] == [f"Test#{m[0]}" for m in LIBRARY_MODELS]
    chair3 = entries[2]
    assert chair3.model == "test/chair3/chair3.obj"  # the catalogue's leading '/' dropped
    assert chair3.rotation == (1, 0, 0, 0, 0, 1, 0, -1, 0)
    assert entries[0].rotation is None
    jar_entries = read_catalog(*catalogs[1])
    assert [(e.model_id, e.library) for e in jar_entries] == [("eTeks#roundTable", "sweethome3d")]


def test_classes_counts_and_skip_reasons(built):
    shapes, meshes = built
    assert shapes.class_names == ["chair", "table"]  # CLASS_RULES order; sofa (1 model) dropped
    by_class = {name: sorted(shapes.model_ids[shapes.labels == i])
                for i, name in enumerate(shapes.class_names)}
    assert by_class == {"chair": ["Test#chair1", "Test#chair2", "Test#chair3"],
                        "table": ["Test#table1", "Test#table2", "eTeks#roundTable"]}
    skipped = shapes.meta["skipped"]
    assert skipped["Test#toaster"].startswith("unmapped")
    assert skipped["Test#bedside"].startswith("ambiguous")
    assert skipped["Test#lamp-lines"].startswith("broken") and "faces" in skipped["Test#lamp-lines"]
    assert skipped["Test#lamp-missing"].startswith("broken") and "not in" in \
        skipped["Test#lamp-missing"]
    assert skipped["Test#chair-copy"] == "duplicate of Test#chair1"
    assert skipped["Test#sofa"].startswith("class dropped")
    counts = shapes.meta["counts"]
    assert counts["catalogue_entries"] == 12 and counts["kept"] == 6
    assert counts["skipped"] == {"unmapped": 1, "ambiguous": 1, "broken": 2, "duplicate": 1,
                                 "class dropped": 1}
    assert counts["dropped_classes"] == {"sofa": 1}
    assert shapes.meta["config"]["packages"] == PACKAGES
    assert list(meshes.model_ids) == list(shapes.model_ids)
    assert shapes.points.shape == (6, 128, 3)


def test_y_up_models_end_tall_along_z_and_facing_x(built):
    shapes, meshes = built
    for model_id in ("Test#chair1", "Test#chair2", "Test#chair3"):
        vertices = meshes.vertices[meshes.index_of(model_id)]
        extent = vertices.max(axis=0) - vertices.min(axis=0)
        assert extent[2] > 1.5 * max(extent[0], extent[1]), model_id
        top = vertices[vertices[:, 2] > 0.5 * vertices[:, 2].max()]
        assert top[:, 0].max() < 0, f"{model_id}: the backrest must be behind (-x)"
    # SH3D width (x) -> y, depth (z) -> x: a 1.2 wide, 0.8 deep, 0.75 high table.
    vertices = meshes.vertices[meshes.index_of("Test#table1")]
    extent = vertices.max(axis=0) - vertices.min(axis=0)
    np.testing.assert_allclose(extent / extent.max(), [0.8 / 1.2, 1.0, 0.75 / 1.2], atol=1e-5)


def test_models_are_centred_in_the_unit_sphere(built):
    shapes, meshes = built
    for vertices in meshes.vertices:
        np.testing.assert_allclose(0.5 * (vertices.min(axis=0) + vertices.max(axis=0)), 0,
                                   atol=1e-6)
        assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    # Points are float16 on disk: within 2**-11 of the surface.
    assert np.linalg.norm(shapes.points, axis=2).max() <= 1 + 2.0 ** -10


def test_split_is_by_model_stratified_and_reproducible(built, tree, tmp_path):
    shapes, meshes = built
    assert len(set(shapes.model_ids)) == len(shapes)
    for name, train, test in shapes.class_table():
        assert train >= 1 and test >= 1, name
    assert list(meshes.split) == list(shapes.split)
    # Another point count: other points, the same split, model by model.
    again = ShapeSet.load(build(tree, tmp_path, points_per_model=64)[0])
    assert dict(zip(again.model_ids, again.split)) == dict(zip(shapes.model_ids, shapes.split))
    # The same config again: bit-identical points.
    same = ShapeSet.load(build(tree, tmp_path / "same")[0])
    np.testing.assert_array_equal(same.points, shapes.points)


def test_build_is_cached_by_config(tree, tmp_path):
    points_path, meshes_path = build(tree, tmp_path)
    stamps = (points_path.stat().st_mtime_ns, meshes_path.stat().st_mtime_ns)
    assert build(tree, tmp_path) == (points_path, meshes_path)
    assert (points_path.stat().st_mtime_ns, meshes_path.stat().st_mtime_ns) == stamps
    build(tree, tmp_path, seed=1)  # another config: rebuilt
    assert ShapeSet.load(points_path).meta["config"]["seed"] == 1
    stamp = points_path.stat().st_mtime_ns
    build(tree, tmp_path, seed=1, force=True)
    assert points_path.stat().st_mtime_ns != stamp


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to make .debs")
def test_build_sh3d_from_cached_debs_without_network(tmp_path, monkeypatch):
    trees = {package: tmp_path / package for package in PACKAGES}
    # MIN_MODELS tables so that build_sh3d's default class threshold keeps the class.
    write_library(trees["sweethome3d-furniture"],
                  [(f"t{i}", "Table", "Living room", table(1.0 + 0.1 * i, 0.6, 0.7), None)
                   for i in range(sh3d.MIN_MODELS - 1)])
    write_jar(trees["sweethome3d"], [("roundTable", 1.1, 1.1, 0.74)])
    data_dir = tmp_path / "data"
    (data_dir / "debs").mkdir(parents=True)
    for package, version in PACKAGES.items():
        make_deb(trees[package], package, version, data_dir / "debs")

    def no_network(package, cache_dir):
        raise AssertionError(f"fetch_deb({package}) called: the .deb is cached")

    points_path, meshes_path = build_sh3d(data_dir, points_per_model=64, progress=False)
    assert points_path == data_dir / "sh3d" / "sh3d_points_64.npz"
    shapes = ShapeSet.load(points_path)
    assert shapes.class_names == ["table"] and len(shapes) == sh3d.MIN_MODELS
    assert shapes.meta["config"]["packages"] == PACKAGES
    assert (data_dir / "pkgs" / "sweethome3d-furniture_1.0_all" / LIBRARY).is_file()
    stamp = points_path.stat().st_mtime_ns
    # Up to date: neither downloads nor rebuilds, with or without the .debs at hand.
    monkeypatch.setattr(sh3d, "fetch_deb", no_network)
    assert build_sh3d(data_dir, points_per_model=64) == (points_path, meshes_path)
    shutil.rmtree(data_dir / "debs")
    shutil.rmtree(data_dir / "pkgs")
    assert build_sh3d(data_dir, points_per_model=64) == (points_path, meshes_path)
    assert points_path.stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.skipif(not (any(REPO_DEBS.glob("sweethome3d-furniture_*.deb"))
                         and any(REPO_DEBS.glob("sweethome3d_*.deb"))),
                    reason=f"the sweethome3d(-furniture) .debs are not in {REPO_DEBS}; "
                           "`python -m gmm_perception.data.sh3d` downloads them")
def test_real_packages(tmp_path):
    (tmp_path / "debs").mkdir()
    for package in sh3d.PACKAGES:
        deb = sorted(REPO_DEBS.glob(f"{package}_*.deb"))[-1]
        (tmp_path / "debs" / deb.name).symlink_to(deb)
    points_path, meshes_path = build_sh3d(tmp_path, points_per_model=256, workers=2,
                                          progress=False)
    shapes, meshes = ShapeSet.load(points_path), MeshSet.load(meshes_path)
    assert len(shapes.class_names) >= 10 and len(shapes) >= 300
    assert min(train + test for _, train, test in shapes.class_table()) >= sh3d.MIN_MODELS
    assert all(test >= 2 for _, _, test in shapes.class_table())
    assert np.linalg.norm(shapes.points, axis=2).max() <= 1 + 2.0 ** -10
    assert max(len(f) for f in meshes.faces) <= sh3d.MAX_FACES
    # Frame checks on real furniture: backrests behind (-x), doors and windows thin along x.
    behind = []
    for i in np.flatnonzero(shapes.labels == shapes.class_names.index("chair")):
        x, z = shapes.points[i][:, 0], shapes.points[i][:, 2]
        behind.append(x[z > z.min() + 0.75 * np.ptp(z)].mean() < 0)  # top quarter: backrest
    assert np.mean(behind) > 0.8
    for name in ("door", "window"):
        for i in np.flatnonzero(shapes.labels == shapes.class_names.index(name)):
            extent = np.ptp(shapes.points[i], axis=0)
            assert extent[0] < 0.5 * extent[1:].max(), shapes.model_ids[i]
