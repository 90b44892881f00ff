"""PointNet classifier (Qi et al., CVPR 2017), the baseline of the GMCN comparison.

The vanilla classification network of the PointNet paper: input transform (a 3 x 3 T-net),
per-point MLP 64-64, feature transform (a 64 x 64 T-net, regularised towards an orthogonal
matrix with weight 0.001), per-point MLP 64-128-1024, global max pool, fully connected 512-256
with batch norm, dropout 0.3 (keep 0.7) before the last layer, log-softmax. About 3.5 M
parameters with both T-nets (the figure GMCN's Table 1 quotes as 3.4 M), 0.8 M without.

Clouds are centred on their centroid and scaled into the unit sphere first (`prepare`), so the
classifier sees the same normalised shape whatever the sensor frame.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gmm_perception.geometry.normalise import normalise_clouds
from gmm_perception.models.pointnet import shared_mlp

MODEL_NAME = "pointnet_cls"


@dataclass(frozen=True)
class PointNetClassifierConfig:
    num_classes: int = 13
    input_transform: bool = True
    feature_transform: bool = True
    local_widths: tuple[int, ...] = (64, 64)  # per-point layers before the feature transform
    global_widths: tuple[int, ...] = (64, 128, 1024)  # per-point layers after it
    head_widths: tuple[int, ...] = (512, 256)
    dropout: float = 0.3
    feature_transform_weight: float = 0.001  # ||I - A A^T||^2 regulariser of the 64 x 64 T-net

    def __post_init__(self):
        for name in ("local_widths", "global_widths", "head_widths"):
            object.__setattr__(self, name, tuple(int(w) for w in getattr(self, name)))


def _head(widths: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Fully connected layers with batch norm and ReLU; dropout before the last hidden output."""
    layers: list[nn.Module] = []
    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
        if dropout > 0 and index == len(widths) - 2:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a k x k transform from a (B, k, N) feature cloud; starts as the identity."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.features = shared_mlp([k, 64, 128, 1024])
        self.head = _head([1024, 512, 256])
        self.out = nn.Linear(256, k * k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).amax(dim=2)
        eye = torch.eye(self.k, dtype=x.dtype, device=x.device)
        return self.out(self.head(pooled)).view(-1, self.k, self.k) + eye


class PointNetClassifier(nn.Module):
    def __init__(self, config: PointNetClassifierConfig = PointNetClassifierConfig()):
        super().__init__()
        self.config = config
        c = config
        self.input_tnet = TNet(3) if c.input_transform else None
        self.local = shared_mlp([3, *c.local_widths])
        width = c.local_widths[-1]
        self.feature_tnet = TNet(width) if c.feature_transform else None
        self.globals = shared_mlp([width, *c.global_widths])
        self.head = _head([c.global_widths[-1], *c.head_widths], c.dropout)
        self.out = nn.Linear(c.head_widths[-1], c.num_classes)
        self._feature_matrix: torch.Tensor | None = None

    @staticmethod
    def prepare_points(points: torch.Tensor) -> torch.Tensor:
        """Raw clouds (B, N, 3) -> centred clouds in the unit sphere (B, N, 3): the model's input,
        also for training (no model needed)."""
        return normalise_clouds(points.to(torch.float32))[0]

    def prepare(self, points: torch.Tensor) -> torch.Tensor:
        return self.prepare_points(points)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Normalised clouds (B, N, 3) -> log-probabilities (B, num_classes)."""
        x = points.transpose(1, 2)
        if self.input_tnet is not None:
            x = torch.bmm(self.input_tnet(x).transpose(1, 2), x)
        x = self.local(x)
        if self.feature_tnet is not None:
            matrix = self.feature_tnet(x)
            self._feature_matrix = matrix  # for regularisation_loss after this forward
            x = torch.bmm(matrix.transpose(1, 2), x)
        pooled = self.globals(x).amax(dim=2)
        return torch.log_softmax(self.out(self.head(pooled)), dim=-1)

    def classify_points(self, points: torch.Tensor) -> torch.Tensor:
        """Raw clouds (B, N, 3), any frame and scale -> log-probabilities (B, num_classes)."""
        return self(self.prepare(points))

    def regularisation_loss(self) -> torch.Tensor:
        """PointNet's feature-transform regulariser ||I - A A^T||_F^2 (batch mean) of the last
        forward pass, times its weight; zero without a feature transform."""
        matrix = self._feature_matrix
        if matrix is None or self.config.feature_transform_weight == 0:
            return torch.zeros((), device=self.out.weight.device)
        eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
        gram = matrix @ matrix.transpose(1, 2)
        return self.config.feature_transform_weight * (gram - eye).pow(2).sum((1, 2)).mean()

    def config_dict(self) -> dict:
        return asdict(self.config)
