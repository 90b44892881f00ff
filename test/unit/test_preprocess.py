"""Preprocessing stage: finite filtering, inclusive crop box, range shell, voxel grid against an
independent numpy implementation of Open3D's grid, exact-count resampling, seeded
reproducibility and config validation."""

import numpy as np
import pytest

from gmm_perception.geometry.points import EmptyCloudError, finite_points, resample, \
    voxel_downsample
from gmm_perception.pipeline.configs import NO_LIMIT, PreprocessConfig
from gmm_perception.pipeline.preprocess import Preprocessor, crop


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def sorted_rows(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points[np.lexsort(points.T[::-1])]


def reference_voxel_centroids(points: np.ndarray, voxel: float) -> np.ndarray:
    """Centroid of each occupied voxel. Open3D's grid origin is the cloud's min bound minus half a
    voxel (PointCloud::VoxelDownSample: voxel_min_bound = GetMinBound() - voxel_size * 0.5)."""
    points = np.asarray(points, dtype=np.float64)
    origin = points.min(axis=0) - voxel * 0.5
    keys = np.floor((points - origin) / voxel).astype(np.int64)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, group, points)
    return sums / counts[:, None]


# ----------------------------------------------------------------------------- finite points
def test_finite_points_drops_rows_with_any_nan_or_inf():
    points = np.array([[0, 0, 0], [np.nan, 1, 1], [1, np.inf, 1], [1, 1, -np.inf], [2, 3, 4]])
    out = finite_points(points)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 0], [2, 3, 4]])


@pytest.mark.parametrize("points", [np.full((4, 3), np.nan), np.zeros((0, 3)),
                                    np.array([[np.inf, 0, 0]])])
def test_no_finite_point_raises_empty_cloud_error(points):
    with pytest.raises(EmptyCloudError):
        finite_points(points)


def test_empty_cloud_error_is_a_value_error():
    assert issubclass(EmptyCloudError, ValueError)


def test_default_stage_returns_the_finite_points_unchanged():
    points = np.array([[1, 2, 3], [np.nan, 0, 0], [-4, 5, -6], [100, -200, 300]], dtype=np.float32)
    out = Preprocessor(PreprocessConfig())(points)
    np.testing.assert_array_equal(out, points[[0, 2, 3]])
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_stage_raises_on_all_nan_input():
    with pytest.raises(EmptyCloudError):
        Preprocessor(PreprocessConfig(voxel_size=0.1, num_points=8))(np.full((5, 3), np.nan))


# ----------------------------------------------------------------------------- crop box
def test_crop_box_bounds_are_inclusive():
    config = PreprocessConfig(crop_min=(-1.0, -1.0, 0.0), crop_max=(1.0, 2.0, 0.5))
    points = np.array([
        [-1.0, -1.0, 0.0],   # min corner: kept
        [1.0, 2.0, 0.5],     # max corner: kept
        [0.0, 0.0, 0.25],    # inside: kept
        [1.001, 0.0, 0.1],   # x above
        [0.0, -1.001, 0.1],  # y below
        [0.0, 0.0, 0.501],   # z above
    ], dtype=np.float32)
    np.testing.assert_array_equal(crop(points, config), points[:3])


def test_crop_box_boundary_not_representable_in_float32_is_still_inclusive():
    config = PreprocessConfig(crop_min=(-0.1, -0.1, -0.1), crop_max=(0.1, 0.1, 0.1))
    points = finite_points([[0.1, 0.1, 0.1], [-0.1, -0.1, -0.1]])
    assert len(crop(points, config)) == 2


def test_crop_box_with_one_open_side():
    config = PreprocessConfig(crop_min=(-NO_LIMIT, -NO_LIMIT, 0.0))
    points = np.array([[5, 5, -0.5], [-50, 80, 0.0], [1, 1, 1e6]], dtype=np.float32)
    np.testing.assert_array_equal(crop(points, config), points[1:])


def test_crop_box_matches_an_independent_mask(rng):
    points = rng.uniform(-3, 3, (2000, 3)).astype(np.float32)
    lo, hi = np.array([-1.0, -2.0, 0.0]), np.array([2.0, 0.5, 3.0])
    expected = points[np.all((points >= lo) & (points <= hi), axis=1)]
    out = crop(points, PreprocessConfig(crop_min=tuple(lo), crop_max=tuple(hi)))
    np.testing.assert_array_equal(out, expected)


# ----------------------------------------------------------------------------- range shell
def test_range_shell_is_inclusive_and_measured_from_the_origin():
    config = PreprocessConfig(min_range=2.0, max_range=5.0)
    points = np.array([
        [0.0, 0.0, 2.0],   # range 2: kept
        [3.0, 4.0, 0.0],   # range 5: kept
        [0.0, 3.0, 0.0],   # range 3: kept
        [1.0, 1.0, 1.0],   # range ~1.73: too near
        [3.0, 4.0, 0.1],   # range ~5.001: too far
    ], dtype=np.float32)
    np.testing.assert_array_equal(crop(points, config), points[:3])


def test_range_shell_matches_norms(rng):
    points = rng.uniform(-4, 4, (3000, 3)).astype(np.float32)
    norms = np.linalg.norm(points.astype(np.float64), axis=1)
    out = crop(points, PreprocessConfig(min_range=1.5, max_range=3.0))
    np.testing.assert_array_equal(out, points[(norms >= 1.5) & (norms <= 3.0)])


def test_box_and_range_apply_together():
    config = PreprocessConfig(crop_min=(0.0, -10, -10), crop_max=(10, 10, 10), max_range=2.0)
    points = np.array([[1, 0, 0], [-1, 0, 0], [3, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(crop(points, config), [[1, 0, 0]])


def test_a_cloud_cropped_away_entirely_is_an_empty_cloud_not_a_failure():
    """Nothing left after the crop is the input's problem: a node rejects it (WARN)."""
    config = PreprocessConfig(max_range=0.5, voxel_size=0.1, num_points=16)
    with pytest.raises(EmptyCloudError, match="none of 2 points lies inside"):
        Preprocessor(config)(np.array([[10, 0, 0], [0, 10, 0]], dtype=np.float32))


# ----------------------------------------------------------------------------- voxel grid
def test_voxel_grid_origin_is_half_a_voxel_below_the_min_bound():
    points = np.array([[0.0, 0, 0], [0.4, 0, 0], [0.6, 0, 0], [1.0, 0, 0]], dtype=np.float32)
    out = voxel_downsample(points, 1.0)
    np.testing.assert_allclose(sorted_rows(out), [[0.2, 0, 0], [0.8, 0, 0]], atol=1e-6)


def test_voxel_downsample_matches_independent_centroids(rng):
    points = (rng.uniform(-2, 3, (5000, 3)) + [10.0, -7.0, 0.3]).astype(np.float32)
    voxel = 0.37
    out = voxel_downsample(points, voxel)
    expected = reference_voxel_centroids(points, voxel)
    assert out.dtype == np.float32
    assert out.shape == expected.shape
    np.testing.assert_allclose(sorted_rows(out), sorted_rows(expected), atol=1e-5)


def test_voxel_downsample_keeps_one_point_per_occupied_voxel_on_a_lattice():
    # 4x4x4 clusters 1 m apart, each cluster a symmetric cross around its centre (centroid = centre)
    centres = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = np.array([[0, 0, 0], [0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, -0.1, 0],
                        [0, 0, 0.1], [0, 0, -0.1]])
    points = (centres[:, None, :] + offsets[None]).reshape(-1, 3).astype(np.float32)
    out = voxel_downsample(points, 1.0)
    np.testing.assert_allclose(sorted_rows(out), sorted_rows(centres), atol=1e-6)


def test_stage_voxel_step_matches_independent_centroids_of_cropped_points(rng):
    points = rng.uniform(-2, 2, (3000, 3)).astype(np.float32)
    config = PreprocessConfig(max_range=1.5, voxel_size=0.25)
    kept = points[np.linalg.norm(points.astype(np.float64), axis=1) <= 1.5]
    out = Preprocessor(config)(points)
    np.testing.assert_allclose(sorted_rows(out), sorted_rows(reference_voxel_centroids(kept, 0.25)),
                               atol=1e-5)


# ----------------------------------------------------------------------------- resampling
def unique_points(n: int) -> np.ndarray:
    return np.stack([np.arange(n), 2 * np.arange(n), -np.arange(n)], axis=1).astype(np.float32)


def row_set(points: np.ndarray) -> set:
    return {tuple(row) for row in points.tolist()}


def test_resample_to_fewer_points_is_a_subset_without_replacement():
    points = unique_points(100)
    out = resample(points, 40, np.random.default_rng(0))
    assert out.shape == (40, 3)
    assert len(row_set(out)) == 40, "a point was drawn twice"
    assert row_set(out) <= row_set(points)


def test_resample_to_the_same_count_is_a_permutation():
    points = unique_points(50)
    out = resample(points, 50, np.random.default_rng(1))
    assert row_set(out) == row_set(points) and len(out) == 50


def test_resample_to_more_points_keeps_every_original_and_repeats_some():
    points = unique_points(7)
    out = resample(points, 30, np.random.default_rng(2))
    assert out.shape == (30, 3)
    np.testing.assert_array_equal(out[:7], points)
    assert row_set(out[7:]) <= row_set(points)


def test_stage_resamples_to_exact_count_both_ways():
    few = Preprocessor(PreprocessConfig(num_points=64))(unique_points(10))
    many = Preprocessor(PreprocessConfig(num_points=64))(unique_points(1000))
    assert few.shape == many.shape == (64, 3)
    assert few.dtype == many.dtype == np.float32


def test_same_seed_gives_the_same_output(rng):
    points = rng.normal(size=(500, 3)).astype(np.float32)
    config = PreprocessConfig(voxel_size=0.2, num_points=100, seed=42)
    np.testing.assert_array_equal(Preprocessor(config)(points), Preprocessor(config)(points))


def test_different_seeds_give_different_subsets():
    points = unique_points(1000)
    a = Preprocessor(PreprocessConfig(num_points=100, seed=1))(points)
    b = Preprocessor(PreprocessConfig(num_points=100, seed=2))(points)
    assert row_set(a) != row_set(b)


# ----------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("kwargs", [
    dict(crop_min=(0.0, 0.0, 1.0), crop_max=(1.0, 1.0, 0.0)),
    dict(min_range=2.0, max_range=1.0),
    dict(min_range=-0.5),
    dict(voxel_size=-0.1),
    dict(num_points=-1),
])
def test_invalid_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        PreprocessConfig(**kwargs)


def test_degenerate_but_valid_config_is_accepted():
    config = PreprocessConfig(crop_min=(1.0, 1.0, 1.0), crop_max=(1.0, 1.0, 1.0),
                              min_range=3.0, max_range=3.0)
    assert config.min_range == config.max_range == 3.0
