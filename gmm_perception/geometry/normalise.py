"""One rule for putting a batch of object clouds into a model's frame, shared by every model
that takes raw clouds (GMCN, PointNet, PointGMM, ShapeGF), so training and run time agree."""
from __future__ import annotations

import torch

NORMALISATION_MODES = ("unit_sphere", "centre", "bbox", "none")


def normalise_clouds(points: torch.Tensor, mode: str = "unit_sphere"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised (B, N, 3), centre (B, 3), scale (B,)) with points = normalised * scale + centre.

    unit_sphere: centroid and the largest distance from it; centre: centroid, scale 1;
    bbox: bounding-box centre and half the longest side (the cloud fills [-1, 1] along its
    longest axis); none: 0 and 1."""
    b = points.shape[0]
    if mode == "none":
        return points, points.new_zeros(b, 3), points.new_ones(b)
    if mode == "bbox":
        low, high = points.amin(dim=1), points.amax(dim=1)
        centre = 0.5 * (low + high)
        scale = (0.5 * (high - low)).amax(dim=1).clamp_min(1e-9)
        return (points - centre.unsqueeze(1)) / scale.reshape(-1, 1, 1), centre, scale
    if mode not in NORMALISATION_MODES:
        raise ValueError(f"normalisation mode must be one of {NORMALISATION_MODES}, got '{mode}'")
    centre = points.mean(dim=1)
    centred = points - centre.unsqueeze(1)
    if mode == "centre":
        return centred, centre, points.new_ones(b)
    scale = centred.norm(dim=-1).amax(dim=1).clamp_min(1e-9)
    return centred / scale.reshape(-1, 1, 1), centre, scale
