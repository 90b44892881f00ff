"""ClassFusion: a track's class posterior from its frames (closed-form products of the frames'
probabilities, with forgetting), "unknown" below the threshold, tracks restarted when time goes
back or the object was unseen too long, a bounded table, and reused answers not fused twice."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from gmm_perception.pipeline.configs import ReuseConfig
from gmm_perception.pipeline.fuse import MAX_TRACKS, UNKNOWN, UNKNOWN_ID, ClassFusion, \
    FusedClass, FusingStage, fuse_sequence
from gmm_perception.pipeline.reuse import ReusedStage

NAMES = ["a", "b", "c"]
P1 = np.array([0.6, 0.3, 0.1])
P2 = np.array([0.2, 0.5, 0.3])


def test_two_frames_give_the_normalised_product_of_their_probabilities():
    fusion = ClassFusion(NAMES, forgetting=1.0, timeout=10.0)
    first = fusion.update(7, P1, 0.0)
    assert first.label == "a" and first.observations == 1
    np.testing.assert_allclose(first.scores, P1)
    fused = fusion.update(7, P2, 0.1)
    # 0.6*0.2, 0.3*0.5, 0.1*0.3 = 0.12, 0.15, 0.03 over 0.30: frame 2 alone says b, both say b.
    np.testing.assert_allclose(fused.scores, [0.4, 0.5, 0.1])
    assert (fused.class_id, fused.label, fused.observations) == (1, "b", 2)
    assert fused.confidence == pytest.approx(0.5)


def test_forgetting_weighs_the_older_frame_less():
    fusion = ClassFusion(NAMES, forgetting=0.5, timeout=10.0)
    fusion.update(1, P1, 0.0)
    fused = fusion.update(1, P2, 1.0)
    # L = 0.5 log p1 + log p2: sqrt(p1) * p2 = 0.15492, 0.27386, 0.09487 over 0.52365.
    np.testing.assert_allclose(fused.scores, [0.29585, 0.52298, 0.18117], atol=1e-5)
    # Forgetting 0 keeps the last frame only.
    np.testing.assert_allclose(fuse_sequence(np.stack([P1, P2]), 0.0)[-1], P2)
    # Three frames with forgetting f: exponents f^2, f, 1.
    p3 = np.array([0.1, 0.1, 0.8])
    expected = P1 ** 0.25 * P2 ** 0.5 * p3
    np.testing.assert_allclose(fuse_sequence(np.stack([P1, P2, p3]), 0.5)[-1],
                               expected / expected.sum())


def test_the_mean_rule_averages_the_frames_with_fading_weights_and_ignores_repetition():
    """mean_t = (f w mean_{t-1} + p_t) / (f w + 1), w the faded weight sum: closed forms."""
    fusion = ClassFusion(NAMES, forgetting=1.0, timeout=10.0, rule="mean")
    fusion.update(1, P1, 0.0)
    np.testing.assert_allclose(fusion.update(1, P2, 0.1).scores, (P1 + P2) / 2)
    np.testing.assert_allclose(fusion.update(1, P2, 0.2).scores, (P1 + 2 * P2) / 3)
    # Forgetting 0.5: weights 0.25, 0.5, 1 for frames 1, 2, 3.
    faded = fuse_sequence(np.stack([P1, P2, P1]), 0.5, rule="mean")[-1]
    np.testing.assert_allclose(faded, (0.25 * P1 + 0.5 * P2 + P1) / 1.75)
    # Ten copies of one frame: the product grows certain, the mean stays at the frame's.
    repeated = np.stack([P1] * 10)
    assert fuse_sequence(repeated, 1.0)[-1][0] > 0.999
    np.testing.assert_allclose(fuse_sequence(repeated, 1.0, rule="mean")[-1], P1)
    with pytest.raises(ValueError, match="rule must be one of"):
        ClassFusion(NAMES, rule="median")


def test_below_the_threshold_the_fused_answer_is_unknown():
    fusion = ClassFusion(NAMES, forgetting=1.0, timeout=10.0, unknown_threshold=0.55)
    assert fusion.update(3, P1, 0.0).label == "a"  # 0.6 >= 0.55
    fused = fusion.update(3, P2, 0.1)  # [0.4, 0.5, 0.1]: 0.5 < 0.55
    assert (fused.class_id, fused.label) == (UNKNOWN_ID, UNKNOWN)
    np.testing.assert_allclose(fused.scores, [0.4, 0.5, 0.1])
    assert fused.confidence == pytest.approx(0.5)


def test_a_track_restarts_when_time_goes_back_or_after_the_timeout():
    fusion = ClassFusion(NAMES, forgetting=1.0, timeout=2.0)
    fusion.update(1, P1, 10.0)
    restarted = fusion.update(1, P2, 9.0)  # a bag replayed from its start
    assert restarted.observations == 1 and fusion.restarts == 1
    np.testing.assert_allclose(restarted.scores, P2)
    assert fusion.update(1, P1, 11.0).observations == 2  # exactly at the timeout: kept
    assert fusion.update(1, P1, 13.5).observations == 1  # unseen 2.5 s > 2 s
    assert fusion.restarts == 2


def test_seen_without_evidence_keeps_the_posterior_and_the_track_alive():
    fusion = ClassFusion(NAMES, forgetting=1.0, timeout=2.0)
    assert fusion.seen(5, 0.0) is None  # nothing known of the object
    fusion.update(5, P1, 0.0)
    for stamp in (1.5, 3.0, 4.5):  # each within the timeout of the last sighting
        kept = fusion.seen(5, stamp)
        assert kept.observations == 1
        np.testing.assert_allclose(kept.scores, P1)
    assert fusion.update(5, P2, 6.0).observations == 2


def test_the_table_is_bounded_least_recently_seen_first():
    fusion = ClassFusion(NAMES, timeout=1e6)
    for key in range(MAX_TRACKS):
        fusion.update(key, P1, float(key))
    fusion.update(0, P2, float(MAX_TRACKS))  # key 0 seen again: now the most recent
    for key in range(MAX_TRACKS, MAX_TRACKS + 10):
        fusion.update(key, P1, float(key + 1))
    assert len(fusion.tracks) == MAX_TRACKS
    assert 0 in fusion.tracks and all(k not in fusion.tracks for k in range(1, 11))


def test_a_zero_probability_never_rules_a_class_out_for_good():
    fused = fuse_sequence(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), 1.0)
    assert np.all(np.isfinite(fused)) and fused[-1].argmax() == 1


@dataclass(frozen=True)
class Answer:
    scores: np.ndarray
    fused: FusedClass | None = None


def grid(offset: float = 0.0) -> np.ndarray:
    x, y = np.meshgrid(np.arange(20) * 0.1, np.arange(20) * 0.1)
    return np.stack([x.ravel() + offset, y.ravel(), np.zeros(400)], axis=1)


def test_a_reused_answer_is_not_fused_again():
    runs = []

    def stage(points):
        runs.append(len(runs))
        return Answer(P1 if len(runs) % 2 else P2)
    reused = ReusedStage(stage, ReuseConfig(rerun_fraction=0.2, rerun_distance=0.03,
                                            rerun_period=0.0))
    fusing = FusingStage(reused, ClassFusion(NAMES, forgetting=1.0, timeout=10.0))
    first = fusing(grid(), 4, 0.0, "map")
    assert first.fused.observations == 1 and not fusing.last_reused
    for k in range(1, 5):  # the object stands still: the answer is reused, not new evidence
        again = fusing(grid(0.001 * k), 4, 0.1 * k, "map")
        assert fusing.last_reused and again.fused.observations == 1
        np.testing.assert_allclose(again.fused.scores, P1)
    moved = fusing(grid(0.05), 4, 0.6, "map")  # every point new: the stage runs again
    assert not fusing.last_reused and moved.fused.observations == 2 and len(runs) == 2
    np.testing.assert_allclose(moved.fused.scores, [0.4, 0.5, 0.1])
    assert reused(grid(0.05), 4, 0.7, "map").fused is None  # kept answers stay unfused


def test_a_reused_answer_starts_a_track_that_timed_out():
    reused = ReusedStage(lambda points: Answer(P1), ReuseConfig(rerun_period=0.0))
    fusing = FusingStage(reused, ClassFusion(NAMES, timeout=1.0))
    fusing(grid(), 1, 0.0, "map")
    later = fusing(grid(), 1, 5.0, "map")  # reused, but the fused track timed out: counted once
    assert fusing.last_reused and later.fused.observations == 1


def test_a_plain_stage_fuses_every_call():
    fusing = FusingStage(lambda points: Answer(P1), ClassFusion(NAMES, timeout=10.0))
    assert [fusing(grid(), 2, float(t)).fused.observations for t in range(3)] == [1, 2, 3]


def test_the_fused_temperature_flattens_the_fused_scores_in_closed_form():
    frames = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    L = np.log(frames[0]) + np.log(frames[1])
    L -= np.log(np.exp(L).sum())
    for t in (1.0, 2.5):
        fusion = ClassFusion(["a", "b", "c"], forgetting=1.0, fused_temperature=t)
        fusion.update(1, frames[0], 0.0)
        answer = fusion.update(1, frames[1], 0.1)
        expected = np.exp(L / t) / np.exp(L / t).sum()
        np.testing.assert_allclose(answer.scores, expected, rtol=1e-12)
        assert answer.confidence == pytest.approx(expected.max())
    with pytest.raises(ValueError, match="fused_temperature"):
        ClassFusion(["a"], fused_temperature=0.0)


def test_calibration_fits_a_fused_temperature_that_undoes_correlated_views():
    """Ten identical views per track (correlated evidence), right in 70 % of the tracks: the
    product of likelihoods p^t grows certain step by step, and its T_f (fitted over all steps)
    is several times the temperature the view alone takes; the mean of identical views is the
    view at every step, and takes exactly the view's own temperature."""
    from gmm_perception.metrics.calibration import expected_calibration_error
    from gmm_perception.train.calibrate import fused_temperature, fusion_measurement

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    right = rng.random(200) < 0.7
    shown = np.where(right, labels, (labels + 1) % 3)
    view = np.full((200, 3), 0.15)
    view[np.arange(200), shown] = 0.7
    tracks = np.repeat(view[:, None, :], 10, axis=1)  # (S, T, C)
    t = fused_temperature(tracks, labels, "product, forgetting 1")
    alone = fused_temperature(tracks[:, :1], labels, "product, forgetting 1")  # one view
    assert t > 3 * alone
    raw = np.stack([fuse_sequence(track, 1.0) for track in tracks]).reshape(-1, 3)
    measurement = fusion_measurement(tracks, labels)
    product, mean = measurement["product, forgetting 1"], measurement["mean, forgetting 1"]
    assert product["fused_temperature"] == t
    assert product["ece"] < 0.5 * expected_calibration_error(raw, np.repeat(labels, 10))
    assert product["accuracy_all_steps"] == pytest.approx(right.mean())  # argmax unchanged
    assert mean["fused_temperature"] == pytest.approx(alone, rel=0.01)
    # One T_f cannot undo a product that sharpens with every step: the mean scores better.
    assert mean["nll"] < product["nll"]
    assert measurement["none (each frame alone)"]["fused_temperature"] == 1.0
