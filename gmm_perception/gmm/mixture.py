"""Gaussian mixture tensors in the layout of Gaussian Mixture Convolution Networks.

Celarek et al., "Gaussian Mixture Convolution Networks", ICLR 2022 (GMCN), section 4: all batch
elements and channels hold the same number of components, so a batch of mixtures packs into one
tensor

    (batch, channel, component, 1 + d + d*d) = [weight, mean (d), covariance (d x d, row-major)]

for d = 2 or 3. A component is a_i g(x, b_i, C_i) with g the *normalised* Gaussian of eq. 1, so
the weight a_i is the component's integral (its mass) and the integral of a mixture is the sum of
its weights; weights may be negative (eq. 2: a mixture is not a probability model).

Everything here is batched over any leading dimensions, differentiable, device-agnostic, and free
of Python loops over components. Small-matrix inverses and determinants use closed forms
(cofactors) instead of LAPACK, which on the CPU would loop over millions of 3 x 3 matrices.
"""
from __future__ import annotations

import math

import torch

DIMS = (2, 3)


def layout_size(d: int) -> int:
    """Length of the last axis: 1 + d + d*d (7 for 2-D, 13 for 3-D)."""
    if d not in DIMS:
        raise ValueError(f"mixtures are 2-D or 3-D, got d={d}")
    return 1 + d + d * d


def dims_of(mixture: torch.Tensor) -> int:
    """The spatial dimension d of a packed mixture tensor."""
    size = mixture.shape[-1]
    for d in DIMS:
        if size == layout_size(d):
            return d
    raise ValueError(f"last axis {size} is not a packed mixture (7 for 2-D, 13 for 3-D)")


def pack(weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor) -> torch.Tensor:
    """weights (..., N), means (..., N, d), covariances (..., N, d, d) -> (..., N, 1 + d + d*d)."""
    d = means.shape[-1]
    layout_size(d)
    if covariances.shape[-2:] != (d, d) or means.shape[:-1] != weights.shape:
        raise ValueError(f"inconsistent shapes: weights {tuple(weights.shape)}, means "
                         f"{tuple(means.shape)}, covariances {tuple(covariances.shape)}")
    return torch.cat([weights.unsqueeze(-1), means, covariances.flatten(-2)], dim=-1)


def weights(mixture: torch.Tensor) -> torch.Tensor:
    """(..., N) component weights (integrals)."""
    return mixture[..., 0]


def means(mixture: torch.Tensor) -> torch.Tensor:
    """(..., N, d) component centres."""
    d = dims_of(mixture)
    return mixture[..., 1:1 + d]


def covariances(mixture: torch.Tensor) -> torch.Tensor:
    """(..., N, d, d) component covariances."""
    d = dims_of(mixture)
    return mixture[..., 1 + d:].unflatten(-1, (d, d))


def unpack(mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, means, covariances) views of a packed mixture."""
    return weights(mixture), means(mixture), covariances(mixture)


def with_weights(mixture: torch.Tensor, new_weights: torch.Tensor) -> torch.Tensor:
    """The same Gaussians with other weights (out of place, differentiable in both)."""
    return torch.cat([new_weights.unsqueeze(-1), mixture[..., 1:]], dim=-1)


def integrate(mixture: torch.Tensor) -> torch.Tensor:
    """Integral over R^d of each mixture: the sum of its weights, (B, C, N, L) -> (B, C)."""
    return weights(mixture).sum(dim=-1)


def det_and_inverse(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Determinant (...,) and inverse (..., d, d) of 2 x 2 or 3 x 3 matrices by cofactors."""
    d = matrices.shape[-1]
    if d == 2:
        a, b = matrices[..., 0, 0], matrices[..., 0, 1]
        c, e = matrices[..., 1, 0], matrices[..., 1, 1]
        det = a * e - b * c
        adjugate = torch.stack([torch.stack([e, -b], -1), torch.stack([-c, a], -1)], -2)
    elif d == 3:
        m = matrices
        c00 = m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1]
        c01 = m[..., 1, 2] * m[..., 2, 0] - m[..., 1, 0] * m[..., 2, 2]
        c02 = m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]
        c10 = m[..., 0, 2] * m[..., 2, 1] - m[..., 0, 1] * m[..., 2, 2]
        c11 = m[..., 0, 0] * m[..., 2, 2] - m[..., 0, 2] * m[..., 2, 0]
        c12 = m[..., 0, 1] * m[..., 2, 0] - m[..., 0, 0] * m[..., 2, 1]
        c20 = m[..., 0, 1] * m[..., 1, 2] - m[..., 0, 2] * m[..., 1, 1]
        c21 = m[..., 0, 2] * m[..., 1, 0] - m[..., 0, 0] * m[..., 1, 2]
        c22 = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
        det = m[..., 0, 0] * c00 + m[..., 0, 1] * c01 + m[..., 0, 2] * c02
        # adj = transpose of the cofactor matrix
        adjugate = torch.stack([torch.stack([c00, c10, c20], -1),
                                torch.stack([c01, c11, c21], -1),
                                torch.stack([c02, c12, c22], -1)], -2)
    else:
        raise ValueError(f"closed-form inverse for 2 x 2 and 3 x 3 only, got {d} x {d}")
    return det, adjugate / det.unsqueeze(-1).unsqueeze(-1)


def _quadratic_features(x: torch.Tensor) -> torch.Tensor:
    """Per point [x_a x_b (a <= b, off-diagonals doubled), x, 1]: (..., P, d) -> (..., P, F)."""
    d = x.shape[-1]
    rows, cols = torch.triu_indices(d, d, device=x.device)
    products = x[..., rows] * x[..., cols]
    products = products * torch.where(rows == cols, 1.0, 2.0).to(x.dtype)
    return torch.cat([products, x, torch.ones_like(x[..., :1])], dim=-1)


def _component_features(mus: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """Per component [P_ab (a <= b), -2 P mu, mu^T P mu - 2 log Z] with P = C^-1 and
    Z = ((2 pi)^d det C)^(-1/2): (..., N, d), (..., N, d, d) -> (..., N, F), so that
    features(x) . features(component) = (x - mu)^T P (x - mu) - 2 log Z."""
    d = mus.shape[-1]
    det, precision = det_and_inverse(covs)
    precision = 0.5 * (precision + precision.transpose(-1, -2))
    rows, cols = torch.triu_indices(d, d, device=mus.device)
    p_mu = (precision @ mus.unsqueeze(-1)).squeeze(-1)
    log_norm = -0.5 * (d * math.log(2 * math.pi) + torch.log(det))
    constant = (mus * p_mu).sum(-1) - 2.0 * log_norm
    return torch.cat([precision[..., rows, cols], -2.0 * p_mu, constant.unsqueeze(-1)], dim=-1)


def log_gaussian_matrix(mixture: torch.Tensor, points: torch.Tensor,
                        with_log_weights: bool = False) -> torch.Tensor:
    """log g(x_p, b_n, C_n) (eq. 1, unit weight) for every point and component; with
    `with_log_weights`, log a_n is added (weights must then be positive).

    mixture (B, C, N, L); points (B, C, P, d) or (B, P, d) (shared by all channels).
    Returns (B, C, P, N). The quadratic form is expanded so the whole matrix is one matrix
    product of small feature vectors (no (P, N, d) difference tensor, no pass over the result);
    points and means are first centred on the channel's mean component position, which keeps the
    expansion accurate far from the origin.
    """
    mus, covs = means(mixture), covariances(mixture)
    if points.dim() == mixture.dim() - 1:
        points = points.unsqueeze(1)
    reference = mus.mean(dim=-2, keepdim=True).detach()
    point_features = _quadratic_features(points - reference)
    component_features = -0.5 * _component_features(mus - reference, covs)
    if with_log_weights:
        log_w = torch.log(weights(mixture).clamp_min(1e-30)).unsqueeze(-1)
        component_features = torch.cat([component_features[..., :-1],
                                        component_features[..., -1:] + log_w], dim=-1)
    return point_features @ component_features.transpose(-1, -2)


# exp() below about -87 underflows to subnormal floats, which x86 CPUs compute ten times slower;
# clamping the exponent at -80 changes each value by less than 2e-35.
LOG_FLOOR = -80.0


def safe_exp(log_values: torch.Tensor) -> torch.Tensor:
    """exp with the exponent clamped at LOG_FLOOR (no subnormal results, no slow path)."""
    return torch.exp(log_values.clamp_min(LOG_FLOOR))


def gaussian_matrix(mixture: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """g(x_p, b_n, C_n) (eq. 1) for every point and component: (B, C, P, N)."""
    return safe_exp(log_gaussian_matrix(mixture, points))


def evaluate(mixture: torch.Tensor, points: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """gm(x) = sum_n a_n g(x, b_n, C_n) (eq. 2) at points (B, C, P, d) or (B, P, d) -> (B, C, P).

    Points are processed `chunk` at a time so that large grids stay within memory.
    """
    w = weights(mixture).unsqueeze(-1)
    if points.shape[-2] <= chunk:
        return (gaussian_matrix(mixture, points) @ w).squeeze(-1)
    parts = [(gaussian_matrix(mixture, points[..., s:s + chunk, :]) @ w).squeeze(-1)
             for s in range(0, points.shape[-2], chunk)]
    return torch.cat(parts, dim=-1)


def mean_trace(mixture: torch.Tensor) -> torch.Tensor:
    """Unweighted mean covariance trace of each batch element over all its channels: (B,)."""
    covs = covariances(mixture)
    return torch.diagonal(covs, dim1=-2, dim2=-1).sum(-1).flatten(1).mean(dim=1)


def scale_space(mixture: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The mixture under x -> scale * x (scale (B,) per batch element): means * s, covariances
    * s^2, weights (integrals) unchanged."""
    d = dims_of(mixture)
    s = scale.reshape(-1, *([1] * (mixture.dim() - 1)))
    return torch.cat([mixture[..., :1], mixture[..., 1:1 + d] * s, mixture[..., 1 + d:] * s * s],
                     dim=-1)


def normalise_covariance_scale(mixture: torch.Tensor, eps: float = 1e-12
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """GMCN section 4.3: scale positions and covariances of each batch element (all channels
    together) so that the mean covariance trace becomes d, i.e. an average variance of 1 per
    dimension. Returns (normalised mixture, scale (B,)); `scale_space(normalised, 1 / scale)`
    undoes it. The scale is differentiable (the reference backpropagates through it too).
    """
    d = dims_of(mixture)
    scale = torch.sqrt(d / (mean_trace(mixture) + eps))
    return scale_space(mixture, scale), scale


def translate(mixture: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The mixture moved by offset (B, d) (per batch element) or (d,)."""
    d = dims_of(mixture)
    offset = offset.reshape(-1, *([1] * (mixture.dim() - 2)), d) if offset.dim() == 2 else offset
    return torch.cat([mixture[..., :1], mixture[..., 1:1 + d] + offset, mixture[..., 1 + d:]],
                     dim=-1)


def centroid(mixture: torch.Tensor) -> torch.Tensor:
    """|weight|-weighted mean position of each batch element over all channels: (B, d)."""
    d = dims_of(mixture)
    w = weights(mixture).abs().flatten(1)
    mus = means(mixture).reshape(mixture.shape[0], -1, d)
    return (w.unsqueeze(-1) * mus).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-30)


_SPREAD_TABLES: dict[tuple[int, int, str], torch.Tensor] = {}


def _spread_table(d: int, bits: int, device: torch.device) -> torch.Tensor:
    """Lookup table: value v < 2^bits -> v with d - 1 zero bits inserted between its bits."""
    key = (d, bits, str(device))
    if key not in _SPREAD_TABLES:
        values = torch.arange(1 << bits, dtype=torch.long)
        spread = torch.zeros_like(values)
        for bit in range(bits):
            spread |= ((values >> bit) & 1) << (bit * d)
        _SPREAD_TABLES[key] = spread.to(device)
    return _SPREAD_TABLES[key]


def morton_codes(positions: torch.Tensor, bits: int | None = None) -> torch.Tensor:
    """Z-order (Morton) codes (..., N) int64 of positions (..., N, d), quantised on the bounding
    cube of each set of N positions with `bits` per axis (default 10 for 3-D, 15 for 2-D: a 30-bit
    code; at most 16). Positions closer than about 1e-3 of the extent may share a code; a stable
    sort then keeps their input order. Quantisation is relative to the cube, so the order is
    invariant to translation and scale of the set. Bits are interleaved through a lookup table
    (a few index operations per axis instead of a dozen shifts and masks)."""
    d = positions.shape[-1]
    bits = bits or (10 if d == 3 else 15)
    if not 1 <= bits <= 16 or d not in DIMS:
        raise ValueError(f"morton_codes takes 2-D or 3-D positions and 1-16 bits, got d={d}, "
                         f"bits={bits}")
    detached = positions.detach()
    low = detached.amin(dim=-2, keepdim=True)
    extent = (detached.amax(dim=-2, keepdim=True) - low).amax(dim=-1, keepdim=True)
    cells = (1 << bits) - 1
    quantised = ((detached - low) * (cells / extent.clamp_min(1e-30))).long().clamp_(0, cells)
    return interleave_bits(quantised, bits)


def interleave_bits(quantised: torch.Tensor, bits: int) -> torch.Tensor:
    """Morton code (...) int64 of integer cell coordinates (..., d) in [0, 2^bits)."""
    d = quantised.shape[-1]
    table = _spread_table(d, bits, quantised.device)
    shape = quantised.shape[:-1]
    code = table.index_select(0, quantised[..., 0].reshape(-1))
    for axis in range(1, d):
        code |= table.index_select(0, quantised[..., axis].reshape(-1)) << axis
    return code.reshape(shape)
