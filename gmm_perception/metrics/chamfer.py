"""Symmetric Chamfer distance through KD-trees (scipy cKDTree, all cores), to millions of points.

Convention: the Chamfer distance is the *sum of the two means* of nearest-neighbour distances,

    CD(A, B) = mean_{a in A} min_{b in B} ||a - b|| + mean_{b in B} min_{a in A} ||b - a||,

and ``squared=True`` squares each nearest distance before averaging. Papers differ:
  * ShapeGF (shapegf.md, Sec. 4) only says "symmetric Chamfer Distance"; its evaluation code
    (``EMD_CD`` in RuojinCai/ShapeGF, taken from PointFlow/AtlasNet) computes the *squared* variant
    with the sum of the two means: ``chamfer_distance(a, b, squared=True)``, reported x10^4.
  * NeuralQAAD eq. 10 sums (does not average) unsquared distances:
    ``len(a) * mean_ab + len(b) * mean_ba``.
  * pointgmm-summary.md states no Chamfer formula.
Other variants (one-sided accuracy = ``nearest_distances(pred, gt).mean()``, completeness =
``nearest_distances(gt, pred).mean()``, the max of the two, F-scores) follow from
``nearest_distances``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree


def _as_cloud(points: ArrayLike, name: str) -> NDArray[np.float64]:
    cloud = np.asarray(points, dtype=np.float64)
    if cloud.ndim != 2 or len(cloud) == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {cloud.shape}")
    if not np.isfinite(cloud).all():
        raise ValueError(f"{name} contains non-finite coordinates")
    return cloud


def _query(tree: cKDTree, queries: NDArray, order: NDArray[np.intp]) -> NDArray[np.float64]:
    """Nearest distances from `queries` to the points of `tree`, in the queries' original order.

    Queries are sent in `order`, a spatially coherent permutation (the leaf order of the queries'
    own KD-tree): consecutive queries then walk the same tree nodes, which keeps them in cache and
    makes 1M-point queries about 2.5x faster than in random order.
    """
    distances = np.empty(len(queries))
    distances[order] = tree.query(queries[order], k=1, workers=-1)[0]
    return distances


def _trees(a: NDArray, b: NDArray) -> tuple[cKDTree, cKDTree]:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"clouds differ in dimension: {a.shape[1]} and {b.shape[1]}")
    # Sliding-midpoint trees build faster than median-balanced ones and query as fast here.
    return cKDTree(a, balanced_tree=False), cKDTree(b, balanced_tree=False)


def nearest_distances(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """For each point of `a`, the Euclidean distance to its nearest point of `b` (len(a),)."""
    a, b = _as_cloud(a, "a"), _as_cloud(b, "b")
    tree_a, tree_b = _trees(a, b)
    return _query(tree_b, a, tree_a.indices)


def chamfer_distance(a: ArrayLike, b: ArrayLike, squared: bool = False) -> float:
    """Symmetric Chamfer distance: the sum of the two mean nearest distances (module docstring).

    ``squared=True`` averages squared nearest distances instead (the ShapeGF/PointFlow convention).
    Clouds may differ in size; both must be non-empty (n, d) arrays of the same d.
    """
    a, b = _as_cloud(a, "a"), _as_cloud(b, "b")
    tree_a, tree_b = _trees(a, b)
    a_to_b = _query(tree_b, a, tree_a.indices)
    b_to_a = _query(tree_a, b, tree_b.indices)
    if squared:
        a_to_b, b_to_a = a_to_b**2, b_to_a**2
    return float(a_to_b.mean() + b_to_a.mean())
