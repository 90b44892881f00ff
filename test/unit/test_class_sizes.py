"""Class sizes (data/class_sizes.py) and held-out models at their classes' real sizes."""
import numpy as np
import pytest

from gmm_perception.data.class_sizes import CLASS_SIZES, class_scale, size_factor
from gmm_perception.data.held_out import HeldOutSet


def test_class_scale_sets_the_height_or_the_longest_horizontal_side():
    # a unit shape 1.0 long (x), 0.5 deep, 0.25 tall
    shape = np.array([[-0.5, -0.25, 0.0], [0.5, 0.25, 0.25]])
    assert CLASS_SIZES["chair"] == ("height", 0.9) and CLASS_SIZES["sofa"] == ("length", 2.0)
    assert class_scale("chair", shape) == pytest.approx(0.9 / 0.25)
    assert class_scale("sofa", shape) == pytest.approx(2.0 / 1.0)
    with pytest.raises(ValueError, match="flat"):
        class_scale("chair", np.zeros((3, 3)))


def test_size_factors_are_log_normal_and_clipped_at_two_spreads():
    rng = np.random.default_rng(0)
    factors = np.log([size_factor(rng, 0.2) for _ in range(4000)])
    assert np.abs(factors).max() <= 0.4 + 1e-12
    assert np.mean(factors) == pytest.approx(0.0, abs=0.01)
    assert 0.17 < np.std(factors) < 0.2  # sigma 0.2, a little less for the clipping


def test_held_out_models_at_class_sizes_are_seeded_per_model():
    stored = np.stack([np.array([[0, 0, 0], [0.2, 0.3, 0.5]], np.float32),
                       np.array([[0, 0, 0], [1.0, 0.4, 0.2]], np.float32)])
    held = HeldOutSet("test", 5, np.array(["a", "b"]), np.array([0, 1]), ["chair", "sofa"],
                      np.array([3, 4]), stored, None, [])
    exact = held.class_size_scales(0.0, stream=101)
    np.testing.assert_allclose(exact, [0.9 / 0.5, 2.0 / 1.0])
    spread = held.class_size_scales(0.2, stream=101)
    np.testing.assert_array_equal(spread, held.class_size_scales(0.2, stream=101))
    assert not np.allclose(spread, exact)
    assert np.all(np.abs(np.log(spread / exact)) <= 0.4 + 1e-12)


def test_a_held_out_set_at_class_sizes_scales_each_model_and_its_scans():
    stored = np.stack([np.array([[0, 0, 0], [0.2, 0.3, 0.5]], np.float32),
                       np.array([[0, 0, 0], [1.0, 0.4, 0.2]], np.float32)])
    scans = np.ones((2, 3, 4, 3), np.float32)
    held = HeldOutSet("test", 5, np.array(["a", "b"]), np.array([0, 1]), ["chair", "sofa"],
                      np.array([3, 4]), stored, scans, [])
    assert held.at_class_sizes(None, stream=101) is held
    sized = held.at_class_sizes(0.0, stream=101)
    np.testing.assert_allclose(sized.stored[:, 1], stored[:, 1] * np.array([[1.8], [2.0]]),
                               rtol=1e-6)
    np.testing.assert_allclose(sized.scans[:, 0, 0, 0], [1.8, 2.0], rtol=1e-6)
    np.testing.assert_array_equal(held.stored, stored)  # the original is left as it was
