"""The upsampling stage with a tiny random ShapeGF: output size and type, the input's frame kept,
large inputs cut to what the model was trained on, reproducible answers, clear errors, and the
density gate (dense objects pass through untouched)."""
import numpy as np
import pytest
import torch

from gmm_perception.geometry.points import EmptyCloudError
from gmm_perception.models.shapegf import ShapeGf, ShapeGfConfig
from gmm_perception.pipeline.preprocess import PreprocessConfig, Preprocessor
from gmm_perception.pipeline.configs import UPSAMPLING_MODES, UpsampleConfig
from gmm_perception.pipeline.upsample import MIN_POINTS, Upsampler

CPU = torch.device("cpu")
# Float32 inputs 3 m from the origin are rounded (~2e-7 m) differently from the same cloud at the
# origin, and the sampler's ~50 network steps amplify that; measured: at most 4e-5 on a cloud of
# unit size (0.3 mm at 1e5 its float resolution), so 1e-3 says "the same cloud, moved".
FRAME_TOLERANCE = 1e-3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ShapeGf(ShapeGfConfig(latent=8, encoder_widths=(16, 16), encoder_fc=(16,), blocks=1,
                                 width=16)).eval()


def cloud(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * [0.3, 0.2, 0.4]).astype(np.float32)


@pytest.mark.parametrize("mode", UPSAMPLING_MODES)
def test_output_count_type_and_frame(model, mode):
    upsampler = Upsampler(UpsampleConfig(output_points=700, mode=mode, start_sigma=0.05), model, CPU)
    points = cloud()
    result = upsampler(points)
    assert result.points.shape == (700, 3) and result.points.dtype == np.float32
    assert np.isfinite(result.points).all() and result.seconds > 0
    # The model normalises the input itself: moving the input moves the output with it.
    offset = np.array([3.0, -0.5, 0.4], np.float32)
    moved = upsampler(points + offset).points
    np.testing.assert_allclose(moved - offset, result.points, atol=FRAME_TOLERANCE)


def test_the_same_cloud_gets_the_same_dense_cloud_whatever_came_before(model):
    a = Upsampler(UpsampleConfig(output_points=256, mode="prior", seed=3), model, CPU)
    b = Upsampler(UpsampleConfig(output_points=256, mode="prior", seed=3), model, CPU)
    first = a(cloud()).points
    a(cloud(seed=1))  # another object in between changes nothing
    np.testing.assert_array_equal(a(cloud()).points, first)
    np.testing.assert_array_equal(b(cloud()).points, first)
    other_seed = Upsampler(UpsampleConfig(output_points=256, mode="prior", seed=4), model, CPU)(cloud()).points
    assert not np.allclose(other_seed, first)


def test_large_inputs_are_resampled_to_max_input_points(model, monkeypatch):
    seen = []
    upsample = model.upsample
    monkeypatch.setattr(model, "upsample", lambda points, *a, **k: (
        seen.append(points.shape), upsample(points, *a, **k))[1])
    upsampler = Upsampler(UpsampleConfig(output_points=64, max_input_points=128,
                                         density_threshold=0.0), model, CPU)
    upsampler(cloud(n=5000))
    upsampler(cloud(n=100))
    assert seen == [(128, 3), (100, 3)]


def test_too_few_or_non_finite_points_are_errors_and_preprocessing_drops_nan_rows(model):
    upsampler = Upsampler(UpsampleConfig(output_points=64), model, CPU)
    with pytest.raises(EmptyCloudError, match="too few"):
        upsampler(np.zeros((MIN_POINTS - 1, 3), np.float32))
    with pytest.raises(ValueError, match="N, 3"):
        upsampler(np.zeros((32, 2), np.float32))
    points = cloud(n=200)
    points[::4] = np.nan
    with pytest.raises(ValueError, match="finite"):
        upsampler(points)
    finite = Preprocessor(PreprocessConfig())(points)  # what the node runs before the stage
    assert len(finite) == 150
    assert np.isfinite(upsampler(finite).points).all()
    with pytest.raises(ValueError, match="mode"):
        UpsampleConfig(mode="completion")


def box_surface(extents, n, seed=0):
    """n points uniform on the surface of a box with these edge lengths, centred at 0."""
    rng = np.random.default_rng(seed)
    a, b, c = extents
    faces = np.array([b * c, b * c, a * c, a * c, a * b, a * b])
    face = rng.choice(6, n, p=faces / faces.sum())
    points = rng.uniform(-0.5, 0.5, (n, 3)) * extents
    axis, side = face // 2, np.where(face % 2 == 0, -0.5, 0.5)
    points[np.arange(n), axis] = side * np.asarray(extents)[axis]
    return points


def test_surface_density_is_points_per_square_metre_of_the_box_in_any_pose():
    from gmm_perception.geometry.points import bounding_surface_area, surface_density
    from gmm_perception.geometry.transforms import euler_to_matrix

    points = box_surface((3.0, 2.0, 1.0), 20_000)
    area = 2 * (3 * 2 + 2 * 1 + 1 * 3)  # 22 m^2
    # The 1-99 % quantile box is a little smaller than the true one (about 2 % per edge).
    assert bounding_surface_area(points) == pytest.approx(area, rel=0.05)
    assert surface_density(points) == pytest.approx(20_000 / area, rel=0.05)
    turned = points @ euler_to_matrix(0.3, -1.1, 2.0).T + [4.0, -2.0, 1.0]
    assert surface_density(turned) == pytest.approx(surface_density(points), rel=1e-6)
    assert surface_density(np.ones((5, 3))) == np.inf  # no extent at all


def test_dense_objects_pass_through_untouched_and_sparse_ones_are_upsampled(model):
    # A 0.4 x 0.3 x 0.2 m box (0.52 m^2 of surface): 100 points are 190 per m^2, 2000 are 3800.
    config = UpsampleConfig(output_points=512, density_threshold=1000.0)
    upsampler = Upsampler(config, model, CPU)
    dense = box_surface((0.4, 0.3, 0.2), 2000).astype(np.float32)
    result = upsampler(dense)
    assert not result.upsampled and result.density == pytest.approx(2000 / 0.52, rel=0.06)
    np.testing.assert_array_equal(result.points, dense)  # the very points, in their order
    sparse = upsampler(box_surface((0.4, 0.3, 0.2), 100).astype(np.float32))
    assert sparse.upsampled and sparse.points.shape == (512, 3)
    # Threshold 0: every object is upsampled, however dense.
    everything = Upsampler(UpsampleConfig(output_points=512, density_threshold=0.0), model, CPU)
    assert everything(dense).upsampled
