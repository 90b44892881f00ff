"""Bertsekas' auction algorithm for the Euclidean assignment problem of two equal-size clouds.

The leaf solver of EM-kD (NeuralQAAD, Sec. 3.2: "we use the auction algorithm as an EMD
approximation"). Persons are the points of `a`, objects the points of `b`; person i values object
j at -||a_i - b_j||. Gauss-Seidel forward auction: one unassigned person at a time bids for its
best object j1 (value v1 = -c_ij1 - p_j1), raising p_j1 by v1 - v2 + eps (v2 its second-best
value) and evicting the object's previous owner. With epsilon scaling (eps from the largest cost /
4, divided by `EPS_FACTOR` per phase, prices kept between phases) down to

    eps_final = tolerance * mean_i min_j c_ij,

the final assignment satisfies eps-complementary slackness, so its total cost is within
n * eps_final of the optimum (Bertsekas 1988). Every row's matched cost is at least its row
minimum, so n * eps_final <= tolerance * optimum: the mean matched distance is within a factor
(1 + tolerance) of the exact EMD of the pair, and never below it (it is a bijection).

Termination: each phase ends when every person holds an object. A phase that has not ended after
`max_bids` bids in total (a guard, not hit on surface samples: 1024-point leaves take about
35,000 bids) stops; the unassigned persons then take their nearest free object in index order,
which the paper also does after its fixed 100 iterations ("the input point closest to a
repeatedly chosen target point is matched. Any remaining points are randomly matched"). The
result is still a bijection, so EM-kD stays an upper bound of the EMD, but without the (1 +
tolerance) guarantee: `AuctionResult.complete` says which.

The kernel is compiled by numba (nogil: EM-kD runs leaves on threads). numba is imported only
here, so model code and the GPU machine, which lack it, import the package without it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gmm_perception.metrics.emd import as_equal_size_pair

DEFAULT_TOLERANCE = 1e-3  # relative: mean matched distance <= (1 + tolerance) x the leaf's EMD
EPS_FACTOR = 4.0  # epsilon scaling: 4 was fastest of 4 / 8 / 16 on 1024-point surface leaves
MAX_BIDS_PER_POINT = 2000  # the guard: 2,048,000 bids (about 2 s) for a 1024-point leaf


class AuctionResult(NamedTuple):
    match: NDArray[np.intp]  # a[i] <-> b[match[i]], a permutation of range(n)
    distances: NDArray[np.float64]  # ||a[i] - b[match[i]]||
    complete: bool  # the auction ended by itself: within (1 + tolerance) of the optimum


def auction_assignment(a: ArrayLike, b: ArrayLike, tolerance: float = DEFAULT_TOLERANCE,
                       max_bids: int | None = None) -> AuctionResult:
    """Near-optimal bijection between equal-size (n, d) clouds (module docstring).

    `tolerance` > 0 bounds the relative excess over the optimal total distance; `max_bids`
    (default MAX_BIDS_PER_POINT x n) caps the bids, after which the matching is completed
    greedily and `complete` is False.
    """
    a, b = as_equal_size_pair(a, b)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if max_bids is None:
        max_bids = MAX_BIDS_PER_POINT * len(a)
    if max_bids < 0:
        raise ValueError(f"max_bids must be >= 0, got {max_bids}")
    match, distances, complete = _kernel()(np.ascontiguousarray(a), np.ascontiguousarray(b),
                                           float(tolerance), EPS_FACTOR, int(max_bids))
    return AuctionResult(match.astype(np.intp), distances, bool(complete))


_COMPILED = None


def _kernel():
    """The numba-compiled auction, compiled on first use (and cached on disk by numba)."""
    global _COMPILED
    if _COMPILED is None:
        import numba

        _COMPILED = numba.njit(nogil=True, cache=True)(_auction)
    return _COMPILED


def _auction(a, b, tolerance, eps_factor, max_bids):  # pragma: no cover - runs compiled
    n, dims = a.shape
    cost = np.empty((n, n))
    largest = 0.0
    nearest_sum = 0.0
    for i in range(n):
        row_min = np.inf
        for j in range(n):
            squared = 0.0
            for k in range(dims):
                step = a[i, k] - b[j, k]
                squared += step * step
            distance = np.sqrt(squared)
            cost[i, j] = distance
            largest = max(largest, distance)
            row_min = min(row_min, distance)
        nearest_sum += row_min
    eps_final = tolerance * nearest_sum / n
    if eps_final <= 0.0:  # every point of a coincides with some point of b
        eps_final = tolerance * largest / n if largest > 0.0 else 1.0
    price = np.zeros(n)
    owner = np.full(n, -1, np.int64)
    match = np.full(n, -1, np.int64)
    stack = np.empty(n, np.int64)
    eps = max(largest / 4.0, eps_final)
    bids = 0
    complete = True
    while True:
        owner[:] = -1
        match[:] = -1
        for i in range(n):
            stack[i] = n - 1 - i  # persons bid in index order: deterministic
        top = n
        while top > 0:
            if bids >= max_bids:
                complete = False
                break
            top -= 1
            person = stack[top]
            best, first, second = 0, -np.inf, -np.inf
            for j in range(n):
                value = -cost[person, j] - price[j]
                if value > first:
                    second = first
                    first = value
                    best = j
                elif value > second:
                    second = value
            # n == 1: no second object; any positive raise keeps the bid valid.
            price[best] += (first - second if second > -np.inf else 0.0) + eps
            previous = owner[best]
            owner[best] = person
            match[person] = best
            if previous >= 0:
                match[previous] = -1
                stack[top] = previous
                top += 1
            bids += 1
        if not complete or eps <= eps_final:
            break
        eps = max(eps / eps_factor, eps_final)
    for person in range(n):  # only after the guard: nearest free object, in index order
        if match[person] < 0:
            best, nearest = -1, np.inf
            for j in range(n):
                if owner[j] < 0 and cost[person, j] < nearest:
                    nearest = cost[person, j]
                    best = j
            match[person] = best
            owner[best] = person
    distances = np.empty(n)
    for i in range(n):
        distances[i] = cost[i, match[i]]
    return match, distances, complete
