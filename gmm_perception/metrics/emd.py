"""Exact Earth Mover's Distance between two point sets of equal size.

Normalisation: the EMD here is the *mean* matched Euclidean distance,
``min_sigma (1/n) sum_i ||a_i - b_sigma(i)||``, over bijections sigma. NeuralQAAD (eq. 12) writes
the sum; the mean is that sum divided by n, so it does not grow with the point count and is
comparable across resolutions. It is also what the PointFlow/ShapeGF evaluation code reports
(``match_cost / N``), though that uses an approximate matching.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

# The dense n x n float64 cost matrix costs 8 n^2 bytes (288 MB at 6000) and the Hungarian solver
# O(n^3) time (tens of seconds at 6000): past this, use em_kd, which splits the problem.
MAX_EXACT_POINTS = 6000


def as_equal_size_pair(a: ArrayLike, b: ArrayLike) -> tuple[NDArray, NDArray]:
    """Validate two non-empty (n, d) clouds of equal size and dimension; as float64 arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"clouds must be (n, d) arrays of the same d, got {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"the EMD as a bijection needs equal sizes, got {len(a)} and {len(b)} "
                         "points (resample one cloud to the other's size first)")
    if len(a) == 0:
        raise ValueError("clouds are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("clouds contain non-finite coordinates")
    return a, b


def emd_assignment(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Optimal bijection ``a[i] <-> b[match[i]]`` and its distances ``||a[i] - b[match[i]]||``.

    Raises ValueError for unequal sizes and above MAX_EXACT_POINTS points (use em_kd there).
    """
    a, b = as_equal_size_pair(a, b)
    if len(a) > MAX_EXACT_POINTS:
        raise ValueError(f"exact EMD of {len(a)} points needs a {len(a)}^2 cost matrix and O(n^3) "
                         f"time; above {MAX_EXACT_POINTS} points use "
                         "gmm_perception.metrics.emkd.em_kd, an upper bound that scales")
    cost = cdist(a, b)
    rows, match = linear_sum_assignment(cost)  # rows come back as arange(n)
    return match, cost[rows, match]


def earth_movers_distance(a: ArrayLike, b: ArrayLike) -> float:
    """Exact EMD: the mean Euclidean distance over the optimal bijection (module docstring)."""
    _, distances = emd_assignment(a, b)
    return float(distances.mean())
