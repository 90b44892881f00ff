"""Dataset loaders on tiny trees in the real layouts: ModelNet OFF folders (with the glued-header
quirk), PointNet's HDF5 release (real dataset names and dtypes), ShapeNetCore v1/v2 folders with
and without the official split CSV. Checks splits, labels, ids, up axes and normalisation."""

import json

import h5py
import numpy as np
import pytest

from gmm_perception.data.modelnet import (
    load_modelnet_folder,
    load_modelnet_h5,
    load_shapenet_folder,
)

CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]


def box_off(size, glued: bool = False) -> str:
    vertices = "\n".join(" ".join(f"{c:g}" for c in v) for v in CORNERS * size + 3.0)  # off-centre
    faces = "\n".join(f"4 {' '.join(map(str, q))}" for q in QUADS)
    return ("OFF8 6 0" if glued else "OFF\n8 6 0") + f"\n{vertices}\n{faces}\n"


def box_obj(size) -> str:
    return "".join(f"v {x:g} {y:g} {z:g}\n" for x, y, z in CORNERS * size) + \
        "".join(f"f {' '.join(str(i + 1) for i in q)}\n" for q in QUADS)


def extents(points: np.ndarray) -> np.ndarray:
    return points.max(axis=0) - points.min(axis=0)


def assert_normalised(points: np.ndarray) -> None:
    """ShapeSet convention on samples: inside the unit sphere, bounding box about centred."""
    norms = np.linalg.norm(points, axis=2)
    assert norms.max() <= 1.0 + 1e-5
    centres = 0.5 * (points.min(axis=1) + points.max(axis=1))
    assert np.abs(centres).max() < 0.05


@pytest.fixture
def modelnet_tree(tmp_path):
    """chair: tall boxes (z up), table: flat boxes; one file with ModelNet's glued header."""
    root = tmp_path / "ModelNet2"
    for name, size in (("chair", (0.5, 0.5, 2.0)), ("table", (2.0, 1.0, 0.5))):
        for split, count in (("train", 2), ("test", 1)):
            folder = root / name / split
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{name}_{split}{i}.off").write_text(box_off(size, glued=i == 1))
    (root / "README.txt").write_text("not a class")
    return root


def test_modelnet_folder_splits_labels_ids(modelnet_tree):
    shapes = load_modelnet_folder(modelnet_tree, num_points=64, seed=0, progress=False)
    assert shapes.points.shape == (6, 64, 3)
    assert shapes.class_names == ["chair", "table"]
    assert shapes.class_table() == [("chair", 2, 1), ("table", 2, 1)]
    assert set(shapes.model_ids) == {f"{c}/{c}_{s}" for c in ("chair", "table")
                                     for s in ("train0", "train1", "test0")}
    assert_normalised(shapes.points)
    for points, label in zip(shapes.points, shapes.labels):  # z up kept: chairs are tall
        size = extents(points)
        assert (size[2] > 2 * size[0]) == (shapes.class_names[label] == "chair")
    assert shapes.meta["skipped"] == {}


def test_modelnet_folder_seeding_is_per_model(modelnet_tree):
    full = load_modelnet_folder(modelnet_tree, num_points=32, seed=3, progress=False)
    chairs = load_modelnet_folder(modelnet_tree, num_points=32, seed=3, classes=["chair"],
                                  progress=False)
    assert chairs.class_names == ["chair"] and len(chairs) == 3
    for model_id, points in zip(chairs.model_ids, chairs.points):
        np.testing.assert_array_equal(points, full.points[list(full.model_ids).index(model_id)])
    other = load_modelnet_folder(modelnet_tree, num_points=32, seed=4, progress=False)
    assert not np.array_equal(other.points, full.points)


def test_modelnet_folder_up_axis_y_is_rotated_to_z(modelnet_tree):
    shapes = load_modelnet_folder(modelnet_tree, num_points=64, classes=["table"], up_axis="y",
                                  progress=False)
    size = extents(shapes.points[0])
    assert size[2] > size[1]  # the table's 1.0 (y) side now stands along z, its 0.5 (z) along y


def test_modelnet_folder_skips_broken_files_and_rejects_unknown_classes(modelnet_tree):
    (modelnet_tree / "chair" / "test" / "chair_broken.off").write_text("OFF\n8 6 0\n1 2 3\n")
    shapes = load_modelnet_folder(modelnet_tree, num_points=16, progress=False)
    assert len(shapes) == 6 and "chair/chair_broken" not in shapes.model_ids
    assert "truncated" in shapes.meta["skipped"]["chair/chair_broken"]
    with pytest.raises(ValueError, match="no class"):
        load_modelnet_folder(modelnet_tree, classes=["sofa"], progress=False)
    with pytest.raises(FileNotFoundError):
        load_modelnet_folder(modelnet_tree / "chair" / "train", progress=False)
    with pytest.raises(ValueError, match="up_axis"):
        load_modelnet_folder(modelnet_tree, up_axis="x", progress=False)


# ---------------------------------------------------------------------------------- HDF5

def y_up_rods(count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 2048, 3) points of thin rods along y (the release's up axis), centroid-centred."""
    rods = rng.uniform(-1, 1, (count, 2048, 3)) * [0.1, 0.9, 0.2]
    return (rods - rods.mean(axis=1, keepdims=True)).astype(np.float32)


def write_h5(path, data: np.ndarray, labels: list[int]) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data.astype(np.float32))
        f.create_dataset("label", data=np.array(labels, dtype=np.uint8)[:, None])
        f.create_dataset("faceId", data=np.zeros(data.shape[:2], dtype=np.int32))  # ignored


@pytest.fixture
def h5_release(tmp_path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    rng = np.random.default_rng(0)
    write_h5(root / "ply_data_train0.h5", y_up_rods(3, rng), [0, 2, 1])
    write_h5(root / "ply_data_test0.h5", y_up_rods(2, rng), [2, 2])
    return root


def test_h5_release_split_labels_ids_and_axes(h5_release):
    shapes = load_modelnet_h5(h5_release)
    assert shapes.points.shape == (5, 2048, 3) and shapes.points.dtype == np.float32
    assert shapes.class_names == ["airplane", "bathtub", "bed"]
    # sorted file order: test0 before train0
    assert list(shapes.split) == ["test"] * 2 + ["train"] * 3
    assert list(shapes.labels) == [2, 2, 0, 2, 1]
    assert list(shapes.model_ids)[:3] == ["ply_data_test0/0", "ply_data_test0/1",
                                          "ply_data_train0/0"]
    for points in shapes.points:  # y-up rods now stand along z
        size = extents(points)
        assert size[2] > 3 * max(size[0], size[1])
        np.testing.assert_allclose(0.5 * (points.min(axis=0) + points.max(axis=0)), 0, atol=1e-6)
        assert np.linalg.norm(points, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_h5_subset_is_seeded_and_drawn_from_the_shape(h5_release):
    full = load_modelnet_h5([h5_release / "ply_data_train0.h5"])
    subset = load_modelnet_h5([h5_release / "ply_data_train0.h5"], num_points=256, seed=1)
    assert subset.points.shape == (3, 256, 3) and set(subset.split) == {"train"}
    for small, large in zip(subset.points, full.points):
        assert len({tuple(p) for p in small} & {tuple(p) for p in large}) == 256
    again = load_modelnet_h5(h5_release / "ply_data_train0.h5", num_points=256, seed=1)
    np.testing.assert_array_equal(subset.points, again.points)
    other = load_modelnet_h5(h5_release / "ply_data_train0.h5", num_points=256, seed=2)
    assert not np.array_equal(subset.points, other.points)


def test_h5_model_ids_from_id2file_json(h5_release):
    (h5_release / "ply_data_train_0_id2file.json").write_text(json.dumps(
        ["airplane/airplane_0007.ply", "bed/bed_0001.ply", "bathtub/bathtub_0100.ply"]))
    shapes = load_modelnet_h5(h5_release)
    assert list(shapes.model_ids)[2:] == ["airplane/airplane_0007", "bed/bed_0001",
                                          "bathtub/bathtub_0100"]


def test_h5_defects(h5_release, tmp_path):
    write_h5(h5_release / "ply_data_val0.h5", y_up_rods(1, np.random.default_rng(1)), [0])
    with pytest.raises(ValueError, match="neither 'train' nor 'test'"):
        load_modelnet_h5(h5_release / "ply_data_val0.h5")
    write_h5(h5_release / "ply_data_test9.h5", y_up_rods(1, np.random.default_rng(1)), [3])
    with pytest.raises(ValueError, match="labels outside the 3 names"):
        load_modelnet_h5(h5_release / "ply_data_test9.h5")
    lone = tmp_path / "lone"
    lone.mkdir()
    write_h5(lone / "ply_data_train0.h5", y_up_rods(1, np.random.default_rng(1)), [0])
    with pytest.raises(FileNotFoundError, match="shape_names.txt"):
        load_modelnet_h5(lone)


# ------------------------------------------------------------------------------- ShapeNet

@pytest.fixture
def shapenet_tree(tmp_path):
    """An airplane synset in the v2 layout (5 models), a named class in the v1 layout (2)."""
    root = tmp_path / "ShapeNetCore"
    for i in range(5):
        folder = root / "02691156" / f"plane{i}" / "models"
        folder.mkdir(parents=True)
        (folder / "model_normalized.obj").write_text(box_obj((0.2, 1.0, 0.4)))  # tall along y
    for i in range(2):
        folder = root / "mything" / f"thing{i}"
        folder.mkdir(parents=True)
        (folder / "model.obj").write_text(box_obj((1.0, 1.0, 1.0)))
    (root / "02691156" / "no_mesh_here").mkdir()
    return root


def test_shapenet_layouts_names_and_seeded_split(shapenet_tree):
    shapes = load_shapenet_folder(shapenet_tree, num_points=64, seed=0, progress=False)
    assert shapes.class_names == ["airplane", "mything"]
    assert shapes.class_table() == [("airplane", 4, 1), ("mything", 2, 0)]
    assert "02691156/plane0" in shapes.model_ids and "mything/thing1" in shapes.model_ids
    assert_normalised(shapes.points)
    plane = shapes.points[list(shapes.model_ids).index("02691156/plane0")]
    size = extents(plane)
    assert size[2] > 2 * max(size[0], size[1])  # y up: the tall side now stands along z
    again = load_shapenet_folder(shapenet_tree, num_points=64, seed=0, progress=False)
    np.testing.assert_array_equal(again.split, shapes.split)
    np.testing.assert_array_equal(again.points, shapes.points)
    tests = {tuple(load_shapenet_folder(shapenet_tree, num_points=8, seed=s, classes=["airplane"],
                                        progress=False).split) for s in range(8)}
    assert len(tests) > 1  # the held-out model depends on the seed


def test_shapenet_split_file(shapenet_tree, tmp_path):
    split_file = tmp_path / "all.csv"
    # the synset's leading zero lost, as in some copies; 'val' counts as train; plane4 unlisted
    split_file.write_text("id,synsetId,subSynsetId,modelId,split\n"
                          "1,2691156,2691156,plane0,train\n2,2691156,2691156,plane1,val\n"
                          "3,2691156,2691156,plane2,test\n4,2691156,2691156,plane3,test\n"
                          "5,mything,mything,thing0,test\n6,mything,mything,thing1,train\n")
    shapes = load_shapenet_folder(shapenet_tree, num_points=16, split_file=split_file,
                                  progress=False)
    splits = dict(zip(shapes.model_ids, shapes.split))
    assert splits == {"02691156/plane0": "train", "02691156/plane1": "train",
                      "02691156/plane2": "test", "02691156/plane3": "test",
                      "mything/thing0": "test", "mything/thing1": "train"}
    assert shapes.meta["skipped"] == {"02691156/plane4": "not in the split file"}
    only = load_shapenet_folder(shapenet_tree, num_points=16, split_file=split_file,
                                classes=["mything"], progress=False)
    assert only.class_names == ["mything"] and len(only) == 2


def test_shapenet_defects(shapenet_tree, tmp_path):
    bad_split = tmp_path / "bad.csv"
    bad_split.write_text("id,synsetId,subSynsetId,modelId,split\n1,2691156,2691156,plane0,dev\n")
    with pytest.raises(ValueError, match="split 'dev'"):
        load_shapenet_folder(shapenet_tree, split_file=bad_split, progress=False)
    with pytest.raises(ValueError, match="no class"):
        load_shapenet_folder(shapenet_tree, classes=["car"], progress=False)
    with pytest.raises(FileNotFoundError):
        load_shapenet_folder(tmp_path / "nowhere", progress=False)
