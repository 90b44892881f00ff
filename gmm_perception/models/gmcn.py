"""GMCN classifier (Celarek et al., "Gaussian Mixture Convolution Networks", ICLR 2022).

An object's point cloud is fitted by a Gaussian mixture (k-means centres, one EM step for the
covariances: section 5, Table 4), and the mixture goes through Gaussian convolution layers
(analytic convolution with learnable Gaussian kernels, eq. 3-4; ReLU fitting, eq. 5-7; reduction
to half the components, which is the pooling of section 4.3, followed by the covariance-scale
normalisation), then a last convolution block with one channel per class whose mixtures are
integrated, batch-normalised and turned into log-probabilities (Figure 4). Plain PyTorch, CPU or
GPU; the ops live in `gmm_perception.gmm.gmcn_ops`.

Defaults are the paper's network 1/128 -> 8/64 -> 16/32 -> 32/16 -> 64/8 -> classes with 5-Gaussian
kernels; with 10 classes it has 216,840 kernel parameters (the paper reports 216,841), with our 13
classes 229,320, plus 133 biases and 26 batch-norm parameters. Where this implementation departs
from the paper, and why, is said in `GmcnConfig` and in `gmcn_ops`.

`Gmcn.classify_points` takes raw clouds (B, N, 3) in any frame and returns log-probabilities: the
fit, the centring and the scale normalisation are part of the model, so a node calls one thing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gmm_perception.gmm import fitting
from gmm_perception.gmm import mixture as mx
from gmm_perception.gmm.gmcn_ops import GmcnLayer

MODEL_NAME = "gmcn"


@dataclass(frozen=True)
class GmcnConfig:
    num_classes: int = 13
    dims: int = 3
    # Input fit (section 5): input_components Gaussians per object from `fit_method` on at most
    # fit_points points of the cloud (a Morton-stratified subsample beyond that).
    input_components: int = 128
    fit_method: str = "kmeans_em"  # kmeans_em (the paper's best) | em | kmeans_then_em
    fit_iterations: int = 10  # Lloyd iterations (kmeans_em) or EM iterations (em, kmeans_then_em)
    fit_kmeans_points: int = 512  # k-means runs on this stratified subsample; EM on all points
    fit_points: int = 2048
    covariance_floor: float = 1e-3  # added variance, relative to the cloud's mean squared radius
    # The data-set weight normalisation (fitting.dataset_weight_scale): the task computes it on
    # the training set; 1.0 leaves the fitted probability weights as they are.
    input_weight_scale: float = 1.0
    # Hidden layers: feature channels and fitted components N_p after each (the paper halves N_p
    # every layer: pooling, section 4.3).
    channels: tuple[int, ...] = (8, 16, 32, 64)
    components: tuple[int, ...] = (64, 32, 16, 8)
    kernel_components: int = 5
    kernel_radius: float = 2.5  # section 5: kernel Gaussians 2.5 units from the origin
    kernel_eps: float = 0.05  # eps of eq. 9
    kernel_decay: float = 0.01  # loss weight of the eq. 8 weight decay (see regularisation_loss)
    # Departure, for CPU speed: the convolution output (F_i N_i N_k Gaussians per channel) is
    # reduced to dense_factor * N_p Gaussians (signs apart) before the ReLU fit, and the class
    # layer to final_dense_components; 0 gives the paper's exact dense fit on all of them
    # (O((F_i N_i N_k)^2) per channel: practical on a GPU only).
    dense_factor: int = 2
    final_dense_components: int = 16
    mass_balance: float = 1.0  # reduction runs: 0 equal counts, 1 equal mass (gmcn_ops)
    relu_iterations: int = 1  # fixed-point iterations of the ReLU fit (the reference: 1)
    relu_eps: float = 0.05
    relu_offset: float = 0.1
    chunk_elements: int = 1 << 18  # bounds the per-chunk intermediates of a layer
    checkpoint_chunks: bool = False  # recompute chunk intermediates in backward (saves memory)

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "components", tuple(int(c) for c in self.components))
        if len(self.channels) != len(self.components):
            raise ValueError("channels and components need one entry per hidden layer")
        mx.layout_size(self.dims)
        if self.fit_method not in fitting.FIT_METHODS:
            raise ValueError(f"fit_method must be one of {fitting.FIT_METHODS}")


def fit_input(points: torch.Tensor, config: GmcnConfig) -> torch.Tensor:
    """The network's input for raw clouds (B, N, d): the fitted mixtures (B, 1, K, L), weights
    summing to 1 per object. No gradient; deterministic (no random draws for kmeans_em)."""
    with torch.no_grad():
        points = points[..., :config.dims].to(torch.float32)
        points = fitting.stratified_subsample(points, config.fit_points)
        if config.fit_method == "kmeans_em":
            return fitting.fit_kmeans_em(points, config.input_components, config.fit_iterations,
                                         config.covariance_floor,
                                         kmeans_points=config.fit_kmeans_points)
        return fitting.fit_points(points, config.input_components, config.fit_method,
                                  config.fit_iterations, config.covariance_floor,
                                  generator=torch.Generator(points.device).manual_seed(0))


class Gmcn(nn.Module):
    def __init__(self, config: GmcnConfig = GmcnConfig()):
        super().__init__()
        self.config = config
        c = config

        def layer(f_in: int, f_out: int, n_out: int | None, dense: int | None) -> GmcnLayer:
            return GmcnLayer(c.dims, f_in, f_out, n_out, dense, c.kernel_components,
                             c.kernel_radius, c.kernel_eps, c.mass_balance, c.relu_iterations,
                             c.relu_eps, c.relu_offset, c.chunk_elements, c.checkpoint_chunks)

        widths = (1, *c.channels)
        self.hidden = nn.ModuleList(
            layer(f_in, f_out, n_p, c.dense_factor * n_p if c.dense_factor > 0 else None)
            for f_in, f_out, n_p in zip(widths[:-1], widths[1:], c.components))
        # The paper does not reduce the class layer (its output is only integrated).
        self.classes = layer(widths[-1], c.num_classes, None,
                             c.final_dense_components if c.final_dense_components > 0 else None)
        self.norm = nn.BatchNorm1d(c.num_classes)

    def prepare(self, points: torch.Tensor) -> torch.Tensor:
        """Raw clouds (B, N, d) -> the fitted input mixtures (`fit_input`)."""
        return fit_input(points, self.config)

    def features(self, mixture: torch.Tensor) -> torch.Tensor:
        """Integrals of the class channels (B, num_classes), before the batch norm."""
        x = mx.translate(mixture, -mx.centroid(mixture).detach())  # exact: the net is shift-
        x, _ = mx.normalise_covariance_scale(x)  # invariant; keeps float32 accurate far away
        x = mx.with_weights(x, mx.weights(x) * self.config.input_weight_scale)
        for layer in self.hidden:
            x, _ = mx.normalise_covariance_scale(layer(x))
        return mx.integrate(self.classes(x))

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """Input mixtures (B, 1, K, 1 + d + d*d) -> log-probabilities (B, num_classes).

        Per sample: centring and covariance-scale normalisation (mean trace d, section 4.3), the
        data-set weight factor, the hidden layers each followed by the normalisation, the class
        layer, integration of each class channel, batch norm, log-softmax (Figure 4)."""
        return torch.log_softmax(self.norm(self.features(mixture)), dim=-1)

    def classify_points(self, points: torch.Tensor) -> torch.Tensor:
        """Raw clouds (B, N, 3), any frame and scale -> log-probabilities (B, num_classes)."""
        return self(self.prepare(points))

    def regularisation_loss(self) -> torch.Tensor:
        """kernel_decay x the eq. 8 weight decay averaged over all kernel Gaussians.

        The reference applies eq. 8 through a second optimiser (learning rate 0.05 x the main
        one); our training loop has one optimiser, so the term is added to the loss instead."""
        layers = [*self.hidden, self.classes]
        decay = torch.stack([layer.kernels.weight_decay() for layer in layers]).mean()
        return self.config.kernel_decay * decay

    def config_dict(self) -> dict:
        return asdict(self.config)
