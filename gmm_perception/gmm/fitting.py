"""Fitting Gaussian mixtures to point clouds in batched torch: the input of a GMCN.

GMCN (Celarek et al., ICLR 2022), section 5 and Table 4: the input mixture of each object takes its
centres from k-means and its covariances from one EM step ("k-means", their best input, 93.3 % on
ModelNet10); multi-step EM ("k-means+EM", "rand+EM") is the alternative they compare. Both are
here, for batches of clouds with the same point count (B, N, d), d = 2 or 3:

* `kmeans`: farthest-point or k-means++ initialisation and a fixed number of Lloyd iterations;
  deterministic: farthest-point sampling starts from the point farthest from the centroid (so the
  result does not depend on the order of the points), k-means++ draws from a torch.Generator.
* `fit_kmeans_em`: k-means centres, then one E step under the hard-assignment Gaussians and one M
  step for weights and covariances; the means stay at the k-means centres (the paper takes the
  centres from k-means and only the covariances from EM).
* `fit_em`: plain EM for n iterations (means, covariances and weights), from k-means or random
  initial centres.
* `refine_em`: EM from a given mixture (a network's prediction) on the observed points, the
  components they do not support kept as given; `merge_children`: moment-matched parents, which
  keep a hierarchy consistent after its finest level was refined.
* `dataset_weight_scale`: the one data-set-wide weight factor (see its docstring).
* `canonical_order`, `stratified_subsample`: the points are sorted canonically first, so a fit is
  bitwise independent of the order of the points; k-means runs on a subsample (512 points by
  default), EM on all of them, which keeps 128 components on 2048 points at a few ms per object
  when batched.

Every fit works in a per-cloud normalised frame (centred on the centroid, divided by the RMS
radius) and maps the mixture back, so the covariance floor is relative to the object's size and
float32 stays accurate for clouds far from the origin (a robot's frame). The fitted weights sum to
one per cloud (a probability mixture); the network applies the data-set factor itself.
"""
from __future__ import annotations

import torch

from gmm_perception.gmm import mixture as mx

FIT_METHODS = ("kmeans_em", "em", "kmeans_then_em")
DEFAULT_COVARIANCE_FLOOR = 1e-3  # variance floor, in units of the cloud's mean squared radius


def _normalised_frame(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points centred on their centroid and divided by their RMS radius; (points, centre, scale)."""
    centre = points.mean(dim=1, keepdim=True)
    centred = points - centre
    scale = centred.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-12)  # (B,)
    return centred / scale[:, None, None], centre.squeeze(1), scale


def _to_frame(mixture: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Map a mixture fitted in the normalised frame back to the cloud's frame."""
    return mx.translate(mx.scale_space(mixture, scale), centre)


def farthest_point_indices(points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, d) -> (B, k) indices of a farthest-point sample, starting from the point farthest
    from the centroid: deterministic and independent of the order of the points."""
    b, n, d = points.shape
    if k > n:
        raise ValueError(f"cannot pick {k} centres from {n} points")
    columns = points.transpose(1, 2).contiguous()  # (B, d, N): each step reads contiguous rows
    index = (columns - columns.mean(2, keepdim=True)).pow(2).sum(1).argmax(dim=1)
    chosen = [index]
    nearest = torch.full((b, n), float("inf"), dtype=points.dtype, device=points.device)
    for j in range(1, k):
        latest = torch.gather(columns, 2, index.view(b, 1, 1).expand(b, d, 1))
        torch.minimum(nearest, (columns - latest).pow(2).sum(1), out=nearest)
        index = nearest.argmax(dim=1)
        chosen.append(index)
    return torch.stack(chosen, dim=1)


def kmeans_plus_plus_indices(points: torch.Tensor, k: int,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, N, d) -> (B, k) indices of a k-means++ seeding (Arthur & Vassilvitskii 2007): the first
    centre uniform, each next one drawn with probability proportional to the squared distance to
    the nearest centre so far. Deterministic for a seeded `generator` (on the points' device)."""
    b, n, _ = points.shape
    if k > n:
        raise ValueError(f"cannot pick {k} centres from {n} points")
    batch = torch.arange(b, device=points.device)
    chosen = torch.empty(b, k, dtype=torch.long, device=points.device)
    chosen[:, 0] = torch.randint(n, (b,), generator=generator, device=points.device)
    nearest = (points - points[batch, chosen[:, 0]].unsqueeze(1)).pow(2).sum(-1)
    for j in range(1, k):
        # A cloud of identical points has no spread left: fall back to uniform draws.
        probabilities = torch.where(nearest.sum(1, keepdim=True) > 0, nearest,
                                    torch.ones_like(nearest))
        chosen[:, j] = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        new = points[batch, chosen[:, j]].unsqueeze(1)
        nearest = torch.minimum(nearest, (points - new).pow(2).sum(-1))
    return chosen


# A fixed direction with incommensurate components: points rarely tie in their projections.
_PROJECTION = {2: (0.6004, 0.7997), 3: (0.5413, 0.6261, 0.5612)}


def canonical_order(points: torch.Tensor) -> torch.Tensor:
    """The points of each cloud sorted by their projection on a fixed direction (ties: by the
    coordinates' projection on a second direction). Every later sum then runs in the same order
    whatever order the points came in, so fits are bitwise independent of it (only points with
    identical projections on both directions, e.g. duplicates, keep their input order)."""
    d = points.shape[2]
    first = torch.tensor(_PROJECTION[d], dtype=points.dtype, device=points.device)
    second = torch.roll(first, 1)
    order = torch.sort(points @ second, dim=1, stable=True).indices
    points = torch.gather(points, 1, order.unsqueeze(-1).expand_as(points))
    order = torch.sort(points @ first, dim=1, stable=True).indices
    return torch.gather(points, 1, order.unsqueeze(-1).expand_as(points))


def stratified_subsample(points: torch.Tensor, count: int) -> torch.Tensor:
    """(B, N, d) -> (B, count, d): every (N / count)-th point in the order of the points'
    projections on a fixed direction. Spread over the whole object like a random subsample, but
    deterministic and independent of the order of the points; a sort by a continuous key, unlike
    a quantised one (a Morton cell), changes only when two projections cross, so translating or
    scaling a cloud almost never changes which points are picked."""
    n = points.shape[1]
    if count >= n:
        return points
    direction = torch.tensor(_PROJECTION[points.shape[2]], dtype=points.dtype,
                             device=points.device)
    order = torch.sort(points @ direction, dim=1, stable=True).indices
    picks = order[:, (torch.arange(count, device=points.device) * n) // count]
    return torch.gather(points, 1, picks.unsqueeze(-1).expand(-1, -1, points.shape[2]))


def _nearest_mask(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, N, K) indicator of each point's nearest centre (1 for each centre tied at the minimum).

    argmin_k |x - c_k|^2 = argmin_k (|c_k|^2 - 2 x.c_k), one matrix product; the indicator comes
    from a comparison with the row minimum, which on a CPU is several times faster than argmin.
    """
    scores = torch.baddbmm(centres.pow(2).sum(-1).unsqueeze(1), points, centres.transpose(1, 2),
                           alpha=-2.0)
    return (scores <= scores.amin(dim=2, keepdim=True)).to(points.dtype)


def kmeans(points: torch.Tensor, k: int, iterations: int = 10, init: str = "fps",
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd's k-means: (B, N, d) -> centres (B, k, d) and the final nearest-centre
    indicator (B, N, k) (a point equidistant from two centres counts for both).

    `init`: "fps" (farthest-point sampling, deterministic) or "kmeans++" (uses `generator`).
    A cluster that loses all its points keeps its previous centre. Fixed iteration count, so
    every cloud of the batch costs the same and the result is reproducible.
    """
    b, _, d = points.shape
    if init == "fps":
        index = farthest_point_indices(points, k)
    elif init in ("kmeans++", "kmeanspp"):
        index = kmeans_plus_plus_indices(points, k, generator)
    else:
        raise ValueError(f"init must be 'fps' or 'kmeans++', got '{init}'")
    centres = torch.gather(points, 1, index.unsqueeze(-1).expand(b, k, d))
    augmented = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    mask = _nearest_mask(points, centres)
    for _ in range(iterations):
        sums = mask.transpose(1, 2) @ augmented  # (B, k, d + 1): coordinate sums and counts
        counts = sums[..., d:]
        centres = torch.where(counts > 0, sums[..., :d] / counts.clamp_min(1), centres)
        mask = _nearest_mask(points, centres)
    return centres, mask


def _point_features(points: torch.Tensor) -> torch.Tensor:
    """[1, x, vec(x x^T)] per point: (B, N, d) -> (B, N, 1 + d + d*d)."""
    outer = (points.unsqueeze(-1) * points.unsqueeze(-2)).flatten(-2)
    return torch.cat([torch.ones_like(points[..., :1]), points, outer], dim=-1)


def _m_step(points: torch.Tensor, responsibilities: torch.Tensor, floor: float,
            fixed_means: torch.Tensor | None = None,
            row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """M step: mixture (B, 1, K, L) from responsibilities (B, N, K) (multiplied per point by
    `row_scale` (B, N) when given: unnormalised responsibilities and their inverse row sums).

    Weights are the responsibility masses / N; covariances are the second moments about the
    responsibility-weighted means, or about `fixed_means` when given; `floor` is added to every
    covariance's diagonal. All sums come from one matrix product with [1, x, x x^T].
    """
    b, n, d = points.shape
    features = _point_features(points)
    if row_scale is not None:
        features = features * row_scale.unsqueeze(-1)
    sums = responsibilities.transpose(1, 2) @ features  # (B, K, 1 + d + d*d)
    mass = sums[..., 0]
    safe = mass.clamp_min(1e-12).unsqueeze(-1)
    weighted_mean = sums[..., 1:1 + d] / safe
    second = (sums[..., 1 + d:] / safe).unflatten(-1, (d, d))
    centre = weighted_mean if fixed_means is None else fixed_means
    # E[(x - c)(x - c)^T] = E[x x^T] - E[x] c^T - c E[x]^T + c c^T
    covs = (second - weighted_mean.unsqueeze(-1) * centre.unsqueeze(-2)
            - centre.unsqueeze(-1) * weighted_mean.unsqueeze(-2)
            + centre.unsqueeze(-1) * centre.unsqueeze(-2))
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    # A component without responsibility has no statistics: it keeps only the floor.
    empty = (mass <= 1e-12)[..., None, None]
    covs = torch.where(empty, torch.zeros_like(covs), covs)
    covs = covs + floor * torch.eye(d, dtype=points.dtype, device=points.device)
    return mx.pack(mass / n, centre, covs).unsqueeze(1)


def _unnormalised_responsibilities(points: torch.Tensor, mixture: torch.Tensor
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(log a_k g_k(x_n) - max_k) (B, N, K) and the inverse of its row sums (B, N)."""
    joint = mx.log_gaussian_matrix(mixture, points, with_log_weights=True)[:, 0]  # (B, N, K)
    joint -= joint.amax(dim=-1, keepdim=True)
    # exp with a floor: no subnormal results, which x86 computes ten times slower
    unnormalised = joint.clamp_min_(mx.LOG_FLOOR).exp_()
    return unnormalised, 1.0 / unnormalised.sum(dim=-1)


def e_step(points: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Responsibilities (B, N, K) of the components of mixture (B, 1, K, L) for points (B, N, d)."""
    unnormalised, inverse_sums = _unnormalised_responsibilities(points, mixture)
    return unnormalised * inverse_sums.unsqueeze(-1)


def em_step(points: torch.Tensor, mixture: torch.Tensor, floor: float,
            fixed_means: torch.Tensor | None = None) -> torch.Tensor:
    """One E and M step; the normalisation of the responsibilities is folded into the M step's
    point features (N x 13 values) instead of the N x K matrix."""
    unnormalised, inverse_sums = _unnormalised_responsibilities(points, mixture)
    return _m_step(points, unnormalised, floor, fixed_means, row_scale=inverse_sums)


def _hard_mixture(points: torch.Tensor, centres: torch.Tensor, mask: torch.Tensor,
                  floor: float) -> torch.Tensor:
    """The Gaussians of a k-means partition (nearest-centre indicator (B, N, K)): cluster
    fractions, the centres, cluster covariances about the centres (plus the floor)."""
    return _m_step(points, mask, floor, fixed_means=centres)


def fit_kmeans_em(points: torch.Tensor, components: int, kmeans_iterations: int = 10,
                  covariance_floor: float = DEFAULT_COVARIANCE_FLOOR, init: str = "fps",
                  generator: torch.Generator | None = None, kmeans_points: int | None = 512
                  ) -> torch.Tensor:
    """GMCN's input fit ("k-means" in their Table 4): (B, N, d) -> mixture (B, 1, K, 1 + d + d*d).

    k-means gives the centres; the k-means partition gives initial Gaussians (cluster fractions and
    covariances about the centres); one E step over all N points gives soft responsibilities
    under them; one M step gives weights and covariances, the means staying at the k-means
    centres. `covariance_floor` (relative to the cloud's mean squared radius) is added to every
    covariance, so flat patches stay invertible. Weights sum to 1 per cloud.

    Speed: initialisation and Lloyd iterations run on `kmeans_points` points picked by
    `stratified_subsample` (None: all); only the EM step touches every point. On a CPU the
    (N x K) passes dominate, and the centres of 128 clusters move little between 512 and 2048
    points, while the covariances still come from all of them.
    """
    normalised, centre, scale = _normalised_frame(canonical_order(points))
    sample = (stratified_subsample(normalised, kmeans_points) if kmeans_points
              else normalised)
    centres, mask = kmeans(sample, components, kmeans_iterations, init, generator)
    initial = _hard_mixture(sample, centres, mask, covariance_floor)
    fitted = em_step(normalised, initial, covariance_floor, fixed_means=centres)
    return _to_frame(fitted, centre, scale)


def fit_em(points: torch.Tensor, components: int, iterations: int = 10,
           covariance_floor: float = DEFAULT_COVARIANCE_FLOOR, init: str = "kmeans",
           kmeans_iterations: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain EM ("k-means+EM" / "rand+EM" in GMCN's Table 4): (B, N, d) -> (B, 1, K, L).

    `init` "kmeans": the k-means partition's Gaussians (farthest-point seeded); "random": K points
    drawn with `generator` as centres, each with the cloud's covariance / K^(2/d) (so the initial
    Gaussians tile the cloud) and equal weights. Then `iterations` full E and M steps.
    """
    normalised, centre, scale = _normalised_frame(canonical_order(points))
    b, n, d = normalised.shape
    if init == "kmeans":
        centres, mask = kmeans(normalised, components, kmeans_iterations, "fps", generator)
        current = _hard_mixture(normalised, centres, mask, covariance_floor)
    elif init == "random":
        index = torch.stack([torch.randperm(n, generator=generator, device=points.device)
                             [:components] for _ in range(b)])
        centres = torch.gather(normalised, 1, index.unsqueeze(-1).expand(b, components, d))
        spread = (normalised.transpose(1, 2) @ normalised / n) * components ** (-2.0 / d)
        covs = spread.unsqueeze(1).expand(b, components, d, d)
        covs = covs + covariance_floor * torch.eye(d, dtype=points.dtype, device=points.device)
        current = mx.pack(torch.full((b, components), 1.0 / components, dtype=points.dtype,
                                     device=points.device), centres, covs).unsqueeze(1)
    else:
        raise ValueError(f"init must be 'kmeans' or 'random', got '{init}'")
    for _ in range(iterations):
        current = em_step(normalised, current, covariance_floor)
    return _to_frame(current, centre, scale)


def fit_points(points: torch.Tensor, components: int, method: str = "kmeans_em",
               iterations: int = 10, covariance_floor: float = DEFAULT_COVARIANCE_FLOOR,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One entry point for the input fit: "kmeans_em" (k-means with `iterations` Lloyd steps, one
    EM step for the covariances), "em" (`iterations` EM steps from random centres) or
    "kmeans_then_em" (`iterations` EM steps from the k-means partition)."""
    if method == "kmeans_em":
        return fit_kmeans_em(points, components, iterations, covariance_floor, "fps", generator)
    if method == "em":
        return fit_em(points, components, iterations, covariance_floor, "random",
                      generator=generator)
    if method == "kmeans_then_em":
        return fit_em(points, components, iterations, covariance_floor, "kmeans",
                      generator=generator)
    raise ValueError(f"fit method must be one of {FIT_METHODS}, got '{method}'")


def mean_activation(mixtures: torch.Tensor) -> torch.Tensor:
    """Per mixture (B,), the mean over components of the density at the component centres, after
    the network's covariance-scale normalisation (mean trace d, GMCN section 4.3)."""
    normalised, _ = mx.normalise_covariance_scale(mixtures)
    values = mx.evaluate(normalised, mx.means(normalised))  # (B, C, N)
    return values.flatten(1).mean(dim=1)


def dataset_weight_scale(mixtures: torch.Tensor, target: float = 1.0) -> float:
    """The data-set-wide weight factor of GMCN section 5 ("the mixture weights are then normalized
    such that the mixtures have the same activation across all training samples on average").

    What we normalise to: every fitted mixture already has total weight 1 (a probability
    mixture); this returns the single factor s such that, after the network's covariance-scale
    normalisation, the density at the component centres averaged over all components of all the
    given (training) mixtures is `target`. The network multiplies its input weights by s, so the
    first ReLU fit sees activations of order one whatever the number of components or the
    dimension. One scalar for the data set (stored in the model config), not one per object: an
    object's relative activation stays informative.
    """
    with torch.no_grad():
        return float(target / mean_activation(mixtures).mean().clamp_min(1e-30))


def refine_em(points: torch.Tensor, mixture: torch.Tensor, iterations: int,
              covariance_floor: float = DEFAULT_COVARIANCE_FLOOR, support: float = 0.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """EM from a given mixture (e.g. a network's prediction, a learned prior) on the points that
    were observed: (B, N, d), (B, 1, K, L) -> (refined mixture (B, 1, K, L), kept (B, K) bool).

    `iterations` `em_step`s in the points' normalised frame (the covariance floor is relative to
    the observed cloud, as in the fits above). With `support` > 0, the components that the
    observed points do not support, i.e. whose responsibility mass under the prior is below
    `support` times the prior's own expectation (N times the component's weight), are `kept`:
    mean, covariance and weight stay the prior's for every iteration, and the other components
    share the rest of the weight in proportion to their masses. On a partial scan those are
    the Gaussians on the unseen side: refinement sharpens the seen side without deleting the
    prior's completion there. The kept set is decided once, from the prior, so each step holds
    some parameters fixed and maximises the expected log-likelihood over the others exactly (a
    generalised EM step): the observed points' likelihood does not decrease (up to the
    covariance floor). `mixture`'s weights must sum to 1 per cloud.
    """
    if not 0.0 <= support <= 1.0:
        raise ValueError(f"support must be in [0, 1], got {support}")
    normalised, centre, scale = _normalised_frame(canonical_order(points))
    current = mx.scale_space(mx.translate(mixture, -centre), 1.0 / scale)
    prior_weights = mx.weights(current)
    kept = torch.zeros_like(prior_weights, dtype=torch.bool)
    for iteration in range(iterations):
        step = em_step(normalised, current, covariance_floor)
        if support > 0:
            if iteration == 0:  # the step's weights are the prior's responsibility masses / N
                kept = mx.weights(step) < support * prior_weights
            free = torch.where(kept, 0.0, mx.weights(step))
            # support <= 1 leaves the free components at least 1 - support of the mass
            share = 1.0 - torch.where(kept, prior_weights, 0.0).sum(-1, keepdim=True)
            weights = torch.where(kept, prior_weights,
                                  free * share / free.sum(-1, keepdim=True).clamp_min(1e-30))
            step = mx.with_weights(torch.where(kept.unsqueeze(-1), current, step), weights)
        current = step
    return _to_frame(current, centre, scale), kept.squeeze(1)


def merge_children(mixture: torch.Tensor, children: int) -> torch.Tensor:
    """Moment-matched parents of consecutive groups of `children` components: (B, C, K, L) ->
    (B, C, K / children, L). Weight: the children's sum; mean and covariance: those of the
    children's mixture, sum w (Sigma + (mu - m)(mu - m)^T) / W (no cancellation far from the
    origin). For children fitted by one M step this equals the M step of the summed
    responsibilities: the parent is fitted to its children's points. A parent whose children
    all weigh 0 gets their unweighted moments."""
    weights, means, covs = mx.unpack(mixture)
    grouped = weights.unflatten(-1, (-1, children))
    w = grouped + 1e-30 * (grouped.sum(-1, keepdim=True) == 0)
    total = w.sum(-1, keepdim=True)
    mu = means.unflatten(-2, (-1, children))
    parent_means = (w.unsqueeze(-1) * mu).sum(-2) / total
    offset = mu - parent_means.unsqueeze(-2)
    spread = covs.unflatten(-3, (-1, children)) + offset.unsqueeze(-1) * offset.unsqueeze(-2)
    parent_covs = (w[..., None, None] * spread).sum(-3) / total.unsqueeze(-1)
    parent_covs = 0.5 * (parent_covs + parent_covs.transpose(-1, -2))
    return mx.pack(grouped.sum(-1), parent_means, parent_covs)
