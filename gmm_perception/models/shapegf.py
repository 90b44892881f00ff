"""ShapeGF (Cai, Yang, Averbuch-Elor, Hao, Belongie, Snavely and Hariharan, "Learning Gradient
Fields for Shape Generation", ECCV 2020), used here for point-cloud upsampling: a sparse cloud in,
any number of points sampled from its surface out.

A shape is the distribution Q_sigma = P_S * N(0, sigma^2 I) of its surface points smoothed with a
Gaussian (eq. 1). The network never models Q_sigma itself, only its score:

* Encoder (the reference's sizes by default): PointNet 3 -> 128 -> 128 -> 256 -> 512 per point
  (1x1 conv + batch norm + ReLU, `models/pointnet.shared_mlp`), max pool, fully connected
  512 -> 256 -> 128 -> z (batch norm + ReLU between, a plain linear map to z).
* Score decoder g(x, z, sigma): per-point ResNet blocks (the reference's `resnet_add` decoder):
  h = W_p [x, z, sigma]; every block h <- h + fc1(relu(norm(fc0(relu(norm(h)))))) + W_c [x, z,
  sigma], fc1 zero-initialised (each block starts as the identity plus the condition); then
  out = W_o relu(norm(h)) in R^3. The condition term W_c [x, z, sigma] is split as
  W_x x + (W_zs [z, sigma] + b): the per-shape part is computed once per shape and sigma and
  broadcast over the points (the same function as the reference's 1x1 conv of the concatenation,
  about a third cheaper per point at latent 128 and width 128).
  The output is s = sigma^2 grad_x log Q_sigma(x | z) (the reference's "normalised scale": its
  size is that of a displacement, not growing as 1 / sigma^2).
* `sigmas`: the geometric schedule sigma_max ... sigma_min in `levels` steps (1 ... 0.01 in 10).
  Shapes are first normalised (`input_normalisation`, computed from the *input* cloud only, since
  that is all a caller has): unit_sphere (centroid, largest radius: the SH3D data's convention),
  bbox (bounding-box centre, half the longest side: the paper's [-1, 1]^3), centre, none.
  `encode` keeps the centre and scale, and `upsample` returns points in the caller's frame
  (metres in, metres out).

Sampling (`annealed_langevin`, eq. 9-10, the noise step before the gradient step): for each sigma
from large to small, `steps_per_level` times

    x <- x + sqrt(alpha) eps,             eps ~ N(0, I)
    x <- x + (alpha / 2) g(x, sigma)      g = s / sigma^2 = grad log Q_sigma

with alpha = 2 * step_lr * sigma^2 (the reference's step_size = 2 sigma^2 step_size_ratio; eq. 9-10
with alpha = 2 step_lr sigma_min^2), i.e. noise of standard deviation sqrt(2 step_lr) sigma and a
gradient step of step_lr * s. The reference's constants are step_lr = 1 and 10 steps per level
(100 network evaluations); the defaults here are step_lr 1 and `steps_per_level` 5 (a CPU budget).
With step_lr = 1 the last operation of every step is one Tweedie denoising step x + s(x), which is
why the paper's ordering gives clean clouds. Priors: uniform on [-prior_bound, prior_bound]^3 (the
reference: 1.5) or N(0, sigma_max^2 I). `denoise_from_input` starts instead from the input points
(each of them count // N times, the remainder drawn without replacement: `spread_starts`) and
runs only the levels sigma <= `start_sigma` (default 0.1, about the spacing of 512 points on a
unit shape): cheaper, and it keeps the input's layout. Each input point carries an equal share
of the output: drawn with replacement, some of 512 points started no chain and others 4 or more,
holes and clumps that raised the EMD to the true surface by 4 % from sigma 0.03 (pool val,
512 -> 2048; the clumps of the coarser levels 0.05-0.1 cost 10-30 %, hence the stage's start).

Input guide (`input_guide`, not in the paper; off by default, on in config/train/shapegf.yaml):
a 128-d global latent and a few small blocks (a CPU budget) cannot place points to within 1 % of
a shape's size, and an hour of CPU training left the fine levels worse than predicting zero. An
upsampler has the sparse points themselves, so the decoder is also given, per query point, the
closed-form score of the smoothed input set (eq. 2-3 with the input points as the shape) at
tau = max(sigma, guide_scale * input spacing), its length capped at guide_clip * sigma (far from
the input, e.g. on the unseen side of a partial scan, it pulls across the shape), and its output
is a correction added to it: s = s_in(x; tau) + g([x, s_in(x; tau) / tau], z, sigma). With
`guide_normal`, at the levels below the floor only the part of s_in along the local normal of the
input (weighted covariance) is kept: a moving-least-squares projection onto the local plane. The
plain guide at those levels pulls points towards the nearest input point, which the decoder
(seeing no local geometry) could not undo: after 25 min its residual at sigma 0.01 was 5.9 sigma^2
against 3 for predicting zero.
The loss, schedule and sampler are unchanged; the learned part only has to turn "towards the
nearby input points" into "onto the surface through them".

Output scale (`sigma_scaled_output`, not in the paper; on in the config): the decoder predicts
s / sigma and s = sigma * output, so its target (x - x~) / sigma = -eps has size 1 at every level
(Song and Ermon's noise-conditional parameterisation). With the balanced weight sigma^-2 this is
exactly eps-prediction; predicting s itself (size 1 to 0.01 across the schedule) diverged.

Loss (`models/shapegf_loss.py`): denoising score matching, eq. 6-7 / 13, in the reference's form.
"""
from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from gmm_perception.geometry.normalise import normalise_clouds
from gmm_perception.models.pointnet import PointNetGlobalFeature

MODEL_NAME = "shapegf"
INPUT_NORMALISATIONS = ("unit_sphere", "bbox", "centre", "none")
NORMS = ("batch", "layer", "none")
PRIORS = ("uniform", "gaussian")
DEFAULT_START_SIGMA = 0.1


def spread_starts(points: int, batch: int, count: int, generator: torch.Generator | None,
                  device: torch.device) -> torch.Tensor:
    """(batch, count) indices of `points` input points, each point count // points times and
    count % points distinct others (random per cloud): every input point starts an equal share
    of the chains."""
    whole = torch.arange(points, device=device).repeat(count // points)
    rest = torch.stack([torch.randperm(points, generator=generator, device=device)[:count % points]
                        for _ in range(batch)])
    return torch.cat([whole.expand(batch, -1), rest], dim=1)


@dataclass(frozen=True)
class ShapeGfConfig:
    latent: int = 128  # size of z
    encoder_widths: tuple[int, ...] = (128, 128, 256, 512)  # per-point PointNet layers
    encoder_fc: tuple[int, ...] = (256, 128)  # fully connected layers after the max pool
    blocks: int = 24  # ResNet blocks of the score decoder (reference 24)
    width: int = 256  # their width (reference 256)
    norm: str = "batch"  # normalisation inside the decoder blocks: batch (reference) | layer | none
    sigma_max: float = 1.0
    sigma_min: float = 0.01
    levels: int = 10  # geometric schedule sigma_max ... sigma_min
    input_normalisation: str = "unit_sphere"  # unit_sphere | bbox | centre | none
    step_lr: float = 1.0  # alpha = 2 step_lr sigma^2 (reference 1)
    steps_per_level: int = 5  # Langevin steps per sigma (reference 10)
    prior_bound: float = 1.5  # uniform prior on [-b, b]^3 (reference 1.5); chains stay inside
    # Not in the paper (module docstring, "Input guide"): the decoder also sees the closed-form
    # score of the smoothed *input* points and predicts a correction to it.
    input_guide: bool = False
    # Not in the paper: the decoder predicts s / sigma (eps-prediction, every level of size 1),
    # and s = sigma * output. The reference predicts s itself, whose size spans 100x over the
    # schedule; with the balanced loss weight that made training diverge here.
    sigma_scaled_output: bool = False
    guide_scale: float = 0.5  # tau = max(sigma, guide_scale * the input's mean point spacing)
    guide_clip: float = 3.0  # the guide's pull is capped at guide_clip * sigma
    guide_normal: bool = False  # below the spacing floor, only the guide's normal part

    def __post_init__(self):
        object.__setattr__(self, "encoder_widths", tuple(int(w) for w in self.encoder_widths))
        object.__setattr__(self, "encoder_fc", tuple(int(w) for w in self.encoder_fc))
        if not self.encoder_widths:
            raise ValueError("encoder_widths needs at least one layer")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got '{self.norm}'")
        if self.input_normalisation not in INPUT_NORMALISATIONS:
            raise ValueError(f"input_normalisation must be one of {INPUT_NORMALISATIONS}")
        if not 0 < self.sigma_min <= self.sigma_max or self.levels < 1:
            raise ValueError("need 0 < sigma_min <= sigma_max and levels >= 1")
        if self.blocks < 0 or self.width < 1 or self.latent < 1:
            raise ValueError("blocks >= 0, width >= 1 and latent >= 1")
        if self.guide_scale <= 0 or self.guide_clip <= 0:
            raise ValueError("guide_scale and guide_clip must be positive")
        if self.step_lr <= 0 or self.steps_per_level < 1 or self.prior_bound <= 0:
            raise ValueError("step_lr and prior_bound must be positive, steps_per_level >= 1")


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """(levels,) float32 from sigma_max down to sigma_min, geometric (one level: sigma_max)."""
    if levels == 1:
        return torch.tensor([sigma_max], dtype=torch.float32)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels,
                                    dtype=torch.float64)).float()


def levels_at_or_below(sigmas: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Indices of the levels sigma <= sigma_max (a relative 1e-6 of slack for a value read
    back from a config), at least the finest one."""
    kept = torch.nonzero(sigmas <= sigma_max * (1 + 1e-6)).reshape(-1)
    return kept if len(kept) else torch.tensor([len(sigmas) - 1], device=sigmas.device)


def smoothed_set_score(x: torch.Tensor, points: torch.Tensor, tau: torch.Tensor,
                       normal_projection: bool = False) -> torch.Tensor:
    """tau^2 grad log of the point set smoothed by N(0, tau^2 I) (eq. 2-3), at x (B, M, 3), for
    points (B, N, 3) and tau (B,): the softmax-weighted mean c of the points minus x.

    With `normal_projection`, only the part of c - x along the normal of the weighted points
    (the least eigenvector of their weighted covariance) is kept: a moving-least-squares step
    onto the local plane through c, which does not slide points towards the nearest input
    point along the surface."""
    d2 = torch.cdist(x, points).pow(2)
    weights = torch.softmax(-d2 / (2 * tau.reshape(-1, 1, 1) ** 2), dim=-1)
    centre = weights @ points
    pull = centre - x
    if not normal_projection:
        return pull
    second = weights @ (points.unsqueeze(-1) * points.unsqueeze(-2)).flatten(-2)
    covariance = second.unflatten(-1, (3, 3)) - centre.unsqueeze(-1) * centre.unsqueeze(-2)
    normal = torch.linalg.eigh(covariance).eigenvectors[..., 0]
    return (pull * normal).sum(-1, keepdim=True) * normal


def mean_spacing(points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) -> (B,) mean distance from each point to its nearest other point."""
    d = torch.cdist(points, points)
    d.diagonal(dim1=-2, dim2=-1).fill_(float("inf"))
    return d.amin(dim=-1).mean(dim=-1)


def annealed_langevin(score: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor,
                      sigmas, steps_per_level: int, step_lr: float = 1.0,
                      generator: torch.Generator | None = None,
                      bound: float | None = None) -> torch.Tensor:
    """Annealed Langevin dynamics, eq. 9-10 (module docstring): for every sigma (large to small)
    and step, x <- x + sqrt(2 step_lr) sigma eps, then x <- x + step_lr * score(x, sigma), where
    `score` returns s = sigma^2 grad log Q_sigma. Vectorised over every leading dimension of x.

    `bound` (not in the paper) clamps x to [-bound, bound]^d after every step: a learned score
    is only trained near shapes, and one wild evaluation far away must not throw a point (and
    every later step's input) out to infinity."""
    for sigma in [float(s) for s in sigmas]:
        noise_sd = math.sqrt(2.0 * step_lr) * sigma
        for _ in range(steps_per_level):
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + noise_sd * eps
            x = x + step_lr * score(x, sigma)
            if bound is not None:
                x = x.clamp(-bound, bound)
    return x


class _PointNorm(nn.Module):
    """Normalisation of per-point features (B, N, C): batch norm over all points of the batch,
    layer norm over each point's channels, or nothing."""

    def __init__(self, kind: str, width: int):
        super().__init__()
        self.kind = kind
        self.norm = {"batch": lambda: nn.BatchNorm1d(width), "layer": lambda: nn.LayerNorm(width),
                     "none": nn.Identity}[kind]()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(h.reshape(-1, h.shape[-1])).view_as(h)
        return self.norm(h)


class ScoreBlock(nn.Module):
    """h <- h + fc1(relu(norm1(fc0(relu(norm0(h)))))) + W_x x + W_c [z, sigma] (+ bias)."""

    def __init__(self, width: int, condition: int, norm: str, point_features: int = 3):
        super().__init__()
        self.norm0, self.norm1 = _PointNorm(norm, width), _PointNorm(norm, width)
        self.fc0, self.fc1 = nn.Linear(width, width), nn.Linear(width, width)
        nn.init.zeros_(self.fc1.weight)  # as the reference: the block starts as the identity
        self.condition = nn.Linear(condition, width)
        self.condition_xyz = nn.Linear(point_features, width, bias=False)

    def forward(self, h: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h (B, N, W), x (B, N, 3 or 6 point features), c (B, latent + 1) -> (B, N, W)."""
        dx = self.fc1(torch.relu(self.norm1(self.fc0(torch.relu(self.norm0(h))))))
        return h + dx + self.condition_xyz(x) + self.condition(c).unsqueeze(1)


class ScoreDecoder(nn.Module):
    """g(x, z, sigma) -> s = sigma^2 grad log Q_sigma(x | z), per point."""

    def __init__(self, config: ShapeGfConfig):
        super().__init__()
        c = config
        condition = c.latent + 1
        point_features = 6 if c.input_guide else 3  # x, and the guide score / tau
        self.input_xyz = nn.Linear(point_features, c.width, bias=False)
        self.input_condition = nn.Linear(condition, c.width)
        self.blocks = nn.ModuleList(ScoreBlock(c.width, condition, c.norm, point_features)
                                    for _ in range(c.blocks))
        self.norm_out = _PointNorm(c.norm, c.width)
        self.out = nn.Linear(c.width, 3)
        if c.input_guide:  # start as the closed-form guide itself, not guide + noise
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x (B, N, 3) (or 6 point features with the guide), z (B, latent), sigma (B,)
        -> (B, N, 3)."""
        c = torch.cat([z, sigma.reshape(-1, 1).to(z)], dim=1)
        h = self.input_xyz(x) + self.input_condition(c).unsqueeze(1)
        for block in self.blocks:
            h = block(h, x, c)
        return self.out(torch.relu(self.norm_out(h)))


class PointNetEncoder(nn.Module):
    """PointNet's global feature and a linear map to z."""

    def __init__(self, config: ShapeGfConfig):
        super().__init__()
        self.global_feature = PointNetGlobalFeature(config.encoder_widths, config.encoder_fc)
        self.out = nn.Linear(self.global_feature.width, config.latent)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) normalised points -> z (B, latent)."""
        return self.out(self.global_feature(points))


@dataclass
class ShapeGfCode:
    """What `encode` returns: the latent z (B, latent) and the normalisation of the input,
    points = normalised * scale + centre (centre (B, 3), scale (B,))."""

    z: torch.Tensor
    centre: torch.Tensor
    scale: torch.Tensor
    inputs: torch.Tensor | None = None  # (B, N, 3) normalised input points (input_guide only)
    spacing: torch.Tensor | None = None  # (B,) their mean nearest-neighbour spacing

    def to_model_frame(self, points: torch.Tensor) -> torch.Tensor:
        """Caller's frame (B, M, 3) -> the model's normalised frame."""
        return (points - self.centre.unsqueeze(1)) / self.scale.reshape(-1, 1, 1)

    def to_input_frame(self, points: torch.Tensor) -> torch.Tensor:
        """The model's normalised frame (B, M, 3) -> the caller's frame."""
        return points * self.scale.reshape(-1, 1, 1) + self.centre.unsqueeze(1)


class ShapeGf(nn.Module):
    """Encoder + score decoder; `encode`, `score`, `upsample` (module docstring).

    Clouds are (B, N, 3) (or (N, 3) for `upsample`) in any frame and units. Training needs
    batches of 2 or more (batch norm in the encoder's fully connected layers); sample in eval mode.
    """

    def __init__(self, config: ShapeGfConfig = ShapeGfConfig()):
        super().__init__()
        self.config = config
        self.encoder = PointNetEncoder(config)
        self.decoder = ScoreDecoder(config)
        self.register_buffer("sigmas", geometric_sigmas(config.sigma_max, config.sigma_min,
                                                        config.levels))

    def encode(self, points: torch.Tensor) -> ShapeGfCode:
        """Clouds (B, N, 3), caller's frame -> latent and the normalisation to map back."""
        points = points[..., :3].to(self.sigmas.dtype)
        normalised, centre, scale = normalise_clouds(points, self.config.input_normalisation)
        code = ShapeGfCode(self.encoder(normalised), centre, scale)
        if self.config.input_guide:
            code.inputs, code.spacing = normalised, mean_spacing(normalised)
        return code

    def score(self, x: torch.Tensor, code: ShapeGfCode, sigma: torch.Tensor | float
              ) -> torch.Tensor:
        """Predicted s = sigma^2 grad log Q_sigma at x (B, M, 3), model frame, for the shapes of
        `code` (from `encode`); sigma a float or (B,) -> (B, M, 3)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        scale = sigma.reshape(-1, 1, 1) if self.config.sigma_scaled_output else 1.0
        if not self.config.input_guide:
            return scale * self.decoder(x, code.z, sigma)
        floor = self.config.guide_scale * code.spacing
        tau = torch.maximum(sigma, floor)
        guide = smoothed_set_score(x, code.inputs, tau)
        if self.config.guide_normal and bool((sigma < floor).any()):
            # Below the input's spacing the surface is a plane through the nearby points:
            # the pull along it (towards the nearest input point) is what a denoiser must not do.
            fine = (sigma < floor).reshape(-1, 1, 1)
            guide = torch.where(fine, smoothed_set_score(x, code.inputs, tau, True), guide)
        # Far from every input point (the unseen side of a partial scan) the guide pulls
        # across the shape, 100 sigma at the fine levels: capped, the correction stays O(1).
        cap = self.config.guide_clip * sigma.reshape(-1, 1, 1)
        guide = guide * (cap / guide.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        features = torch.cat([x, guide / tau.reshape(-1, 1, 1)], dim=-1)
        return guide + scale * self.decoder(features, code.z, sigma)

    def forward(self, points: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor | float
                ) -> torch.Tensor:
        """Score at x (model frame) for the shapes of `points` (caller's frame)."""
        return self.score(x, self.encode(points), sigma)

    def sigma_schedule(self, start_sigma: float | None = None) -> torch.Tensor:
        """The levels sigma <= start_sigma (all of them for None; at least the last one)."""
        if start_sigma is None:
            return self.sigmas
        return self.sigmas[levels_at_or_below(self.sigmas, start_sigma)]

    def prior(self, batch: int, count: int, kind: str = "uniform",
              generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch, count, 3) prior points in the model frame."""
        device, dtype = self.sigmas.device, self.sigmas.dtype
        if kind == "uniform":
            b = self.config.prior_bound
            return (torch.rand(batch, count, 3, generator=generator, device=device, dtype=dtype)
                    * 2 - 1) * b
        if kind == "gaussian":
            return self.config.sigma_max * torch.randn(batch, count, 3, generator=generator,
                                                       device=device, dtype=dtype)
        raise ValueError(f"prior must be one of {PRIORS}, got '{kind}'")

    @torch.no_grad()
    def upsample(self, points: torch.Tensor, count: int, steps_per_level: int | None = None,
                 prior: str = "uniform", generator: torch.Generator | None = None,
                 denoise_from_input: bool = False, start_sigma: float | None = None,
                 step_lr: float | None = None) -> torch.Tensor:
        """`count` points of the surface of each input cloud (B, N, 3) -> (B, count, 3), or
        (N, 3) -> (count, 3), in the caller's frame, by annealed Langevin dynamics.

        From the prior, all levels run unless `start_sigma` cuts the large ones; with
        `denoise_from_input` the chain starts from the input points (`spread_starts`)
        and runs the levels <= start_sigma (default 0.1). steps_per_level and step_lr default to
        the config's. Put the model in eval mode first."""
        single = points.dim() == 2
        if single:
            points = points.unsqueeze(0)
        code = self.encode(points)
        steps = steps_per_level or self.config.steps_per_level
        lr = self.config.step_lr if step_lr is None else step_lr
        batch = points.shape[0]
        if denoise_from_input:
            normalised = code.to_model_frame(points[..., :3].to(self.sigmas.dtype))
            index = spread_starts(normalised.shape[1], batch, count, generator, normalised.device)
            x = torch.gather(normalised, 1, index.unsqueeze(-1).expand(-1, -1, 3))
            sigmas = self.sigma_schedule(DEFAULT_START_SIGMA if start_sigma is None
                                         else start_sigma)
        else:
            x = self.prior(batch, count, prior, generator)
            sigmas = self.sigma_schedule(start_sigma)
        x = annealed_langevin(lambda y, sigma: self.score(y, code, sigma), x, sigmas.tolist(), steps,
                              lr, generator, bound=self.config.prior_bound)
        out = code.to_input_frame(x)
        return out[0] if single else out

    def config_dict(self) -> dict:
        return asdict(self.config)


def guide_only(model: ShapeGf) -> ShapeGf | None:
    """A copy of the model whose decoder output is zero: its score is the input guide alone, the
    reference that shows what the learned correction adds (None for models without a guide)."""
    if not model.config.input_guide:
        return None
    copy = deepcopy(model)
    nn.init.zeros_(copy.decoder.out.weight)
    nn.init.zeros_(copy.decoder.out.bias)
    return copy
