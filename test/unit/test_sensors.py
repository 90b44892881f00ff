"""Simulated sensors checked against closed-form geometry of planes, boxes and spheres."""

import numpy as np
import open3d as o3d
import pytest
import trimesh

from gmm_perception.data.sensors import DepthCamera, SpinningLidar, raycasting_scene, scan, \
    scan_object
from gmm_perception.geometry.transforms import euler_to_matrix, invert_transform, make_transform, \
    random_rotation, transform_points

IDEAL_CAMERA = DepthCamera()  # 160 x 120, fx = fy = 100, noise-free
IDEAL_LIDAR = SpinningLidar(channels=16, vertical_fov=(-15.0, 15.0), horizontal_resolution=0.5)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def rectangle(half_x: float, half_y: float, z: float) -> trimesh.Trimesh:
    """A two-triangle rectangle in the plane z = const."""
    vertices = [[-half_x, -half_y, z], [half_x, -half_y, z], [half_x, half_y, z],
                [-half_x, half_y, z]]
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False)


def room() -> trimesh.Trimesh:
    """A 20 x 20 x 10 m box around the origin (rays from inside hit its back faces)."""
    return trimesh.creation.box((20.0, 20.0, 10.0))


def distance_to_hit_triangles(mesh: trimesh.Trimesh, points_world: np.ndarray,
                              hit_triangle: np.ndarray) -> np.ndarray:
    triangles = np.asarray(mesh.triangles)[hit_triangle]
    closest = trimesh.triangles.closest_point(triangles, points_world.astype(np.float64))
    return np.linalg.norm(closest - points_world, axis=1)


def test_camera_sees_plane_at_its_depth_over_the_intrinsic_footprint():
    d, half_x, half_y = 2.0, 0.5, 0.3
    s = scan(rectangle(half_x, half_y, d), IDEAL_CAMERA, np.eye(4))
    # Pixel u sees x = (u - cx) d / fx: |u - 79.5| <= 25 gives 50 columns, |v - 59.5| <= 15 30 rows.
    assert len(s) == 50 * 30
    np.testing.assert_allclose(s.points_sensor[:, 2], d, atol=1e-5)
    cols = np.flatnonzero(np.abs(np.arange(IDEAL_CAMERA.width) - IDEAL_CAMERA.cx) * d
                          / IDEAL_CAMERA.fx <= half_x)
    rows = np.flatnonzero(np.abs(np.arange(IDEAL_CAMERA.height) - IDEAL_CAMERA.cy) * d
                          / IDEAL_CAMERA.fy <= half_y)
    expected = {(u, v) for u in cols for v in rows}
    assert {tuple(p) for p in s.pixel.tolist()} == expected
    # Back-projection: the point of pixel (u, v) is d * ((u - cx) / fx, (v - cy) / fy, 1).
    np.testing.assert_allclose(s.points_sensor[:, 0], d * (s.pixel[:, 0] - 79.5) / 100.0, atol=1e-5)
    np.testing.assert_allclose(s.points_sensor[:, 1], d * (s.pixel[:, 1] - 59.5) / 100.0, atol=1e-5)


def test_camera_range_gate_and_quantisation():
    near = scan(rectangle(5, 5, 0.05), IDEAL_CAMERA, np.eye(4))
    assert len(near) == 0  # closer than min_range 0.1
    camera = DepthCamera(depth_step=0.01)
    s = scan(rectangle(5, 5, 1.234), camera, np.eye(4))
    np.testing.assert_allclose(s.points_sensor[:, 2], 1.23, atol=1e-6)


def test_lidar_in_a_room_sees_every_channel_at_its_elevation():
    s = scan(room(), IDEAL_LIDAR, np.eye(4))
    assert len(s) == IDEAL_LIDAR.channels * IDEAL_LIDAR.columns == 16 * 720
    np.testing.assert_array_equal(np.bincount(s.ring), np.full(16, 720))
    p = s.points_sensor.astype(np.float64)
    elevation = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    np.testing.assert_allclose(elevation, -15.0 + 2.0 * s.ring, atol=1e-3)


def test_lidar_pose_is_applied():
    T = make_transform(euler_to_matrix(0.1, -0.2, 0.7), [1.0, -2.0, 0.5])
    mesh = room()
    s = scan(mesh, IDEAL_LIDAR, T)
    assert len(s) == 16 * 720
    distance = distance_to_hit_triangles(mesh, s.points_world(), s.hit_triangle)
    assert distance.max() < 1e-4


@pytest.mark.parametrize("sensor", [IDEAL_CAMERA, IDEAL_LIDAR], ids=["camera", "lidar"])
def test_noise_free_points_lie_on_the_hit_triangles(sensor, rng):
    mesh = trimesh.creation.annulus(0.3, 1.0, 0.8)
    for _ in range(3):
        eye = rng.uniform(-3, 3, 3)
        eye[2] = 1.5
        s = scan(mesh, sensor, sensor.look_at(eye, [0.0, 0.0, 0.0]))
        assert len(s) > 100
        assert distance_to_hit_triangles(mesh, s.points_world(), s.hit_triangle).max() < 1e-4
        # A second, independent query: Open3D's closest-point distance to the whole mesh.
        d = raycasting_scene(mesh).compute_distance(o3d.core.Tensor(s.points_world())).numpy()
        assert d.max() < 1e-4


def test_lidar_range_noise_is_along_the_beam_with_the_requested_sigma(rng):
    sigma = 0.02
    clean = scan(room(), IDEAL_LIDAR, np.eye(4))
    noisy = scan(room(), SpinningLidar(channels=16, horizontal_resolution=0.5,
                                       range_noise_sigma=sigma), np.eye(4), rng)
    assert len(noisy) == len(clean)  # same beams, same order
    r_clean = np.linalg.norm(clean.points_sensor.astype(np.float64), axis=1)
    r_noisy = np.linalg.norm(noisy.points_sensor.astype(np.float64), axis=1)
    error = r_noisy - r_clean
    assert abs(error.mean()) < 3 * sigma / np.sqrt(len(error))
    assert error.std() == pytest.approx(sigma, rel=0.03)
    # Along the beam: the noisy point is parallel to the clean one.
    cross = np.cross(clean.points_sensor, noisy.points_sensor) / r_clean[:, None] / r_noisy[:, None]
    assert np.abs(cross).max() < 1e-5


def test_camera_depth_noise_follows_the_quadratic_model(rng):
    a, b, z = 0.002, 0.01, 3.0
    camera = DepthCamera(noise_sigma=(a, b))
    wall = rectangle(20, 20, z)
    s = scan(wall, camera, np.eye(4), rng)
    assert len(s) == camera.width * camera.height
    assert s.points_sensor[:, 2].std() == pytest.approx(a + b * z * z, rel=0.03)
    # Noise moves points along their pixel's ray: x / z and y / z stay those of the pixel.
    np.testing.assert_allclose(s.points_sensor[:, 0] / s.points_sensor[:, 2],
                               (s.pixel[:, 0] - camera.cx) / camera.fx, atol=1e-5)


@pytest.mark.parametrize("sensor", [DepthCamera(dropout=0.3),
                                    SpinningLidar(horizontal_resolution=0.2, dropout=0.3)],
                         ids=["camera", "lidar"])
def test_random_dropout_fraction(sensor, rng):
    s = scan(room(), sensor, np.eye(4), rng)  # every ray hits the room's walls
    rays = len(sensor.ray_directions())
    assert len(s) / rays == pytest.approx(0.7, abs=0.015)  # binomial std ~0.003


def test_grazing_returns_are_dropped():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    T = IDEAL_CAMERA.look_at([0.0, -4.0, 0.0], [0.0, 0.0, 0.0])
    full = scan(sphere, IDEAL_CAMERA, T)
    limited = scan(sphere, DepthCamera(max_incidence_deg=60.0), T)

    def incidence_deg(s):
        p = s.points_world().astype(np.float64)
        ray = p - T[:3, 3]
        cos = (np.abs(np.sum(ray * p, axis=1))
               / np.linalg.norm(ray, axis=1) / np.linalg.norm(p, axis=1))
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    assert incidence_deg(full).max() > 75.0  # the test can see the difference
    assert incidence_deg(limited).max() < 61.0  # facets tilt normals by well under a degree
    # On a sphere seen from distance D, incidence exceeds 60 degrees only near the silhouette.
    assert 0.5 * len(full) < len(limited) < 0.95 * len(full)


def test_a_sphere_occludes_the_wall_behind_it():
    wall = rectangle(10, 10, 3.0)
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    ball.apply_translation([0.0, 0.0, 1.5])
    s = scan(raycasting_scene([wall, ball]), IDEAL_CAMERA, np.eye(4))
    on_ball = s.hit_geometry == 1
    assert on_ball.sum() > 500
    p = s.points_sensor.astype(np.float64)
    assert np.all(p[on_ball, 2] < 1.5) and np.allclose(p[~on_ball, 2], 3.0, atol=1e-5)
    # Distance from the ball's centre to each wall return's line of sight: never inside the ball.
    centre = np.array([0.0, 0.0, 1.5])
    ray = p[~on_ball] / np.linalg.norm(p[~on_ball], axis=1, keepdims=True)
    miss = np.linalg.norm(np.cross(ray, centre), axis=1)
    assert miss.min() > 0.49
    # Every pixel whose ray passes through the ball returns the ball instead.
    dirs = IDEAL_CAMERA.ray_directions().astype(np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    blocked = np.linalg.norm(np.cross(dirs, centre), axis=1) < 0.49
    blocked_pixels = {tuple(p) for p in IDEAL_CAMERA.pixels()[blocked].tolist()}
    assert blocked_pixels <= {tuple(p) for p in s.pixel[on_ball].tolist()}


@pytest.mark.parametrize("sensor", [IDEAL_CAMERA, IDEAL_LIDAR], ids=["camera", "lidar"])
def test_scan_object_pose_maps_the_object_into_the_sensor_frame(sensor, rng):
    mesh = trimesh.creation.box((1.0, 0.8, 0.6))
    mesh.apply_translation([0.3, -0.2, 0.1])  # the object frame's origin is not the centre
    for _ in range(3):
        s, T_sensor_object = scan_object(mesh, sensor, rng, (2.0, 3.0), (-30.0, 60.0))
        assert len(s) > 50
        np.testing.assert_allclose(T_sensor_object @ s.T_world_sensor, np.eye(4), atol=1e-12)
        # The object's centre lies on the forward axis at the sampled distance.
        centre = transform_points(T_sensor_object, mesh.bounds.mean(axis=0))
        forward = 2 if isinstance(sensor, DepthCamera) else 0
        assert 2.0 <= centre[forward] <= 3.0
        np.testing.assert_allclose(np.delete(centre, forward), 0.0, atol=1e-9)
        # The mesh mapped into the sensor frame contains the scanned points.
        in_sensor = mesh.copy()
        in_sensor.apply_transform(T_sensor_object)
        assert distance_to_hit_triangles(in_sensor, s.points_sensor, s.hit_triangle).max() < 1e-4
        # Upright: the sensor's horizontal axis has no world z, its up axis points up.
        R_object_sensor = invert_transform(T_sensor_object)[:3, :3]
        horizontal, up = (R_object_sensor[:, 0], -R_object_sensor[:, 1]) if forward == 2 else \
            (R_object_sensor[:, 1], R_object_sensor[:, 2])
        assert abs(horizontal[2]) < 1e-12 and up[2] > 0


def test_scan_object_elevation_and_distance_ranges(rng):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    elevations, distances = [], []
    for _ in range(40):
        s, T_sensor_object = scan_object(mesh, IDEAL_LIDAR, rng, (1.5, 2.5), (10.0, 40.0))
        eye = invert_transform(T_sensor_object)[:3, 3]
        distances.append(np.linalg.norm(eye))
        elevations.append(np.degrees(np.arcsin(eye[2] / np.linalg.norm(eye))))
    assert 10.0 <= min(elevations) and max(elevations) <= 40.0
    assert 1.5 <= min(distances) and max(distances) <= 2.5


def test_presets():
    d435 = DepthCamera.realsense_d435()
    assert (d435.width, d435.height) == (848, 480)
    assert np.degrees(2 * np.arctan(d435.width / 2 / d435.fx)) == pytest.approx(87.0)
    assert np.degrees(2 * np.arctan(d435.height / 2 / d435.fy)) == pytest.approx(58.0, abs=2.0)
    assert d435.depth_sigma(2.0) == pytest.approx(0.0153, abs=5e-4)
    small = d435.downscaled(4)
    assert (small.width, small.height) == (212, 120)
    assert np.degrees(2 * np.arctan(small.width / 2 / small.fx)) == pytest.approx(87.0)
    vlp = SpinningLidar.velodyne_vlp16()
    np.testing.assert_allclose(vlp.elevations_deg, np.arange(-15, 16, 2))
    assert vlp.columns == 1800
    os1 = SpinningLidar.ouster_os1_64()
    assert (os1.channels, os1.columns) == (64, 1024)
    assert os1.elevations_deg[[0, -1]].tolist() == [-22.5, 22.5]


def test_stochastic_sensor_requires_an_rng():
    with pytest.raises(ValueError, match="rng"):
        scan(room(), SpinningLidar(range_noise_sigma=0.01), np.eye(4))


def test_same_rng_seed_gives_the_same_scan():
    lidar = SpinningLidar.velodyne_vlp16()
    T = make_transform(random_rotation(np.random.default_rng(1)), [0.5, 0.0, 0.0])
    a = scan(room(), lidar, T, np.random.default_rng(3))
    b = scan(room(), lidar, T, np.random.default_rng(3))
    np.testing.assert_array_equal(a.points_sensor, b.points_sensor)
    np.testing.assert_array_equal(a.ring, b.ring)
