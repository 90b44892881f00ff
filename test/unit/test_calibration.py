"""Calibration: the temperature fit recovers a known temperature, ECE against a hand-computed
example, the "unknown" threshold for a stated precision, the reliability diagram, and the
classification stage's temperature (from its config or the checkpoint's calibration file)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gmm_perception.metrics.calibration import answered_at, expected_calibration_error, \
    fit_temperature, log_softmax, negative_log_likelihood, plot_reliability_diagram, \
    reliability_bins, scaled_probabilities, unknown_threshold
from gmm_perception.pipeline.classify import Classifier, calibration_path, load_calibration
from gmm_perception.pipeline.configs import ClassifyConfig


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_the_fit_recovers_a_known_temperature_within_5_percent(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20_000, 10))
    p = scaled_probabilities(logits, true_temperature)
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)  # drawn from softmax(z / T)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert negative_log_likelihood(logits, labels, fitted) <= negative_log_likelihood(
        logits, labels, 1.0)


def test_ece_of_a_hand_computed_example():
    # Top probabilities 0.95 (right), 0.95 (wrong), 0.65 (right), 0.55 (right); 15 bins put them
    # in (14/15, 1], (9/15, 10/15], (8/15, 9/15]:
    # 2/4 * |0.5 - 0.95| + 1/4 * |1 - 0.65| + 1/4 * |1 - 0.55| = 0.225 + 0.0875 + 0.1125.
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.425)
    table = reliability_bins(probabilities, labels)
    assert table["count"].tolist() == [0] * 8 + [1, 1] + [0] * 4 + [2]
    assert table["accuracy"][14] == 0.5 and table["confidence"][14] == pytest.approx(0.95)
    # Perfectly calibrated by construction: every sample in a bin of its own accuracy.
    assert expected_calibration_error(np.array([[1.0, 0.0]] * 3), np.zeros(3, int)) == 0.0


def test_the_unknown_threshold_is_the_lowest_that_reaches_the_precision():
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, False, True, False])
    # Accuracy of the answered at each cut: 1, 1, 2/3, 3/4, 3/5.
    assert unknown_threshold(confidence, correct, 0.75) == {
        "threshold": 0.6, "coverage": 0.8, "accuracy": 0.75, "precision": 0.75}
    assert unknown_threshold(confidence, correct, 1.0)["threshold"] == 0.8
    assert unknown_threshold(confidence, correct, 0.6)["threshold"] == 0.0  # all answered
    # A cut cannot split tied confidences: no threshold reaches 1.0 here.
    tied = unknown_threshold(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]), 1.0)
    assert tied["threshold"] == 1.0 and tied["coverage"] == 0.0
    assert answered_at(confidence, correct, 0.75) == {"coverage": 0.4, "accuracy": 1.0}


def test_the_reliability_diagram_is_a_small_png(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(500, 5))
    labels = rng.integers(5, size=500)
    path = plot_reliability_diagram({"before": (scaled_probabilities(logits, 1.0), labels),
                                     "after": (scaled_probabilities(logits, 3.0), labels)},
                                    tmp_path / "r.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 200_000


NAMES = ["a", "b", "c"]


def cloud(n=512):
    rng = np.random.default_rng(3)
    return (rng.normal(size=(n, 3)) * [0.3, 0.2, 0.4]).astype(np.float32)


def stage(gmcn, **values):
    return Classifier(ClassifyConfig(classification_points=512, **values), gmcn, NAMES,
                      torch.device("cpu"))


def test_the_stage_scales_its_logits_by_the_configured_temperature(gmcn, tmp_path):
    checkpoint = str(tmp_path / "model.pt")  # no calibration file beside it
    raw = stage(gmcn, checkpoint=checkpoint)
    assert raw.temperature == 1.0 and raw.calibration is None and raw.unknown_threshold == 0.0
    scaled = stage(gmcn, checkpoint=checkpoint, temperature=4.0)
    a, b = raw(cloud()), scaled(cloud())
    np.testing.assert_allclose(b.scores, np.exp(log_softmax(np.log(a.scores), 4.0)), atol=1e-9)
    assert a.class_id == b.class_id and b.scores.max() < a.scores.max()


def test_the_stage_reads_the_checkpoints_calibration_file(gmcn, tmp_path):
    checkpoint = tmp_path / "model.pt"
    assert calibration_path(checkpoint) == tmp_path / "model.calibration.json"
    calibration_path(checkpoint).write_text(json.dumps({"temperature": 2.0,
                                                        "fused_temperature": 3.0,
                                                        "unknown_threshold": 0.7}))
    classifier = stage(gmcn, checkpoint=str(checkpoint))
    assert (classifier.temperature, classifier.unknown_threshold) == (2.0, 0.7)
    assert classifier.fusion().unknown_threshold == 0.7
    assert classifier.fusion().fused_temperature == 3.0  # fitted with that threshold
    # Values in the config win over the file's.
    own = stage(gmcn, checkpoint=str(checkpoint), temperature=1.5, unknown_threshold=0.0)
    assert (own.temperature, own.unknown_threshold) == (1.5, 0.0)
    calibration_path(checkpoint).write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ValueError, match="temperature and fused_temperature must be > 0"):
        load_calibration(checkpoint)
    calibration_path(checkpoint).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        stage(gmcn, checkpoint=str(checkpoint))


def test_the_fusion_forgetting_comes_from_the_config_else_the_calibration_file(gmcn, tmp_path):
    checkpoint = tmp_path / "model.pt"
    assert stage(gmcn, checkpoint=str(checkpoint)).fusion_forgetting == 0.9  # no file
    calibration_path(checkpoint).write_text(json.dumps({
        "temperature": 1.0, "fused_temperature": 2.0, "fusion_rule": "forgetting 0.7",
        "fusion_forgetting": 0.7}))
    classifier = stage(gmcn, checkpoint=str(checkpoint))
    assert classifier.fusion_forgetting == 0.7 and classifier.fusion().forgetting == 0.7
    assert stage(gmcn, checkpoint=str(checkpoint), fusion_forgetting=1.0).fusion().forgetting \
        == 1.0
    # A file written before fusion_forgetting was: the rule names it.
    calibration_path(checkpoint).write_text(json.dumps({"temperature": 1.0,
                                                        "fusion_rule": "forgetting 0.9"}))
    assert load_calibration(checkpoint)["fusion_forgetting"] == 0.9
    assert load_calibration(checkpoint)["fusion_rule"] == "product"
    calibration_path(checkpoint).write_text(json.dumps({"temperature": 1.0,
                                                        "fusion_forgetting": 1.5}))
    with pytest.raises(ValueError, match="fusion_forgetting in"):
        load_calibration(checkpoint)
    # The rule: the file's, unless the config names one; an unknown rule is refused.
    calibration_path(checkpoint).write_text(json.dumps({
        "temperature": 1.0, "fusion_rule": "mean", "fusion_forgetting": 1.0}))
    assert stage(gmcn, checkpoint=str(checkpoint)).fusion().rule == "mean"
    assert stage(gmcn, checkpoint=str(checkpoint), fusion_rule="product").fusion().rule \
        == "product"
    calibration_path(checkpoint).write_text(json.dumps({"temperature": 1.0,
                                                        "fusion_rule": "median"}))
    with pytest.raises(ValueError, match="fusion_rule one of"):
        load_calibration(checkpoint)


def test_the_calibration_chooses_the_stage_rule_with_the_lowest_fused_nll():
    from gmm_perception.train.calibrate import NO_FUSION, choose_rule, parse_rule, rule_name

    def rule(nll, accuracy=0.8):
        return {"accuracy_all_steps": accuracy, "accuracy_final": accuracy, "nll": nll}
    measurement = {rule_name("product", 1.0): rule(0.7, 0.9), rule_name("product", 0.7): rule(0.6),
                   rule_name("mean", 1.0): rule(0.5), NO_FUSION: rule(0.1)}
    assert choose_rule(measurement) == "mean, forgetting 1"  # never 'none', whatever its NLL
    assert parse_rule(choose_rule(measurement)) == ("mean", 1.0)
    measurement[rule_name("mean", 0.9)] = rule(0.5, 0.85)  # a tie: the more accurate
    assert choose_rule(measurement) == "mean, forgetting 0.9"
