"""PointGMM (Hertz, Hanocka, Giryes and Cohen-Or, "PointGMM: a Neural GMM Network for Point
Clouds", CVPR 2020): a point cloud in, a hierarchical Gaussian mixture (hGMM) of its surface out.

Network (the authors' code, amirhertz/pointgmm, as summarised in shared/notes/reference-
implementations.md):

* Encoder: PointNet (per-point MLP 3 -> 64 -> 128 -> 1024 with batch norm, max pool, fully
  connected 1024 -> 512 -> latent) and a VAE head (two linear maps to the mean and the
  log-variance of z; z = mean + exp(logvar / 2) eps while training).
* Decoder: z is expanded into `roots` (8) hidden vectors by doubling stages (latent -> 2 h, then
  each vector -> 2 h split in two, until there are `roots`). Each of the `depth` split levels
  applies attention among siblings (keys and queries of size h / 8, a residual gain initialised
  at 0, i.e. the layer starts as the identity), then an MLP h -> 2 h -> `children` h reshaped into
  `children` (4) hidden vectors per parent: 8 / 32 / 128 / 512 Gaussians at depth 3.
* Per-Gaussian head, one per level (the reference's `split_cast`): MLP h -> h / 2 -> 13 with layer
  norm and dropout, read as two axis vectors (6), the square roots s of the eigenvalues (3), the
  mean (3) and the mixing logit (1). Axes: Gram-Schmidt of the two vectors gives the rows p1, p2 of
  P and p3 = p1 x p2, so P is orthonormal and right-handed; lambda = s^2 + eps; the covariance is
  Sigma = P^T diag(lambda) P, its inverse P^T diag(1 / lambda) P and det Sigma = prod lambda, so
  nothing is ever inverted or factorised. Mixing logits are softmaxed among siblings; a child's
  weight is its parent's weight times that softmax, so every level's weights sum to 1.

Frames. `PointGmm.forward` takes clouds in any frame and units: with `input_normalisation`
"unit_sphere" (the default) it centres each cloud on its centroid and scales it into the unit
sphere, decodes the hGMM there, and maps it back (means * s + c, eigenvalues * s^2, axes and
weights unchanged), so the returned mixture is in the caller's frame and units (metres in, metres
out); densities then carry the Jacobian 1 / s^3 automatically. "centre" only translates, "none"
feeds the cloud as it is.

Departures from the reference, all deliberate:
* p3 = p1 x p2 instead of Gram-Schmidt of a third predicted vector (the reference's P may be
  left-handed; the covariance is the same either way), so the head predicts 13 numbers, not 16.
* Attention logits are scaled by 1 / sqrt(key size) (the reference defines but does not apply
  that scale); `attention_heads` > 1 splits keys and values across heads (the reference: 1).
* In eval mode z is the posterior mean (the reference samples z at test time too), so a forward
  pass is deterministic.
* `canonical_yaw` (off by default, on in config/train/pointgmm.yaml): objects in a robot's world
  stand upright at any heading, and the reference's canonically posed shapes do not. The input
  is turned about z to the heading of its horizontal principal axis (`canonical_yaw`), decoded
  there, and the mixture turned back, instead of the network learning every heading.
* Dropout 0 in the configs (the reference: 0.1 before every linear layer of the heads and split
  MLPs): with it the means jittered and the Gaussians stayed wide and central.
* The encoder's last per-point layer has ReLU after its batch norm (the repo's `shared_mlp`); the
  reference pools the batch-normalised features without it.
* Defaults are the reference's sizes (latent 256, hidden 512); config/train/pointgmm.yaml uses a
  smaller CPU-sized network.

Refinement (`refine`, not in the paper): the predicted finest level initialises a few EM
iterations on the observed points (`gmm.fitting.refine_em`), components the points do not
support keeping the prediction, and every coarser level becomes the moment-matched merge of its
children, so the hierarchy stays one (children's weights sum to their parent's).

The mixture types the network returns (`HierarchicalGmm` of `GmmLevel`s), their densities and
`sample` live in `gmm/hierarchical.py`, shared with any other mixture (e.g. the EM baseline's).
The hierarchical loss lives in `models/pointgmm_loss.py`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from gmm_perception.geometry.normalise import normalise_clouds
from gmm_perception.gmm import fitting
from gmm_perception.gmm import mixture as mx
from gmm_perception.gmm.hierarchical import GmmLevel, HierarchicalGmm
from gmm_perception.models.pointnet import PointNetGlobalFeature

MODEL_NAME = "pointgmm"
NORMALISATIONS = ("unit_sphere", "centre", "none")
HEAD_OUTPUTS = 13  # two axis vectors (6), sqrt eigenvalues (3), mean (3), mixing logit (1)


@dataclass(frozen=True)
class PointGmmConfig:
    latent: int = 256  # size of z
    hidden: int = 512  # size of every Gaussian's hidden vector h
    depth: int = 3  # split levels: roots * children^depth Gaussians at the finest level
    roots: int = 8  # Gaussians of level 0 (a power of two >= 2: built by doubling stages)
    children: int = 4  # children per parent at every split
    attention_heads: int = 1  # heads of the sibling attention (keys: hidden // 8 in all)
    dropout: float = 0.1  # before every linear layer of the split MLPs and the heads
    eps: float = 1e-6  # lambda = s^2 + eps, in the normalised (unit-sphere) frame
    input_normalisation: str = "unit_sphere"  # unit_sphere | centre | none (module docstring)
    encoder_widths: tuple[int, ...] = (64, 128, 1024)  # per-point PointNet layers
    encoder_fc: tuple[int, ...] = (512,)  # fully connected layers after the max pool
    variational: bool = True  # VAE head (mean, log-variance, KL); False: z = the mean
    canonical_yaw: bool = False  # not in the paper: turn inputs to a canonical heading (z up)

    def __post_init__(self):
        object.__setattr__(self, "encoder_widths", tuple(int(w) for w in self.encoder_widths))
        object.__setattr__(self, "encoder_fc", tuple(int(w) for w in self.encoder_fc))
        if self.roots < 2 or self.roots & (self.roots - 1):
            raise ValueError(f"roots must be a power of two >= 2, got {self.roots}")
        if self.children < 2 or self.depth < 0:
            raise ValueError("children must be >= 2 and depth >= 0")
        if self.hidden % 8 or (self.hidden // 8) % self.attention_heads \
                or self.hidden % self.attention_heads:
            raise ValueError("hidden must be a multiple of 8, and hidden // 8 a multiple of "
                             "attention_heads")
        if self.input_normalisation not in NORMALISATIONS:
            raise ValueError(f"input_normalisation must be one of {NORMALISATIONS}")
        if self.eps <= 0:
            raise ValueError("eps must be positive")

    @property
    def components(self) -> tuple[int, ...]:
        """Gaussians per level, coarse to fine: (8, 32, 128, 512) by default."""
        return tuple(self.roots * self.children ** level for level in range(self.depth + 1))


# ------------------------------------------------------------------------------- network
def canonical_yaw(points: torch.Tensor) -> torch.Tensor:
    """R (B, 3, 3), a turn about z, such that points @ R (= R^T x) has its horizontal principal
    axis along +x, the sign chosen so that the points' third moment along it is positive.

    Objects stand upright at any heading; the network then sees every cloud at one heading
    (up to near-isotropic footprints, whose heading matters little) instead of learning all of
    them. The turn is computed from the input alone, so a partial scan gets its own."""
    xy = points[..., :2] - points[..., :2].mean(dim=1, keepdim=True)
    covariance = xy.transpose(1, 2) @ xy / points.shape[1]
    axis = torch.linalg.eigh(covariance).eigenvectors[..., 1]  # (B, 2), the largest
    skew = ((xy @ axis.unsqueeze(-1)).squeeze(-1) ** 3).mean(dim=1)
    axis = axis * torch.where(skew < 0, -1.0, 1.0).unsqueeze(-1)
    c, s = axis[:, 0], axis[:, 1]
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def _mlp(widths: list[int], dropout: float) -> nn.Sequential:
    """The reference's MLP: [dropout] linear, then layer norm + ReLU between layers."""
    layers: list[nn.Module] = []
    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(c_in, c_out))
        if index < len(widths) - 2:
            layers += [nn.LayerNorm(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class PointNetVaeEncoder(nn.Module):
    """PointNet's global feature and the VAE head (mean, log-variance)."""

    def __init__(self, config: PointGmmConfig):
        super().__init__()
        self.global_feature = PointNetGlobalFeature(config.encoder_widths, config.encoder_fc)
        width = self.global_feature.width
        self.mean = nn.Linear(width, config.latent)
        self.log_variance = nn.Linear(width, config.latent) if config.variational else None

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, 3) normalised points -> mean (B, latent), log-variance (B, latent) or None."""
        hidden = self.global_feature(points)
        log_variance = self.log_variance(hidden) if self.log_variance is not None else None
        return self.mean(hidden), log_variance


class SiblingAttention(nn.Module):
    """Self-attention among the siblings of each group: x (B, G, S, h) -> (B, G, S, h).

    Queries and keys of hidden // 8 numbers (split across heads), values of `hidden`; the output
    is gamma * attention + x with gamma initialised at 0 (SAGAN-style, as the reference)."""

    def __init__(self, hidden: int, heads: int = 1):
        super().__init__()
        self.heads = heads
        self.key_size = hidden // 8 // heads
        self.query = nn.Linear(hidden, hidden // 8)
        self.key = nn.Linear(hidden, hidden // 8)
        self.value = nn.Linear(hidden, hidden)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, g, s, h = x.shape
        q = self.query(x).view(b, g, s, self.heads, -1).transpose(2, 3)  # (B, G, H, S, k)
        k = self.key(x).view(b, g, s, self.heads, -1).transpose(2, 3)
        v = self.value(x).view(b, g, s, self.heads, -1).transpose(2, 3)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.key_size), dim=-1)
        out = (attention @ v).transpose(2, 3).reshape(b, g, s, h)
        return self.gamma * out + x


class GaussianHead(nn.Module):
    """Hidden vectors (..., h) -> logit (...), mean (..., 3), axes (..., 3, 3), lambda (..., 3)."""

    def __init__(self, hidden: int, dropout: float, eps: float):
        super().__init__()
        self.mlp = _mlp([hidden, hidden // 2, HEAD_OUTPUTS], dropout)
        self.eps = eps

    def forward(self, x: torch.Tensor):
        out = self.mlp(x)
        v1, v2, s, mean, logit = torch.split(out, (3, 3, 3, 3, 1), dim=-1)
        return logit.squeeze(-1), mean, gram_schmidt(v1, v2), s * s + self.eps


def gram_schmidt(v1: torch.Tensor, v2: torch.Tensor, tiny: float = 1e-8) -> torch.Tensor:
    """Rows p1 = v1 / |v1|, p2 = the unit part of v2 orthogonal to p1, p3 = p1 x p2: a
    right-handed orthonormal frame (..., 3, 3)."""
    p1 = v1 / v1.norm(dim=-1, keepdim=True).clamp_min(tiny)
    u2 = v2 - (v2 * p1).sum(-1, keepdim=True) * p1
    p2 = u2 / u2.norm(dim=-1, keepdim=True).clamp_min(tiny)
    return torch.stack([p1, p2, torch.linalg.cross(p1, p2, dim=-1)], dim=-2)


class HierarchicalDecoder(nn.Module):
    """z -> roots hidden vectors -> `depth` splits; a Gaussian head per level."""

    def __init__(self, config: PointGmmConfig):
        super().__init__()
        c = config
        h = c.hidden
        stages: list[nn.Module] = [nn.Linear(c.latent, 2 * h)]
        count = 2
        while count < c.roots:  # each vector -> two: 2, 4, 8 ... roots
            stages += [nn.LayerNorm(2 * h), nn.ReLU(), _Split(h), nn.Linear(h, 2 * h)]
            count *= 2
        stages.append(_Split(h))
        self.roots = nn.Sequential(*stages)
        self.attention = nn.ModuleList(SiblingAttention(h, c.attention_heads)
                                       for _ in range(c.depth))
        self.split = nn.ModuleList(_mlp([h, 2 * h, c.children * h], c.dropout)
                                   for _ in range(c.depth))
        self.heads = nn.ModuleList(GaussianHead(h, c.dropout, c.eps) for _ in range(c.depth + 1))
        self.children_per_split = c.children

    def forward(self, z: torch.Tensor) -> HierarchicalGmm:
        b = z.shape[0]
        x = self.roots(z).unsqueeze(1)  # (B, 1, roots, h): one group of sibling roots
        outputs = [self.heads[0](x.flatten(1, 2))]
        for attention, split, head in zip(self.attention, self.split, self.heads[1:]):
            g, s, h = x.shape[1:]
            x = split(attention(x)).view(b, g * s, self.children_per_split, h)
            outputs.append(head(x.flatten(1, 2)))
        logits, means, axes, eigenvalues = (list(part) for part in zip(*outputs))
        return HierarchicalGmm.from_sibling_logits(logits, means, axes, eigenvalues,
                                                   self.children_per_split)


class _Split(nn.Module):
    """(B, ..., n h) -> (B, m, h): every vector cut into vectors of size h."""

    def __init__(self, h: int):
        super().__init__()
        self.h = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1, self.h)


@dataclass
class PointGmmOutput:
    """hgmm in the input frame; the VAE posterior (mean, log-variance: None when not
    variational) and the latent used; the normalisation (points = normalised * scale + centre)."""

    hgmm: HierarchicalGmm
    mean: torch.Tensor
    log_variance: torch.Tensor | None
    z: torch.Tensor
    centre: torch.Tensor
    scale: torch.Tensor
    normalised: HierarchicalGmm | None = field(repr=False, default=None)  # the decoder's frame


class PointGmm(nn.Module):
    """Encoder + hierarchical decoder. `forward(points)` -> PointGmmOutput; `predict` -> hGMM.

    Any number of points per cloud (max pooling); training needs batches of 2 or more (the
    encoder's fully connected layers use batch norm), inference takes batches of 1."""

    def __init__(self, config: PointGmmConfig = PointGmmConfig()):
        super().__init__()
        self.config = config
        self.encoder = PointNetVaeEncoder(config)
        self.decoder = HierarchicalDecoder(config)

    def encode(self, normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None,
                                                        torch.Tensor]:
        """Normalised clouds (B, N, 3) -> (mean, log-variance, z); z is sampled while training
        (reparameterisation) and is the mean in eval mode."""
        mean, log_variance = self.encoder(normalised)
        z = mean
        if log_variance is not None and self.training:
            z = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        return mean, log_variance, z

    def decode(self, z: torch.Tensor) -> HierarchicalGmm:
        """Latents (B, latent) -> the hGMM in the normalised frame."""
        return self.decoder(z)

    def forward(self, points: torch.Tensor) -> PointGmmOutput:
        """Clouds (B, N, 3), any frame and units -> hGMM in that frame (module docstring)."""
        points = points[..., :3].to(torch.float32)
        normalised, centre, scale = normalise_clouds(points, self.config.input_normalisation)
        rotation = canonical_yaw(normalised) if self.config.canonical_yaw else None
        if rotation is not None:
            normalised = normalised @ rotation
        mean, log_variance, z = self.encode(normalised)
        local = self.decode(z)
        return PointGmmOutput(local.transformed(centre, scale, rotation), mean, log_variance, z,
                              centre, scale, local)

    @torch.no_grad()
    def predict(self, points: torch.Tensor) -> HierarchicalGmm:
        """The hGMM of clouds (B, N, 3) in their frame, without gradients (the node's call;
        put the model in eval mode first)."""
        return self(points).hgmm

    def config_dict(self) -> dict:
        return asdict(self.config)


def refine(hgmm: HierarchicalGmm, points: torch.Tensor, iterations: int, support: float,
           covariance_floor: float = fitting.DEFAULT_COVARIANCE_FLOOR
           ) -> tuple[HierarchicalGmm, torch.Tensor]:
    """The hGMM after `iterations` EM steps of its finest level on the observed points (B, N, 3)
    (`fitting.refine_em` with `support`), and the (B, K) mask of the finest components kept as
    predicted (they keep the prediction's tensors exactly). Coarser levels:
    `fitting.merge_children` of the level below, parents as before. On the mixture's device and
    dtype (the points are moved there)."""
    finest = hgmm.finest
    dtype = finest.means.dtype
    points = points[..., :3].to(device=finest.means.device, dtype=dtype)
    packed = mx.pack(finest.weights, finest.means, finest.covariance()).unsqueeze(1)
    refined, kept = fitting.refine_em(points, packed, iterations, covariance_floor, support)
    packed_levels = [refined]
    for _ in range(hgmm.depth):
        packed_levels.insert(0, fitting.merge_children(packed_levels[0], hgmm.children))
    levels: list[GmmLevel] = []
    for packed_level, original in zip(packed_levels, hgmm.levels):
        # float64 eigendecomposition: a kept Gaussian's smallest predicted eigenvalue
        # (s^2 + eps) can be near 0, where float32's may come out <= 0
        level = GmmLevel.from_covariances(*(t.squeeze(1).double()
                                            for t in mx.unpack(packed_level)))
        weights, means, axes, eigenvalues = (t.to(dtype) for t in (
            level.weights, level.means, level.axes, level.eigenvalues))
        if original is finest:
            keep = kept.unsqueeze(-1)
            means = torch.where(keep, finest.means, means)
            axes = torch.where(keep.unsqueeze(-1), finest.axes, axes)
            eigenvalues = torch.where(keep, finest.eigenvalues, eigenvalues)
            weights = torch.where(kept, finest.weights, weights)
        log_weights = torch.log(weights.clamp_min(1e-38))
        if levels:  # sibling log weights: log weight - the parent's log weight
            log_weights = log_weights - torch.log(
                levels[-1].weights.clamp_min(1e-38))[:, original.parents]
        levels.append(GmmLevel(weights, means, axes, eigenvalues, original.parents, log_weights))
    return HierarchicalGmm(levels, hgmm.children), kept
