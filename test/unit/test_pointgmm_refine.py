"""PointGMM refinement (issue 18): the network's mixture initialises EM on the observed points.
Checked against independent numpy/scipy computations: the observed points' likelihood never
decreases, the coarser levels are the moment-matched merges of their children, the Gaussians a
partial scan does not support keep the prediction exactly (and are exactly those the rule
names), and everything stays on the input's device and dtype; the stage publishes and resamples
the refined mixture."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmm_perception.gmm import fitting
from gmm_perception.gmm import mixture as mx
from gmm_perception.gmm.hierarchical import GmmLevel, HierarchicalGmm
from gmm_perception.models.pointgmm import PointGmm, PointGmmConfig, gram_schmidt, refine
from gmm_perception.pipeline.configs import ShapeModelConfig
from gmm_perception.pipeline.shape_model import ShapeModeller
from tiny_configs import POINTGMM_TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CHILDREN = 4
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sphere_points(n: int, seed: int, half: bool = False) -> np.ndarray:
    """Points on a unit sphere at (3, 1, 0.5) with 1 cm noise; `half`: only x > 0 (one view)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(4 * n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    if half:
        directions = directions[directions[:, 0] > 0.1]
    points = directions[:n] + 0.01 * rng.normal(size=(n, 3))
    return points + [3.0, 1.0, 0.5]


def prior_hierarchy(dtype=torch.float64, device="cpu", seed: int = 0) -> HierarchicalGmm:
    """A blurred guess of the whole sphere, as a network would give: 8 roots, 32 children,
    means near the sphere (20 cm off), broad random Gaussians, uneven sibling weights."""
    generator = torch.Generator().manual_seed(seed)
    logits, means, axes, eigenvalues = [], [], [], []
    for k in (8, 8 * CHILDREN):
        directions = torch.randn(1, k, 3, generator=generator, dtype=dtype)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        means.append(directions * (1 + 0.2 * torch.randn(1, k, 1, generator=generator,
                                                          dtype=dtype))
                     + torch.tensor([3.0, 1.0, 0.5], dtype=dtype))
        axes.append(gram_schmidt(*torch.randn(2, 1, k, 3, generator=generator, dtype=dtype)))
        eigenvalues.append(0.002 + 0.05 * torch.rand(1, k, 3, generator=generator, dtype=dtype))
        logits.append(torch.randn(1, k, generator=generator, dtype=dtype))
    hgmm = HierarchicalGmm.from_sibling_logits(logits, means, axes, eigenvalues, CHILDREN)
    return HierarchicalGmm([GmmLevel(*(t.to(device) for t in (
        lv.weights, lv.means, lv.axes, lv.eigenvalues, lv.parents, lv.sibling_log_weights)))
        for lv in hgmm.levels], CHILDREN)


def numpy_level(level: GmmLevel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = level.as_arrays(0)
    return arrays["weights"], arrays["means"], arrays["covariances"]


def scipy_nll(level: GmmLevel, points: np.ndarray) -> float:
    """-mean log sum_k w_k N(x | mu_k, Sigma_k), one scipy density per component."""
    weights, means, covariances = numpy_level(level)
    log_joint = np.stack([np.log(w) + multivariate_normal(m, c).logpdf(points)
                          for w, m, c in zip(weights, means, covariances)], axis=1)
    return float(-logsumexp(log_joint, axis=1).mean())


def scipy_masses(level: GmmLevel, points: np.ndarray) -> np.ndarray:
    """Responsibility mass of every component under the mixture (the E step, by scipy)."""
    weights, means, covariances = numpy_level(level)
    log_joint = np.stack([np.log(w) + multivariate_normal(m, c).logpdf(points)
                          for w, m, c in zip(weights, means, covariances)], axis=1)
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True)).sum(axis=0)


@pytest.mark.parametrize("support", [0.0, 0.3])
@pytest.mark.parametrize("half", [False, True])
def test_each_iteration_never_decreases_the_observed_points_likelihood(support, half):
    points = sphere_points(400, seed=1, half=half)
    prior = prior_hierarchy()
    observed = torch.from_numpy(points)[None]
    # refine is deterministic, so refining k times from the prior is the k-th iterate
    nll = [scipy_nll(refine(prior, observed, k, support)[0].finest, points) for k in range(9)]
    assert nll[0] == pytest.approx(scipy_nll(prior.finest, points), abs=1e-9)
    # EM's guarantee, up to the covariance floor added after each M step
    assert np.all(np.diff(nll) <= 1e-3), nll
    assert nll[-1] < nll[0] - 1.0, nll


def test_coarser_levels_are_the_moment_matched_merges_of_their_children():
    points = sphere_points(400, seed=2)
    refined, _ = refine(prior_hierarchy(), torch.from_numpy(points)[None], 3, 0.1)
    for parent_level, child_level in zip(refined.levels[:-1], refined.levels[1:]):
        w, mu, cov = numpy_level(child_level)
        parent_w, parent_mu, parent_cov = numpy_level(parent_level)
        for parent in range(len(parent_w)):
            group = np.flatnonzero(child_level.parents.numpy() == parent)
            assert len(group) == CHILDREN
            total = w[group].sum()
            mean = w[group] @ mu[group] / total
            second = np.einsum("k,kij->ij", w[group], cov[group] + np.einsum(
                "ki,kj->kij", mu[group], mu[group])) / total
            assert parent_w[parent] == pytest.approx(total, rel=1e-9)
            np.testing.assert_allclose(parent_mu[parent], mean, atol=1e-9)
            np.testing.assert_allclose(parent_cov[parent], second - np.outer(mean, mean),
                                       atol=1e-9)
        # sibling log weights: log of the share of the parent's weight
        np.testing.assert_allclose(
            child_level.sibling_log_weights[0].numpy(),
            np.log(w) - np.log(parent_w[child_level.parents.numpy()]), atol=1e-9)


def test_unsupported_gaussians_of_a_partial_scan_keep_the_prediction():
    points = sphere_points(400, seed=3, half=True)  # only x > 0.1 of the sphere was seen
    prior = prior_hierarchy()
    support = 0.1
    refined, kept = refine(prior, torch.from_numpy(points)[None], 5, support)
    before, after = prior.finest, refined.finest
    # the rule: responsibility mass under the prediction below support x N x weight
    expected = scipy_masses(before, points) < support * len(points) * \
        before.weights[0].numpy()
    np.testing.assert_array_equal(kept[0].numpy(), expected)
    far_side = (before.means[0, :, 0] < 3.0 - 0.7).numpy()  # the back of the sphere
    assert far_side.sum() >= 4 and np.all(kept[0].numpy()[far_side])  # is kept
    assert (~kept).sum() >= 4
    for name in ("weights", "means", "axes", "eigenvalues"):
        a, b = getattr(before, name)[kept], getattr(after, name)[kept]
        assert torch.equal(a, b), name
    # the seen side moved; all weights still sum to one
    assert not torch.allclose(before.means[~kept], after.means[~kept])
    assert float(after.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    # plain EM (support 0) instead drains the unseen side's weight onto the points
    plain, none_kept = refine(prior, torch.from_numpy(points)[None], 5, 0.0)
    assert not none_kept.any()
    assert float(plain.finest.weights[0, kept[0]].sum()) \
        < 0.25 * float(before.weights[0, kept[0]].sum())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_refinement_stays_on_the_inputs_device_and_dtype(device, dtype):
    prior = prior_hierarchy(dtype, device)
    points = torch.from_numpy(sphere_points(300, seed=4)).to(device=device, dtype=dtype)[None]
    refined, kept = refine(prior, points, 3, 0.1)
    for level in refined.levels:
        for tensor in (level.weights, level.means, level.axes, level.eigenvalues,
                       level.sibling_log_weights):
            assert tensor.device == points.device and tensor.dtype == dtype
            assert torch.isfinite(tensor).all()
        assert level.parents.device == points.device
    assert kept.device == points.device and kept.dtype == torch.bool
    # points of another dtype follow the mixture
    other, _ = refine(prior, points.to(torch.float64 if dtype == torch.float32 else
                                       torch.float32), 3, 0.1)
    assert other.finest.means.dtype == dtype
    torch.testing.assert_close(other.finest.means, refined.finest.means, atol=1e-4, rtol=0)


def test_support_out_of_range_is_refused():
    packed = mx.pack(torch.ones(1, 2) / 2, torch.zeros(1, 2, 3),
                     torch.eye(3).expand(1, 2, 3, 3)).unsqueeze(1)
    with pytest.raises(ValueError, match="support"):
        fitting.refine_em(torch.randn(1, 50, 3), packed, 1, support=1.5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PointGmm(PointGmmConfig(**POINTGMM_TINY)).eval()


def test_the_stage_publishes_and_resamples_the_refined_mixture(model):
    points = sphere_points(256, seed=5).astype(np.float32)

    def run(iterations):
        config = ShapeModelConfig(input_points=256, resample_points=4000, seed=1,
                                  refine_iterations=iterations)
        return ShapeModeller(config, model, torch.device("cpu"))(points)

    raw, refined = run(0), run(10)
    finest = [GmmLevel.from_arrays(result.levels[-1], torch.float64) for result in (raw, refined)]
    nll = [scipy_nll(level, points.astype(np.float64)) for level in finest]
    assert nll[1] < nll[0] - 0.5, nll
    # the resampled cloud comes from the refined mixture: it fits it better than the raw one
    drawn = refined.resampled.astype(np.float64)
    assert scipy_nll(finest[1], drawn) < scipy_nll(finest[0], drawn) - 0.5
    # a hierarchy still: each parent's children share out exactly its weight
    for parent, child in zip(refined.levels[:-1], refined.levels[1:]):
        np.testing.assert_allclose(np.bincount(child["parents"], child["weights"],
                                               len(parent["weights"])), parent["weights"],
                                   atol=1e-6)
        assert np.all(np.linalg.eigvalsh(child["covariances"]) > 0)
