"""Chamfer distance against a brute-force distance matrix and closed forms."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from gmm_perception.metrics.chamfer import chamfer_distance, nearest_distances


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("sizes", [(1, 1), (37, 53), (200, 120)])
@pytest.mark.parametrize("dim", [2, 3])
def test_matches_brute_force_both_variants(rng, sizes, dim):
    a = rng.normal(size=(sizes[0], dim))
    b = rng.normal(size=(sizes[1], dim)) + 0.3
    full = cdist(a, b)
    a_to_b, b_to_a = full.min(axis=1), full.min(axis=0)
    np.testing.assert_allclose(nearest_distances(a, b), a_to_b, rtol=1e-12)
    np.testing.assert_allclose(nearest_distances(b, a), b_to_a, rtol=1e-12)
    assert chamfer_distance(a, b) == pytest.approx(a_to_b.mean() + b_to_a.mean(), rel=1e-12)
    assert chamfer_distance(a, b, squared=True) == pytest.approx(
        (a_to_b**2).mean() + (b_to_a**2).mean(), rel=1e-12)


def test_symmetric_and_zero_on_identical_clouds(rng):
    a = rng.random((300, 3))
    b = rng.random((150, 3))
    assert chamfer_distance(a, b) == pytest.approx(chamfer_distance(b, a), rel=1e-12)
    assert chamfer_distance(a, a) == 0.0
    assert chamfer_distance(a, a[rng.permutation(len(a))], squared=True) == 0.0


def test_two_single_points():
    assert chamfer_distance([[0.0, 0.0, 0.0]], [[3.0, 4.0, 0.0]]) == 10.0
    assert chamfer_distance([[0.0, 0.0, 0.0]], [[3.0, 4.0, 0.0]], squared=True) == 50.0


def test_translate_of_a_sparse_grid():
    # Grid spacing 1 > 2d: every point's nearest neighbour in the other cloud is its own translate.
    axis = np.arange(6.0)
    grid = np.stack(np.meshgrid(axis, axis, axis), axis=-1).reshape(-1, 3)
    d = 0.3
    shifted = grid + [d, 0.0, 0.0]
    np.testing.assert_allclose(nearest_distances(grid, shifted), d, rtol=1e-12)
    assert chamfer_distance(grid, shifted) == pytest.approx(2 * d, rel=1e-12)
    assert chamfer_distance(grid, shifted, squared=True) == pytest.approx(2 * d * d, rel=1e-12)


def test_float32_input_and_order_of_results(rng):
    a = rng.random((500, 3)).astype(np.float32)
    b = rng.random((400, 3)).astype(np.float32)
    expected = cdist(a.astype(np.float64), b.astype(np.float64)).min(axis=1)
    np.testing.assert_allclose(nearest_distances(a, b), expected, rtol=1e-12)


@pytest.mark.parametrize("a, b", [(np.zeros((0, 3)), np.zeros((2, 3))),
                                  (np.zeros((2, 3)), np.zeros((2, 2))),
                                  (np.zeros(3), np.zeros((2, 3))),
                                  (np.array([[np.nan, 0.0, 0.0]]), np.zeros((2, 3)))])
def test_rejects_bad_input(a, b):
    with pytest.raises(ValueError):
        chamfer_distance(a, b)
