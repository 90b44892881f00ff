"""Sensor views of shapes at real sizes (data.views) and the batches sampled from them
(data.view_loader): exact poses, point counts, visibility, seeding, cache, pair ground truth."""

import numpy as np
import open3d as o3d
import pytest
import trimesh

from gmm_perception.data import views as views_module
from gmm_perception.data.mesh_ops import normalize_mesh, sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.data.sensors import DepthCamera, SpinningLidar
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.points import voxel_downsample
from gmm_perception.data.view_loader import ViewLoader
from gmm_perception.data.views import ViewPool, ViewSettings, accumulate, apply_sensor_noise, \
    build_view_pool, cached_view_pool, to_object

VIEWS = 3
SURFACE_TOL = 1e-4  # unit-shape units (so 1e-4 of the object's radius in metres)


def _mesh_set(meshes, ids, split) -> MeshSet:
    made = [normalize_mesh(m) for m in meshes]
    return MeshSet([np.asarray(m.vertices, np.float32) for m in made],
                   [np.asarray(m.faces, np.int32) for m in made], np.arange(len(made)),
                   [f"c{i}" for i in range(len(made))], split, ids)


@pytest.fixture(scope="module")
def meshes() -> MeshSet:
    rng = np.random.default_rng(3)
    made = [trimesh.creation.box((1.0, 1.0, 1.0)), procedural_mesh("chair", rng),
            trimesh.creation.icosphere(2), procedural_mesh("table", rng),
            trimesh.creation.cylinder(0.3, 1.5)]
    return _mesh_set(made, ["cube", "chair", "sphere", "table", "cylinder"],
                     ["train", "train", "test", "train", "test"])


@pytest.fixture(scope="module")
def shapes(meshes) -> ShapeSet:
    points = [sample_surface(meshes.mesh(k), 2048, np.random.default_rng(k))
              for k in range(len(meshes))]
    return ShapeSet(np.stack(points), meshes.labels, meshes.class_names, meshes.split,
                    meshes.model_ids)


@pytest.fixture(scope="module")
def pool(meshes) -> ViewPool:
    return build_view_pool(meshes, views_per_shape=VIEWS, seed=5, workers=1, progress=False)


def _distance_to_mesh(meshes: MeshSet, row: int, points: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(meshes.vertices[row].astype(np.float32)),
                        o3d.core.Tensor(meshes.faces[row].astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def test_every_view_lies_on_the_mesh_surface_through_its_pose(pool, meshes):
    assert pool.num_views == VIEWS * len(meshes)
    for v in range(pool.num_views):
        row = pool.view_shape[v]
        unit = pool.view_points(v, "unit")
        assert _distance_to_mesh(meshes, meshes.index_of(pool.model_ids[row]), unit).max() \
            < SURFACE_TOL
        T = pool.T_sensor_object[v]
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(T[3], [0, 0, 0, 1])
        # distance: sensor to the object's centre (the object frame's origin).
        assert np.linalg.norm(T[:3, 3]) == pytest.approx(pool.distance[v], rel=1e-9)
        # metric object frame = unit frame times the shape's real radius
        np.testing.assert_allclose(pool.view_points(v, "object"), unit * pool.scale[row],
                                   atol=1e-5)


def test_counts_sizes_and_sensors(pool):
    counts = pool.point_count(np.arange(pool.num_views))
    assert counts.min() >= 200 and counts.max() <= 20_000
    diameters = 2 * pool.scale
    assert diameters.min() >= 0.3 and diameters.max() <= 2.0
    assert set(pool.sensor_kind.tolist()) <= {0, 1}
    for v in range(pool.num_views):  # every return in front of its sensor, within its range gate
        pts = pool.view_points(v)
        sensor = ViewSettings().sensor(pool.sensor_kind[v])
        depth = pts[:, 2] if isinstance(sensor, DepthCamera) else np.linalg.norm(pts, axis=1)
        assert depth.min() >= sensor.min_range and depth.max() <= sensor.max_range


def test_a_cube_shows_only_faces_facing_the_sensor(pool, meshes):
    row = pool.row_of("cube")
    half = np.abs(meshes.vertices[meshes.index_of("cube")]).max()  # unit sphere: 1/sqrt(3)
    for v in pool.views_of(row):
        unit = pool.view_points(v, "unit").astype(np.float64)
        eye = -pool.T_sensor_object[v][:3, :3].T @ pool.T_sensor_object[v][:3, 3] / pool.scale[row]
        axis = np.argmax(np.abs(unit), axis=1)
        sign = np.sign(unit[np.arange(len(unit)), axis])
        faces = set(zip(axis.tolist(), sign.tolist()))
        assert 1 <= len(faces) <= 3
        for a, s in faces:  # each seen face's outward side holds the sensor
            assert s * eye[a] > half


def test_same_seed_same_views_and_shapes_are_independent(pool, meshes):
    again = build_view_pool(meshes, ["table", "chair"], VIEWS, seed=5, workers=1, progress=False)
    for name in ("table", "chair"):
        a, b = pool.row_of(name), again.row_of(name)
        assert pool.scale[a] == again.scale[b]
        for va, vb in zip(pool.views_of(a), again.views_of(b)):
            np.testing.assert_array_equal(pool.view_points(va), again.view_points(vb))
            np.testing.assert_array_equal(pool.T_sensor_object[va], again.T_sensor_object[vb])
        np.testing.assert_array_equal(pool.overlap_matrix(a), again.overlap_matrix(b))
    other = build_view_pool(meshes, ["table"], VIEWS, seed=6, workers=1, progress=False)
    assert not np.array_equal(other.T_sensor_object[0],
                              pool.T_sensor_object[pool.views_of(pool.row_of("table"))[0]])


def test_process_pool_gives_the_same_views(pool, meshes):
    parallel = build_view_pool(meshes, ["cube", "sphere"], VIEWS, seed=5, workers=2,
                               progress=False)
    for name in ("cube", "sphere"):
        a, b = pool.row_of(name), parallel.row_of(name)
        for va, vb in zip(pool.views_of(a), parallel.views_of(b)):
            np.testing.assert_array_equal(pool.view_points(va), parallel.view_points(vb))


def test_cache_round_trip_and_reuse(pool, meshes, tmp_path, monkeypatch):
    path = tmp_path / "views.npz"
    first = cached_view_pool(path, meshes, ["cube", "sphere"], VIEWS, seed=5, workers=1,
                             progress=False)
    loaded = ViewPool.load(path)
    for name in views_module._ARRAYS:
        np.testing.assert_array_equal(getattr(first, name), getattr(loaded, name))
    assert loaded.config["key"] == first.config["key"]
    calls = []
    real = views_module.shape_views
    monkeypatch.setattr(views_module, "shape_views",
                        lambda *args, **kw: calls.append(args[2]) or real(*args, **kw))
    cached_view_pool(path, meshes, ["cube", "sphere"], VIEWS, seed=5, workers=1, progress=False)
    assert calls == []  # same inputs: loaded, nothing scanned
    grown = cached_view_pool(path, meshes, ["cube", "sphere", "chair"], VIEWS, seed=5,
                             workers=1, progress=False)
    assert calls == ["chair"]  # a new shape: only it is scanned, the others are reused
    for name in ("cube", "sphere", "chair"):
        a, b = pool.row_of(name), grown.row_of(name)
        for va, vb in zip(pool.views_of(a), grown.views_of(b)):
            np.testing.assert_array_equal(pool.view_points(va), grown.view_points(vb))


def test_select_and_subset_keep_views_with_their_shapes(pool):
    test = pool.subset("test")
    assert set(test.model_ids) == {"sphere", "cylinder"}
    for row, name in enumerate(test.model_ids):
        src = pool.row_of(name)
        for va, vb in zip(pool.views_of(src), test.views_of(row)):
            np.testing.assert_array_equal(pool.view_points(va), test.view_points(vb))
        np.testing.assert_array_equal(pool.overlap_matrix(src), test.overlap_matrix(row))


def test_sensor_noise_moves_returns_along_their_rays():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (500, 3)).astype(np.float32)
    pts[:, 2] = np.abs(pts[:, 2]) + 1.0
    for sensor in (DepthCamera.realsense_d435(), SpinningLidar.ouster_os1_64()):
        noisy = apply_sensor_noise(pts, sensor, rng)
        cross = np.linalg.norm(np.cross(noisy.astype(np.float64), pts), axis=1)
        assert cross.max() < 1e-5 * np.linalg.norm(pts, axis=1).max() ** 2
        assert np.abs(noisy - pts).max() > 1e-4


def test_accumulation_voxelises_like_the_scene_pipeline():
    from gmm_perception.pipeline.configs import SegmentConfig
    from gmm_perception.pipeline.segment import Segmenter

    rng = np.random.default_rng(1)
    cloud = rng.uniform(0, 1, (4000, 3)).astype(np.float32)
    other = cloud + np.float32(0.03)
    merged = accumulate([cloud, other], 0.1)
    segmenter = Segmenter(SegmentConfig(accumulate_frames=2, accumulate_voxel=0.1))
    segmenter._accumulate(cloud)
    np.testing.assert_array_equal(merged, segmenter._accumulate(other))
    assert len(merged) <= 12 ** 3  # one point per occupied voxel
    assert len(accumulate([cloud[:10], cloud[10:20]], 0.0)) == 20


def test_a_fixed_grid_keeps_a_voxel_independent_of_distant_points():
    rng = np.random.default_rng(2)
    cloud = rng.uniform(0, 1, (2000, 3)).astype(np.float32)
    far = np.array([[7.03, -5.01, 3.3]], dtype=np.float32)  # shifts a min-corner grid
    alone = voxel_downsample(cloud, 0.1, fixed_grid=True)
    with_far = voxel_downsample(np.concatenate([cloud, far]), 0.1, fixed_grid=True)
    assert len(with_far) == len(alone) + 1
    np.testing.assert_allclose(np.sort(with_far[:, 0])[:-1], np.sort(alone[:, 0]), atol=1e-6)
    # Open3D's convention (grid at the cloud's min corner) moves with the distant point
    shifted = voxel_downsample(np.concatenate([cloud, far]), 0.1)
    assert len(shifted) != len(with_far) or not np.allclose(np.sort(shifted[:, 0]),
                                                            np.sort(with_far[:, 0]))
    # idempotent on its own grid: re-voxelising an accumulated union changes nothing
    np.testing.assert_allclose(voxel_downsample(alone, 0.1, fixed_grid=True), alone, atol=1e-6)


def _unpose(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    R, t = T[:, :3, :3], T[:, :3, 3]
    return np.einsum("bji,bnj->bni", R, points.astype(np.float64) - t[:, None])


def test_view_pairs_ground_truth_is_exact_without_noise(pool, meshes, shapes):
    loader = ViewLoader(pool, shapes, seed=0, num_points=256, noise=False, voxel=0.0)
    pairs = loader.registration_pairs(12, "view_to_view")
    assert pairs.source.shape == pairs.target.shape == (12, 256, 3)
    np.testing.assert_allclose(pairs.T_gt, pairs.pose_target @ np.linalg.inv(pairs.pose_source),
                               atol=1e-12)
    # T_gt . source, brought back into the shape's frame by the target's pose, is on the surface
    moved = np.einsum("bij,bnj->bni", pairs.T_gt[:, :3, :3], pairs.source) \
        + pairs.T_gt[:, None, :3, 3]
    for b, name in enumerate(pairs.model_ids):
        row = meshes.index_of(name)
        for cloud in (_unpose(pairs.pose_target[b:b + 1], moved[b:b + 1])[0],
                      _unpose(pairs.pose_target[b:b + 1], pairs.target[b:b + 1])[0]):
            assert _distance_to_mesh(meshes, row, cloud).max() < 2 * SURFACE_TOL
    assert np.all(np.isfinite(pairs.overlap)) and np.all(pairs.overlap <= 1.0)


def test_clean_full_pairs_match_exactly_and_scan_to_model_uses_the_stored_model(pool, shapes,
                                                                                meshes):
    loader = ViewLoader(pool, shapes, seed=1, num_points=128, noise=False, voxel=0.0)
    pairs = loader.registration_pairs(10, "clean")
    moved = np.einsum("bij,bnj->bni", pairs.T_gt[:, :3, :3], pairs.source) \
        + pairs.T_gt[:, None, :3, 3]
    np.testing.assert_allclose(moved, pairs.target, atol=1e-5)
    s2m = loader.registration_pairs(10, "scan_to_model")
    assert set(s2m.source_views.tolist()) <= {1, 2, 3} and (s2m.target_views == 0).all()
    target = _unpose(s2m.pose_target, s2m.target)
    source = _unpose(s2m.pose_source, s2m.source)
    for b, name in enumerate(s2m.model_ids):
        stored = shapes.points[list(shapes.model_ids).index(name)].astype(np.float64)
        nearest = np.linalg.norm(target[b][:, None] - stored[None], axis=2).min(axis=1)
        assert nearest.max() < 1e-5  # the target is the stored model's points, moved
        assert _distance_to_mesh(meshes, meshes.index_of(name), source[b]).max() < 2 * SURFACE_TOL


def test_noisy_pairs_have_noise_and_rotations_are_unrestricted(pool, shapes):
    loader = ViewLoader(pool, shapes, seed=2, num_points=128)
    pairs = loader.registration_pairs(64, "noisy")
    moved = np.einsum("bij,bnj->bni", pairs.T_gt[:, :3, :3], pairs.source) \
        + pairs.T_gt[:, None, :3, 3]
    residual = np.abs(moved - pairs.target)
    assert 1e-3 < residual.mean() < 0.05
    # Haar rotations: the angle of T_gt is often above 90 degrees, z axes not kept
    R = pairs.T_gt[:, :3, :3]
    angles = np.degrees(np.arccos(np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert (angles > 90).mean() > 0.3
    assert np.abs(R[:, 2, 2]).min() < 0.9
    for setting in ("view_to_view", "scan_to_model"):
        batch = loader.registration_pairs(4, setting)
        assert batch.source.dtype == np.float32 and batch.source.shape == (4, 128, 3)


def test_a_loader_over_a_split_never_yields_other_shapes(pool, shapes):
    loader = ViewLoader(pool, shapes, split="train", seed=3, num_points=64)
    train = set(np.asarray(shapes.model_ids)[shapes.split == "train"])
    seen = set()
    for setting in ("view_to_view", "scan_to_model", "noisy"):
        seen |= set(loader.registration_pairs(40, setting).model_ids)
    seen |= set(loader.completion_pairs(40, 64, 128).model_ids)
    assert seen == train
    with pytest.raises(ValueError):
        ViewLoader(pool.subset("test"), shapes, split="train")


def test_completion_pairs_turn_upright_shapes_about_z(pool, shapes, meshes):
    loader = ViewLoader(pool, shapes, seed=4, noise=False, voxel=0.0)
    batch = loader.completion_pairs(8, input_points=200, target_points=300)
    assert batch.partial.shape == (8, 200, 3) and batch.full.shape == (8, 300, 3)
    np.testing.assert_allclose(batch.rotation[:, 2, 2], 1.0, atol=1e-12)
    for b, name in enumerate(batch.model_ids):
        unit = batch.partial[b].astype(np.float64) @ batch.rotation[b]
        assert _distance_to_mesh(meshes, meshes.index_of(name), unit).max() < 2 * SURFACE_TOL
    so3 = loader.completion_pairs(8, 64, 64, rotate="so3")
    assert np.abs(so3.rotation[:, 2, 2]).min() < 0.99


def test_to_object_inverts_the_pose():
    rng = np.random.default_rng(0)
    from gmm_perception.geometry.transforms import make_transform, random_rotation

    T = make_transform(random_rotation(rng), rng.normal(size=3))
    x = rng.normal(size=(50, 3))
    in_sensor = x @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(to_object(in_sensor, T, 2.0), x / 2.0, atol=1e-6)


def test_shapes_whose_up_is_unknown_are_marked_and_turned_freely(meshes, shapes):
    flagged = MeshSet(meshes.vertices[:2], meshes.faces[:2], meshes.labels[:2],
                      meshes.class_names, ["train", "train"], meshes.model_ids[:2],
                      {"up_known": ["true", "false"]})
    pool = build_view_pool(flagged, views_per_shape=1, seed=0, workers=1, progress=False)
    np.testing.assert_array_equal(pool.upright, [True, False])
    batch = ViewLoader(pool, shapes, seed=0).completion_pairs(16, 32, 32)
    free = batch.model_ids == meshes.model_ids[1]
    assert free.any() and (~free).any()
    np.testing.assert_allclose(batch.rotation[~free, 2, 2], 1.0, atol=1e-12)
    assert np.abs(batch.rotation[free, 2, 2]).min() < 0.999
