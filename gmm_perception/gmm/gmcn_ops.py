"""The operations of a Gaussian Mixture Convolution Network, in plain PyTorch.

Celarek et al., "Gaussian Mixture Convolution Networks", ICLR 2022. The reference implementation
compiles custom CUDA kernels; everything here is ordinary differentiable torch (CPU or GPU) on the
packed mixture tensors of `gmm_perception.gmm.mixture` (batch, channel, component,
[weight, mean, covariance]), weights being integrals.

* `convolve`: eq. 3-4, every input component x input channel x kernel component gives
  w1 w2 N(m1 + m2, C1 + C2); as in the reference code, output weights are divided by the number
  of input channels (the paper's Figure 1 sums the channels without the division).
* `GaussianKernels`: learnable kernels, covariance C = A^T A + eps I (eq. 9), weight decay of
  eq. 8, the paper's initialisation (section 5).
* `relu_fit`: the dense fitting of eq. 6-7 in the reference's fixed-point form (positions and
  covariances frozen, weights corrected by the ReLU evaluated at the centres), with a bias.
* `reduce_mixture` / `moment_match`: the reduction step (section 4.1, Appendix D). TreeHEM builds a
  tree over the Morton codes of the means and fits bottom-up; here the Gaussians are sorted by
  Morton code and contiguous runs of the order (the leaves under one node of the implicit tree)
  are merged by moment matching (summed weight, weighted mean, weighted covariance plus the spread
  of the means), which is what the reference's fused convolution-fitting does: one run per output
  component. Moment matching is associative, so merging a run at once equals merging its subtree
  pairwise; unlike TreeHEM's greedy top-down selection, run boundaries are set by component count
  and mass (see `group_boundaries`), which keeps the tensor shapes fixed and the op differentiable
  in the weights, means and covariances (the grouping itself, a sort, is piecewise constant).
* `convolve_reduce`: the convolution fused with that reduction, without materialising the
  convolution output (the expensive part on a CPU).
* `GmcnLayer`: convolution -> bias -> ReLU fit -> reduction to N_p, chunked over output channels to
  bound memory (optionally with gradient checkpointing per chunk).

Departure from the paper, for CPU speed (`dense_components`): the paper fits the ReLU densely on
all F_i N_i N_k convolution components (2,560 per output channel in its network), an O(N_o^2)
evaluation per channel (6.5 M Gaussian evaluations per channel, about 800 M per object). With
`dense_components` = M the convolution output is first reduced to M components by the same Morton
moment matching, positive and negative components kept apart, and the ReLU is fitted on those:
O(M^2). The paper's future-work section and Appendix A ("ideally N_o = 2 N_p") and the authors'
later fused convolution-fitting code reduce before the ReLU in the same way.
`dense_components=None` gives the paper's exact dense fit (memory O(N_o^2) per channel: a GPU).

A property to know: the grouping is a sort of quantised positions, so it is piecewise constant,
and a position that crosses a Morton cell boundary (float rounding suffices, rarely) moves its
Gaussian to another run. The output then jumps; TreeHEM's Morton-code tree shares this.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gmm_perception.gmm import mixture as mx

SIGN_BIT = 61  # above the Morton code bits (at most 3 x 16 = 48)


def convolve(data: torch.Tensor, kernels: torch.Tensor, divide_by_channels: bool = True
             ) -> torch.Tensor:
    """Analytic convolution (eq. 3-4): data (B, F_i, N_i, L) with kernels (F_o, F_i, N_k, L) ->
    (B, F_o, F_i * N_i * N_k, L), component (c, i, k) of output channel o being
    w_ci w_ock / F_i N(m_ci + m_ock, C_ci + C_ock) (the division by F_i as in the reference)."""
    b, f_in, n_in, size = data.shape
    f_out, k_in, n_k, k_size = kernels.shape
    if (k_in, k_size) != (f_in, size):
        raise ValueError(f"kernels {tuple(kernels.shape)} do not fit data {tuple(data.shape)}")
    scale = 1.0 / f_in if divide_by_channels else 1.0
    d = mx.dims_of(data)
    x = data[:, None, :, :, None, :]  # (B, 1, F_i, N_i, 1, L)
    k = kernels[None, :, :, None, :, :]  # (1, F_o, F_i, 1, N_k, L)
    w = x[..., 0] * k[..., 0] * scale
    rest = x[..., 1:] + k[..., 1:]  # means and covariances both add (eq. 3)
    out = torch.cat([w.unsqueeze(-1), rest], dim=-1)
    return out.reshape(b, f_out, f_in * n_in * n_k, 1 + d + d * d)


def _symmetric_pairs(d: int) -> tuple[list[int], list[int]]:
    """Row and column of the d (d + 1) / 2 distinct entries of a symmetric d x d matrix."""
    rows, cols = torch.triu_indices(d, d).tolist()
    return rows, cols


def _table(mixture: torch.Tensor, rows: list[int], cols: list[int]) -> torch.Tensor:
    """Structure-of-arrays copy of a mixture's Gaussians: (1 + d + d(d+1)/2, count) holding the
    weight, the mean and the distinct covariance entries of every Gaussian (flattened)."""
    d = mx.dims_of(mixture)
    flat = mixture.reshape(-1, mixture.shape[-1])
    covariance_columns = [1 + d + r * d + c for r, c in zip(rows, cols)]
    return flat[:, [0, *range(1, 1 + d), *covariance_columns]].t().contiguous()


def convolution_order(data: torch.Tensor, kernels: torch.Tensor, split_signs: bool = True,
                      bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Morton order (B, F_o, F_i N_i N_k) of the output Gaussians of `convolve(data, kernels)`
    (item (c * N_i + i) * N_k + k), computed from cell coordinates without forming the output: the
    quantised data and kernel positions are added per item, on one bounding cube per sample shared
    by its output channels. With `split_signs`, positive-weight items come first. Also returns the
    sample's mean data position (B, d), the origin of the cube.
    """
    b, f_in, n_in, _ = data.shape
    f_out, _, n_k, _ = kernels.shape
    n = f_in * n_in * n_k
    d = mx.dims_of(data)
    bits = bits or (10 if d == 3 else 15)
    cells = (1 << bits) - 1
    data_means, kernel_means = mx.means(data).detach(), mx.means(kernels).detach()
    centre = data_means.mean(dim=(1, 2))  # (B, d)
    data_low = data_means.amin(dim=(1, 2)) - centre
    data_high = data_means.amax(dim=(1, 2)) - centre
    kernel_low, kernel_high = kernel_means.amin(dim=(0, 1, 2)), kernel_means.amax(dim=(0, 1, 2))
    low = data_low + kernel_low  # (B, d): a box holding every output position of the sample
    extent = (data_high + kernel_high - low).amax(dim=-1).clamp_min(1e-30)  # (B,)
    step = (cells / extent).reshape(b, 1, 1, 1)
    data_cells = (data_means - centre[:, None, None] - low[:, None, None]) * step  # (B,Fi,Ni,d)
    kernel_cells = kernel_means.unsqueeze(0) * step.unsqueeze(-1)  # (B, Fo, Fi, Nk, d)
    cell = data_cells[:, None, :, :, None, :] + kernel_cells[:, :, :, None, :, :]
    cell = cell.reshape(b, f_out, n, d).long().clamp_(0, cells)
    codes = mx.interleave_bits(cell, bits)
    if split_signs:
        negative = ((mx.weights(data)[:, None, :, :, None] < 0)
                    ^ (mx.weights(kernels)[None, :, :, None, :] < 0)).reshape(b, f_out, n)
        codes |= negative.long() << SIGN_BIT
    return torch.sort(codes, dim=-1, stable=True).indices, centre


def convolve_reduce(data: torch.Tensor, kernels: torch.Tensor, components: int,
                    split_signs: bool = True, bits: int | None = None) -> torch.Tensor:
    """Convolution (eq. 3-4) fused with the reduction of every output channel to `components`
    Gaussians: the same as `reduce_mixture(convolve(data, kernels), components, split_signs=...)`
    except for the Morton quantisation cube (`convolution_order`), without materialising the
    convolution output.

    The F_o F_i N_i N_k output Gaussians are only formed as cell coordinates for the Morton keys
    (`convolution_order`); after the sort each one is
    assembled once, in run order, from columns of small structure-of-arrays tables of the data and
    the kernels, straight into its moment-matching sums (weight, |w|, |w| mean, |w| second moment,
    distinct covariance entries only). Moments are taken about the sample's mean data position.
    """
    b, f_in, n_in, size = data.shape
    f_out, _, n_k, _ = kernels.shape
    n = f_in * n_in * n_k
    if components >= n:
        return convolve(data, kernels)
    d = mx.dims_of(data)
    order, centre = convolution_order(data, kernels, split_signs, bits)  # (c * N_i + i) * N_k + k
    k = order % n_k
    ci = order // n_k
    batch = torch.arange(b, device=data.device).reshape(b, 1, 1)
    out_channel = torch.arange(f_out, device=data.device).reshape(1, f_out, 1)
    data_index = (batch * (f_in * n_in) + ci).reshape(-1)
    kernel_index = ((out_channel * f_in + ci // n_in) * n_k + k).reshape(-1)

    rows, cols = _symmetric_pairs(d)
    centred = torch.cat([data[..., :1], data[..., 1:1 + d] - centre[:, None, None],
                         data[..., 1 + d:]], dim=-1)
    x = _table(centred, rows, cols).index_select(1, data_index)
    y = _table(kernels, rows, cols).index_select(1, kernel_index)
    w = x[0] * y[0] * (1.0 / f_in)
    a = w.abs() + 1e-30
    mean = x[1:1 + d] + y[1:1 + d]  # (d, items)
    covariance = x[1 + d:] + y[1 + d:]
    second = torch.stack([torch.addcmul(covariance[s], mean[r], mean[c])
                          for s, (r, c) in enumerate(zip(rows, cols))])
    features = torch.cat([w.unsqueeze(0), a.unsqueeze(0), a * mean, a * second], dim=0)
    features = features.reshape(features.shape[0], b * f_out, n)
    if n % components == 0:
        sums = features.reshape(features.shape[0], b * f_out, components, n // components).sum(-1)
    else:
        group = group_boundaries(torch.zeros(n, device=data.device), components)
        sums = features.new_zeros(features.shape[0], b * f_out, components)
        sums = sums.index_add(2, group, features)
    merged_w, merged_a = sums[0], sums[1]
    merged_mean = sums[2:2 + d] / merged_a
    merged_second = sums[2 + d:] / merged_a - merged_mean[rows] * merged_mean[cols]
    covariance = merged_second.new_empty(d, d, *merged_second.shape[1:])
    for index, (r, c) in enumerate(zip(rows, cols)):
        covariance[r, c] = merged_second[index]
        covariance[c, r] = merged_second[index]
    out_means = merged_mean.permute(1, 2, 0).reshape(b, f_out, components, d)
    out_means = out_means + centre[:, None, None]
    out_covs = covariance.permute(2, 3, 0, 1).reshape(b, f_out, components, d, d)
    return mx.pack(merged_w.reshape(b, f_out, components), out_means, out_covs)


def relu_fit(mixture: torch.Tensor, bias: torch.Tensor | None = None, iterations: int = 1,
             eps: float = 0.05, offset: float = 0.1) -> torch.Tensor:
    """Dense ReLU fitting (eq. 5-7, Appendix C) in the reference's fixed-point form.

    The target is phi(gm(x) + c) - phi(c) with phi the ReLU and c the channel's bias (a constant
    has no finite-mass mixture, so phi(c) is subtracted; far from the data the target is 0).
    Positions and covariances stay; only the weights change:
      coarse weights (eq. 6): a'_i = a_i where a_i + c > 0, else -phi(c); x_i = |a'_i| + offset;
      target at the centres: b_i = phi(gm(B_i) + c) - phi(c);
      correction (eq. 7), `iterations` times: x_i <- x_i (b_i + eps) / (sum_k x_k g_k(B_i) + eps).
    With eps -> 0 one step is exactly eq. 7; eps keeps the division stable, offset keeps every
    weight positive (Appendix C: the fit should be non-negative). More iterations are
    multiplicative updates towards sum_k x_k g_k(B_i) = b_i, which converge where a non-negative
    solution exists (not where a zero target sits next to a positive one). With eps > 0 a
    Gaussian in a negative region keeps a weight of about offset * eps / (fit + eps), as in the
    reference; with c > eps the target -c of such regions makes its weight negative, also as in
    the reference (a constant offset has no mixture representation).

    mixture (B, C, N, L), bias (C,) or None. Memory O(B C N^2).
    """
    w = mx.weights(mixture)
    c = (bias.reshape(1, -1, 1) if bias is not None
         else torch.zeros(1, 1, 1, dtype=w.dtype, device=w.device))
    g = mx.gaussian_matrix(mixture, mx.means(mixture))  # (B, C, N centres, N components)
    value = (g @ w.unsqueeze(-1)).squeeze(-1)
    relu_c = torch.relu(c)
    target = torch.relu(value + c) - relu_c
    x = torch.where(w + c > 0, w, -relu_c).abs() + offset
    for _ in range(iterations):
        approx = (g @ x.unsqueeze(-1)).squeeze(-1)
        x = x * (target + eps) / (approx + eps)
    return mx.with_weights(mixture, x)


def group_boundaries(sorted_weights: torch.Tensor, groups: int, mass_balance: float = 0.0
                     ) -> torch.Tensor:
    """Group index (..., N) in [0, groups) of every element of a sorted run, non-decreasing, every
    group non-empty (needs N >= groups).

    The cuts fall where u_i = mass_balance * (cumulative |w| share) + (1 - mass_balance) *
    (cumulative count share) crosses multiples of 1 / groups: 0 gives runs of equal length (a
    complete tree's nodes), 1 runs of equal mass (where TreeHEM's greedy top-down pass, which
    splits the heaviest node, spends its components), in between a blend. Cuts forced together by
    one heavy element are pushed apart so that no group is empty. On ReLU-fitted outputs of the
    first two layers of a random-kernel network on SH3D fits, the relative RMSE of the reduction
    (evaluated at the centres, around them and uniformly in the box) fell from 0.207 / 0.063 at 0
    to 0.169 / 0.045 at 1, hence the layers' default of 1.
    """
    n = sorted_weights.shape[-1]
    if groups > n:
        raise ValueError(f"cannot make {groups} non-empty groups from {n} elements")
    device = sorted_weights.device
    position = (torch.arange(n, device=device, dtype=sorted_weights.dtype) + 0.5) / n
    if mass_balance > 0:
        a = sorted_weights.detach().abs()
        total = a.sum(-1, keepdim=True)
        share = (torch.cumsum(a, -1) - 0.5 * a) / total.clamp_min(1e-30)
        share = torch.where(total > 0, share, position)
        u = mass_balance * share + (1 - mass_balance) * position
    else:
        u = position.expand_as(sorted_weights)
    g = torch.arange(1, groups, device=device)
    levels = (g.to(u.dtype) / groups).expand(*u.shape[:-1], groups - 1).contiguous()
    first = torch.searchsorted(u.contiguous(), levels)  # first element at or past each level
    slack = torch.cummax(first - g, dim=-1).values.clamp(0, n - groups)
    cuts = slack + g  # strictly increasing, in [1, n - 1]
    index = torch.arange(n, device=device).expand(*u.shape[:-1], n).contiguous()
    return torch.searchsorted(cuts, index, right=True)


def _moments(mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element: [w, a, a m, a (C + m m^T)] with a = |w| + 1e-30 (so a group of zero weights
    still has its unweighted moments), and the spatial dimension."""
    d = mx.dims_of(mixture)
    w, mus, covs = mx.unpack(mixture)
    a = w.abs() + 1e-30
    second = covs + mus.unsqueeze(-1) * mus.unsqueeze(-2)
    features = torch.cat([w.unsqueeze(-1), a.unsqueeze(-1), a.unsqueeze(-1) * mus,
                          a.unsqueeze(-1) * second.flatten(-2)], dim=-1)
    return features, d


def _from_moments(sums: torch.Tensor, d: int) -> torch.Tensor:
    """Merged Gaussians from summed moments: weight = sum w, mean = sum a m / sum a,
    covariance = sum a (C + m m^T) / sum a - mean mean^T."""
    w, a = sums[..., 0], sums[..., 1]
    mean = sums[..., 2:2 + d] / a.unsqueeze(-1)
    second = sums[..., 2 + d:].unflatten(-1, (d, d)) / a[..., None, None]
    cov = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    return mx.pack(w, mean, cov)


def moment_match(mixture: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """Merge the components of mixture (..., N, L) into `groups` Gaussians by moment matching:
    group index (..., N). Each merged Gaussian has the summed weight, the mean weighted by |w|
    and the |w|-weighted covariance plus the spread of the means (Vasconcelos & Lippman's M step
    with hard responsibilities, eq. 16 of GMCN's Appendix D). For weights of one sign this keeps
    the total mass and the first and second moments of every group exactly; with mixed signs the
    weight is still the exact signed sum and |w| weights the geometry.

    Moments are taken about the mixture's mean position (a detached constant), so float32 stays
    accurate for mixtures far from the origin.
    """
    reference = mx.means(mixture).mean(dim=-2, keepdim=True).detach()
    d = reference.shape[-1]
    centred = torch.cat([mixture[..., :1], mixture[..., 1:1 + d] - reference,
                         mixture[..., 1 + d:]], dim=-1)
    features, d = _moments(centred)
    sums = features.new_zeros(*features.shape[:-2], groups, features.shape[-1])
    sums = sums.scatter_add(-2, group.unsqueeze(-1).expand_as(features), features)
    merged = _from_moments(sums, d)
    return torch.cat([merged[..., :1], merged[..., 1:1 + d] + reference, merged[..., 1 + d:]],
                     dim=-1)


def _moment_match_runs(mixture: torch.Tensor, groups: int) -> torch.Tensor:
    """moment_match for runs of equal length N / groups (a reshape instead of a scatter)."""
    reference = mx.means(mixture).mean(dim=-2, keepdim=True).detach()
    d = reference.shape[-1]
    centred = torch.cat([mixture[..., :1], mixture[..., 1:1 + d] - reference,
                         mixture[..., 1 + d:]], dim=-1)
    features, _ = _moments(centred)
    n = features.shape[-2]
    sums = features.unflatten(-2, (groups, n // groups)).sum(dim=-2)
    merged = _from_moments(sums, d)
    return torch.cat([merged[..., :1], merged[..., 1:1 + d] + reference, merged[..., 1 + d:]],
                     dim=-1)


def morton_order(mixture: torch.Tensor, split_signs: bool = False) -> torch.Tensor:
    """Permutation (..., N) sorting each mixture's components by the Morton code of their means
    (with `split_signs`, all positive-weight components first, then the negative ones)."""
    codes = mx.morton_codes(mx.means(mixture))
    if split_signs:
        codes = codes | ((mx.weights(mixture) < 0).long() << SIGN_BIT)
    return torch.sort(codes, dim=-1, stable=True).indices


def reduce_mixture(mixture: torch.Tensor, components: int, mass_balance: float = 0.0,
                   split_signs: bool = False) -> torch.Tensor:
    """Reduce each mixture (..., N, L) to `components` Gaussians (section 4.1 reduction step):
    sort by Morton code, cut the order into contiguous runs (`group_boundaries`), moment-match
    each run (`moment_match`). With `split_signs` positive and negative components are ordered
    apart, so a run mixes signs only where the two halves meet. Returns the mixture unchanged
    when it has no more than `components` Gaussians."""
    n = mixture.shape[-2]
    if components >= n:
        return mixture
    order = morton_order(mixture, split_signs)
    ordered = torch.gather(mixture, -2, order.unsqueeze(-1).expand_as(mixture))
    if mass_balance == 0 and n % components == 0:
        return _moment_match_runs(ordered, components)
    group = group_boundaries(mx.weights(ordered), components, mass_balance)
    return moment_match(ordered, group, components)


class GaussianKernels(nn.Module):
    """F_o x F_i learnable kernels of N_k Gaussians each (section 4.2 and 5).

    Parameters per Gaussian: weight a, position b and a d x d factor A; the covariance is
    C = A^T A + eps I (eq. 9), never singular. Initialisation (section 5): weights N(0.1, 1); one
    Gaussian at the origin, the others at distance `radius` (2-D: along +-x and +-y, further
    ones evenly on the circle; 3-D: random directions); A = (I + 0.05 R) 0.7 radius / 2.5 with R
    uniform in [-1, 1] (the paper's factor at its radius of 2.5).
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, components: int = 5,
                 radius: float = 2.5, eps: float = 0.05):
        super().__init__()
        mx.layout_size(dims)
        self.dims, self.eps = dims, eps
        shape = (out_channels, in_channels, components)
        self.weight = nn.Parameter(torch.randn(shape) + 0.1)
        positions = torch.zeros(*shape, dims)
        others = components - 1
        if others > 0:
            if dims == 2:
                angles = torch.arange(others) * (2 * math.pi / others)
                directions = torch.stack([torch.cos(angles), torch.sin(angles)], -1)
                positions[..., 1:, :] = directions
            else:
                directions = torch.randn(*shape[:2], others, dims)
                positions[..., 1:, :] = directions / directions.norm(dim=-1, keepdim=True)
        self.position = nn.Parameter(positions * radius)
        noise = torch.rand(*shape, dims, dims) * 2 - 1
        factor = (torch.eye(dims) + 0.05 * noise) * (0.7 * radius / 2.5)
        self.factor = nn.Parameter(factor)

    def covariances(self) -> torch.Tensor:
        """C = A^T A + eps I (eq. 9): (F_o, F_i, N_k, d, d)."""
        eye = torch.eye(self.dims, dtype=self.factor.dtype, device=self.factor.device)
        return self.factor.transpose(-1, -2) @ self.factor + self.eps * eye

    def mixture(self) -> torch.Tensor:
        """The kernels as a packed mixture tensor (F_o, F_i, N_k, L)."""
        return mx.pack(self.weight, self.position, self.covariances())

    def weight_decay(self) -> torch.Tensor:
        """Eq. 8 averaged over the kernel Gaussians: d_i = a_i^2 + mean((C_i - I) o (C_i - I)),
        pushing weights to zero and covariances to the identity."""
        eye = torch.eye(self.dims, dtype=self.factor.dtype, device=self.factor.device)
        difference = self.covariances() - eye
        return (self.weight.pow(2) + difference.pow(2).mean(dim=(-1, -2))).mean()


class GmcnLayer(nn.Module):
    """One Gaussian convolution layer (Figure 1): convolution -> bias -> ReLU fit -> reduction.

    data (B, F_i, N_i, L) -> (B, F_o, N_p, L) with N_p = `components` (None: no reduction, the
    paper's last layer). `dense_components` = M: the convolution output is first reduced to M
    Gaussians, signs apart, before the ReLU fit (see the module docstring; None: the paper's exact
    dense fit on all F_i N_i N_k). Output channels are processed in chunks (`channel_chunk`), which
    bounds the memory of the F_o F_i N_i N_k intermediate Gaussians; with `checkpoint_chunks` the
    chunks' intermediates are recomputed in the backward pass instead of stored.
    Covariance-scale normalisation (section 4.3) is left to the network, which applies it to all
    channels of a sample at once.
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, components: int | None,
                 dense_components: int | None = None, kernel_components: int = 5,
                 kernel_radius: float = 2.5, kernel_eps: float = 0.05, mass_balance: float = 1.0,
                 relu_iterations: int = 1, relu_eps: float = 0.05, relu_offset: float = 0.1,
                 chunk_elements: int = 1 << 18, checkpoint_chunks: bool = False):
        super().__init__()
        self.kernels = GaussianKernels(dims, in_channels, out_channels, kernel_components,
                                       kernel_radius, kernel_eps)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.components, self.dense_components = components, dense_components
        self.mass_balance = mass_balance
        self.relu_iterations, self.relu_eps, self.relu_offset = relu_iterations, relu_eps, \
            relu_offset
        self.chunk_elements, self.checkpoint_chunks = chunk_elements, checkpoint_chunks
        self.kernel_components = kernel_components

    def channel_chunk(self, batch: int, in_channels: int, in_components: int) -> int:
        """Output channels per chunk: as many as keep batch x channels x (convolution Gaussians +
        ReLU-fit matrix entries) within `chunk_elements`, so a chunk's intermediates stay small
        (in cache on a CPU) while the per-chunk overhead stays amortised."""
        n_conv = in_channels * in_components * self.kernel_components
        n_fit = self.dense_components if self.dense_components is not None else n_conv
        per_channel = batch * (n_conv + min(n_fit, n_conv) ** 2)
        return max(1, self.chunk_elements // per_channel)

    def _block(self, data: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor
               ) -> torch.Tensor:
        if self.dense_components is not None:
            out = convolve_reduce(data, kernels, self.dense_components, split_signs=True)
        else:
            out = convolve(data, kernels)
        out = relu_fit(out, bias, self.relu_iterations, self.relu_eps, self.relu_offset)
        if self.components is not None:
            out = reduce_mixture(out, self.components, mass_balance=self.mass_balance)
        return out

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        kernels = self.kernels.mixture()
        step = self.channel_chunk(data.shape[0], data.shape[1], data.shape[2])
        outputs = []
        for start in range(0, kernels.shape[0], step):
            part = slice(start, start + step)
            if self.checkpoint_chunks and torch.is_grad_enabled():
                outputs.append(checkpoint(self._block, data, kernels[part], self.bias[part],
                                          use_reentrant=False))
            else:
                outputs.append(self._block(data, kernels[part], self.bias[part]))
        return torch.cat(outputs, dim=1)
