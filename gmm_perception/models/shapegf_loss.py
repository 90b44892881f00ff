"""Denoising score matching for ShapeGF (Cai et al., ECCV 2020), eq. 6-7 / 13.

For a clean surface point x and x~ = x + sigma eps, grad log q_sigma(x~ | x) = (x - x~) / sigma^2,
and the network predicts s = sigma^2 g. Eq. 13 with the per-level weight lambda(sigma):

    lambda(sigma) |g(x~) - (x - x~) / sigma^2|^2 = lambda(sigma) sigma^-4 |s(x~) - (x - x~)|^2.

The residual |s - (x - x~)|^2 is of order sigma^2 at the optimum (the Gaussian's own spread), so
the weight on the s-residual that makes every level's term of the same size is sigma^-2 (Song and
Ermon's lambda = sigma^2). The reference code (RuojinCai/ShapeGF, `score_matching_loss`) uses

    L = 1/2 mean_points (1/sigma) |s(x~, z, sigma) - (x - x~)|^2   (summed over x, y, z),

with one sigma drawn uniformly from the levels per shape: sigma^-1, which still leans towards
the coarse levels. `weight_power` p picks the weight sigma^-p: 1 is the reference's (default),
2 the fully balanced one. Either way the minimiser is the true score s* = sigma^2 grad log Q_sigma
at every level, so the weighting changes only the emphasis.
"""
from __future__ import annotations

from typing import Callable

import torch

from gmm_perception.models.shapegf import levels_at_or_below

REFERENCE_WEIGHT_POWER = 1.0


def score_matching_loss(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        clean: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor | None = None,
                        weight_power: float = REFERENCE_WEIGHT_POWER,
                        generator: torch.Generator | None = None,
                        normals: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-shape loss (B,)) of clean points (B, N, 3) at per-shape sigma (B,).

    `score(noisy (B, N, 3), sigma (B,))` returns the predicted s; `noise` (B, N, 3) is eps
    (drawn with `generator` when None). loss = mean over shapes of
    1/2 mean_points sigma^-p |s(x~) - (x - x~)|^2.

    With the clean points' unit `normals` (B, N, 3), the target keeps only its component along
    the normal, ((x - x~) . n) n: where the surface is flat at the scale of sigma, the tangential
    part of x - x~ is noise no score can predict (its expectation given x~ is zero), and at the
    fine levels it is most of the loss's value and variance."""
    sigma = sigma.to(clean).reshape(-1)
    if noise is None:
        noise = torch.randn(clean.shape, generator=generator, device=clean.device,
                            dtype=clean.dtype)
    s = sigma.reshape(-1, 1, 1)
    noisy = clean + s * noise
    target = clean - noisy
    if normals is not None:
        target = (target * normals).sum(-1, keepdim=True) * normals
    residual = score(noisy, sigma) - target
    per_shape = 0.5 * (residual.pow(2).sum(-1).mean(-1)) * sigma.pow(-weight_power)
    return per_shape.mean(), per_shape


def draw_sigmas(sigmas: torch.Tensor, batch: int, generator: torch.Generator | None = None,
                sigma_max: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One level per shape, uniformly over the levels sigma <= sigma_max (every level for 0; the
    finest at least): (level indices (B,), sigmas (B,))."""
    allowed = (torch.arange(len(sigmas), device=sigmas.device) if sigma_max <= 0 else
               levels_at_or_below(sigmas, sigma_max))
    pick = torch.randint(len(allowed), (batch,), generator=generator, device=sigmas.device)
    index = allowed[pick]
    return index, sigmas[index]


def shapegf_loss(model, inputs: torch.Tensor, targets: torch.Tensor,
                 weight_power: float = REFERENCE_WEIGHT_POWER,
                 generator: torch.Generator | None = None, sigma_max: float = 0.0,
                 normal_targets: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss: encode the (sparse) inputs (B, N, 3), map the dense targets (B, M, 3)
    into the inputs' normalised frame, score-match them at one random level per shape (of the
    levels sigma <= sigma_max; 0 = all); with `normal_targets` the targets carry their unit
    normals in channels 3-5 and the loss keeps the target's normal component.
    Terms: 'dsm' (the loss) and 'dsm_coarse' / 'dsm_fine' (mean per-shape loss over the shapes
    whose level is in the upper / lower half of the schedule; NaN when none)."""
    code = model.encode(inputs)
    clean = code.to_model_frame(targets[..., :3].to(code.z.dtype))
    levels, sigma = draw_sigmas(model.sigmas, clean.shape[0], generator, sigma_max)
    normals = targets[..., 3:6].to(clean) if normal_targets else None
    loss, per_shape = score_matching_loss(lambda x, s: model.score(x, code, s), clean, sigma,
                                          weight_power=weight_power, generator=generator,
                                          normals=normals)
    half = len(model.sigmas) // 2
    detached = per_shape.detach()
    coarse, fine = detached[levels < half], detached[levels >= half]
    terms = {"dsm": float(loss.detach()),
             "dsm_coarse": float(coarse.mean()) if len(coarse) else float("nan"),
             "dsm_fine": float(fine.mean()) if len(fine) else float("nan")}
    return loss, terms
