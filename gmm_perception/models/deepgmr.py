"""DeepGMR (Yuan et al., ECCV 2020): learned GMM correspondences, closed-form registration.

A PointNet segmentation network f_psi maps each point (its RRI features, or centred xyz) to
a soft assignment over J latent Gaussian components; M_Theta turns the assignments of each
cloud into an isotropic GMM; M_T aligns the two GMMs component to component. One forward
pass, no iterations, any starting pose.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from gmm_perception.geometry.rri import rri_features
from gmm_perception.gmm.registration import IsotropicGmm, align_mixtures, fit_isotropic_gmm
from gmm_perception.models.pointnet import PointNetSegmentation

MODEL_NAME = "deepgmr"


@dataclass(frozen=True)
class DeepGmrConfig:
    components: int = 16  # J
    feature_dim: int = 1024  # d_model of the PointNet backbone
    encoder_widths: tuple[int, ...] = (64, 128, 256)  # per-point layers before d_model
    head_widths: tuple[int, ...] = (512, 256, 128)  # per-point layers after the concatenation
    use_rri: bool = True
    rri_neighbours: int = 20

    @property
    def in_channels(self) -> int:
        return 4 * self.rri_neighbours if self.use_rri else 3


@dataclass
class RegistrationOutput:
    transform: torch.Tensor  # (B, 4, 4) source -> target
    inverse_transform: torch.Tensor  # (B, 4, 4) target -> source, estimated independently
    source_gmm: IsotropicGmm
    target_gmm: IsotropicGmm


class DeepGmr(nn.Module):
    def __init__(self, config: DeepGmrConfig = DeepGmrConfig()):
        super().__init__()
        self.config = config
        self.correspondence = PointNetSegmentation(
            config.in_channels, config.components, widths=config.encoder_widths,
            feature_dim=config.feature_dim, head=config.head_widths)

    def assignments(self, points: torch.Tensor) -> torch.Tensor:
        """Gamma: (B, N, 3) -> (B, N, J) soft assignments (rows sum to 1)."""
        if self.config.use_rri:
            features = rri_features(points, self.config.rri_neighbours)
        else:
            features = (points - points.mean(dim=1, keepdim=True)).transpose(1, 2)
        return torch.softmax(self.correspondence(features), dim=1).transpose(1, 2)

    def mixture(self, points: torch.Tensor) -> IsotropicGmm:
        """f_psi then M_Theta for each cloud of the batch. In eval mode each cloud's mixture is
        independent of the others, so a fixed reference's mixture can be computed once."""
        return fit_isotropic_gmm(points, self.assignments(points))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> RegistrationOutput:
        """Both directions at once: the two clouds share one batch through the network."""
        both = self.mixture(torch.cat([source, target]))
        split = len(source)
        source_gmm = IsotropicGmm(both.weights[:split], both.means[:split], both.variances[:split])
        target_gmm = IsotropicGmm(both.weights[split:], both.means[split:], both.variances[split:])
        return RegistrationOutput(align_mixtures(source_gmm, target_gmm),
                                  align_mixtures(target_gmm, source_gmm), source_gmm, target_gmm)

    def config_dict(self) -> dict:
        return asdict(self.config)


def deepgmr_loss(output: RegistrationOutput, T_gt: torch.Tensor) -> torch.Tensor:
    """Eq. 18: ||T T_gt^-1 - I||^2 + ||T_hat T_gt - I||^2, averaged over entries and batch."""
    eye = torch.eye(4, dtype=T_gt.dtype, device=T_gt.device).expand_as(T_gt)
    forward = output.transform @ torch.linalg.inv(T_gt) - eye
    backward = output.inverse_transform @ T_gt - eye
    return forward.pow(2).mean() + backward.pow(2).mean()
