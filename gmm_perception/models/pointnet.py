"""PointNet building blocks (Qi et al., CVPR 2017) shared by the models."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def shared_mlp(channels: Sequence[int], final_activation: bool = True) -> nn.Sequential:
    """Per-point 1x1 convolutions (no bias: batch norm follows) + BN + ReLU."""
    layers: list[nn.Module] = []
    for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        last = index == len(channels) - 2
        if last and not final_activation:
            layers.append(nn.Conv1d(c_in, c_out, 1))
        else:
            layers += [nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class PointNetSegmentation(nn.Module):
    """Per-point logits from local features concatenated with the max-pooled global feature."""

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int] = (64, 128, 256),
                 feature_dim: int = 1024, head: Sequence[int] = (512, 256, 128)):
        super().__init__()
        self.encoder = shared_mlp([in_channels, *widths, feature_dim])
        self.head = shared_mlp([2 * feature_dim, *head, out_channels], final_activation=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, N) -> (B, out_channels, N)."""
        local = self.encoder(features)
        global_feature = local.max(dim=2, keepdim=True).values.expand_as(local)
        return self.head(torch.cat([local, global_feature], dim=1))


class PointNetGlobalFeature(nn.Module):
    """PointNet's global shape feature: per-point layers, max pool, then fully connected layers
    (linear without bias, batch norm, ReLU). (B, N, 3) -> (B, width). The encoder of the
    generative models (PointGMM, ShapeGF); each adds its own head."""

    def __init__(self, point_widths: Sequence[int], fc_widths: Sequence[int]):
        super().__init__()
        self.features = shared_mlp([3, *point_widths])
        fc: list[nn.Module] = []
        for c_in, c_out in zip([point_widths[-1], *fc_widths], fc_widths):
            fc += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
        self.fc = nn.Sequential(*fc)
        self.width = fc_widths[-1] if fc_widths else point_widths[-1]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(points.transpose(1, 2)).amax(dim=2))
