"""The upsampling stage with a tiny random ShapeGF: output size and type, the input's frame kept,
large inputs cut to what the model was trained on, reproducible answers, and clear errors."""
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
    upsampler = Upsampler(UpsampleConfig(output_points=64, max_input_points=128), model, CPU)
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
