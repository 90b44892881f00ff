"""DeepGMR's closed-form blocks and the model's equivariance, against closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gmm_perception.geometry.rri import rri_features
from gmm_perception.geometry.transforms import make_transform, random_rotation
from gmm_perception.gmm.registration import (align_mixtures, fit_isotropic_gmm,
                                             weighted_procrustes)
from gmm_perception.models.deepgmr import DeepGmr, DeepGmrConfig, deepgmr_loss


def random_transforms(rng, count: int) -> torch.Tensor:
    return torch.tensor(np.stack([make_transform(random_rotation(rng), rng.uniform(-1, 1, 3))
                                  for _ in range(count)]))


def apply(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]


def test_weighted_procrustes_recovers_an_exact_transform_from_correspondences():
    rng = np.random.default_rng(0)
    T = random_transforms(rng, 8)
    source = torch.tensor(rng.normal(size=(8, 16, 3)))
    weights = torch.tensor(rng.uniform(0.1, 2.0, (8, 16)))
    estimate = weighted_procrustes(source, apply(T, source), weights)
    torch.testing.assert_close(estimate, T, atol=1e-5, rtol=0)


def test_weighted_procrustes_never_returns_a_reflection():
    rng = np.random.default_rng(1)
    source = torch.tensor(rng.normal(size=(4, 10, 3)))
    mirrored = source * torch.tensor([1.0, 1.0, -1.0])  # best orthogonal fit is a reflection
    R = weighted_procrustes(source, mirrored, torch.ones(4, 10, dtype=source.dtype))[:, :3, :3]
    torch.testing.assert_close(torch.det(R), torch.ones(4, dtype=R.dtype))


def test_weighted_procrustes_minimises_the_weighted_objective():
    rng = np.random.default_rng(2)
    source = torch.tensor(rng.normal(size=(1, 12, 3)))
    target = apply(random_transforms(rng, 1), source) + 0.05 * torch.tensor(rng.normal(size=(1, 12, 3)))
    weights = torch.tensor(rng.uniform(0.1, 2.0, (1, 12)))

    def cost(T):
        return (weights * (apply(T, source) - target).pow(2).sum(-1)).sum()

    best = cost(weighted_procrustes(source, target, weights))
    for T in random_transforms(rng, 200):  # perturbations around the optimum do worse
        nudged = weighted_procrustes(source, target, weights)[0] @ torch.linalg.matrix_exp(
            0.02 * torch.tensor([[0, -T[0, 1], T[0, 2], T[0, 3]], [T[0, 1], 0, -T[1, 2], T[1, 3]],
                                 [-T[0, 2], T[1, 2], 0, T[2, 3]], [0, 0, 0, 0]]))
        assert cost(nudged[None]) >= best - 1e-9


def test_isotropic_gmm_from_hard_assignments_matches_per_cluster_statistics():
    rng = np.random.default_rng(3)
    points = torch.tensor(rng.normal(size=(1, 60, 3)))
    labels = torch.tensor(rng.integers(0, 4, 60))
    gamma = torch.nn.functional.one_hot(labels, 4).double()[None]
    gmm = fit_isotropic_gmm(points, gamma)
    for j in range(4):
        members = points[0, labels == j]
        assert gmm.weights[0, j].item() == pytest.approx(len(members) / 60)
        torch.testing.assert_close(gmm.means[0, j], members.mean(0))
        spread = (members - members.mean(0)).pow(2).sum(-1).mean()  # full squared distance
        assert gmm.variances[0, j].item() == pytest.approx(spread.item())


def test_aligning_a_mixture_with_its_transformed_copy_recovers_the_transform():
    rng = np.random.default_rng(4)
    points = torch.tensor(rng.normal(size=(3, 200, 3)))
    gamma = torch.softmax(torch.tensor(rng.normal(size=(3, 200, 16))), dim=-1)
    T = random_transforms(rng, 3)
    source, target = fit_isotropic_gmm(points, gamma), fit_isotropic_gmm(apply(T, points), gamma)
    torch.testing.assert_close(align_mixtures(source, target), T, atol=1e-6, rtol=0)


def test_rri_features_are_invariant_to_rotation_and_translation():
    rng = np.random.default_rng(5)
    points = torch.tensor(rng.normal(size=(2, 256, 3)))
    T = random_transforms(rng, 2)
    torch.testing.assert_close(rri_features(apply(T, points), 20), rri_features(points, 20),
                               atol=1e-9, rtol=0)


def test_rri_features_have_the_closed_form_radii_and_angles():
    points = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]]],
                          dtype=torch.float64)  # a square around its centroid
    # Channels are (neighbour, feature) pairs: back to per point x neighbour x feature.
    features = rri_features(points, 2)[0].T.reshape(4, 2, 4)
    ones = torch.ones(4, 2, dtype=torch.float64)
    torch.testing.assert_close(features[..., 0], ones)  # r_p
    torch.testing.assert_close(features[..., 1], ones)  # r_q
    torch.testing.assert_close(features[..., 2], ones * torch.pi / 2)  # theta: neighbours at 90°
    # phi: each point's two neighbours are opposite each other around its axis: pi apart.
    torch.testing.assert_close(features[..., 3], ones * torch.pi)


def test_deepgmr_is_rotation_equivariant_on_rri_input():
    torch.manual_seed(0)
    model = DeepGmr(DeepGmrConfig(feature_dim=64)).double().eval()
    rng = np.random.default_rng(6)
    source = torch.tensor(rng.normal(size=(2, 128, 3)))
    target = torch.tensor(rng.normal(size=(2, 128, 3)))
    G = random_transforms(rng, 2)
    with torch.no_grad():
        T = model(source, target).transform
        T_moved = model(source, apply(G, target)).transform
    # An untrained model's components crowd the centroid: the SVD is poorly conditioned.
    torch.testing.assert_close(T_moved, G @ T, atol=1e-5, rtol=0)


def test_loss_is_zero_for_the_true_transform_and_positive_otherwise():
    rng = np.random.default_rng(7)
    T = random_transforms(rng, 4)

    class Output:
        transform, inverse_transform = T, torch.linalg.inv(T)

    assert deepgmr_loss(Output, T).item() == pytest.approx(0.0, abs=1e-12)
    Output.transform = random_transforms(rng, 4)
    assert deepgmr_loss(Output, T).item() > 1e-3


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(8)
    model = DeepGmr(DeepGmrConfig(feature_dim=32, rri_neighbours=8))
    source = torch.tensor(rng.normal(size=(4, 48, 3)), dtype=torch.float32)
    T = random_transforms(rng, 4).float()
    # Independent noise: with exact copies an untrained model is already exact (RRI invariance).
    target = apply(T, source) + 0.05 * torch.tensor(rng.normal(size=(4, 48, 3)), dtype=torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = deepgmr_loss(model(source, target), T)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
