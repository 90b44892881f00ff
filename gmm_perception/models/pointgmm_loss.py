"""The PointGMM training objective (Hertz et al., CVPR 2020, section 3.2; the authors' code,
`hierarchical_gm_log_likelihood_loss`, `dkl` and `eigen_penalty_loss` in amirhertz/pointgmm).

Hierarchical log-likelihood. At level 0 every point is scored against all roots,
log sum_r phi_r N(x | mu_r, Sigma_r) with phi the softmax over the roots. Each point is then
hard-assigned to the argmax of phi_k N(x | mu_k, Sigma_k) among the Gaussians it was scored
against, and at the next level it is scored *only* against the children of that Gaussian, with
phi the softmax among those siblings (not the global weight):

    L_l = -mean_x log sum_{c in children(a_{l-1}(x))} phi_c N(x | mu_c, Sigma_c).

The assignment is a hard, non-differentiable path down the tree; gradients flow through the
scores only. Densities use Sigma^-1 = P^T diag(1 / lambda) P and det Sigma = prod lambda.

Total loss (weights in `PointGmmLossWeights`, defaults the reference's):

    sum_l level_weight_l L_l + kl_weight KL + eigenvalue_weight mean_k min(lambda_k)

* KL(q(z | x) || N(0, I)) = 0.5 (exp(logvar) - 1 - logvar + mean^2), averaged over the batch and
  the latent dimensions (the reference's normalisation); weight 1.
* Eigenvalue penalty: the mean over the finest level's Gaussians of their smallest eigenvalue,
  weight 10. Note the sign, which is the reference's: it penalises a *large* smallest eigenvalue,
  i.e. it pushes every Gaussian towards a flat disc lying on the surface rather than a volumetric
  blob straddling it (a 3-D blob is the degenerate description of a 2-D surface patch). It is
  computed on the eigenvalues in the decoder's unit-sphere frame, so its weight does not depend
  on the caller's units; collapse to zero thickness is prevented by lambda = s^2 + eps instead.
* Departure: the reference multiplies the KL and penalty weights by 0.98 every 100 epochs (of
  1200, i.e. to 0.89 of their start); we keep them constant, since our runs are short and the
  training loop has no epoch-dependent loss hook.
* Level weights: 1 for every level (the reference sums the level losses).
* Departure, off by default (`flat_weight` 0): `flat_weight` x the sum over levels of each
  level's whole-mixture NLL, -mean_x log sum_k w_k N(x | k) with w_k the product of the sibling
  weights down the tree. The hierarchical terms train each sibling weight only within its
  parent, so nothing asks the products to follow the point mass; after short trainings a finer
  level scored as one mixture was no better than its roots (model card). This term asks it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gmm_perception.gmm.hierarchical import GmmLevel, HierarchicalGmm, component_log_density
from gmm_perception.models.pointgmm import PointGmmOutput


@dataclass(frozen=True)
class PointGmmLossWeights:
    level_weights: tuple[float, ...] = ()  # per level, coarse to fine; () = 1 for every level
    kl_weight: float = 1.0
    eigenvalue_weight: float = 10.0
    flat_weight: float = 0.0  # x sum over levels of the whole-level NLL (departure; 0 = reference)

    def __post_init__(self):
        object.__setattr__(self, "level_weights", tuple(float(w) for w in self.level_weights))


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, K, *rest), index (B, ...) -> (B, ..., *rest)."""
    b, rest = values.shape[0], values.shape[2:]
    flat = index.reshape(b, -1)
    picked = torch.gather(values, 1, flat.reshape(b, -1, *([1] * len(rest))).expand(
        -1, -1, *rest))
    return picked.reshape(*index.shape, *rest)


def _candidate_scores(level: GmmLevel, points: torch.Tensor, candidates: torch.Tensor
                      ) -> torch.Tensor:
    """log phi_c + log N(x | c) for candidates (B, N, C) of each point (B, N, 3): (B, N, C)."""
    means = _gather(level.means, candidates)
    axes = _gather(level.axes, candidates)
    eigenvalues = _gather(level.eigenvalues, candidates)
    log_phi = _gather(level.sibling_log_weights, candidates)
    return log_phi + component_log_density(points.unsqueeze(2), means, axes, eigenvalues)


def hierarchical_log_likelihood(hgmm: HierarchicalGmm, points: torch.Tensor
                                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per level, the log-likelihood (B, N) of every point under the children of its assigned
    parent (all roots at level 0), and the assignment (B, N): the index, within the level, of the
    Gaussian the point is assigned to (the argmax of phi N among its candidates)."""
    log_likelihoods, assignments = [], []
    roots = hgmm.levels[0]
    scores = roots.component_log_densities(points) + roots.sibling_log_weights.unsqueeze(1)
    candidates = None
    for index, level in enumerate(hgmm.levels):
        if index > 0:
            offsets = torch.arange(hgmm.children, device=points.device)
            candidates = assignments[-1].unsqueeze(-1) * hgmm.children + offsets  # (B, N, c)
            scores = _candidate_scores(level, points, candidates)
        log_likelihoods.append(torch.logsumexp(scores, dim=-1))
        best = scores.detach().argmax(dim=-1)
        assignments.append(best if candidates is None
                           else torch.gather(candidates, -1, best.unsqueeze(-1)).squeeze(-1))
    return log_likelihoods, assignments


def hierarchical_nll(hgmm: HierarchicalGmm, points: torch.Tensor) -> list[torch.Tensor]:
    """L_l per level: -mean over objects and points of the hierarchical log-likelihood."""
    return [-ll.mean() for ll in hierarchical_log_likelihood(hgmm, points)[0]]


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor | None) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) averaged over batch and latent dimensions."""
    if log_variance is None:
        return mean.new_zeros(())
    return 0.5 * (torch.exp(log_variance) - 1.0 - log_variance + mean * mean).mean()


def eigenvalue_penalty(hgmm: HierarchicalGmm) -> torch.Tensor:
    """Mean over the finest level's Gaussians of their smallest eigenvalue (the reference's)."""
    return hgmm.finest.eigenvalues.amin(dim=-1).mean()


def pointgmm_loss(output: PointGmmOutput, targets: torch.Tensor,
                  weights: PointGmmLossWeights = PointGmmLossWeights()
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss for targets (B, M, 3) in the frame of the model's input, and its terms."""
    levels = hierarchical_nll(output.hgmm, targets)
    level_weights = weights.level_weights or (1.0,) * len(levels)
    if len(level_weights) != len(levels):
        raise ValueError(f"{len(level_weights)} level weights for {len(levels)} levels")
    kl = kl_divergence(output.mean, output.log_variance)
    local = output.normalised if output.normalised is not None else output.hgmm
    penalty = eigenvalue_penalty(local)
    total = sum(w * nll for w, nll in zip(level_weights, levels)) \
        + weights.kl_weight * kl + weights.eigenvalue_weight * penalty
    terms = {f"nll_l{index}": float(nll.detach()) for index, nll in enumerate(levels)}
    if weights.flat_weight:
        flat = [level.nll(targets).mean() for level in output.hgmm.levels]
        total = total + weights.flat_weight * sum(flat)
        terms.update({f"flat_nll_l{index}": float(nll.detach()) for index, nll in enumerate(flat)})
    terms.update(kl=float(kl.detach()), eigenvalue_penalty=float(penalty.detach()))
    return total, terms
