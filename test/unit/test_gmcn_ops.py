"""GMCN operations against independent computations: numerical convolution on a grid, the ReLU at
the centres, exact moments of the reduction, the kernel parameterisation and weight decay."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from gmm_perception.gmm import gmcn_ops as ops
from gmm_perception.gmm import mixture as mx


def random_mixture(shape, d, seed=0, positive=False, spread=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=dtype)
    w = w.abs() + 0.1 if positive else w
    m = spread * torch.randn(*shape, d, generator=g, dtype=dtype)
    a = torch.randn(*shape, d, d, generator=g, dtype=dtype) * 0.5
    c = a @ a.transpose(-1, -2) + 0.3 * torch.eye(d, dtype=dtype)
    return mx.pack(w, m, c)


def grid(half_width: float, step: float) -> tuple[torch.Tensor, int]:
    axis = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    xs, ys = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs, ys], -1).reshape(1, -1, 2), len(axis)


def test_2d_convolution_matches_numerical_convolution_of_the_sampled_densities():
    data = random_mixture((1, 2, 3), 2, seed=0, spread=1.5)  # 2 input channels
    kernels = random_mixture((1, 2, 2), 2, seed=1, spread=1.0)  # 1 output channel
    step = 0.05
    points, size = grid(12.0, step)
    f = mx.evaluate(data, points).reshape(2, size, size).numpy()
    k = mx.evaluate(kernels[0].unsqueeze(0), points).reshape(2, size, size).numpy()
    numeric = sum(fftconvolve(f[c], k[c], mode="same") for c in range(2)) * step * step / 2
    analytic = mx.evaluate(ops.convolve(data, kernels), points).reshape(size, size).numpy()
    assert ops.convolve(data, kernels).shape == (1, 1, 2 * 3 * 2, 7)
    inner = slice(size // 4, 3 * size // 4)  # away from where the grid truncates the densities
    scale = np.abs(analytic).max()
    np.testing.assert_allclose(analytic[inner, inner], numeric[inner, inner], atol=1e-3 * scale)
    # the integral of a convolution is the product of the integrals (over channels, / F_i)
    expected_mass = (mx.integrate(data)[0] * mx.integrate(kernels)[0]).sum() / 2
    torch.testing.assert_close(mx.integrate(ops.convolve(data, kernels))[0, 0], expected_mass)


def direct_value(w, m, c, x):
    """A mixture's value at x, one Gaussian at a time (independent of mixture.evaluate)."""
    total = 0.0
    for wi, mi, ci in zip(w, m, c):
        diff = x - mi
        total += wi * math.exp(-0.5 * diff @ np.linalg.solve(ci, diff)) / math.sqrt(
            (2 * math.pi) ** len(x) * np.linalg.det(ci))
    return total


def test_one_relu_step_without_regularisers_is_equation_7():
    mixture = random_mixture((1, 1, 12), 3, seed=2, spread=1.5)
    fitted = ops.relu_fit(mixture, None, iterations=1, eps=0.0, offset=0.0)
    w, m, c = (t[0, 0].numpy() for t in mx.unpack(mixture))
    coarse = np.maximum(w, 0.0)  # eq. 6 (eps of eq. 6 replaced by the offset, here 0)
    for i in range(12):
        target = max(direct_value(w, m, c, m[i]), 0.0)
        approx = direct_value(coarse, m, c, m[i])
        assert float(mx.weights(fitted)[0, 0, i]) == pytest.approx(coarse[i] * target / approx,
                                                                   rel=1e-9, abs=1e-12)
    torch.testing.assert_close(mx.means(fitted), mx.means(mixture))  # positions frozen
    torch.testing.assert_close(mx.covariances(fitted), mx.covariances(mixture))


def grid_mixture(d: int, spacing: float, seed: int, positive: bool = False) -> torch.Tensor:
    """Two channels of 4^d Gaussians (variance 0.8) on a grid, random weights."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(4, dtype=torch.float64) * spacing
    means = torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(1, 1, -1, d)
    count = means.shape[2]
    covs = torch.eye(d, dtype=torch.float64).expand(1, 2, count, d, d) * 0.8
    weights = torch.randn(1, 2, count, generator=g, dtype=torch.float64) * 2
    return mx.pack(weights.abs() if positive else weights, means.expand(1, 2, count, d), covs)


@pytest.mark.parametrize("d", [2, 3])
def test_relu_fit_matches_the_relu_evaluated_at_the_centres(d):
    # Both signs, neighbours 3.5 apart (overlap 0.05 %): non-negative weights on these centres
    # can meet phi(gm(B_i) + c) - phi(c) at every centre, and eq. 7 does in one step.
    mixture = grid_mixture(d, 3.5, seed=3)
    centres = mx.means(mixture)
    value = mx.evaluate(mixture, centres)
    bias = torch.tensor([0.0, -0.1], dtype=torch.float64) * float(value.abs().max())
    target = torch.relu(value + bias[None, :, None])  # phi(gm + c) - phi(c) for c <= 0
    scale = float(target.max())
    assert bool((target == 0).any()) and bool((target > 0.3 * scale).any())
    fitted = ops.relu_fit(mixture, bias, iterations=1, eps=1e-6 * scale, offset=0.1)
    assert float((mx.evaluate(fitted, centres) - target).abs().max()) < 2e-3 * scale
    assert bool((mx.weights(fitted) > 0).all())  # a ReLU fit is non-negative (Appendix C)
    torch.testing.assert_close(mx.means(fitted), centres)  # positions and covariances frozen
    # the reference's constants (eps 0.05, offset 0.1): within 10 % where the ReLU is large
    reference = ops.relu_fit(mixture, bias)
    big = target > 0.3 * scale
    relative = ((mx.evaluate(reference, centres) - target).abs() / target)[big]
    assert float(relative.max()) < 0.1
    # overlapping Gaussians (2.5 apart): the heuristic stays within 5 % of the peak
    overlapping = grid_mixture(d, 2.5, seed=3)
    target = torch.relu(mx.evaluate(overlapping, mx.means(overlapping)))
    fitted = ops.relu_fit(overlapping, None, eps=1e-6 * float(target.max()))
    error = (mx.evaluate(fitted, mx.means(overlapping)) - target).abs().max()
    assert float(error) < 0.05 * float(target.max())


def test_relu_fixed_point_iterations_converge_where_the_target_is_representable():
    # All weights positive: phi(gm) = gm, so the original weights solve the fit exactly; the
    # offset starts the iteration elsewhere and the multiplicative updates return to it.
    mixture = grid_mixture(2, 1.5, seed=4, positive=True)  # strongly overlapping
    centres = mx.means(mixture)
    target = mx.evaluate(mixture, centres)
    errors = [float((mx.evaluate(ops.relu_fit(mixture, None, iterations=n, eps=0.0), centres)
                     - target).abs().max() / target.max()) for n in (1, 10, 200)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


def moments(mixture):
    """Total mass, first moment and second moment (about 0) of each mixture (..., N, L)."""
    w, m, c = mx.unpack(mixture)
    first = (w.unsqueeze(-1) * m).sum(-2)
    second = (w[..., None, None] * (c + m.unsqueeze(-1) * m.unsqueeze(-2))).sum(-3)
    return w.sum(-1), first, second


@pytest.mark.parametrize("mass_balance", [0.0, 0.5, 1.0])
def test_moment_matching_preserves_mass_and_first_and_second_moments_of_every_group(
        mass_balance):
    mixture = random_mixture((2, 3, 40), 3, seed=4, positive=True)
    mixture = mx.with_weights(mixture, mx.weights(mixture) * torch.linspace(0.01, 5, 40,
                                                                            dtype=torch.float64))
    group = ops.group_boundaries(mx.weights(mixture), 7, mass_balance)
    merged = ops.moment_match(mixture, group, 7)
    for j in range(7):
        members = mixture * (group == j).unsqueeze(-1)  # zero weight outside group j
        for got, want in zip(moments(merged[..., j:j + 1, :]), moments(members)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    reduced = ops.reduce_mixture(mixture, 5, mass_balance=mass_balance)
    assert reduced.shape == (2, 3, 5, 13)
    for got, want in zip(moments(reduced), moments(mixture)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_group_boundaries_give_non_empty_contiguous_groups():
    weights = torch.ones(2, 30, dtype=torch.float64)
    weights[0, 3] = 1000.0  # one heavy element would claim every mass quantile
    for balance in (0.0, 0.5, 1.0):
        group = ops.group_boundaries(weights, 8, balance)
        assert bool((group[:, 1:] >= group[:, :-1]).all())
        assert all(set(row.tolist()) == set(range(8)) for row in group)
    equal = ops.group_boundaries(torch.ones(24), 6, 0.0)
    assert torch.bincount(equal).tolist() == [4] * 6


@pytest.mark.parametrize("d", [2, 3])
def test_fused_convolution_reduction_equals_moment_matching_the_sorted_convolution(d):
    data = random_mixture((2, 3, 16), d, seed=5)
    kernels = random_mixture((4, 3, 5), d, seed=6)
    convolution = ops.convolve(data, kernels)
    for components in (24, 40):
        fused = ops.convolve_reduce(data, kernels, components)
        order, _ = ops.convolution_order(data, kernels)
        ordered = torch.gather(convolution, 2, order.unsqueeze(-1).expand_as(convolution))
        group = ops.group_boundaries(torch.zeros(ordered.shape[2]), components)
        torch.testing.assert_close(fused, ops.moment_match(ordered, group, components))
        assert bool((mx.weights(ordered)[..., :-1] >= 0).logical_or(  # signs kept apart
            mx.weights(ordered)[..., 1:] < 0).all())
    positive = ops.convolve_reduce(mx.with_weights(data, mx.weights(data).abs()),
                                   mx.with_weights(kernels, mx.weights(kernels).abs()), 24)
    full = ops.convolve(mx.with_weights(data, mx.weights(data).abs()),
                        mx.with_weights(kernels, mx.weights(kernels).abs()))
    for got, want in zip(moments(positive), moments(full)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_kernel_covariances_follow_equation_9_and_weight_decay_equation_8():
    kernels = ops.GaussianKernels(3, in_channels=2, out_channels=4, components=5, radius=2.5,
                                  eps=0.05)
    a = kernels.factor.detach()
    expected = a.transpose(-1, -2) @ a + 0.05 * torch.eye(3)
    torch.testing.assert_close(kernels.covariances().detach(), expected)
    assert bool((torch.linalg.eigvalsh(kernels.covariances().detach()) >= 0.05 - 1e-6).all())
    centre = kernels.position.detach()[..., 0, :]
    torch.testing.assert_close(centre, torch.zeros_like(centre))  # one Gaussian at the origin
    torch.testing.assert_close(kernels.position.detach()[..., 1:, :].norm(dim=-1),
                               torch.full((4, 2, 4), 2.5))
    c = kernels.covariances().detach()
    decay = (kernels.weight.detach() ** 2 + ((c - torch.eye(3)) ** 2).mean((-1, -2))).mean()
    torch.testing.assert_close(kernels.weight_decay().detach(), decay)
    with torch.no_grad():
        kernels.weight.zero_()
        kernels.factor.copy_(torch.eye(3) * math.sqrt(0.95))
    assert float(kernels.weight_decay().detach()) == pytest.approx(0.0, abs=1e-12)


def test_layer_gradients_reach_every_kernel_parameter():
    torch.manual_seed(0)
    layer = ops.GmcnLayer(3, 2, 4, components=8, dense_components=16)
    data = random_mixture((2, 2, 16), 3, seed=7, positive=True, dtype=torch.float32)
    out = layer(data)
    assert out.shape == (2, 4, 8, 13)
    mx.integrate(out).sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name
