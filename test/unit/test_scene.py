"""Demo scenes: objects sized, upright on the floor, apart; scans whose ground truth is exact."""
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from gmm_perception.data.formats import load_cloud, load_mesh
from gmm_perception.data.procedural import procedural_meshes
from gmm_perception.data.sensors import DepthCamera, SpinningLidar
from gmm_perception.data.shape_set import MeshSet
from gmm_perception.data.class_sizes import CLASS_SIZES
from gmm_perception.evaluation.scene import FLOOR_LABEL, GAP, DrivePath, Orbit, \
    build_demo_scene, carry_in_and_out, reference_cloud, scan_frames, sensor_poses, \
    write_library
from gmm_perception.geometry.transforms import euler_to_matrix, make_transform, \
    transform_points

SH3D_MESHES = Path(__file__).resolve().parents[2] / "data" / "sh3d" / "sh3d_meshes.npz"
SMALL_LIDAR = SpinningLidar(channels=16, vertical_fov=(-15.0, 15.0), horizontal_resolution=1.0)


@pytest.fixture(scope="module")
def meshes() -> MeshSet:
    """Procedural chairs, tables, lamps...: one held-out model per class, built in ~0.1 s."""
    return procedural_meshes(5, seed=0)


def check_layout(scene) -> None:
    objects = scene.objects
    for obj in objects:
        world = np.asarray(obj.mesh_world().vertices)
        assert world[:, 2].min() == pytest.approx(0.0, abs=1e-9)  # resting on the floor
        np.testing.assert_allclose(obj.T_world_object[:3, 2], [0.0, 0.0, 1.0], atol=1e-12)
        centre = obj.T_world_object[:2, 3]
        assert np.linalg.norm(centre) + obj.radius <= scene.arena_radius + 1e-9
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            gap = np.linalg.norm(a.T_world_object[:2, 3] - b.T_world_object[:2, 3])
            assert gap >= a.radius + b.radius + GAP - 1e-9, (a.name, b.name)


@pytest.mark.parametrize("seed", range(4))
def test_objects_rest_upright_on_the_floor_without_overlap(meshes, seed):
    scene = build_demo_scene(meshes, np.random.default_rng(seed), num_objects=4)
    check_layout(scene)
    classes = [obj.class_name for obj in scene.objects]
    assert len(set(classes)) == 4
    test_ids = set(meshes.subset("test").model_ids)
    assert all(obj.model_id in test_ids for obj in scene.objects)
    assert [obj.name for obj in scene.objects] == [f"{c}_0" for c in classes]


def test_objects_get_their_class_size(meshes):
    scene = build_demo_scene(meshes, np.random.default_rng(0), num_objects=3,
                             classes=["chair", "table", "lamp"])
    for obj in scene.objects:
        mode, size = CLASS_SIZES[obj.class_name]
        extent = np.ptp(np.asarray(obj.mesh.vertices), axis=0)
        assert mode == "height"
        assert extent[2] == pytest.approx(size, rel=1e-9)
        # The model frame is the scaled normalised frame: same shape, scale times larger.
        source = meshes.vertices[meshes.index_of(obj.model_id)]
        np.testing.assert_allclose(obj.mesh.vertices, source * obj.scale, rtol=1e-6)


def test_same_seed_same_scene_and_bad_requests_fail(meshes):
    a = build_demo_scene(meshes, np.random.default_rng(5))
    b = build_demo_scene(meshes, np.random.default_rng(5))
    assert [o.model_id for o in a.objects] == [o.model_id for o in b.objects]
    for oa, ob in zip(a.objects, b.objects):
        np.testing.assert_array_equal(oa.T_world_object, ob.T_world_object)
    with pytest.raises(ValueError, match="distinct classes"):
        build_demo_scene(meshes, np.random.default_rng(0), num_objects=6)  # 5 default classes
    with pytest.raises(ValueError, match="sofa"):
        build_demo_scene(meshes, np.random.default_rng(0), classes=["chair", "sofa"])
    with pytest.raises(ValueError, match="outside the arena"):
        build_demo_scene(meshes, np.random.default_rng(0), orbit=Orbit(radius=2.0))


def test_sensor_poses_circle_the_scene_facing_its_centre():
    orbit = Orbit(radius=3.5, height=1.3, arc_deg=180.0, start_deg=90.0, target=(0.0, 0.0, 0.4))
    lidar_poses = sensor_poses(5, SMALL_LIDAR, orbit)
    camera_poses = sensor_poses(5, DepthCamera(), orbit)
    eyes = lidar_poses[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(eyes[:, :2], axis=1), 3.5)
    np.testing.assert_allclose(eyes[:, 2], 1.3)
    np.testing.assert_allclose(eyes[0, :2], [0.0, 3.5], atol=1e-12)  # arc ends included
    np.testing.assert_allclose(eyes[-1, :2], [0.0, -3.5], atol=1e-12)
    towards = np.array(orbit.target) - eyes
    towards /= np.linalg.norm(towards, axis=1, keepdims=True)
    np.testing.assert_allclose(lidar_poses[:, :3, 0], towards, atol=1e-12)  # LiDAR x forward
    np.testing.assert_allclose(camera_poses[:, :3, 2], towards, atol=1e-12)  # optical z forward
    full = Orbit(arc_deg=360.0).eyes(4)  # a full circle does not repeat its first pose
    np.testing.assert_allclose(full[:, :2], [[3.5, 0], [0, 3.5], [-3.5, 0], [0, -3.5]],
                               atol=1e-12)


def assert_ground_truth_exact(scene, frames, rng) -> None:
    """Scanned object points lie on the reference cloud posed by T_world_object, and a pose
    5 cm or 5 degrees off does not: the check can tell exact truth from nearly right."""
    world = {i: [] for i in range(len(scene.objects))}
    floor_z = []
    for frame in frames:
        points = transform_points(frame.T_world_sensor, frame.points)
        for i in world:
            world[i].append(points[frame.labels == i])
        floor_z.append(points[frame.labels == FLOOR_LABEL][:, 2])
    np.testing.assert_allclose(np.concatenate(floor_z), 0.0, atol=1e-4)
    off_pose = make_transform(euler_to_matrix(0.0, 0.0, np.radians(5.0)), [0.05, 0.0, 0.0])
    for i, obj in enumerate(scene.objects):
        scanned = np.concatenate(world[i])
        assert len(scanned) > 100, f"{obj.name} barely seen"
        reference = reference_cloud(obj, 40_000, rng)
        assert reference.dtype == np.float32
        distance, _ = cKDTree(transform_points(obj.T_world_object, reference)).query(scanned)
        assert np.median(distance) < 0.008 and np.quantile(distance, 0.95) < 0.02, obj.name
        wrong = obj.T_world_object @ off_pose
        distance_wrong, _ = cKDTree(transform_points(wrong, reference)).query(scanned)
        # The 95th percentile: a table top slid in its own plane keeps most points on it.
        assert np.quantile(distance_wrong, 0.95) > 0.03, obj.name


def test_reference_cloud_posed_by_ground_truth_lies_on_the_scan(meshes):
    rng = np.random.default_rng(3)
    scene = build_demo_scene(meshes, rng, num_objects=3, classes=["chair", "table", "lamp"])
    camera = DepthCamera()  # ideal: any residual would be a ground-truth error
    poses = sensor_poses(4, camera, scene.orbit)
    frames = list(scan_frames(scene, camera, poses))
    assert all(f.points.dtype == np.float32 for f in frames)
    np.testing.assert_array_equal(np.stack([f.T_world_sensor for f in frames]), poses)
    assert_ground_truth_exact(scene, frames, rng)


@pytest.mark.skipif(not SH3D_MESHES.is_file(), reason="SH3D mesh set not built")
def test_real_sh3d_scene_is_upright_and_exact():
    meshes = MeshSet.load(SH3D_MESHES)
    rng = np.random.default_rng(0)
    scene = build_demo_scene(meshes, rng)
    check_layout(scene)
    for obj in scene.objects:  # z is the models' up axis: class heights come out as set
        mode, size = CLASS_SIZES[obj.class_name]
        extent = np.ptp(np.asarray(obj.mesh.vertices), axis=0)
        assert (extent[2] if mode == "height" else extent[:2].max()) == pytest.approx(size)
    lidar = SpinningLidar(channels=32, vertical_fov=(-22.5, 22.5), horizontal_resolution=0.5)
    frames = list(scan_frames(scene, lidar, sensor_poses(3, lidar, scene.orbit)))
    assert_ground_truth_exact(scene, frames, rng)


def test_noisy_sensor_needs_an_rng(meshes):
    scene = build_demo_scene(meshes, np.random.default_rng(0), num_objects=2)
    noisy = SpinningLidar(range_noise_sigma=0.01)
    with pytest.raises(ValueError, match="rng"):
        next(scan_frames(scene, noisy, sensor_poses(1, noisy, scene.orbit)))


def test_library_plys_read_back_as_the_model_frame_meshes(meshes, tmp_path):
    scene = build_demo_scene(meshes, np.random.default_rng(1), num_objects=3)
    paths = write_library(scene, tmp_path / "library")
    assert sorted(p.name for p in paths) == sorted(f"{o.name}.ply" for o in scene.objects)
    for obj, path in zip(scene.objects, paths):
        mesh = load_mesh(path)
        np.testing.assert_allclose(mesh.vertices, obj.mesh.vertices, atol=1e-6)
        np.testing.assert_array_equal(mesh.faces, obj.mesh.faces)
        cloud = load_cloud(path, 500)
        assert cloud.shape == (500, 3)
        # Surface samples of the PLY lie on the object's own (model-frame) surface.
        dense = reference_cloud(obj, 40_000, np.random.default_rng(0))
        distance, _ = cKDTree(dense).query(cloud)
        assert np.quantile(distance, 0.95) < 0.02


def test_drive_path_is_level_faces_its_travel_and_changes_distance():
    path = DrivePath(semi_x=6.0, semi_y=4.0, height=1.2)
    lidar_poses = sensor_poses(21, SMALL_LIDAR, path)
    camera_poses = sensor_poses(21, DepthCamera(), path)
    eyes = lidar_poses[:, :3, 3]
    np.testing.assert_allclose(eyes[[0, 10, 20], :2], [[-6, 0], [0, -4], [6, 0]], atol=1e-12)
    np.testing.assert_allclose(eyes[:, 2], 1.2)
    distance = np.linalg.norm(eyes[:, :2], axis=1)
    assert distance.max() - distance.min() == pytest.approx(2.0)  # not an orbit
    assert path.closest_approach() == pytest.approx(4.0, abs=1e-3)
    travel = np.diff(eyes, axis=0)
    travel /= np.linalg.norm(travel, axis=1, keepdims=True)
    forward = lidar_poses[:, :3, 0]
    # Facing the direction of travel (the chord between frames, within the step's turn) ...
    assert np.all(np.sum(forward[:-1] * travel, axis=1) > 0.98)
    np.testing.assert_allclose(forward[10], [1.0, 0.0, 0.0], atol=1e-12)
    # ... level: the LiDAR's z is up, the camera's optical axis horizontal.
    np.testing.assert_allclose(lidar_poses[:, :3, 2], np.tile([0.0, 0.0, 1.0], (21, 1)),
                               atol=1e-12)
    np.testing.assert_allclose(camera_poses[:, 2, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(camera_poses[:, :3, 2], forward, atol=1e-12)


def test_a_drive_must_stay_outside_the_arena(meshes):
    with pytest.raises(ValueError, match="outside the arena"):
        build_demo_scene(meshes, np.random.default_rng(0), path=DrivePath(semi_y=2.0))
    scene = build_demo_scene(meshes, np.random.default_rng(0), num_objects=5, arena_radius=3.0,
                             path=DrivePath())
    check_layout(scene)
    assert scene.orbit is None and scene.trajectory == DrivePath()
    assert scene.describe()["path"]["kind"] == "drive" and "orbit" not in scene.describe()


def test_carried_objects_are_scanned_only_while_present_and_truth_stays_exact(meshes):
    rng = np.random.default_rng(4)
    scene = build_demo_scene(meshes, rng, num_objects=3, arena_radius=3.0, path=DrivePath(),
                             classes=["chair", "table", "lamp"])
    carry_in_and_out(scene, rng, 10)
    present = {obj.name: obj.present for obj in scene.objects}
    assert sorted(p for p in present.values() if p is not None) == [(0, 7), (3, 10)]
    lidar = SpinningLidar(channels=32, vertical_fov=(-25.0, 15.0), horizontal_resolution=0.5)
    poses = sensor_poses(10, lidar, scene.trajectory)
    frames = list(scan_frames(scene, lidar, poses))
    counts = np.array([frame.object_points(3) for frame in frames])
    for i, obj in enumerate(scene.objects):
        inside = np.array([obj.present_at(k) for k in range(10)])
        assert np.all(counts[~inside, i] == 0), obj.name  # carried out: no returns at all
        assert counts[inside, i].sum() > 100, obj.name
    described = {o["name"]: o.get("present_frames") for o in scene.describe()["objects"]}
    assert described == {n: (list(p) if p else None) for n, p in present.items()}
    assert_ground_truth_exact(scene, frames, rng)  # a moving sensor, objects coming and going
    with pytest.raises(ValueError, match="2 objects and 3 frames"):
        carry_in_and_out(scene, rng, 2)
