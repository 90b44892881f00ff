"""GMM negative log-likelihood against scipy.stats.multivariate_normal."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gmm_perception.metrics.gmm import gmm_negative_log_likelihood


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


def reference_nll(points, weights, means, covariances) -> float:
    density = sum(w * multivariate_normal(m, c).pdf(points)
                  for w, m, c in zip(weights, means, covariances))
    return float(-np.mean(np.log(density)))


@pytest.mark.parametrize("dim, n_components", [(3, 3), (2, 2), (1, 4), (5, 3)])
def test_matches_scipy(dim, n_components):
    rng = np.random.default_rng(dim * 10 + n_components)
    weights = rng.dirichlet(np.ones(n_components))
    means = rng.normal(scale=2.0, size=(n_components, dim))
    covariances = np.stack([random_spd(rng, dim) for _ in range(n_components)])
    points = rng.normal(scale=2.0, size=(400, dim))
    assert gmm_negative_log_likelihood(points, weights, means, covariances) == pytest.approx(
        reference_nll(points, weights, means, covariances), rel=1e-10)


def test_single_standard_gaussian_closed_form():
    # -log N(0 | 0, I_3) = 1.5 log(2 pi).
    value = gmm_negative_log_likelihood(np.zeros((1, 3)), [1.0], np.zeros((1, 3)), np.eye(3)[None])
    assert value == pytest.approx(1.5 * np.log(2 * np.pi))


def test_stable_far_from_every_component():
    # The naive density underflows to 0 (log -> -inf); the logsumexp form stays finite and exact.
    means = np.array([[0.0, 0.0], [1.0, 0.0]])
    covariances = np.stack([np.eye(2) * 1e-4] * 2)
    value = gmm_negative_log_likelihood([[100.0, 0.0]], [0.5, 0.5], means, covariances)
    nearest = 99.0**2 / (2 * 1e-4) + np.log(2 * np.pi * 1e-4) - np.log(0.5)
    assert np.isfinite(value) and value == pytest.approx(nearest, rel=1e-12)


def test_zero_weight_component_is_ignored():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3))
    covariances = np.stack([np.eye(3), np.eye(3) * 2])
    means = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    with_zero = gmm_negative_log_likelihood(points, [1.0, 0.0], means, covariances)
    alone = gmm_negative_log_likelihood(points, [1.0], means[:1], covariances[:1])
    assert with_zero == pytest.approx(alone, rel=1e-12)


@pytest.mark.parametrize("weights, covariance", [([0.6, 0.6], np.eye(2)),
                                                 ([1.5, -0.5], np.eye(2)),
                                                 ([0.5, 0.5], np.diag([1.0, -1.0])),
                                                 ([0.5, 0.5], np.array([[1.0, 0.5], [0.0, 1.0]]))])
def test_rejects_invalid_mixtures(weights, covariance):
    with pytest.raises(ValueError):
        gmm_negative_log_likelihood(np.zeros((3, 2)), weights, np.zeros((2, 2)),
                                    np.stack([np.eye(2), covariance]))
