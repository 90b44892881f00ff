"""Exact EMD against exhaustive search over permutations and closed forms."""

from itertools import permutations

import numpy as np
import pytest

from gmm_perception.metrics.emd import MAX_EXACT_POINTS, earth_movers_distance, emd_assignment


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def brute_force_emd(a: np.ndarray, b: np.ndarray) -> float:
    """Mean matched distance minimised over all n! bijections."""
    distances = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    rows = np.arange(len(a))
    return min(distances[rows, list(perm)].mean() for perm in permutations(range(len(a))))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("dim", [2, 3])
def test_matches_exhaustive_search(rng, n, dim):
    for _ in range(3):
        a = rng.normal(size=(n, dim))
        b = rng.normal(size=(n, dim))
        assert earth_movers_distance(a, b) == pytest.approx(brute_force_emd(a, b), rel=1e-12)


def test_assignment_is_a_permutation_with_its_distances(rng):
    a = rng.random((50, 3))
    b = rng.random((50, 3))
    match, distances = emd_assignment(a, b)
    assert sorted(match) == list(range(50))
    np.testing.assert_allclose(distances, np.linalg.norm(a - b[match], axis=1), rtol=1e-12)
    assert earth_movers_distance(a, b) == pytest.approx(distances.mean(), rel=1e-12)


def test_translate_costs_exactly_the_translation(rng):
    # Lower bound: sum ||a_i - b_s(i)|| >= ||sum (a_i - b_s(i))|| = n |v| for every bijection s.
    a = rng.random((200, 3))
    v = np.array([0.3, -0.2, 0.5])
    assert earth_movers_distance(a, a + v) == pytest.approx(np.linalg.norm(v), rel=1e-12)
    assert earth_movers_distance(a, a[rng.permutation(200)]) == pytest.approx(0.0, abs=1e-15)


def test_symmetric(rng):
    a = rng.normal(size=(80, 3))
    b = rng.normal(size=(80, 3)) * 2.0
    assert earth_movers_distance(a, b) == pytest.approx(earth_movers_distance(b, a), rel=1e-12)


def test_refuses_unequal_sizes():
    with pytest.raises(ValueError, match="equal sizes"):
        earth_movers_distance(np.zeros((5, 3)), np.zeros((6, 3)))


def test_refuses_problems_too_large_for_memory():
    big = np.zeros((MAX_EXACT_POINTS + 1, 3))
    with pytest.raises(ValueError, match="em_kd"):
        earth_movers_distance(big, big)
