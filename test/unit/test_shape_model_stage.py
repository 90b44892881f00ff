"""The shape-model stage (PointGMM): a valid hierarchy in the cloud's frame, samples that follow
the finest level's mixture, equivariance under translation and scaling, and clear errors for
unusable clouds. A tiny untrained network: the checks hold for any weights."""
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from gmm_perception.geometry.points import EmptyCloudError
from gmm_perception.models.pointgmm import PointGmm, PointGmmConfig
from gmm_perception.pipeline.configs import ShapeModelConfig
from gmm_perception.pipeline.shape_model import MIN_POINTS, ShapeModeller, point_spacing
from tiny_configs import POINTGMM_TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PointGmm(PointGmmConfig(**POINTGMM_TINY)).eval()


def cloud(n=512, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * [0.3, 0.2, 0.4] + [3.0, 0.5, 0.4]).astype(np.float32)


def test_levels_form_a_weighted_hierarchy_of_positive_definite_gaussians(model):
    result = ShapeModeller(ShapeModelConfig(input_points=256, resample_points=300), model, CPU)(cloud())
    assert [len(level["weights"]) for level in result.levels] == [8, 32, 128]
    assert result.resampled.shape == (300, 3) and result.resampled.dtype == np.float32
    previous = None
    for level in result.levels:
        w, mu, cov, parents = (level[k] for k in ("weights", "means", "covariances", "parents"))
        assert w.dtype == mu.dtype == cov.dtype == np.float64
        assert mu.shape == (len(w), 3) and cov.shape == (len(w), 3, 3)
        assert w.sum() == pytest.approx(1.0, abs=1e-6) and np.all(w >= 0)
        np.testing.assert_array_equal(cov, cov.transpose(0, 2, 1))
        assert np.all(np.linalg.eigvalsh(cov) > 0)
        if previous is None:
            assert np.all(parents == -1)
        else:
            assert parents.min() >= 0 and parents.max() < len(previous)
            # Each parent's children share out exactly its weight.
            np.testing.assert_allclose(np.bincount(parents, w, minlength=len(previous)),
                                       previous, atol=1e-6)
        previous = w


def test_resampled_cloud_follows_the_finest_mixture_moments(model):
    m = 20000
    result = ShapeModeller(ShapeModelConfig(input_points=256, resample_points=m,
                                            resample_max_distance=0.0), model, CPU)(cloud())
    finest = result.levels[-1]
    w, mu, cov = finest["weights"], finest["means"], finest["covariances"]
    mean = w @ mu
    covariance = np.einsum("k,kij->ij", w, cov + mu[:, :, None] * mu[:, None, :]) \
        - np.outer(mean, mean)
    x = result.resampled.astype(np.float64)
    centred = x - mean
    products = centred[:, :, None] * centred[:, None, :]
    # Five standard errors, estimated from the samples themselves (no Gaussian assumption).
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * x.std(0) / np.sqrt(m))
    np.testing.assert_array_less(np.abs(products.mean(0) - covariance),
                                 5 * products.std(0) / np.sqrt(m) + 1e-12)


@pytest.mark.parametrize("refine_iterations", [0, 10])
def test_translating_and_scaling_the_cloud_moves_and_scales_the_mixture(model, refine_iterations):
    points = cloud(n=256, seed=1)
    shift, scale = np.array([20.0, -15.0, 3.0]), 2.5
    moved = (points.astype(np.float64) * scale + shift).astype(np.float32)
    # num_points == len(points): both calls feed the same points in the same order.
    config = ShapeModelConfig(input_points=256, resample_points=500, seed=3,
                              refine_iterations=refine_iterations, resample_max_distance=0.0)
    a = ShapeModeller(config, model, CPU)(points)
    b = ShapeModeller(config, model, CPU)(moved)
    size = np.ptp(points, axis=0).max()
    for la, lb in zip(a.levels, b.levels):
        np.testing.assert_allclose(lb["weights"], la["weights"], atol=1e-5)
        np.testing.assert_allclose(lb["means"] - shift, la["means"] * scale, atol=1e-4 * size)
        np.testing.assert_allclose(lb["covariances"], la["covariances"] * scale ** 2,
                                   atol=1e-4 * size ** 2)
        np.testing.assert_array_equal(lb["parents"], la["parents"])
    if not refine_iterations:
        np.testing.assert_allclose(b.resampled - shift, a.resampled * scale, atol=1e-3 * size)
        return
    # A refined covariance with (nearly) equal eigenvalues has no unique eigenbasis: the same
    # Gaussian, other axes, so a sample drawn from it lands elsewhere.
    same = np.all(np.abs(b.resampled - shift - a.resampled * scale) < 1e-3 * size, axis=1)
    assert same.mean() > 0.95, same.mean()


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_the_resampled_cloud_keeps_within_the_factor_of_the_inputs_spacing(model, factor):
    points = cloud(n=400, seed=2)
    unique = np.unique(points, axis=0)
    nearest, _ = cKDTree(unique).query(unique, k=2)
    spacing = np.median(nearest[:, 1])
    assert point_spacing(np.concatenate([points, points[:300]])) == pytest.approx(spacing)
    config = ShapeModelConfig(input_points=256, resample_points=3000, resample_max_distance=factor)
    resampled = ShapeModeller(config, model, CPU)(points).resampled
    assert resampled.shape == (3000, 3) and np.isfinite(resampled).all()
    strays, _ = cKDTree(points).query(resampled)
    assert strays.max() <= factor * spacing * (1 + 1e-5)
    # Plain draws of the (untrained) mixture stray much farther.
    plain = ShapeModeller(ShapeModelConfig(input_points=256, resample_points=3000,
                                           resample_max_distance=0.0), model, CPU)(points)
    assert cKDTree(points).query(plain.resampled)[0].max() > 2 * factor * spacing


def test_unusable_clouds_are_errors(model):
    modeller = ShapeModeller(ShapeModelConfig(input_points=64), model, CPU)
    with pytest.raises(EmptyCloudError, match="too few"):
        modeller(np.zeros((MIN_POINTS - 1, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        modeller(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError):
        ShapeModelConfig(resample_points=0)
