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
* `dataset_weight_scale`: the one data-set-wide weight factor (see its docstring).

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


def _squared_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, N, d), (B, K, d) -> (B, N, K) squared Euclidean distances (clamped at 0)."""
    cross = points @ centres.transpose(1, 2)
    return (points.pow(2).sum(-1, keepdim=True) - 2 * cross
            + centres.pow(2).sum(-1).unsqueeze(1)).clamp_min(0)


def farthest_point_indices(points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, d) -> (B, k) indices of a farthest-point sample, starting from the point farthest
    from the centroid: deterministic and independent of the order of the points."""
    b, n, _ = points.shape
    if k > n:
        raise ValueError(f"cannot pick {k} centres from {n} points")
    batch = torch.arange(b, device=points.device)
    start = (points - points.mean(1, keepdim=True)).pow(2).sum(-1).argmax(dim=1)
    chosen = torch.empty(b, k, dtype=torch.long, device=points.device)
    chosen[:, 0] = start
    nearest = (points - points[batch, start].unsqueeze(1)).pow(2).sum(-1)
    for j in range(1, k):
        chosen[:, j] = nearest.argmax(dim=1)
        new = points[batch, chosen[:, j]].unsqueeze(1)
        nearest = torch.minimum(nearest, (points - new).pow(2).sum(-1))
    return chosen


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


def kmeans(points: torch.Tensor, k: int, iterations: int = 10, init: str = "fps",
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd's k-means: (B, N, d) -> centres (B, k, d) and assignment (B, N).

    `init`: "fps" (farthest-point sampling, deterministic) or "kmeans++" (uses `generator`).
    A cluster that loses all its points keeps its previous centre. Fixed iteration count, so
    every cloud of the batch costs the same and the result is reproducible.
    """
    b, n, d = points.shape
    if init == "fps":
        index = farthest_point_indices(points, k)
    elif init in ("kmeans++", "kmeanspp"):
        index = kmeans_plus_plus_indices(points, k, generator)
    else:
        raise ValueError(f"init must be 'fps' or 'kmeans++', got '{init}'")
    centres = torch.gather(points, 1, index.unsqueeze(-1).expand(b, k, d))
    assignment = _squared_distances(points, centres).argmin(dim=2)
    for _ in range(iterations):
        sums = torch.zeros(b, k, d, dtype=points.dtype, device=points.device)
        sums.scatter_add_(1, assignment.unsqueeze(-1).expand(b, n, d), points)
        counts = torch.zeros(b, k, dtype=points.dtype, device=points.device)
        counts.scatter_add_(1, assignment, torch.ones_like(points[..., 0]))
        centres = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp_min(1).unsqueeze(-1),
                              centres)
        assignment = _squared_distances(points, centres).argmin(dim=2)
    return centres, assignment


def _m_step(points: torch.Tensor, responsibilities: torch.Tensor, floor: float,
            fixed_means: torch.Tensor | None = None) -> torch.Tensor:
    """Weights, means and covariances from responsibilities (B, N, K) -> mixture (B, 1, K, L).

    With `fixed_means`, covariances are second moments about those centres instead of about the
    responsibility-weighted means. `floor` is added to every covariance's diagonal.
    """
    b, n, d = points.shape
    mass = responsibilities.sum(dim=1)  # (B, K)
    safe = mass.clamp_min(1e-12).unsqueeze(-1)
    first = responsibilities.transpose(1, 2) @ points  # (B, K, d)
    outer = (points.unsqueeze(-1) * points.unsqueeze(-2)).reshape(b, n, d * d)
    second = (responsibilities.transpose(1, 2) @ outer).reshape(b, -1, d, d) / safe.unsqueeze(-1)
    weighted_mean = first / safe
    centre = weighted_mean if fixed_means is None else fixed_means
    # E[(x - c)(x - c)^T] = E[x x^T] - E[x] c^T - c E[x]^T + c c^T
    covs = (second - weighted_mean.unsqueeze(-1) * centre.unsqueeze(-2)
            - centre.unsqueeze(-1) * weighted_mean.unsqueeze(-2)
            + centre.unsqueeze(-1) * centre.unsqueeze(-2))
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    # A component without responsibility has no statistics: give it the floor, centred where it is.
    empty = (mass <= 1e-12)[..., None, None]
    covs = torch.where(empty, torch.zeros_like(covs), covs)
    covs = covs + floor * torch.eye(d, dtype=points.dtype, device=points.device)
    return mx.pack(mass / n, centre, covs).unsqueeze(1)


def e_step(points: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """Responsibilities (B, N, K) of the components of mixture (B, 1, K, L) for points (B, N, d)."""
    log_g = mx.log_gaussian_matrix(mixture, points)[:, 0]  # (B, N, K)
    log_w = torch.log(mx.weights(mixture)[:, 0].clamp_min(1e-30)).unsqueeze(1)
    joint = log_g + log_w
    joint = joint - joint.amax(dim=-1, keepdim=True)
    unnormalised = mx.safe_exp(joint)  # softmax without the slow subnormal exponentials
    return unnormalised / unnormalised.sum(dim=-1, keepdim=True)


def _hard_mixture(points: torch.Tensor, centres: torch.Tensor, assignment: torch.Tensor,
                  floor: float) -> torch.Tensor:
    """The Gaussians of a k-means partition: cluster fractions, the centres, cluster covariances."""
    one_hot = torch.nn.functional.one_hot(assignment, centres.shape[1]).to(points.dtype)
    return _m_step(points, one_hot, floor, fixed_means=centres)


def fit_kmeans_em(points: torch.Tensor, components: int, kmeans_iterations: int = 10,
                  covariance_floor: float = DEFAULT_COVARIANCE_FLOOR, init: str = "fps",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """GMCN's input fit ("k-means" in their Table 4): (B, N, d) -> mixture (B, 1, K, 1 + d + d*d).

    k-means gives the centres; the k-means partition gives initial Gaussians (cluster fractions and
    covariances); one E step gives soft responsibilities under them; one M step gives weights and
    covariances, with the means kept at the k-means centres. `covariance_floor` (relative to the
    cloud's mean squared radius) is added to every covariance, so flat patches stay invertible.
    Weights sum to 1 per cloud.
    """
    normalised, centre, scale = _normalised_frame(points)
    centres, assignment = kmeans(normalised, components, kmeans_iterations, init, generator)
    initial = _hard_mixture(normalised, centres, assignment, covariance_floor)
    fitted = _m_step(normalised, e_step(normalised, initial), covariance_floor, fixed_means=centres)
    return _to_frame(fitted, centre, scale)


def fit_em(points: torch.Tensor, components: int, iterations: int = 10,
           covariance_floor: float = DEFAULT_COVARIANCE_FLOOR, init: str = "kmeans",
           kmeans_iterations: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain EM ("k-means+EM" / "rand+EM" in GMCN's Table 4): (B, N, d) -> (B, 1, K, L).

    `init` "kmeans": the k-means partition's Gaussians (farthest-point seeded); "random": K points
    drawn with `generator` as centres, each with the cloud's covariance / K^(2/d) (so the initial
    Gaussians tile the cloud) and equal weights. Then `iterations` full E and M steps.
    """
    normalised, centre, scale = _normalised_frame(points)
    b, n, d = normalised.shape
    if init == "kmeans":
        centres, assignment = kmeans(normalised, components, kmeans_iterations, "fps", generator)
        current = _hard_mixture(normalised, centres, assignment, covariance_floor)
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
        current = _m_step(normalised, e_step(normalised, current), covariance_floor)
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
