"""Hierarchical Gaussian mixtures (hGMMs) with full covariances in eigen form, batched over objects.

A level holds weights, means, and each covariance as Sigma = P^T diag(lambda) P (orthonormal,
right-handed rows P, eigenvalues lambda), so densities, precisions and determinants never invert
or factorise a matrix. A hierarchy is a list of levels in which component k of level l has parent
k // children in level l - 1 (PointGMM's output, `models/pointgmm.py`); a flat mixture is one level
with parents -1 (e.g. an EM fit, through `GmmLevel.from_covariances`).

`sample` draws any number of points from any level without Python loops over components
(multinomial over the level's weights, then mu + P^T sqrt(lambda) eps), so densities, sampling and
moments are shared by every producer of mixtures. Pure torch: no network, no ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

_LOG_2PI = math.log(2.0 * math.pi)


def component_log_density(points: torch.Tensor, means: torch.Tensor, axes: torch.Tensor,
                          eigenvalues: torch.Tensor) -> torch.Tensor:
    """log N(x | mu, P^T diag(lambda) P), elementwise over broadcast leading dimensions.

    points, means (..., 3); axes (..., 3, 3) with orthonormal rows; eigenvalues (..., 3) -> (...).
    Mahalanobis distance ||diag(lambda)^(-1/2) P (x - mu)||^2 and log det = sum log lambda.
    """
    y = (axes @ (points - means).unsqueeze(-1)).squeeze(-1)
    mahalanobis = (y * y / eigenvalues).sum(-1)
    return -0.5 * (mahalanobis + torch.log(eigenvalues).sum(-1) + points.shape[-1] * _LOG_2PI)


def _right_handed_frames(vectors: torch.Tensor) -> torch.Tensor:
    """Orthonormal right-handed row frames (..., 3, 3) from eigenvectors in columns (..., 3, 3)."""
    frames = vectors.transpose(-1, -2).clone()
    flip = torch.linalg.det(frames) < 0
    frames[..., 2, :] = torch.where(flip.unsqueeze(-1), -frames[..., 2, :], frames[..., 2, :])
    return frames


@dataclass
class GmmLevel:
    """One level of an hGMM (or any full-covariance mixture), batched over B objects.

    weights (B, K) sum to 1 per object; means (B, K, 3); axes P (B, K, 3, 3), orthonormal rows,
    right-handed; eigenvalues lambda (B, K, 3), row i of P is the axis of lambda_i, so
    Sigma = P^T diag(lambda) P; parents (K,) index the previous level (-1 for roots and for flat
    mixtures); sibling_log_weights (B, K) = log softmax of the mixing logits among siblings
    (log weight - log parent weight), what the hierarchical loss scores with.
    """

    weights: torch.Tensor
    means: torch.Tensor
    axes: torch.Tensor
    eigenvalues: torch.Tensor
    parents: torch.Tensor
    sibling_log_weights: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_components(self) -> int:
        return self.means.shape[1]

    def covariance(self) -> torch.Tensor:
        """Sigma = P^T diag(lambda) P: (B, K, 3, 3)."""
        return self.axes.transpose(-1, -2) @ (self.eigenvalues.unsqueeze(-1) * self.axes)

    def precision(self) -> torch.Tensor:
        """Sigma^-1 = P^T diag(1 / lambda) P (no matrix inverse): (B, K, 3, 3)."""
        return self.axes.transpose(-1, -2) @ (self.axes / self.eigenvalues.unsqueeze(-1))

    def component_log_densities(self, points: torch.Tensor, chunk_elements: int = 1 << 22
                                ) -> torch.Tensor:
        """log N(x_n | mu_k, Sigma_k) for points (B, N, 3): (B, N, K), without the weights.

        Points and means are first centred on the object's mean component position (so frames far
        from the origin keep float32 precision); the points are projected on every component's
        axes with one batched matrix product, `chunk_elements` bounds the (B, n, K, 3) block.
        """
        reference = self.means.mean(dim=1, keepdim=True).detach()
        x = points - reference
        mu = self.means - reference
        b, k = self.means.shape[:2]
        axes_flat = self.axes.reshape(b, k * 3, 3).transpose(1, 2)  # (B, 3, 3K)
        mu_projected = (self.axes @ mu.unsqueeze(-1)).squeeze(-1)  # (B, K, 3)
        inverse = 1.0 / self.eigenvalues
        log_norm = -0.5 * (torch.log(self.eigenvalues).sum(-1) + 3 * _LOG_2PI)  # (B, K)
        step = max(1, chunk_elements // max(1, b * k * 3))
        parts = []
        for start in range(0, x.shape[1], step):
            projected = (x[:, start:start + step] @ axes_flat).unflatten(-1, (k, 3))
            y = projected - mu_projected.unsqueeze(1)
            parts.append(log_norm.unsqueeze(1) - 0.5 * (y * y * inverse.unsqueeze(1)).sum(-1))
        return torch.cat(parts, dim=1)

    def log_density(self, points: torch.Tensor) -> torch.Tensor:
        """log sum_k w_k N(x | mu_k, Sigma_k) for points (B, N, 3): (B, N)."""
        log_w = torch.log(self.weights.clamp_min(1e-38)).unsqueeze(1)
        return torch.logsumexp(self.component_log_densities(points) + log_w, dim=-1)

    def nll(self, points: torch.Tensor) -> torch.Tensor:
        """-mean log density per object: (B,)."""
        return -self.log_density(points).mean(dim=1)

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, 3) and covariance (B, 3, 3) of the mixture distribution:
        m = sum w mu, C = sum w (Sigma + mu mu^T) - m m^T."""
        w = self.weights.unsqueeze(-1)
        mean = (w * self.means).sum(1)
        second = (w.unsqueeze(-1) * (self.covariance()
                                     + self.means.unsqueeze(-1) * self.means.unsqueeze(-2))).sum(1)
        return mean, second - mean.unsqueeze(-1) * mean.unsqueeze(-2)

    def transformed(self, centre: torch.Tensor, scale: torch.Tensor,
                    rotation: torch.Tensor | None = None) -> "GmmLevel":
        """The mixture under x -> scale R x + centre (centre (B, 3), scale (B,), R (B, 3, 3) or
        None for I): means follow, axes (rows) turn with R, eigenvalues scale by scale^2."""
        s = scale.reshape(-1, 1, 1)
        means, axes = self.means, self.axes
        if rotation is not None:
            means = means @ rotation.transpose(-1, -2)
            axes = axes @ rotation.transpose(-1, -2).unsqueeze(1)
        return replace(self, means=means * s + centre.unsqueeze(1), axes=axes,
                       eigenvalues=self.eigenvalues * s * s)

    def select(self, index: int | slice | torch.Tensor) -> "GmmLevel":
        """Some objects of the batch (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return replace(self, weights=self.weights[index], means=self.means[index],
                       axes=self.axes[index], eigenvalues=self.eigenvalues[index],
                       sibling_log_weights=self.sibling_log_weights[index])

    def as_arrays(self, index: int = 0) -> dict[str, np.ndarray]:
        """One object's mixture as float64 numpy arrays (for messages and metrics): weights (K,),
        means (K, 3), covariances (K, 3, 3), axes (K, 3, 3), eigenvalues (K, 3), parents (K,)."""
        def array(t: torch.Tensor):
            return t.detach().cpu().to(torch.float64).numpy()

        return {"weights": array(self.weights[index]), "means": array(self.means[index]),
                "covariances": array(self.covariance()[index]), "axes": array(self.axes[index]),
                "eigenvalues": array(self.eigenvalues[index]),
                "parents": self.parents.detach().cpu().numpy().astype(np.int64)}

    def detach(self) -> "GmmLevel":
        return GmmLevel(*(t.detach() for t in (self.weights, self.means, self.axes,
                                                self.eigenvalues, self.parents,
                                                self.sibling_log_weights)))

    @classmethod
    def from_covariances(cls, weights: torch.Tensor, means: torch.Tensor,
                         covariances: torch.Tensor) -> "GmmLevel":
        """A flat mixture (parents -1) from weights (B, K), means (B, K, 3), covariances
        (B, K, 3, 3), by a symmetric eigendecomposition (e.g. to score or sample the EM
        baseline with the same code as PointGMM's output)."""
        covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
        eigenvalues, vectors = torch.linalg.eigh(covariances)
        if bool((eigenvalues <= 0).any()):
            raise ValueError("covariances must be positive definite")
        weights = weights / weights.sum(-1, keepdim=True)
        parents = torch.full((means.shape[1],), -1, dtype=torch.long, device=means.device)
        return cls(weights, means, _right_handed_frames(vectors), eigenvalues, parents,
                   torch.log(weights.clamp_min(1e-38)))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dtype: torch.dtype = torch.float32,
                    device="cpu") -> "GmmLevel":
        """One object's mixture (a batch of one) from `as_arrays`' weights, means, axes,
        eigenvalues and parents (e.g. a pipeline stage's result), without refactorising the
        covariances. The arrays hold no sibling_log_weights: they are set to the log weights."""
        def tensor(name: str) -> torch.Tensor:
            return torch.as_tensor(np.asarray(arrays[name]), dtype=dtype, device=device)[None]

        weights = tensor("weights")
        return cls(weights, tensor("means"), tensor("axes"), tensor("eigenvalues"),
                   torch.as_tensor(np.asarray(arrays["parents"]), dtype=torch.long,
                                   device=device),
                   torch.log(weights.clamp_min(1e-38)))


@dataclass
class HierarchicalGmm:
    """The levels of an hGMM, coarse to fine (level 0: the roots).

    Level l has roots * children^l components; component k's parent is k // children, so the
    children of parent p are p * children ... p * children + children - 1, and `parents` of every
    level says the same explicitly (for messages)."""

    levels: list[GmmLevel]
    children: int

    @property
    def depth(self) -> int:
        return len(self.levels) - 1

    @property
    def finest(self) -> GmmLevel:
        return self.levels[-1]

    def level(self, index: int) -> GmmLevel:
        return self.levels[index]

    def covariance(self, level: int = -1) -> torch.Tensor:
        return self.levels[level].covariance()

    def log_density(self, points: torch.Tensor, level: int = -1) -> torch.Tensor:
        """log density of one level's mixture at points (B, N, 3): (B, N)."""
        return self.levels[level].log_density(points)

    def transformed(self, centre: torch.Tensor, scale: torch.Tensor,
                    rotation: torch.Tensor | None = None) -> "HierarchicalGmm":
        return HierarchicalGmm([lv.transformed(centre, scale, rotation) for lv in self.levels],
                               self.children)

    def select(self, index: int | slice | torch.Tensor) -> "HierarchicalGmm":
        return HierarchicalGmm([lv.select(index) for lv in self.levels], self.children)

    def detach(self) -> "HierarchicalGmm":
        return HierarchicalGmm([lv.detach() for lv in self.levels], self.children)

    @classmethod
    def from_sibling_logits(cls, logits: list[torch.Tensor], means: list[torch.Tensor],
                            axes: list[torch.Tensor], eigenvalues: list[torch.Tensor],
                            children: int) -> "HierarchicalGmm":
        """Assemble the hierarchy from per-level mixing logits (B, K_l), means, axes and
        eigenvalues, with K_0 roots and K_l = K_0 children^l. Logits are softmaxed among siblings
        (all roots are siblings); weights are the products down the tree."""
        levels: list[GmmLevel] = []
        log_w = None  # log weights of the previous level, accumulated in log space
        for index, (logit, mu, p, lam) in enumerate(zip(logits, means, axes, eigenvalues)):
            b, k = logit.shape
            if index == 0:
                sibling = torch.log_softmax(logit, dim=-1)
                log_w = sibling
                parents = torch.full((k,), -1, dtype=torch.long, device=logit.device)
            else:
                if k != levels[-1].num_components * children:
                    raise ValueError(f"level {index} has {k} components, expected "
                                     f"{levels[-1].num_components} x {children}")
                sibling = torch.log_softmax(logit.view(b, -1, children), dim=-1).view(b, k)
                parents = torch.arange(k, device=logit.device) // children
                log_w = log_w[:, parents] + sibling
            levels.append(GmmLevel(torch.exp(log_w), mu, p, lam, parents, sibling))
        return cls(levels, children)


def sample(mixture: HierarchicalGmm | GmmLevel, level: int = -1, count: int = 2048,
           generator: torch.Generator | None = None, flatten: bool = False,
           return_components: bool = False):
    """`count` points per object (B, count, 3) from one level's mixture, vectorised: components
    by a multinomial draw over the level's weights, then x = mu + P^T (sqrt(lambda) * eps).

    `flatten` sets each component's smallest eigenvalue to 0 (the reference's `flatten_sigma`:
    samples on the Gaussians' planes, i.e. on the surface patches). `generator` (on the mixture's
    device) makes the draw reproducible. With `return_components`, also the (B, count) component
    index of every sample."""
    gmm = mixture.levels[level] if isinstance(mixture, HierarchicalGmm) else mixture
    b = gmm.batch_size
    components = torch.multinomial(gmm.weights.detach(), count, replacement=True,
                                   generator=generator)
    noise = torch.randn(b, count, 3, generator=generator, device=gmm.means.device,
                        dtype=gmm.means.dtype)
    scale = gmm.eigenvalues.sqrt()
    if flatten:
        scale = scale.masked_fill(
            torch.nn.functional.one_hot(gmm.eigenvalues.argmin(-1), 3).bool(), 0.0)
    index = components.unsqueeze(-1)
    mu = torch.gather(gmm.means, 1, index.expand(-1, -1, 3))
    sd = torch.gather(scale, 1, index.expand(-1, -1, 3))
    axes = torch.gather(gmm.axes, 1, index.unsqueeze(-1).expand(-1, -1, 3, 3))
    points = mu + ((sd * noise).unsqueeze(-2) @ axes).squeeze(-2)  # row vector: (s eps)^T P
    return (points, components) if return_components else points
