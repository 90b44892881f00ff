"""Mixture tensors and the input fit of GMCN: layout, densities, normalisation, k-means + EM."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from gmm_perception.gmm import fitting
from gmm_perception.gmm import mixture as mx


def random_mixture(shape, d, seed=0, positive=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=dtype)
    w = w.abs() + 0.1 if positive else w
    m = 3 * torch.randn(*shape, d, generator=g, dtype=dtype)
    a = torch.randn(*shape, d, d, generator=g, dtype=dtype) * 0.6
    c = a @ a.transpose(-1, -2) + 0.2 * torch.eye(d, dtype=dtype)
    return mx.pack(w, m, c)


@pytest.mark.parametrize("d", [2, 3])
def test_pack_unpack_round_trip_and_layout(d):
    mixture = random_mixture((2, 3, 5), d)
    assert mixture.shape == (2, 3, 5, 1 + d + d * d) and mx.dims_of(mixture) == d
    w, m, c = mx.unpack(mixture)
    torch.testing.assert_close(mx.pack(w, m, c), mixture)
    torch.testing.assert_close(mx.integrate(mixture), w.sum(-1))


@pytest.mark.parametrize("d", [2, 3])
def test_evaluate_matches_scipy_densities_far_from_the_origin(d):
    mixture = random_mixture((1, 2, 4), d, seed=1)
    offset = torch.full((d,), 50.0, dtype=torch.float64)
    mixture = mx.translate(mixture, offset)  # the expansion must stay accurate away from 0
    points = offset + 3 * torch.randn(1, 7, d, generator=torch.Generator().manual_seed(2),
                                      dtype=torch.float64)
    values = mx.evaluate(mixture, points)
    w, m, c = mx.unpack(mixture)
    for channel in range(2):
        expected = sum(float(w[0, channel, n]) * multivariate_normal(
            m[0, channel, n].numpy(), c[0, channel, n].numpy()).pdf(points[0].numpy())
            for n in range(4))
        np.testing.assert_allclose(values[0, channel].numpy(), expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_closed_form_inverse_and_determinant(d):
    c = mx.covariances(random_mixture((4, 6), d, seed=3))
    det, inv = mx.det_and_inverse(c)
    torch.testing.assert_close(det, torch.linalg.det(c))
    torch.testing.assert_close(inv, torch.linalg.inv(c))


def test_covariance_normalisation_gives_mean_trace_d_and_can_be_undone():
    mixture = random_mixture((3, 2, 10), 3, seed=4)
    normalised, scale = mx.normalise_covariance_scale(mixture)
    traces = torch.diagonal(mx.covariances(normalised), dim1=-2, dim2=-1).sum(-1)
    torch.testing.assert_close(traces.flatten(1).mean(1),
                               torch.full((3,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(mx.scale_space(normalised, 1 / scale), mixture)
    torch.testing.assert_close(mx.weights(normalised), mx.weights(mixture))  # integrals kept


def test_morton_codes_follow_the_z_curve_and_ignore_translation_and_scale():
    corners = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert mx.morton_codes(corners, bits=1).tolist() == [[0, 1, 2, 3]]
    # dyadic coordinates: scaling by 4 and shifting by 2 is exact in floating point
    points = torch.randint(0, 64, (2, 50, 3), generator=torch.Generator().manual_seed(5)) / 64.0
    torch.testing.assert_close(mx.morton_codes(points), mx.morton_codes(points * 4.0 + 2.0))


def known_mixture(d: int, count: int = 6000, seed: int = 0):
    """Samples of four well-separated anisotropic Gaussians with unequal weights."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    means = np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]], dtype=float)[:, :d] if d == 3 \
        else np.array([[0, 0], [8, 0], [0, 8], [8, 8]], dtype=float)
    covs = []
    for _ in range(4):
        a = rng.normal(size=(d, d)) * 0.5
        covs.append(a @ a.T + 0.3 * np.eye(d))
    labels = rng.choice(4, count, p=weights)
    points = np.stack([rng.multivariate_normal(means[k], covs[k]) for k in labels])
    return torch.tensor(points[None], dtype=torch.float32), weights, means, np.stack(covs)


def assert_recovers(fit, weights, means, covs, mean_tolerance=0.1):
    w, m, c = (t[0, 0].double().numpy() for t in mx.unpack(fit))
    match = [int(np.argmin(np.linalg.norm(m - mu, axis=1))) for mu in means]
    assert sorted(match) == [0, 1, 2, 3]
    np.testing.assert_allclose(w[match], weights, atol=0.02)
    np.testing.assert_allclose(m[match], means, atol=mean_tolerance)
    for k, j in enumerate(match):
        assert np.linalg.norm(c[j] - covs[k]) / np.linalg.norm(covs[k]) < 0.1


@pytest.mark.parametrize("d", [2, 3])
def test_kmeans_em_recovers_a_known_well_separated_mixture(d):
    points, weights, means, covs = known_mixture(d)
    fit = fitting.fit_kmeans_em(points, 4, covariance_floor=1e-5, kmeans_points=None)
    assert_recovers(fit, weights, means, covs)
    # k-means on 512 of the 6000 points: the centres carry the sampling error of ~50-200 points
    # per cluster (standard error ~0.1 here); the covariances still use every point.
    subsampled = fitting.fit_kmeans_em(points, 4, covariance_floor=1e-5, kmeans_points=512)
    assert_recovers(subsampled, weights, means, covs, mean_tolerance=0.3)


def test_plain_em_recovers_the_mixture_and_is_deterministic_for_a_seed():
    points, weights, means, covs = known_mixture(3, seed=1)
    assert_recovers(fitting.fit_em(points, 4, 20, 1e-5, init="kmeans"), weights, means, covs)
    first = fitting.fit_em(points, 4, 5, init="random", generator=torch.Generator().manual_seed(3))
    again = fitting.fit_em(points, 4, 5, init="random", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)


def mean_log_likelihood(mixture, points):
    joint = mx.log_gaussian_matrix(mixture, points, with_log_weights=True)[:, 0]
    return float(torch.logsumexp(joint, -1).mean())


def test_em_iterations_raise_the_likelihood_of_a_random_start():
    points, *_ = known_mixture(3, seed=2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    one = fitting.fit_em(points, 8, 1, 1e-5, init="random", generator=g())
    many = fitting.fit_em(points, 8, 15, 1e-5, init="random", generator=g())
    assert mean_log_likelihood(many, points) > mean_log_likelihood(one, points) + 0.05


def test_fit_is_independent_of_point_order_and_normalised():
    points = torch.rand(3, 1024, 3, generator=torch.Generator().manual_seed(6)) * \
        torch.tensor([2.0, 1.0, 0.3])
    fit = fitting.fit_kmeans_em(points, 32)
    permuted = points[:, torch.randperm(1024, generator=torch.Generator().manual_seed(7))]
    torch.testing.assert_close(fitting.fit_kmeans_em(permuted, 32), fit, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mx.weights(fit).sum(-1), torch.ones(3, 1))
    eigenvalues = torch.linalg.eigvalsh(mx.covariances(fit).double())
    assert bool((eigenvalues > 0).all())


def test_kmeans_plus_plus_is_reproducible_with_a_generator():
    points = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(8))
    a, _ = fitting.kmeans(points, 16, init="kmeans++", generator=torch.Generator().manual_seed(1))
    b, _ = fitting.kmeans(points, 16, init="kmeans++", generator=torch.Generator().manual_seed(1))
    c, _ = fitting.kmeans(points, 16, init="kmeans++", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_dataset_weight_scale_makes_the_mean_activation_the_target():
    points = torch.rand(4, 512, 3, generator=torch.Generator().manual_seed(9))
    fits = fitting.fit_kmeans_em(points, 16)
    scale = fitting.dataset_weight_scale(fits, target=2.0)
    scaled = mx.with_weights(fits, mx.weights(fits) * scale)
    assert float(fitting.mean_activation(scaled).mean()) == pytest.approx(2.0, rel=1e-4)
