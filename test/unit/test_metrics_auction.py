"""The auction leaf solver of EM-kD against scipy's exact assignment on the same cost matrices."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from gmm_perception.metrics.auction import auction_assignment


def exact_total(a: np.ndarray, b: np.ndarray) -> float:
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


def assert_is_the_bijection_it_reports(a, b, result):
    n = len(a)
    assert np.array_equal(np.sort(result.match), np.arange(n))
    np.testing.assert_allclose(result.distances, np.linalg.norm(a - b[result.match], axis=1),
                               rtol=1e-12, atol=1e-15)


KINDS = {
    "uniform": lambda rng, n: (rng.random((n, 3)), rng.random((n, 3))),
    "gaussian-vs-shifted-box": lambda rng, n: (rng.normal(size=(n, 3)),
                                               rng.random((n, 3)) * [4, 1, 0.1] + 2),
    "sphere-surface": lambda rng, n: tuple(
        x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, n, 3))),
    "plane-2d": lambda rng, n: (rng.random((n, 2)), rng.random((n, 2))),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 17, 256, 1024])
@pytest.mark.parametrize("tolerance", [1e-1, 1e-3])
def test_within_the_tolerance_of_the_optimum_and_never_below_it(kind, n, tolerance):
    rng = np.random.default_rng(n)
    a, b = KINDS[kind](rng, n)
    result = auction_assignment(a, b, tolerance)
    assert result.complete
    assert_is_the_bijection_it_reports(a, b, result)
    optimum = exact_total(a, b)
    total = float(result.distances.sum())
    assert optimum - 1e-9 <= total <= optimum * (1 + tolerance) + 1e-12


def test_a_single_point_and_coincident_clouds():
    one = auction_assignment([[1.0, 2.0, 3.0]], [[1.0, 2.0, 5.0]])
    assert one.match.tolist() == [0] and one.distances.tolist() == [2.0] and one.complete
    rng = np.random.default_rng(0)
    a = rng.random((300, 3))
    permutation = rng.permutation(300)
    same = auction_assignment(a, a[permutation])
    assert_is_the_bijection_it_reports(a, a[permutation], same)
    assert same.distances.sum() <= 1e-3 * np.ptp(a, axis=0).max()  # optimum 0: eps-close to it
    repeated = auction_assignment(np.zeros((50, 3)), np.zeros((50, 3)))
    assert repeated.complete and np.array_equal(np.sort(repeated.match), np.arange(50))
    assert repeated.distances.max() == 0.0


def test_the_bid_guard_still_returns_a_bijection():
    rng = np.random.default_rng(5)
    a, b = rng.random((200, 3)), rng.random((200, 3)) + 0.3
    for cap in (0, 50, 1000):
        capped = auction_assignment(a, b, max_bids=cap)
        assert not capped.complete
        assert_is_the_bijection_it_reports(a, b, capped)
        assert capped.distances.sum() >= exact_total(a, b) - 1e-9


def test_rejects_bad_arguments():
    a = np.zeros((4, 3))
    with pytest.raises(ValueError, match="tolerance"):
        auction_assignment(a, a, tolerance=0.0)
    with pytest.raises(ValueError, match="max_bids"):
        auction_assignment(a, a, max_bids=-1)
    with pytest.raises(ValueError, match="equal sizes"):
        auction_assignment(a, a[:3])
    with pytest.raises(ValueError, match="non-finite"):
        auction_assignment(np.full((4, 3), np.nan), a)
