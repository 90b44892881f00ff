"""The classic baseline of the shape-model benchmark (issue #7): a Gaussian mixture fitted to each
cloud on its own by EM, scikit-learn's `GaussianMixture` with full covariances, k-means
initialisation and a fixed seed, with as many components as PointGMM's level being compared
(512 for the finest level at depth 3).

`fit_em` returns plain arrays (weights (K,), means (K, 3), covariances (K, 3, 3), float64) and the
fit's diagnostics; `EmFit.to_level()` turns one or more fits into a `GmmLevel` (the structure
PointGMM returns), so NLL, sampling and moments run through the same code for both methods.

Notes for a fair benchmark:
* With K components on N points there are N / K points per Gaussian (4 for 512 on 2048), fewer
  than a full 3-D covariance needs; `reg_covar` (added to every covariance diagonal, in squared
  units of the cloud) keeps them positive definite and is the knob that trades held-out NLL
  against fit. It is relative to the cloud's scale: multiplied by the mean squared distance of
  the points from their centroid (about 0.3 on the unit-sphere SH3D shapes), so the fit does not
  depend on the units; `relative_reg=False` takes it as absolute. The default 1e-3 (a floor of
  about 1.7 cm standard deviation on a unit-radius object) gave the best held-out NLL (2048
  fresh surface samples of the mesh) with 512 components on the first SH3D test shapes:
  relative 1e-6: +5.9 / +8.2 nats, 1e-5: +4.2 / +5.8, 1e-4: +1.5 / +1.7, 1e-3: -0.66 / -0.78
  (shapes 0, 1); 3e-3: -0.19 / -0.50, 1e-2: +0.18 / +0.06, 3e-2: +0.65 / +0.63 (shapes 2, 3).
  scikit-learn's own default (1e-6, absolute) overfits 4 points per Gaussian badly.
* scikit-learn runs k-means and the E-step through BLAS/OpenMP thread pools; `threads` caps them
  for the duration of the fit (threadpoolctl), so timings can be taken on a fixed budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass
class EmFit:
    weights: NDArray[np.float64]  # (K,), sum 1
    means: NDArray[np.float64]  # (K, 3)
    covariances: NDArray[np.float64]  # (K, 3, 3), symmetric positive definite
    converged: bool
    iterations: int
    lower_bound: float  # scikit-learn's final mean log-likelihood per point on the fitted cloud
    seconds: float  # wall time of the fit (k-means initialisation included)

    @property
    def num_components(self) -> int:
        return len(self.weights)

    def nbytes(self, dtype=np.float32) -> int:
        """Bytes of the mixture stored as `dtype`: weight, mean and the 6 distinct covariance
        entries per component (what a message needs, not the arrays above)."""
        return self.num_components * (1 + 3 + 6) * np.dtype(dtype).itemsize

    def to_level(self, device="cpu"):
        """This fit as a flat `GmmLevel` with a batch of one."""
        return fits_to_level([self], device)


def fits_to_level(fits: list[EmFit], device="cpu"):
    """Fits with equal component counts -> one batched `GmmLevel` (float32, parents -1)."""
    import torch

    from gmm_perception.gmm.hierarchical import GmmLevel

    def stack(name: str) -> torch.Tensor:
        return torch.as_tensor(np.stack([getattr(f, name) for f in fits]), dtype=torch.float64)

    level = GmmLevel.from_covariances(stack("weights"), stack("means"), stack("covariances"))
    return GmmLevel(*(t.to(device=device, dtype=torch.float32) if t.is_floating_point()
                      else t.to(device) for t in (level.weights, level.means, level.axes,
                                                  level.eigenvalues, level.parents,
                                                  level.sibling_log_weights)))


def fit_em(points: ArrayLike, components: int = 512, *, seed: int = 0, max_iter: int = 100,
           tol: float = 1e-3, reg_covar: float = 1e-3, relative_reg: bool = True,
           n_init: int = 1, threads: int | None = None) -> EmFit:
    """Fit a full-covariance GMM to one cloud (N, 3) by EM with k-means initialisation.

    Deterministic for a given seed and thread count (scikit-learn's `random_state`). Raises
    ValueError when the cloud has fewer distinct points than components.
    """
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or not np.isfinite(x).all():
        raise ValueError(f"points must be a finite (N, 3) array, got shape {x.shape}")
    if len(np.unique(x, axis=0)) < components:
        raise ValueError(f"{len(x)} points ({len(np.unique(x, axis=0))} distinct) cannot fit "
                         f"{components} components")
    regulariser = reg_covar
    if relative_reg:
        regulariser = reg_covar * float(np.mean(np.sum((x - x.mean(0)) ** 2, axis=1)))
    model = GaussianMixture(n_components=components, covariance_type="full", tol=tol,
                            reg_covar=regulariser, max_iter=max_iter, n_init=n_init,
                            init_params="kmeans", random_state=seed)
    started = time.perf_counter()
    with threadpool_limits(limits=threads):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported through `converged`
            model.fit(x)
    seconds = time.perf_counter() - started
    covariances = 0.5 * (model.covariances_ + np.swapaxes(model.covariances_, 1, 2))
    return EmFit(model.weights_ / model.weights_.sum(), model.means_.copy(), covariances,
                 bool(model.converged_), int(model.n_iter_), float(model.lower_bound_), seconds)


def fit_em_batch(clouds: ArrayLike, components: int = 512, **options) -> list[EmFit]:
    """`fit_em` on every cloud of (B, N, 3), one after the other (EM is per cloud)."""
    return [fit_em(cloud, components, **options) for cloud in np.asarray(clouds)]
