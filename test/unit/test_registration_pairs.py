"""DeepGMR-protocol pairs: ground truth, noise statistics, rotation law, splits, caching."""

import numpy as np
import pytest
import trimesh
from scipy import stats
from scipy.spatial import cKDTree

from gmm_perception.data import registration_pairs as rp
from gmm_perception.data.mesh_ops import normalize_mesh
from gmm_perception.data.registration_pairs import PartialViews, RegistrationPairs, cached_pairs, \
    make_pairs, split_categories
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.transforms import rotation_angle

N = 256  # points per cloud in most tests: the protocol's 1024 only costs time here


def apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Batched T . points in float64, written out independently of the module under test."""
    return np.einsum("bij,bnj->bni", T[:, :3, :3], points.astype(np.float64)) + T[:, None, :3, 3]


@pytest.fixture(scope="module")
def shapes() -> ShapeSet:
    """10 classes x 4 ellipsoid-surface shapes of 300 points, alternating train/test."""
    rng = np.random.default_rng(0)
    m, p = 40, 300
    directions = rng.standard_normal((m, p, 3))
    directions /= np.linalg.norm(directions, axis=2, keepdims=True)
    points = directions * rng.uniform(0.3, 1.0, (m, 1, 3))
    return ShapeSet(points, np.arange(m) % 10, [f"class{i}" for i in range(10)],
                    np.where(np.arange(m) % 2, "test", "train"),
                    [f"shape{i:02d}" for i in range(m)])


@pytest.fixture(scope="module")
def meshes() -> MeshSet:
    made = [trimesh.creation.box((1.0, 0.6, 0.4)), trimesh.creation.icosphere(2),
            trimesh.creation.cylinder(0.3, 1.5), trimesh.creation.capsule(1.0, 0.3)]
    made = [normalize_mesh(mesh) for mesh in made]
    return MeshSet([np.asarray(mesh.vertices, np.float32) for mesh in made],
                   [np.asarray(mesh.faces, np.int32) for mesh in made], [0, 1, 2, 3],
                   ["box", "sphere", "cylinder", "capsule"], ["test"] * 4,
                   ["box0", "sphere0", "cylinder0", "capsule0"])


def test_clean_target_is_the_transformed_source(shapes):
    pairs = make_pairs(shapes, "clean", count=20, seed=1, num_points=N)
    assert pairs.source.shape == pairs.target.shape == (20, N, 3)
    np.testing.assert_allclose(pairs.target, apply(pairs.T_gt, pairs.source), atol=2e-6)
    R = pairs.T_gt[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    np.testing.assert_array_equal(pairs.T_gt[:, 3], np.broadcast_to([0, 0, 0, 1], (20, 4)))
    assert np.isnan(pairs.overlap).all()


def test_clean_clouds_are_the_shapes_points_rigidly_moved(shapes):
    # With P == num_points every point is used, so the cloud's centroid is the moved shape centroid
    # and the (distinct) distances to it identify the correspondences; Kabsch must then fit exactly.
    pairs = make_pairs(shapes, "clean", count=5, seed=2, num_points=shapes.points.shape[1])
    for b in range(5):
        k = int(np.flatnonzero(shapes.model_ids == pairs.model_ids[b])[0])
        assert pairs.labels[b] == shapes.labels[k]
        x = shapes.points[k].astype(np.float64)
        for cloud in (pairs.source[b], pairs.target[b]):
            y = cloud.astype(np.float64)
            xc, yc = x - x.mean(0), y - y.mean(0)
            y_sorted = yc[np.argsort(np.linalg.norm(yc, axis=1))]
            x_sorted = xc[np.argsort(np.linalg.norm(xc, axis=1))]
            u, _, vt = np.linalg.svd(x_sorted.T @ y_sorted)
            R = (u @ vt).T
            assert np.linalg.det(R) == pytest.approx(1.0)
            assert np.abs(x_sorted @ R.T - y_sorted).max() < 1e-5


def test_noisy_residual_statistics(shapes):
    pairs = make_pairs(shapes, "noisy", count=40, seed=3, num_points=N)
    residual = pairs.target - apply(pairs.T_gt, pairs.source)
    # target jitter minus the rotated source jitter: two independent N(0, 0.01^2 I) per point.
    per_axis_std = residual.reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(per_axis_std, 0.01 * np.sqrt(2), rtol=0.03)
    norms = np.linalg.norm(residual, axis=2)
    assert norms.max() <= 2 * 0.05 * np.sqrt(3)  # the clip bounds each jitter to +-0.05 per axis
    assert norms.max() < 0.1
    assert abs(residual.mean()) < 5e-4


def test_rotations_are_uniform_on_so3(shapes):
    pairs = make_pairs(shapes, "clean", count=2000, seed=4, num_points=16, progress=False)
    angles = rotation_angle(pairs.T_gt[:, :3, :3])
    # Haar measure: angle density (1 - cos t) / pi on [0, pi], mean pi/2 + 2/pi, std 0.646.
    assert angles.mean() == pytest.approx(np.pi / 2 + 2 / np.pi, abs=3.5 * 0.646 / np.sqrt(2000))
    assert stats.kstest(angles, lambda t: (t - np.sin(t)) / np.pi).pvalue > 0.01
    # Each cloud's translation is uniform in [-0.5, 0.5]^3, so |t_gt| <= |t_t| + |t_s| <= sqrt(3).
    assert np.linalg.norm(pairs.T_gt[:, :3, 3], axis=1).max() <= np.sqrt(3)


def test_same_seed_same_arrays_and_prefix_stability(shapes):
    a = make_pairs(shapes, "noisy", count=12, seed=5, num_points=N)
    b = make_pairs(shapes, "noisy", count=12, seed=5, num_points=N)
    for name in ("source", "target", "T_gt", "model_ids", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = make_pairs(shapes, "noisy", count=12, seed=6, num_points=N)
    assert not np.array_equal(a.source, c.source)
    # Every pair has its own child seed: the first pairs do not depend on the count.
    short = make_pairs(shapes, "noisy", count=5, seed=5, num_points=N)
    np.testing.assert_array_equal(short.source, a.source[:5])
    np.testing.assert_array_equal(short.T_gt, a.T_gt[:5])


def test_shapes_are_used_equally_often(shapes):
    pairs = make_pairs(shapes, "clean", count=80, seed=7, num_points=N)
    _, counts = np.unique(pairs.model_ids, return_counts=True)
    assert len(counts) == len(shapes) and set(counts) == {2}
    assert len(make_pairs(shapes, "clean", seed=7, num_points=N)) == len(shapes)


def test_unseen_uses_categories_disjoint_from_training(shapes):
    train, test = split_categories(shapes.class_names, seed=0)
    assert len(train) == len(test) == 5
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(shapes.class_names)
    assert split_categories(shapes.class_names, seed=0) == (train, test)
    assert split_categories(shapes.class_names, seed=1) != (train, test)
    unseen = make_pairs(shapes, "unseen", count=30, seed=8, num_points=N)
    seen_names = {shapes.class_names[i] for i in unseen.labels}
    assert seen_names <= set(test) and len(seen_names) == 5
    training = make_pairs(shapes, "noisy", count=30, seed=8, num_points=N, categories=train)
    assert {shapes.class_names[i] for i in training.labels} <= set(train)
    # The unseen setting is noisy, not clean.
    residual = unseen.target - apply(unseen.T_gt, unseen.source)
    assert residual.std() == pytest.approx(0.01 * np.sqrt(2), rel=0.05)
    with pytest.raises(ValueError, match="unknown categories"):
        make_pairs(shapes, "noisy", count=2, categories=["nope"], num_points=N)


def test_too_few_points_and_bad_settings_are_rejected(shapes, meshes):
    with pytest.raises(ValueError, match="fewer than"):
        make_pairs(shapes, "clean", count=2, num_points=1024)
    with pytest.raises(ValueError, match="setting"):
        make_pairs(shapes, "dirty", count=2, num_points=N)
    with pytest.raises(ValueError, match="MeshSet"):
        make_pairs(shapes, "partial", count=2, num_points=N)


def test_partial_views_overlap_and_ground_truth(meshes):
    pairs = make_pairs(meshes, "partial", count=8, seed=9, num_points=1024)
    assert pairs.source.shape == (8, 1024, 3)
    assert np.all((pairs.overlap >= 0) & (pairs.overlap <= 1))
    assert np.all(pairs.overlap < 1) and pairs.overlap.max() > 0.2
    radius = PartialViews().overlap_radius
    for b in range(8):
        aligned = apply(pairs.T_gt[b:b + 1], pairs.source[b:b + 1])[0]
        d_aligned = cKDTree(pairs.target[b]).query(aligned)[0]
        d_raw = cKDTree(pairs.target[b]).query(pairs.source[b])[0]
        # Recompute the overlap independently of the module: fraction within the radius, both ways.
        d_back = cKDTree(aligned).query(pairs.target[b])[0]
        expected = 0.5 * (np.mean(d_aligned <= radius) + np.mean(d_back <= radius))
        assert pairs.overlap[b] == pytest.approx(expected, abs=1e-3)
        if pairs.overlap[b] > 0.3:  # where the views share surface, T_gt brings it together
            assert np.mean(d_raw <= radius) < 0.5 * np.mean(d_aligned <= radius)


def test_partial_minimum_overlap(meshes):
    views = PartialViews(min_overlap=0.5)
    pairs = make_pairs(meshes, "partial", count=8, seed=9, num_points=512, views=views)
    assert pairs.overlap.min() >= 0.5
    assert pairs.config["views"]["min_overlap"] == 0.5


def test_partial_clouds_come_from_different_views(meshes):
    pairs = make_pairs(meshes, "partial", count=4, seed=10, num_points=512)
    for b in range(4):
        aligned = apply(pairs.T_gt[b:b + 1], pairs.source[b:b + 1])[0]
        assert not np.allclose(aligned, pairs.target[b], atol=0.05)


def test_meshes_work_for_full_shape_settings(meshes):
    pairs = make_pairs(meshes, "clean", count=4, seed=11, num_points=N)
    np.testing.assert_allclose(pairs.target, apply(pairs.T_gt, pairs.source), atol=2e-6)


def test_save_load_round_trip(meshes, tmp_path):
    pairs = make_pairs(meshes, "partial", count=3, seed=12, num_points=256)
    loaded = RegistrationPairs.load(pairs.save(tmp_path / "pairs.npz"))
    for name in ("source", "target", "T_gt", "model_ids", "labels", "overlap"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(pairs, name))
    assert (loaded.setting, loaded.seed, loaded.class_names) == ("partial", 12, meshes.class_names)
    assert loaded.config == pairs.config and loaded.config_hash == pairs.config_hash


def test_cache_is_reused_and_invalidated(shapes, tmp_path, monkeypatch):
    path = tmp_path / "cache" / "noisy.npz"
    first = cached_pairs(path, shapes, "noisy", count=6, seed=13, num_points=N)
    assert path.is_file()

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(rp, "make_pairs", must_not_run)
        again = cached_pairs(path, shapes, "noisy", count=6, seed=13, num_points=N)
    np.testing.assert_array_equal(again.source, first.source)

    other_seed = cached_pairs(path, shapes, "noisy", count=6, seed=14, num_points=N)
    assert not np.array_equal(other_seed.source, first.source)
    assert RegistrationPairs.load(path).seed == 14
    # Different input data with the same arguments also invalidates the cache.
    moved = ShapeSet(shapes.points + 1.0, shapes.labels, shapes.class_names, shapes.split,
                     shapes.model_ids)
    other_data = cached_pairs(path, moved, "noisy", count=6, seed=14, num_points=N)
    assert not np.array_equal(other_data.source, other_seed.source)
    # A file that is not a pair set is regenerated over.
    path.write_bytes(b"not an npz")
    assert len(cached_pairs(path, shapes, "clean", count=2, seed=1, num_points=N)) == 2


def test_scan_to_model_pairs_register_a_partial_scan_onto_the_full_model(meshes):
    pairs = make_pairs(meshes, "scan_to_model", count=8, seed=3, num_points=512)
    assert pairs.source.shape == pairs.target.shape == (8, 512, 3)
    for b in range(8):
        aligned = apply(pairs.T_gt[b:b + 1], pairs.source[b:b + 1])[0]
        # T_gt puts the scan onto the model: near the model's samples (spaced ~0.1 at 512
        # points, plus scan noise and the jitter), unlike the scan where it was posed.
        near = np.median(cKDTree(pairs.target[b]).query(aligned)[0])
        raw = np.median(cKDTree(pairs.target[b]).query(pairs.source[b])[0])
        assert near < 0.1
        if pairs.model_ids[b] != "sphere0":  # a sphere matches itself in any orientation
            assert raw > 1.5 * near
        # ...but the scan misses part of the model: the far side of every view is hidden.
        covered = cKDTree(aligned).query(pairs.target[b])[0] < 0.1
        assert covered.mean() < 0.95
    with pytest.raises(ValueError, match="scans meshes"):
        make_pairs(shapes_from(meshes), "scan_to_model", count=2, num_points=64)


def shapes_from(meshes: MeshSet) -> ShapeSet:
    points = np.stack([meshes.mesh(i).sample(300) for i in range(len(meshes))])
    return ShapeSet(points, meshes.labels, meshes.class_names, meshes.split, meshes.model_ids)
