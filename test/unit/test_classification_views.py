"""Training data of the classifiers from sensor views (train/classification_views.py)."""
import numpy as np
import pytest
import trimesh

from gmm_perception.data.mesh_ops import normalize_mesh, sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.train.classification_views import ViewMix, ViewSource, categorised

POINTS = 256


@pytest.fixture(scope="module")
def shapes_and_meshes():
    rng = np.random.default_rng(0)
    made = [procedural_mesh("chair", rng), procedural_mesh("chair", rng),
            procedural_mesh("chair", rng), trimesh.creation.box((1.0, 0.4, 0.8)),
            procedural_mesh("chair", rng), trimesh.creation.box((0.5, 0.5, 1.0)),
            trimesh.creation.icosphere(2), procedural_mesh("table", rng)]
    made = [normalize_mesh(m) for m in made]
    # classes: 0 chair, 1 box, 2 uncategorised
    labels = np.array([0, 0, 0, 1, 0, 1, 2, 1])
    split = np.array(["train", "train", "train", "train", "val", "val", "train", "test"])
    ids = np.array([f"m{i}" for i in range(len(made))])
    names = ["chair", "box", "uncategorised"]
    meshes = MeshSet([np.asarray(m.vertices, np.float32) for m in made],
                     [np.asarray(m.faces, np.int32) for m in made], labels, names, split, ids)
    points = np.stack([sample_surface(m, 512, np.random.default_rng(k))
                       for k, m in enumerate(made)])
    return ShapeSet(points, labels, names, split, ids), meshes


@pytest.fixture(scope="module")
def source(shapes_and_meshes, tmp_path_factory):
    shapes, meshes = shapes_and_meshes
    cache = tmp_path_factory.mktemp("views") / "views.npz"
    return ViewSource(shapes, meshes, ["box", "chair"], str(cache), views_per_shape=3, seed=0,
                      num_points=POINTS, mix=ViewMix(0.5, 0.3, (2, 3)), workers=1,
                      progress=False)


def test_labels_follow_the_given_class_order_and_uncategorised_shapes_are_dropped(
        shapes_and_meshes):
    shapes, _ = shapes_and_meshes
    kept, labels = categorised(shapes, ["box", "chair"])
    assert list(kept.model_ids) == ["m0", "m1", "m2", "m3", "m4", "m5", "m7"]
    np.testing.assert_array_equal(labels, [1, 1, 1, 0, 1, 0, 0])
    with pytest.raises(ValueError, match="not in the shape file"):
        categorised(shapes, ["box", "lamp"])


def test_only_train_and_val_shapes_are_scanned_and_splits_stay_apart(source):
    assert set(source.pool.model_ids) == {"m0", "m1", "m2", "m3", "m4", "m5"}
    train = set(source.pool.model_ids[source.train.rows])
    val = set(source.pool.model_ids[source.val.rows])
    assert train == {"m0", "m1", "m2", "m3"} and val == {"m4", "m5"}


def test_sampling_is_class_balanced_and_clouds_have_the_stage_point_count(source):
    clouds, labels = source.sample(np.random.default_rng(1), 400)
    assert clouds.shape == (400, POINTS, 3) and np.isfinite(clouds).all()
    # one box against three chairs in training, yet each class is drawn about half the time
    share = np.mean(labels == 0)
    assert 0.42 < share < 0.58
    # unit-shape frame: every cloud lies near the unit sphere of its shape
    assert np.abs(clouds).max() < 1.3


def test_validation_holds_every_val_shape_once_per_kind_and_is_fixed(source):
    first = source.validation(views=2, accumulated=1)
    again = source.validation(views=2, accumulated=1)
    assert {k: len(v[1]) for k, v in first.items()} == {"full": 2, "partial": 4,
                                                        "accumulated": 2}
    np.testing.assert_array_equal(first["full"][1], [1, 0])  # m4 chair, m5 box
    for kind in first:
        np.testing.assert_array_equal(first[kind][0], again[kind][0])


@pytest.fixture(scope="module")
def sized_sources(shapes_and_meshes, tmp_path_factory):
    """The same views at the classes' real sizes: exact (spread 0) and spread (0.2)."""
    shapes, meshes = shapes_and_meshes
    cache = tmp_path_factory.mktemp("sized") / "views.npz"
    return {spread: ViewSource(shapes, meshes, ["box", "chair"], str(cache), views_per_shape=3,
                               seed=0, num_points=POINTS, mix=ViewMix(0.0, 0.0, (2, 3)),
                               workers=1, progress=False, size_spread=spread)
            for spread in (0.0, 0.2)}


def test_clouds_at_real_sizes_take_their_class_size_in_metres(sized_sources, shapes_and_meshes):
    from gmm_perception.data.class_sizes import CLASS_SIZES, DEFAULT_SIZE

    heights = {"chair": CLASS_SIZES["chair"][1], "box": DEFAULT_SIZE[1]}  # both by height
    assert CLASS_SIZES["chair"][0] == DEFAULT_SIZE[0] == "height"
    exact = sized_sources[0.0]
    clouds, labels = exact.sample(np.random.default_rng(2), 60)  # full clouds only (mix 0, 0)
    for cloud, label in zip(clouds, labels):
        # a subset of the stored points, whose z extent sets the scale: at most the class height
        height = np.ptp(cloud[:, 2])
        assert 0.93 * heights[exact.class_names[label]] <= height <= \
            heights[exact.class_names[label]] + 1e-5
    spread = sized_sources[0.2]
    clouds, labels = spread.sample(np.random.default_rng(2), 200)
    ratios = np.array([np.ptp(c[:, 2]) / heights[spread.class_names[k]]
                       for c, k in zip(clouds, labels)])
    assert ratios.max() <= np.exp(0.4) + 1e-5 and ratios.min() >= 0.93 * np.exp(-0.4)
    assert 0.1 < np.std(np.log(ratios)) < 0.3  # log-normal, sigma 0.2, clipped
    # validation at real sizes too: fixed, and the val chair and box at their heights
    val = exact.validation(views=2, accumulated=1)
    np.testing.assert_array_equal(val["full"][0], exact.validation(views=2,
                                                                  accumulated=1)["full"][0])
    for cloud, label in zip(*val["full"]):
        assert np.ptp(cloud[:, 2]) == pytest.approx(heights[exact.class_names[label]], rel=0.07)


def _scene_objects(path, classes, seed):
    """A small scene-object file: per class two clouds, boxes of known extent standing on the
    floor away from the origin (world frame), one of a class the source does not train."""
    from gmm_perception.data.scene_objects import SceneObjects

    rng = np.random.default_rng(seed)
    clouds, names = [], []
    for k, name in enumerate(classes * 2):
        size = np.array([0.4, 0.6, 0.9]) * (1 + 0.1 * k)
        clouds.append((rng.uniform(0, 1, (100 + 10 * k, 3)) * size + [5.0, -2.0, 0.0]).astype(
            np.float32))
        names.append(name)
    counts = [len(c) for c in clouds]
    objects = SceneObjects(np.concatenate(clouds), np.concatenate([[0], np.cumsum(counts)]),
                           np.array(names), np.array([f"m{i}" for i in range(len(names))]),
                           np.zeros(len(names), np.int32), np.array(names),
                           np.zeros(len(names), np.int32), np.array(["lidar"] * len(names)),
                           np.full(len(names), 5.0, np.float32), {"impure": 0})
    return str(objects.save(path)), objects


def test_scene_objects_are_mixed_in_for_their_classes_and_validated_on(shapes_and_meshes,
                                                                       tmp_path):
    shapes, meshes = shapes_and_meshes
    train_path, train = _scene_objects(tmp_path / "train.npz", ["chair", "lamp"], 0)
    val_path, val = _scene_objects(tmp_path / "val.npz", ["chair", "box", "lamp"], 1)
    source = ViewSource(shapes, meshes, ["box", "chair"], str(tmp_path / "views.npz"),
                        views_per_shape=3, seed=0, num_points=POINTS,
                        mix=ViewMix(0.0, 0.0, (2, 3), scene=1.0), workers=1, progress=False,
                        size_spread=0.0, scene_objects=(train_path, val_path))
    clouds, labels = source.sample(np.random.default_rng(3), 80)
    chair = source.class_names.index("chair")
    scene_extents = {tuple(np.round(np.ptp(train.cloud(k), axis=0), 4))
                     for k in range(len(train)) if train.class_name[k] == "chair"}
    for cloud, label in zip(clouds, labels):
        if label == chair:  # every chair sample is a scene chair (share 1), box-centred
            assert tuple(np.round(np.ptp(cloud, axis=0), 4)) in scene_extents
            np.testing.assert_allclose((cloud.min(0) + cloud.max(0)) / 2, 0.0, atol=1e-5)
        else:  # boxes have no scene clouds: full clouds of the views' shapes
            assert np.ptp(cloud, axis=0).max() < 1.5
    assert {0, 1} == set(labels.tolist())
    validation = source.validation(views=1, accumulated=1)
    scene_clouds, scene_labels = validation["scene"]
    # The val file's chairs and boxes (its lamps are no class of the source), fixed.
    assert sorted(scene_labels.tolist()) == sorted([chair, chair, source.class_names.index("box"),
                                                    source.class_names.index("box")])
    np.testing.assert_array_equal(scene_clouds, source.validation(views=1,
                                                                  accumulated=1)["scene"][0])
    with pytest.raises(ValueError, match="metric sizes"):
        ViewSource(shapes, meshes, ["box", "chair"], str(tmp_path / "views.npz"),
                   views_per_shape=3, seed=0, num_points=POINTS, mix=ViewMix(), workers=1,
                   progress=False, scene_objects=(train_path, val_path))
