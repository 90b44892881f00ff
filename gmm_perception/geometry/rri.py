"""Rigorously rotation-invariant (RRI) point features (Chen et al., ClusterNet, CVPR 2019).

DeepGMR feeds them to its correspondence network so that the point-to-component association,
and with it the registration, does not depend on the input's orientation. For each point p of
the centred cloud and each of its k nearest neighbours q:
    r_p = |p|, r_q = |q|, theta = angle(p, q),
    phi = the smallest positive angle, about the axis p, from q's tangent direction to the
          tangent direction of another neighbour (orientation of the neighbourhood).
All four are invariant to rotations about the centroid; the feature per point is 4k values.
"""
from __future__ import annotations

import math

import numpy as np
import torch

EPS = 1e-8


def knn_indices(points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, k) indices of each point's k nearest neighbours, the point itself excluded.

    On the CPU a KD-tree is ~10x faster than the dense N x N distance matrix; on a GPU the
    dense top-k is. Both give the same neighbours (ties aside).
    """
    if points.device.type == "cpu":
        from scipy.spatial import cKDTree

        clouds = points.detach().numpy()
        indices = np.stack([cKDTree(cloud).query(cloud, k + 1)[1] for cloud in clouds])
        return torch.from_numpy(indices[..., 1:]).long()
    distances = torch.cdist(points, points)
    return distances.topk(k + 1, dim=-1, largest=False).indices[..., 1:]


def rri_features(points: torch.Tensor, k: int = 20) -> torch.Tensor:
    """(B, N, 3) points -> (B, 4k, N) RRI features, channels-first for 1x1 convolutions.

    The cloud is centred on its centroid first. Tangent directions are the exact projections
    onto the plane orthogonal to p (ClusterNet's definition; DeepGMR's code uses a variant).
    """
    centred = points - points.mean(dim=1, keepdim=True)
    batch, count, _ = centred.shape
    rows = torch.arange(batch, device=points.device)[:, None, None]
    neighbours = centred[rows, knn_indices(centred, k)]  # (B, N, k, 3)

    r_p = centred.norm(dim=-1, keepdim=True)  # (B, N, 1)
    r_q = neighbours.norm(dim=-1)  # (B, N, k)
    p_hat = centred / (r_p + EPS)
    q_hat = neighbours / (r_q.unsqueeze(-1) + EPS)
    cos_theta = (p_hat.unsqueeze(2) * q_hat).sum(-1).clamp(-1.0, 1.0)
    theta = torch.acos(cos_theta)

    # Tangent directions of the neighbours around the axis p_hat.
    along_axis = (neighbours * p_hat.unsqueeze(2)).sum(-1, keepdim=True)
    tangents = neighbours - along_axis * p_hat.unsqueeze(2)  # (B, N, k, 3)
    # Signed angle from tangent a to tangent b about p_hat, in [0, 2 pi):
    # (a x b) . p_hat = b . (p_hat x a), which needs no (k, k, 3) tensor.
    turned = torch.cross(p_hat.unsqueeze(2).expand_as(tangents), tangents, dim=-1)
    sine = torch.einsum("bnad,bnkd->bnak", turned, tangents)  # (B, N, k, k)
    cosine = torch.einsum("bnad,bnkd->bnak", tangents, tangents)
    psi = torch.remainder(torch.atan2(sine, cosine), 2 * math.pi)
    # phi_a: the smallest angle to any other neighbour (psi_aa = 0 is excluded).
    psi = psi + torch.eye(k, device=points.device, dtype=points.dtype) * (4 * math.pi)
    phi = psi.min(dim=-1).values  # (B, N, k)

    features = torch.stack([r_p.expand(-1, -1, k), r_q, theta, phi], dim=-1)  # (B, N, k, 4)
    return features.reshape(batch, count, 4 * k).transpose(1, 2).contiguous()
