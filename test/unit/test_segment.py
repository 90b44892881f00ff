"""Scene segmentation stage on synthetic scenes: plane removal, clusters, tracks, accumulation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from gmm_perception.pipeline.segment import ObjectTracker, SegmentConfig, Segmenter

GROUND_HALF = 2.0  # the ground is a 4 m x 4 m square
GROUND_POINTS = 16_000
NOISE = 0.003

# Objects raised a little above the ground, so their true centroid is not cut by the inlier band.
SPHERE_A = np.array([1.0, 0.0, 0.40])
BOX = np.array([-0.8, 0.7, 0.25])
SPHERE_B = np.array([0.0, -1.0, 0.30])
TRUTH = [SPHERE_A, BOX, SPHERE_B]


def sphere(rng, centre, radius, count):
    directions = rng.normal(size=(count, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True) * radius + centre


def box(rng, centre, size, count):
    """Points on the surface of an axis-aligned box, uniform over its area."""
    size = np.asarray(size, dtype=np.float64)
    points = rng.uniform(-0.5, 0.5, (count, 3)) * size
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
    axis = rng.choice(3, size=count, p=areas / areas.sum())
    points[np.arange(count), axis] = np.where(rng.random(count) < 0.5, -0.5, 0.5) * size[axis]
    return points + centre


def ground(rng, count=GROUND_POINTS, half=GROUND_HALF):
    return np.c_[rng.uniform(-half, half, (count, 2)), rng.normal(0.0, NOISE, count)]


def objects(rng, centres=TRUTH):
    a, b, c = centres
    return [sphere(rng, a, 0.15, 1500), box(rng, b, (0.3, 0.2, 0.25), 1500),
            sphere(rng, c, 0.10, 800)]


def scene(seed=0, centres=TRUTH, rotation=None):
    rng = np.random.default_rng(seed)
    points = np.vstack([ground(rng), *objects(rng, centres)])
    if rotation is not None:
        points = points @ rotation.T
    return points.astype(np.float32)


def rotation_x(degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def angle_deg(a, b):
    cosine = abs(float(np.dot(a, b))) / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, cosine)))


def centroids_by_truth(result, truth=TRUTH):
    """{truth index: object} matching each true centre to the nearest object centroid."""
    matched = {}
    for index, centre in enumerate(truth):
        distances = [np.linalg.norm(obj.centroid - centre) for obj in result.objects]
        matched[index] = result.objects[int(np.argmin(distances))]
    return matched


# ----------------------------------------------------------------------------- plane and clusters
def test_ground_plane_is_found_removed_and_three_objects_remain():
    points = scene()
    result = Segmenter()(points)
    assert result.plane is not None
    assert angle_deg(result.normal, [0, 0, 1]) < 1.0
    assert result.normal[2] > 0  # oriented towards `up`
    assert abs(result.plane[3]) < 0.005  # the ground passes through z = 0
    # Every ground point (noise 3 mm, band 2 cm) is removed, and no object point is.
    assert result.ground_points == GROUND_POINTS
    assert len(result.objects) == 3
    for index, obj in centroids_by_truth(result).items():
        assert np.linalg.norm(obj.centroid - TRUTH[index]) < 0.02
        assert (obj.points[:, 2] > 0.05).all()  # no ground point left in an object
        assert obj.points.dtype == np.float32 and obj.points.shape[1] == 3
        np.testing.assert_array_equal(obj.box_min, obj.points.min(axis=0))
        np.testing.assert_array_equal(obj.box_max, obj.points.max(axis=0))
    assert sum(len(obj.points) for obj in result.objects) == 1500 + 1500 + 800
    assert [obj.id for obj in result.objects] == sorted(obj.id for obj in result.objects)
    box_object = centroids_by_truth(result)[1]
    np.testing.assert_allclose(box_object.extent, [0.3, 0.2, 0.25], atol=0.01)


@pytest.mark.parametrize("tilt", [10.0, 25.0])
def test_tilted_ground_within_the_limit_is_removed(tilt):
    rotation = rotation_x(tilt)
    result = Segmenter()(scene(rotation=rotation))
    assert result.plane is not None
    assert angle_deg(result.normal, rotation[:, 2]) < 1.0
    assert result.ground_points == GROUND_POINTS
    truth = [rotation @ centre for centre in TRUTH]
    assert len(result.objects) == 3
    for index, obj in centroids_by_truth(result, truth).items():
        assert np.linalg.norm(obj.centroid - truth[index]) < 0.02


def test_steep_plane_is_kept_unless_its_orientation_is_allowed():
    rotation = rotation_x(60.0)
    points = scene(rotation=rotation)
    kept = Segmenter(SegmentConfig(max_cluster_extent=10.0))(points)
    assert kept.plane is None and kept.ground_points == 0
    # Nothing removed: the ground is one big cluster beside the three objects.
    assert len(kept.objects) == 4

    any_orientation = Segmenter(SegmentConfig(max_plane_tilt_deg=90.0))(points)
    assert angle_deg(any_orientation.normal, rotation[:, 2]) < 1.0
    assert len(any_orientation.objects) == 3

    # `up` is given in the cloud frame: a sensor mounted at 60 degrees says so.
    tilted_up = Segmenter(SegmentConfig(up=tuple(rotation[:, 2])))(points)
    assert angle_deg(tilted_up.normal, rotation[:, 2]) < 1.0
    assert float(tilted_up.normal @ rotation[:, 2]) > 0
    assert tilted_up.ground_points == GROUND_POINTS


def test_a_wall_larger_than_the_floor_is_set_aside_and_discarded_as_too_large():
    rng = np.random.default_rng(3)
    wall = np.c_[np.full(24_000, 2.5) + rng.normal(0, NOISE, 24_000),
                 rng.uniform(-2.5, 2.5, 24_000), rng.uniform(0.0, 4.0, 24_000)]
    points = np.vstack([ground(rng, 16_000), wall, *objects(rng)]).astype(np.float32)
    result = Segmenter()(points)
    assert angle_deg(result.normal, [0, 0, 1]) < 1.0  # the floor, not the bigger wall
    assert len(result.objects) == 3  # the wall cluster is wider than max_cluster_extent
    for index, obj in centroids_by_truth(result).items():
        assert np.linalg.norm(obj.centroid - TRUTH[index]) < 0.02


def test_a_small_plane_is_not_removed():
    # No floor in view: the largest plane is the top of a box, far below min_plane_points.
    rng = np.random.default_rng(4)
    points = np.vstack(objects(rng)).astype(np.float32)
    result = Segmenter(SegmentConfig(min_plane_points=0.5))(points)
    assert result.plane is None and result.ground_points == 0
    assert len(result.objects) == 3
    counted = Segmenter(SegmentConfig(min_plane_points=2000))(points)  # a count, not a fraction
    assert counted.plane is None


def test_noise_small_and_large_clusters_and_max_objects():
    rng = np.random.default_rng(5)
    tiny = sphere(rng, [1.5, 1.5, 0.5], 0.02, 10)  # below min_cluster_points
    points = np.vstack([ground(rng), *objects(rng), tiny]).astype(np.float32)
    assert len(Segmenter()(points).objects) == 3
    largest_two = Segmenter(SegmentConfig(max_objects=2))(points)
    assert sorted(len(obj.points) for obj in largest_two.objects) == [1500, 1500]
    assert len(Segmenter(SegmentConfig(min_cluster_points=1000))(points).objects) == 2


def test_segmentation_is_deterministic():
    points = scene(seed=6)
    first, second = Segmenter()(points), Segmenter()(points)
    np.testing.assert_array_equal(first.plane, second.plane)
    assert [obj.id for obj in first.objects] == [obj.id for obj in second.objects]
    for a, b in zip(first.objects, second.objects):
        np.testing.assert_array_equal(a.points, b.points)


# ----------------------------------------------------------------------------- tracking
def ids_by_truth(result, truth=TRUTH):
    return [obj.id for obj in centroids_by_truth(result, truth).values()]


def test_ids_are_stable_when_objects_move_and_cluster_order_changes():
    segmenter = Segmenter()
    first = ids_by_truth(segmenter(scene(seed=0)))
    assert sorted(first) == [1, 2, 3]
    rng = np.random.default_rng(7)
    centres = [c.copy() for c in TRUTH]
    for frame in range(1, 8):
        centres = [c + np.r_[rng.uniform(-0.05, 0.05, 2), 0.0] for c in centres]  # 5 cm steps
        points = scene(seed=frame, centres=centres)
        points = points[rng.permutation(len(points))]  # DBSCAN labels come out in a new order
        result = segmenter(points)
        assert len(result.objects) == 3
        assert ids_by_truth(result, centres) == first


def test_a_new_object_gets_a_new_id_and_timeout_drops_tracks():
    config = SegmentConfig(track_timeout_frames=3)
    segmenter = Segmenter(config)
    ids = ids_by_truth(segmenter(scene()))
    rng = np.random.default_rng(8)
    extra_centre = np.array([-1.2, -1.2, 0.35])
    with_extra = np.vstack([scene(seed=1), sphere(rng, extra_centre, 0.12, 900)]).astype(np.float32)
    result = segmenter(with_extra)
    assert ids_by_truth(result, [*TRUTH, extra_centre]) == [*ids, 4]

    # Sphere A leaves the view: its id survives 2 frames without it, not 3.
    rng = np.random.default_rng(9)
    without_a = np.vstack([ground(rng), *objects(rng)[1:]]).astype(np.float32)
    for _ in range(2):
        segmenter(without_a)
    assert ids_by_truth(segmenter(scene(seed=2)))[0] == ids[0]  # back within the timeout
    for _ in range(3):
        segmenter(without_a)
    assert ids[0] not in [track.id for track in segmenter.tracker.tracks]
    back = ids_by_truth(segmenter(scene(seed=3)))
    assert back[0] == 5 and back[1:] == ids[1:]  # a new id; the others keep theirs


def test_tracker_gates_and_assigns_globally():
    tracker = ObjectTracker(track_distance=0.3, timeout_frames=2)
    assert tracker.update(np.array([[0.0, 0, 0], [1.0, 0, 0]])) == [1, 2]
    # Reversed order and small motion: same ids; a jump beyond the gate: a new id.
    assert tracker.update(np.array([[1.1, 0, 0], [0.1, 0, 0]])) == [2, 1]
    assert tracker.update(np.array([[0.1, 0, 0], [1.5, 0, 0]])) == [1, 3]
    # Greedy nearest-first would pair track 2 (at 0.25) with the detection at 0.2 and leave
    # track 1 (at 0.0) nothing within the gate; the optimal assignment keeps both tracks.
    tracker = ObjectTracker(track_distance=0.3, timeout_frames=2)
    tracker.update(np.array([[0.0, 0, 0], [0.25, 0, 0]]))
    assert tracker.update(np.array([[0.5, 0, 0], [0.2, 0, 0]])) == [2, 1]
    assert tracker.update(np.empty((0, 3))) == []
    assert len(tracker.tracks) == 2
    tracker.update(np.empty((0, 3)))
    assert tracker.tracks == []
    assert tracker.update(np.array([[0.0, 0, 0]])) == [3]


def test_reset_forgets_tracks_but_never_reuses_ids():
    segmenter = Segmenter(SegmentConfig(accumulate_frames=3))
    segmenter(scene())
    assert segmenter.accumulated_points > 0
    segmenter.reset()
    assert segmenter.accumulated_points == 0 and segmenter.tracker.tracks == []
    assert sorted(obj.id for obj in segmenter(scene()).objects) == [4, 5, 6]


# ----------------------------------------------------------------------------- accumulation
def test_two_half_views_accumulate_into_one_object():
    rng = np.random.default_rng(10)
    centre = np.array([1.0, 0.0, 0.5])
    full = sphere(rng, centre, 0.2, 4000)
    front, back = full[full[:, 0] < centre[0]], full[full[:, 0] >= centre[0]]
    floor = ground(rng, 8000)

    def view(half):
        return np.vstack([floor, half]).astype(np.float32)

    single = Segmenter()
    single(view(front))
    (only_back,) = single(view(back)).objects
    assert only_back.box_min[0] > centre[0] - 0.01

    accumulating = Segmenter(SegmentConfig(accumulate_frames=2))
    (first,) = accumulating(view(front)).objects
    (both,) = accumulating(view(back)).objects
    assert both.id == first.id
    assert both.box_min[0] < centre[0] - 0.15 and both.box_max[0] > centre[0] + 0.15
    assert np.linalg.norm(both.centroid - centre) < 0.02  # the whole sphere, centred again
    # Voxelised at cluster_eps / 2: far fewer points than the two views together.
    assert len(both.points) < len(full)


def test_accumulation_memory_is_bounded():
    frames = 4
    segmenter = Segmenter(SegmentConfig(accumulate_frames=frames))
    voxel = segmenter.config.voxel
    object_points = sum(len(o) for o in objects(np.random.default_rng(0)))
    counts = []
    for seed in range(40):
        result = segmenter(scene(seed=seed))
        counts.append(segmenter.accumulated_points)
        assert len(result.objects) == 3
    # Each stored frame is voxelised: at most one point per voxel of the objects' surfaces.
    assert max(counts) <= frames * object_points
    assert counts[-1] <= 1.1 * counts[frames]  # no growth after the window is full
    surface = 4 * math.pi * (0.15 ** 2 + 0.10 ** 2) + 2 * (0.3 * 0.2 + 0.3 * 0.25 + 0.2 * 0.25)
    assert counts[-1] < frames * 4 * surface / voxel ** 2


# ----------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("points", [
    np.zeros((0, 3), dtype=np.float32),
    np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]),  # fewer than RANSAC's 3
    np.full((50, 3), np.nan, dtype=np.float32),
    np.array([[np.inf, 0, 0], [0, np.nan, 0], [1, 2, 3]], dtype=np.float32),
], ids=["empty", "two_points", "all_nan", "one_finite"])
def test_degenerate_clouds_give_empty_results(points):
    segmenter = Segmenter()
    result = segmenter(points)
    assert result.plane is None and result.ground_points == 0 and result.objects == []
    assert len(segmenter(scene()).objects) == 3  # and the next good frame is processed


def test_all_points_in_the_plane_and_no_plane_at_all():
    rng = np.random.default_rng(11)
    flat = Segmenter()(ground(rng).astype(np.float32))
    assert flat.plane is not None and flat.ground_points == GROUND_POINTS
    assert flat.objects == []
    blob = Segmenter()(sphere(rng, [0, 0, 1], 0.2, 2000).astype(np.float32))
    assert blob.plane is None and len(blob.objects) == 1
    collinear = Segmenter()(np.c_[np.linspace(0, 1, 100), np.zeros((100, 2))])
    assert collinear.plane is None and len(collinear.objects) == 1


@pytest.mark.parametrize("shape", [(10,), (10, 2), (10, 4), (2, 10, 3)])
def test_wrong_shapes_raise(shape):
    with pytest.raises(ValueError, match="must be"):
        Segmenter()(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("changes", [
    {"plane_distance": 0.0}, {"cluster_eps": -1.0}, {"plane_iterations": 0},
    {"min_cluster_points": 0}, {"max_objects": 0}, {"track_timeout_frames": 0},
    {"accumulate_frames": 0}, {"max_plane_tilt_deg": 91.0}, {"up": (0.0, 0.0, 0.0)},
    {"up": (0.0, 1.0)}, {"min_plane_points": -0.1}, {"track_distance": math.inf},
    {"accumulate_voxel": -0.01}, {"seed": -1},
])
def test_invalid_configs_raise(changes):
    with pytest.raises(ValueError):
        SegmentConfig(**changes)


def test_reconfigure_keeps_tracks_and_resizes_accumulation():
    segmenter = Segmenter(SegmentConfig(accumulate_frames=4))
    for seed in range(4):
        ids = sorted(obj.id for obj in segmenter(scene(seed=seed)).objects)
    before = segmenter.accumulated_points
    segmenter.reconfigure(SegmentConfig(accumulate_frames=2, track_timeout_frames=5))
    assert segmenter.accumulated_points < before
    assert segmenter.tracker.timeout_frames == 5
    assert sorted(obj.id for obj in segmenter(scene(seed=9)).objects) == ids


# ----------------------------------------------------------------------------- range-adaptive radius
def lidar_scene(sensor_at=(0.0, 0.0, 1.0)):
    """One OS1-64 scan (no ground: the boxes stand in the air) of a 1.1 x 0.75 x 1.1 m cabinet
    12 m away, and two 0.5 m boxes 2.5 m away with a 0.2 m gap between them: at 12 m the rings
    are 12 x 0.71 degrees = 15 cm apart, more than the 8 cm radius."""
    import trimesh

    from gmm_perception.data.sensors import SpinningLidar, scan

    far = trimesh.creation.box((0.75, 1.1, 1.1), trimesh.transformations.translation_matrix(
        (12.0, 0.0, 0.8)))
    near = [trimesh.creation.box((0.5, 0.5, 0.5), trimesh.transformations.translation_matrix(
        (2.5, y, 0.5))) for y in (-0.35, 0.35)]
    lidar = SpinningLidar.ouster_os1_64()
    eye = np.asarray(sensor_at, dtype=float)
    result = scan([far, *near], lidar, lidar.look_at(eye, eye + [1.0, 0.0, 0.0]),
                  np.random.default_rng(0))
    return result.points_world(), result.hit_geometry


def test_a_far_object_falls_apart_into_ring_slices_at_a_fixed_radius_and_not_with_range():
    points, geometry = lidar_scene()
    # One scan (no accumulation): 7 cm between the returns of a ring, so 3 make a core point.
    config = SegmentConfig(cluster_eps=0.08, dbscan_min_points=3, min_cluster_points=5,
                           min_plane_points=1e9)
    fixed = Segmenter(config)(points, np.array([0.0, 0.0, 1.0]))
    far_fixed = [obj for obj in fixed.objects if obj.centroid[0] > 10]
    assert len(far_fixed) > 3 and max(obj.extent[2] for obj in far_fixed) < 0.05  # flat slices
    adaptive = Segmenter(SegmentConfig(**{**config.__dict__, "cluster_eps_per_metre": 0.016}))(
        points, np.array([0.0, 0.0, 1.0]))
    source = {tuple(p): g for p, g in zip(points.tolist(), geometry)}
    sources = [{source[tuple(p)] for p in obj.points.tolist()} for obj in adaptive.objects]
    far = [obj for obj, s in zip(adaptive.objects, sources) if s == {0}]
    assert len(far) == 1 and len(far[0].points) == int(np.sum(geometry == 0))
    assert far[0].extent[2] > 0.85  # from the lowest ring on the box to the highest
    # The two near boxes, 0.2 m apart at 2.5 m (radius there max(0.08, 0.04)): never joined.
    assert all(len(s) == 1 for s in sources) and {1, 2} <= set().union(*sources)


def test_clusters_merge_by_their_range_from_the_sensor_not_the_frame_origin():
    """Two 1 m slices 0.15 m apart: merged where the sensor is 12 m away (radius 0.19 m), not
    where it is 2 m away (radius 0.08 m); the sensor's position, not the frame's origin, counts."""
    from gmm_perception.pipeline.segment import merge_by_range

    line = np.c_[np.zeros(50), np.linspace(0, 1, 50), np.zeros(50)]
    points = np.vstack([line + [10.0, 0, 0], line + [10.0, 0, 0.15]]).astype(np.float32)
    groups = [np.arange(50), np.arange(50, 100)]
    far_sensor, near_sensor = np.array([-2.0, 0.5, 0.0]), np.array([8.0, 0.5, 0.0])
    assert len(merge_by_range(points, groups, 0.08, 0.016, far_sensor)) == 1
    assert len(merge_by_range(points, groups, 0.08, 0.016, near_sensor)) == 2
    merged = merge_by_range(points, groups, 0.08, 0.016, far_sensor)[0]
    assert np.array_equal(merged, np.arange(100))


# ----------------------------------------------------------------------------- range-adaptive ground
def depth_frames(frames: int):
    """`frames` D435 (half resolution) scans from 1.2 m height of a 0.6 x 0.6 x 0.8 m box on a
    floor 5 m away: the camera's depth error there (9 cm along the ray) scatters the floor's
    points by about 2 cm vertically, as much as the 2 cm ground band."""
    import trimesh

    from gmm_perception.data.sensors import DepthCamera, scan

    floor = trimesh.creation.box((14.0, 14.0, 0.02), trimesh.transformations.translation_matrix(
        (5.0, 0.0, -0.01)))
    box = trimesh.creation.box((0.6, 0.6, 0.8), trimesh.transformations.translation_matrix(
        (5.0, 0.0, 0.4)))
    camera = DepthCamera.realsense_d435().downscaled(2)
    eye = np.array([0.0, 0.0, 1.2])
    pose = camera.look_at(eye, np.array([5.0, 0.0, 0.4]))
    for seed in range(frames):
        result = scan([floor, box], camera, pose, np.random.default_rng(seed))
        yield result.points_world(), result.hit_geometry, eye


def test_a_depth_cameras_far_floor_is_ground_with_a_range_band_and_joins_the_object_without():
    config = SegmentConfig(cluster_eps=0.08, cluster_eps_per_metre=0.016, accumulate_frames=8)
    banded = SegmentConfig(**{**config.__dict__, "plane_distance_per_metre": 0.013})
    fixed_segmenter, banded_segmenter = Segmenter(config), Segmenter(banded)
    for points, geometry, eye in depth_frames(8):
        fixed, band = fixed_segmenter(points, eye), banded_segmenter(points, eye)
        box_points = int(np.sum(geometry == 1))
    # Without the band: the floor's leftovers, accumulated, join the box into one cluster
    # wider than max_cluster_extent (dropped) or swamp it with floor points.
    # The box's returns: above the floor's scatter, within its width (the depth error moves
    # them along the ray, x, by up to 0.3 m).
    on_box = lambda obj: np.mean((obj.points[:, 2] > 0.1)  # noqa: E731
                                 & (np.abs(obj.points[:, 1]) < 0.45))
    assert not any(on_box(obj) > 0.9 and len(obj.points) > 0.5 * box_points
                   for obj in fixed.objects)
    # With it: one object, the box's points (above the band's 8.5 cm at 5 m), few of the floor's.
    assert len(band.objects) == 1
    found = band.objects[0]
    assert on_box(found) > 0.95 and found.extent[2] > 0.6
    assert band.ground_points > fixed.ground_points
