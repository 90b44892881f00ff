"""NeuralQAAD (Wagner & Schwanecke 2022, Sec. 3.3): a shared-weight point-cloud autodecoder.

A dataset of N consistent shapes is stored as this module: a latent table L (N x latent), one
trainable input cloud Q of M points split into K equal patches, and a folding network. Shape i's
point for input point q of patch k is (eq. 16)

    p_hat = q + MLP_k(l_i, q),

MLP_k being the shared layers (the paper's first four, 256-128-128-64, SELU) followed by the
patch's own layers (64, then 3). The patch layers of all K patches run as one batched matrix
product (the paper's grouped convolution). A forward pass folds only a sample of Q's points, the
same number per patch (Sec. 3.3), so memory does not grow with the resolution.

Q is initialised from a random sample of one dataset shape (the paper's choice) and split into K
patches by a k-d tree (longest axis, median), so patches are compact regions of equal size.

Departures (measured or argued in the model card):
* Residual folding (q + MLP): the initial reconstruction of every shape is Q itself, a member of
  the family, instead of the MLP's near-zero output.
* Decoding beyond M points: inputs are Q's points jittered by `jitter` x Q's mean nearest-neighbour
  spacing (Gaussian), the same noise as in training, so the fold between Q's points is trained.
* No PointNet encoder for the Chamfer phase: the latent table is trained from the start.

With `shared_widths` empty the same module is the paper's AtlasNetV2-style baseline: K patches,
each folded by its own MLP (no sharing), trained with the augmented Chamfer distance only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

MODEL_NAME = "neuralqaad"


@dataclass
class NeuralQaadConfig:
    """The autodecoder's shape (module docstring)."""

    shapes: int = 1  # rows of the latent table: the shapes the model stores
    latent: int = 128  # floats per shape code
    input_points: int = 16384  # M, the trainable input cloud
    patches: int = 16  # K, equal parts of Q folded by their own last layers
    # Layers shared by every patch; () gives the AtlasNet-style baseline: every patch its own MLP.
    shared_widths: tuple[int, ...] = (256, 128, 128, 64)
    patch_widths: tuple[int, ...] = (64,)  # each patch's own hidden layers before its 3-d output
    jitter: float = 0.5  # input noise, x Q's mean nearest-neighbour spacing (training, decoding)
    code_init_std: float = 0.01  # the latent table's initial spread (DeepSDF-style autodecoding)
    seed: int = 0

    def __post_init__(self):
        self.shared_widths = tuple(int(w) for w in self.shared_widths)
        self.patch_widths = tuple(int(w) for w in self.patch_widths)
        if self.shapes < 1 or self.latent < 1 or self.patches < 1:
            raise ValueError("shapes, latent and patches must be >= 1")
        if self.input_points % self.patches:
            raise ValueError(f"input_points ({self.input_points}) must be a multiple of "
                             f"patches ({self.patches})")
        if not (self.shared_widths or self.patch_widths):
            raise ValueError("the fold needs at least one hidden layer (shared or per patch)")
        if self.jitter < 0:
            raise ValueError("jitter must be >= 0")


def kd_patches(points: np.ndarray, patches: int) -> np.ndarray:
    """Reorder `points` (M, 3) into `patches` equal, compact groups: (patches, M / patches, 3).
    Median splits along the longest axis; `patches` must divide M and be a power of two."""
    if patches & (patches - 1):
        raise ValueError(f"patches must be a power of two, got {patches}")
    groups = [points]
    while len(groups) < patches:
        split = []
        for group in groups:
            axis = int(np.argmax(np.ptp(group, axis=0)))
            order = np.argsort(group[:, axis], kind="stable")
            half = len(group) // 2
            split += [group[order[:half]], group[order[half:]]]
        groups = split
    return np.stack(groups)


def nearest_indices(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index of each query's nearest point, per batch row: (B, S, 3), (B, T, 3) -> (B, S).
    A k-d tree on the CPU (a dense argmin over S x T is ten times slower there), cdist on GPUs."""
    if query.device.type != "cpu":
        return torch.cdist(query, points).argmin(dim=2)
    found = [cKDTree(p).query(q)[1] for q, p in zip(query.numpy(), points.numpy())]
    return torch.from_numpy(np.stack(found)).long()


def augmented_chamfer(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 11 per shape, with means: max of the two directed mean nearest distances. (B,)

    The nearest neighbours are found without autograd and only the chosen pairs' distances are
    differentiated: the same gradient as through the minimum, without cdist's costly backward."""
    with torch.no_grad():
        detached = predicted.detach()
        to_target = nearest_indices(detached, target)  # (B, S)
        to_predicted = nearest_indices(target, detached)  # (B, T)

    def gather(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(points, 1, index.unsqueeze(-1).expand(-1, -1, 3))

    forward = (predicted - gather(target, to_target)).norm(dim=-1).mean(dim=1)
    backward = (target - gather(predicted, to_predicted)).norm(dim=-1).mean(dim=1)
    return torch.maximum(forward, backward)


class NeuralQaad(nn.Module):
    def __init__(self, config: NeuralQaadConfig, initial_cloud: np.ndarray | None = None):
        super().__init__()
        self.config = c = config
        generator = torch.Generator().manual_seed(c.seed)
        per_patch = c.input_points // c.patches
        if initial_cloud is None:  # placeholder until set_input_cloud (or a checkpoint) fills it
            initial_cloud = torch.randn(c.input_points, 3, generator=generator).numpy() * 0.5
        self.inputs = nn.Parameter(torch.from_numpy(
            kd_patches(np.asarray(initial_cloud, np.float32), c.patches)).float())
        assert self.inputs.shape == (c.patches, per_patch, 3)
        self.codes = nn.Parameter(torch.randn(c.shapes, c.latent, generator=generator)
                                  * c.code_init_std)
        layers, width = [], c.latent + 3
        for out in c.shared_widths:
            layers += [nn.Linear(width, out), nn.SELU()]
            width = out
        self.shared = nn.Sequential(*layers)
        self.patch_weights = nn.ParameterList()
        self.patch_biases = nn.ParameterList()
        for out in (*c.patch_widths, 3):
            bound = 1.0 / np.sqrt(width)
            self.patch_weights.append(nn.Parameter(
                (torch.rand(c.patches, width, out, generator=generator) * 2 - 1) * bound))
            self.patch_biases.append(nn.Parameter(
                (torch.rand(c.patches, 1, out, generator=generator) * 2 - 1) * bound))
            width = out
        with torch.no_grad():  # residual folding: start as the identity on Q
            self.patch_weights[-1].mul_(0.01)
            self.patch_biases[-1].zero_()
        self.register_buffer("spacing", torch.zeros(()))
        self.update_spacing()

    # ----------------------------------------------------------------------------- input cloud
    def set_input_cloud(self, cloud: np.ndarray) -> None:
        """Q from a sample of M points of a dataset shape (the paper's initialisation)."""
        with torch.no_grad():
            self.inputs.copy_(torch.from_numpy(kd_patches(np.asarray(cloud, np.float32),
                                                          self.config.patches)))
        self.update_spacing()

    def update_spacing(self) -> None:
        """Q's mean nearest-neighbour distance (within patches), the unit of `jitter`."""
        with torch.no_grad():
            flat = self.inputs.detach().reshape(-1, 3)
            sample = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))
                          [:2048].to(flat.device)]
            if len(flat) < 2:
                self.spacing.zero_()
                return
            # The sample is part of Q: each point's nearest is itself (0), then its neighbour.
            nearest = torch.cdist(sample, flat).topk(2, largest=False).values
            self.spacing.fill_(float(nearest[:, 1].mean()))

    # ----------------------------------------------------------------------------- folding
    def fold(self, codes: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """codes (B, latent), inputs (B, K, S, 3) points of each patch -> (B, K, S, 3)."""
        b, k, s, _ = inputs.shape
        features = torch.cat([codes[:, None, None, :].expand(b, k, s, -1), inputs], dim=-1)
        hidden = self.shared(features)  # (B, K, S, w)
        hidden = hidden.permute(1, 0, 2, 3).reshape(k, b * s, -1)  # patch-major for bmm
        last = len(self.patch_weights) - 1
        for index, (weight, bias) in enumerate(zip(self.patch_weights, self.patch_biases)):
            hidden = torch.baddbmm(bias, hidden, weight)
            if index < last:
                hidden = torch.nn.functional.selu(hidden)
        offsets = hidden.reshape(k, b, s, 3).permute(1, 0, 2, 3)
        return inputs + offsets

    def sample_inputs(self, batch: int, per_patch: int, generator: torch.Generator | None = None,
                      jitter: bool = True, replace: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random indices (B, K, S) into each patch of Q (without `replace`: distinct within a
        patch, S <= M / K) and the input points (B, K, S, 3), jittered when `jitter` (training:
        the fold learns the space between Q's points)."""
        k, m = self.inputs.shape[:2]
        device = self.inputs.device
        if replace:
            index = torch.randint(m, (batch, k, per_patch), generator=generator, device=device)
        else:
            keys = torch.rand(batch, k, m, generator=generator, device=device)
            index = keys.argsort(dim=-1)[..., :per_patch]
        points = torch.gather(self.inputs.unsqueeze(0).expand(batch, -1, -1, -1), 2,
                              index.unsqueeze(-1).expand(-1, -1, -1, 3))
        if jitter and self.config.jitter > 0:
            noise = torch.randn(points.shape, generator=generator, device=device)
            points = points + noise * (self.config.jitter * self.spacing)
        return index, points

    def decode_all(self, codes: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """The image of all of Q for each code: (B, M, 3), in patch order (no jitter)."""
        k, m = self.inputs.shape[:2]
        per = max(1, chunk // k)
        out = []
        for start in range(0, m, per):
            part = self.inputs[None, :, start:start + per].expand(len(codes), -1, -1, -1)
            out.append(self.fold(codes, part))
        return torch.cat(out, dim=2).reshape(len(codes), -1, 3)

    def decode(self, code: torch.Tensor, count: int, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """`count` points of one shape (code (latent,)): Q's image when count == M; else per
        patch an equal share of Q's points, with replacement and jittered beyond M."""
        k, m = self.inputs.shape[:2]
        if count == k * m:
            return self.decode_all(code[None])[0]
        per = -(-count // k)
        index = (torch.randperm(m, generator=generator, device=self.inputs.device)[:per]
                 .expand(1, k, -1) if per <= m else None)
        if index is not None:
            points = torch.gather(self.inputs.unsqueeze(0), 2, index.unsqueeze(-1).expand(
                -1, -1, -1, 3))
        else:
            _, points = self.sample_inputs(1, per, generator, jitter=True)
        out = []
        for start in range(0, per, 4096):
            out.append(self.fold(code[None], points[:, :, start:start + 4096]))
        cloud = torch.cat(out, dim=2).reshape(-1, 3)
        keep = torch.randperm(len(cloud), generator=generator, device=cloud.device)[:count]
        return cloud[keep]

    def parameter_floats(self) -> dict[str, int]:
        """Floats stored, as the paper counts compression: network, input cloud, codes."""
        network = sum(p.numel() for name, p in self.named_parameters()
                      if name not in ("inputs", "codes"))
        return {"network": network, "input_cloud": self.inputs.numel(),
                "codes": self.codes.numel()}


def autodecode(model: NeuralQaad, points: torch.Tensor, steps: int = 200, lr: float = 0.02,
               points_per_patch: int = 128, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """Encode a new shape (Sec. 3.3, the autodecoder's encoder): a code optimised against the
    frozen network by Adam on the augmented Chamfer distance between a jittered fold of Q and
    as many random points of `points` (N, 3) (the model's frame: unit sphere, canonical pose),
    starting from the mean of the stored codes. Returns the code (latent,)."""
    code = model.codes.detach().mean(dim=0, keepdim=True).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([code], lr=lr)
    frozen = [p.requires_grad for p in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        count = model.config.patches * points_per_patch
        for _ in range(steps):
            _, inputs = model.sample_inputs(1, points_per_patch, generator, jitter=True)
            predicted = model.fold(code, inputs).reshape(1, -1, 3)
            picks = torch.randint(len(points), (count,), generator=generator,
                                  device=points.device)
            loss = augmented_chamfer(predicted, points[picks][None]).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    finally:
        for parameter, flag in zip(model.parameters(), frozen):
            parameter.requires_grad_(flag)
    return code.detach()[0]
