"""Negative log-likelihood of points under a Gaussian mixture, full covariances, any dimension."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

_WEIGHT_SUM_TOLERANCE = 1e-6


def gmm_negative_log_likelihood(points: ArrayLike, weights: ArrayLike, means: ArrayLike,
                                covariances: ArrayLike) -> float:
    """``-mean_i log sum_k w_k N(x_i | mu_k, Sigma_k)`` for points (n, d), weights (K,),
    means (K, d) and covariances (K, d, d).

    Stable: each Sigma_k = L L^T by Cholesky, so the Mahalanobis term is ||L^-1 (x - mu)||^2 by a
    triangular solve (no explicit inverse) and log det Sigma_k = 2 sum log diag L; the mixture sum
    is a logsumexp over components, so points far from every component give a large finite value
    instead of log(0). Zero weights are allowed. Memory O(n K).
    """
    x = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    sigma = np.asarray(covariances, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"points must be a non-empty (n, d) array, got {x.shape}")
    n_components, dim = len(w), x.shape[1]
    if w.shape != (n_components,) or mu.shape != (n_components, dim) \
            or sigma.shape != (n_components, dim, dim):
        raise ValueError(f"for {dim}-D points need weights (K,), means (K, {dim}), covariances "
                         f"(K, {dim}, {dim}); got {w.shape}, {mu.shape}, {sigma.shape}")
    if n_components == 0 or np.any(w < 0) or abs(w.sum() - 1.0) > _WEIGHT_SUM_TOLERANCE:
        raise ValueError("weights must be non-negative and sum to 1")
    # Cholesky reads only the lower triangle: an asymmetric input would be used silently.
    if not np.allclose(sigma, np.swapaxes(sigma, 1, 2), rtol=1e-10, atol=1e-12):
        raise ValueError("covariances must be symmetric")

    log_components = np.empty((len(x), n_components))
    for k in range(n_components):
        try:
            lower = np.linalg.cholesky(sigma[k])
        except np.linalg.LinAlgError as error:
            raise ValueError(f"covariance {k} is not positive definite") from error
        z = solve_triangular(lower, (x - mu[k]).T, lower=True)
        log_det = 2.0 * np.sum(np.log(np.diag(lower)))
        log_components[:, k] = -0.5 * (dim * np.log(2.0 * np.pi) + log_det + np.sum(z**2, axis=0))
    with np.errstate(divide="ignore"):  # log(0) = -inf for a zero weight: logsumexp handles it
        log_weights = np.log(w)
    return float(-np.mean(logsumexp(log_components + log_weights, axis=1)))
