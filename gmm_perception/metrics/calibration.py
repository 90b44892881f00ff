"""Calibration of class probabilities: temperature scaling, expected calibration error, the
reliability diagram, and the confidence threshold below which a classifier answers "unknown".

Temperature scaling (Guo et al., ICML 2017): probabilities softmax(z / T) from the logits z (or
the log-probabilities, which differ from them by a per-sample constant); one T > 0 is fitted by
minimising the negative log-likelihood of held-out labels. It changes confidences, never the
winning class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

ECE_BINS = 15  # equal-width confidence bins, as Guo et al.
# The range searched for T (log-spaced search): far beyond what a trained classifier needs.
TEMPERATURE_BOUNDS = (0.02, 50.0)


def log_softmax(logits: ArrayLike, temperature: float = 1.0) -> NDArray[np.float64]:
    """log softmax(logits / temperature) over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def scaled_probabilities(logits: ArrayLike, temperature: float) -> NDArray[np.float64]:
    """softmax(logits / temperature): the calibrated probabilities."""
    return np.exp(log_softmax(logits, temperature))


def negative_log_likelihood(logits: ArrayLike, labels: ArrayLike,
                            temperature: float = 1.0) -> float:
    """Mean -log p(label) of softmax(logits / temperature)."""
    labels = np.asarray(labels, dtype=np.intp)
    logp = log_softmax(logits, temperature)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def fit_temperature(logits: ArrayLike, labels: ArrayLike,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T in `bounds` minimising the NLL of softmax(logits / T) on (logits, labels): a 1-D
    bounded search over log T (the NLL is smooth and has one minimum in T for fixed logits)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.intp)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ValueError(f"need (N, C) logits and N labels, got {logits.shape} and "
                         f"{labels.shape}")
    low, high = np.log(bounds)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels,
                                                                   np.exp(log_t)),
                             bounds=(low, high), method="bounded",
                             options={"xatol": 1e-5})
    return float(np.exp(result.x))


def reliability_bins(probabilities: ArrayLike, labels: ArrayLike, bins: int = ECE_BINS
                     ) -> dict[str, NDArray]:
    """Per equal-width confidence bin ((k/bins, (k+1)/bins], the first closed at 0): the
    samples, their mean confidence and their accuracy (NaN for an empty bin). Confidence is the
    top probability, correct means the top class is the label."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.intp)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(np.intp) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / count
        mean_accuracy = np.bincount(index, correct.astype(float), bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count,
            "confidence": mean_confidence, "accuracy": mean_accuracy}


def expected_calibration_error(probabilities: ArrayLike, labels: ArrayLike,
                               bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width confidence bins of (bin share) * |accuracy - confidence|."""
    table = reliability_bins(probabilities, labels, bins)
    used = table["count"] > 0
    share = table["count"][used] / table["count"].sum()
    return float(np.sum(share * np.abs(table["accuracy"][used] - table["confidence"][used])))


def unknown_threshold(confidence: ArrayLike, correct: ArrayLike, precision: float
                      ) -> dict[str, float]:
    """The lowest confidence threshold t such that the answers with confidence >= t are right at
    least `precision` of the time (t = 0 when all answers are; 1 when no threshold reaches it),
    with the coverage (share answered) and the accuracy of the answered at t."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    answered = np.arange(1, len(order) + 1)
    ok = hits / answered >= precision
    # A cut can only fall between distinct confidences: answer all ties of the cut or none.
    last_of_tie = np.r_[confidence[order][1:] != confidence[order][:-1], True]
    ok &= last_of_tie
    if not ok.any():
        return {"threshold": 1.0, "coverage": float(np.mean(confidence >= 1.0)),
                "accuracy": float("nan"), "precision": precision}
    k = int(np.flatnonzero(ok)[-1])
    threshold = 0.0 if k == len(order) - 1 else float(confidence[order][k])
    return {"threshold": threshold, **answered_at(confidence, correct, threshold),
            "precision": precision}


def answered_at(confidence: ArrayLike, correct: ArrayLike, threshold: float) -> dict[str, float]:
    """Coverage (share with confidence >= threshold) and accuracy of those answered."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    answered = confidence >= threshold
    return {"coverage": float(answered.mean()) if len(answered) else float("nan"),
            "accuracy": float(correct[answered].mean()) if answered.any() else float("nan")}


def plot_reliability_diagram(curves: dict[str, tuple[ArrayLike, ArrayLike]], path: str | Path,
                             title: str = "", bins: int = ECE_BINS) -> Path:
    """A PNG: per curve (name -> (probabilities (N, C), labels (N,))) the accuracy of each
    confidence bin against its mean confidence (the diagonal is perfect calibration), its ECE in
    the legend, and below it the share of samples per bin. Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6, 5.2))
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    width = 1.0 / bins
    for k, (name, (probabilities, labels)) in enumerate(curves.items()):
        table = reliability_bins(probabilities, labels, bins)
        ece = expected_calibration_error(probabilities, labels, bins)
        used = table["count"] > 0
        top.plot(table["confidence"][used], table["accuracy"][used], marker="o", markersize=3,
                 linewidth=1.2, label=f"{name} (ECE {ece:.3f})")
        share = table["count"] / max(table["count"].sum(), 1)
        offset = (k + 0.5) / len(curves) - 0.5
        bottom.bar(table["edges"][:-1] + width * (0.5 + offset * 0.9), share,
                   width=width * 0.9 / len(curves), label=name)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy of the bin")
    top.legend(fontsize=7, loc="upper left")
    if title:
        top.set_title(title, fontsize=8)
    bottom.set(xlabel=f"confidence (top probability, {bins} bins)", ylabel="share")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=80)
    return path
