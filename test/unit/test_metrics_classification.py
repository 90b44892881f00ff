"""Classification metrics against hand-computed cases; the confusion-matrix PNG."""

import numpy as np
import pytest

from gmm_perception.metrics.classification import (
    accuracy,
    confusion_matrix,
    per_class_accuracy,
    plot_confusion_matrix,
)

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
Y_PRED = [0, 1, 0, 1, 2, 2, 2, 0, 2, 0]


def test_accuracy():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 10)
    assert accuracy([3], [3]) == 1.0


def test_confusion_matrix_rows_are_true_classes():
    expected = np.array([[3, 1, 0, 0],
                         [0, 1, 1, 0],
                         [1, 0, 3, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, n_classes=4), expected)


def test_per_class_accuracy_with_an_absent_class():
    result = per_class_accuracy(Y_TRUE, Y_PRED, n_classes=4)
    np.testing.assert_allclose(result[:3], [3 / 4, 1 / 2, 3 / 4])
    assert np.isnan(result[3])
    assert np.nanmean(result) == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)


@pytest.mark.parametrize("y_true, y_pred, n_classes", [([0, 1], [0], 2), ([0, 3], [0, 1], 3),
                                                       ([0, -1], [0, 1], 3), ([], [], 2),
                                                       ([0.5, 1.0], [0, 1], 2)])
def test_rejects_bad_labels(y_true, y_pred, n_classes):
    with pytest.raises(ValueError):
        confusion_matrix(y_true, y_pred, n_classes)


@pytest.mark.parametrize("n_classes", [3, 25])
def test_plot_writes_a_png(tmp_path, n_classes):
    rng = np.random.default_rng(0)
    matrix = confusion_matrix(rng.integers(n_classes, size=200), rng.integers(n_classes, size=200),
                              n_classes)
    path = plot_confusion_matrix(matrix, [f"class {i}" for i in range(n_classes)],
                                 tmp_path / "plots" / "confusion.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 300 and height > 300


def test_plot_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b"], tmp_path / "c.png")
