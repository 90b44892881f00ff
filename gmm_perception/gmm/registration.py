"""Closed-form GMM blocks of DeepGMR (Yuan et al., ECCV 2020), batched and differentiable.

M_Theta (eq. 7-9, isotropic): mixture parameters from point-to-component responsibilities.
M_T (eq. 17): the rigid transform aligning two mixtures with component-to-component
correspondence, by weighted Procrustes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-8


@dataclass
class IsotropicGmm:
    """Batched isotropic mixtures: weights (B, J), means (B, J, 3), variances (B, J)."""

    weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor


def fit_isotropic_gmm(points: torch.Tensor, gamma: torch.Tensor) -> IsotropicGmm:
    """M_Theta: pi_j = mean_i gamma_ij; mu_j = sum_i gamma_ij x_i / (N pi_j);
    sigma_j^2 = sum_i gamma_ij |x_i - mu_j|^2 / (N pi_j).

    points (B, N, 3), gamma (B, N, J) with rows summing to 1. As in the authors' code, the
    variance keeps the full squared distance (it is not divided by the dimension 3).
    """
    count = points.shape[1]
    mass = gamma.sum(dim=1)  # (B, J) = N pi_j
    weights = mass / count
    means = torch.einsum("bnj,bnd->bjd", gamma, points) / (mass.unsqueeze(-1) + EPS)
    squared = (points.unsqueeze(2) - means.unsqueeze(1)).pow(2).sum(-1)  # (B, N, J)
    variances = (gamma * squared).sum(dim=1) / (mass + EPS)
    return IsotropicGmm(weights, means, variances)


def weighted_procrustes(source: torch.Tensor, target: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) rigid T minimising sum_j w_j |T(source_j) - target_j|^2 (Kabsch, with the
    determinant correction so that the result is a rotation, never a reflection)."""
    w = weights / (weights.sum(dim=1, keepdim=True) + EPS)
    source_centre = torch.einsum("bj,bjd->bd", w, source)
    target_centre = torch.einsum("bj,bjd->bd", w, target)
    covariance = torch.einsum("bj,bjd,bje->bde", w, source - source_centre.unsqueeze(1),
                              target - target_centre.unsqueeze(1))
    u, _, vh = torch.linalg.svd(covariance)
    v = vh.transpose(1, 2)
    det = torch.det(v @ u.transpose(1, 2))
    correction = torch.diag_embed(torch.stack(
        [torch.ones_like(det), torch.ones_like(det), det], dim=-1))
    rotation = v @ correction @ u.transpose(1, 2)
    translation = target_centre - torch.einsum("bde,be->bd", rotation, source_centre)
    transform = torch.zeros(source.shape[0], 4, 4, dtype=source.dtype, device=source.device)
    transform[:, :3, :3] = rotation
    transform[:, :3, 3] = translation
    transform[:, 3, 3] = 1.0
    return transform


def align_mixtures(source: IsotropicGmm, target: IsotropicGmm) -> torch.Tensor:
    """M_T (eq. 17): T = argmin sum_j (pi_j^src / sigma_j^2_tgt) |T(mu_j^src) - mu_j^tgt|^2."""
    return weighted_procrustes(source.means, target.means,
                               source.weights / (target.variances + EPS))
