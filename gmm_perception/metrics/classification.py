"""Classification metrics: overall and per-class accuracy, confusion matrix and its PNG plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Above this many classes the per-cell counts would be unreadable, so only colours are drawn.
_MAX_ANNOTATED_CLASSES = 20


def _as_labels(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None
               ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    true = np.asarray(y_true).ravel()
    pred = np.asarray(y_pred).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} and {pred.size}")
    if true.size == 0:
        raise ValueError("no labels")
    for name, labels in (("y_true", true), ("y_pred", pred)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}")
        if labels.min() < 0 or (n_classes is not None and labels.max() >= n_classes):
            raise ValueError(f"{name} holds ids outside [0, {n_classes})")
    return true.astype(np.intp), pred.astype(np.intp)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of correct predictions (overall accuracy, "OA")."""
    true, pred = _as_labels(y_true, y_pred)
    return float(np.mean(true == pred))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    true, pred = _as_labels(y_true, y_pred, n_classes)
    counts = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.float64]:
    """Recall of each class (diagonal / row sum); NaN for classes absent from y_true.

    ``np.nanmean`` of it is the mean class accuracy ("mAcc") reported next to OA on ModelNet40.
    """
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def plot_confusion_matrix(matrix: ArrayLike, class_names: list[str], path: str | Path) -> Path:
    """Write the confusion matrix as a PNG: colour = row-normalised fraction, text = counts.

    Row normalisation keeps rare classes visible; counts are printed for up to 20 classes.
    Uses matplotlib's object API with the Agg canvas (no pyplot state, no display, thread-safe).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"matrix must be ({n}, {n}) for {n} class names, got {counts.shape}")
    row_sums = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)

    size = max(4.0, 0.35 * n + 2.0)
    figure = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    axes.set_xticks(range(n), class_names, rotation=90)
    axes.set_yticks(range(n), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if n <= _MAX_ANNOTATED_CLASSES:
        for row in range(n):
            for column in range(n):
                axes.text(column, row, str(counts[row, column]), ha="center", va="center",
                          color="white" if fractions[row, column] > 0.5 else "black", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def labels_by_name(names, class_names: list[str]) -> np.ndarray:
    """Each name's index in `class_names` (a classifier's classes), -1 where it has none."""
    return np.array([class_names.index(c) if c in class_names else -1 for c in names],
                    dtype=np.int64)
