"""Class evidence fused over a track: per object, a class posterior that settles as the robot
moves, with an "unknown" answer while it stays unsure.

A single partial view is often ambiguous (a plant seen from one side is a cabinet to GMCN); the
views of one object over a track are not. `ClassFusion` keeps, per object key (the
segmentation's id), fused log-probabilities L_t from the calibrated per-frame probabilities p_t
by one of two rules (`FUSION_RULES`):
* "product": L_t = forgetting * L_{t-1} + log p_t, normalised (L_t <- L_t - logsumexp L_t):
  forgetting 1 is the product of the frames' likelihoods (naive Bayes over views). Views of one
  object are not independent, so L_t is over-confident, the more so the more alike and the more
  frequent the frames (a robot standing still, a faster sensor);
* "mean": L_t = log of the frames' probabilities averaged with weights forgetting^(age):
  a frame that repeats an earlier one does not compound, so the fused confidence does not
  depend on the frame rate.
Smaller forgetting lets old frames fade (an id that changes object recovers). The fused scores
are softmax(L_t / fused_temperature), a second temperature fitted on validation tracks
(train/calibrate.py). The fused label is their top class, or `UNKNOWN` when its probability is
below `unknown_threshold`. A track starts anew when the object is new, went
unseen for `timeout` seconds (cloud stamps), or the stamps went backwards (a bag replayed from
its start); at most MAX_TRACKS tracks are kept, the least recently seen go first.

Only new evidence counts: a frame whose answer a `ReusedStage` handed back unchanged (the
object's cloud did not change) is not fused again (`FusingStage`), it only marks the object seen.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from gmm_perception.pipeline.configs import FUSION_RULES
from gmm_perception.pipeline.object_memory import MAX_OBJECTS, remember, still_current

MAX_TRACKS = MAX_OBJECTS  # tracks kept at most (object_memory)
# Probabilities are floored here before the log: one frame can weigh against a class by at most
# log(1e-9) ~ -21 nats, never rule it out for good.
MIN_PROBABILITY = 1e-9
UNKNOWN = "unknown"
UNKNOWN_ID = -1


@dataclass(frozen=True)
class FusedClass:
    class_id: int  # index into the class names; UNKNOWN_ID when the answer is "unknown"
    label: str  # the class name, or UNKNOWN
    scores: np.ndarray  # (num_classes,) fused posterior, sums to 1
    observations: int  # frames fused into it since the track (re)started
    confidence: float  # the top fused probability (what the threshold is compared with)


@dataclass
class ClassTrack:
    log_posterior: np.ndarray  # (num_classes,) normalised fused log-probabilities
    observations: int
    seen: float  # stamp (s) of the last frame of the object
    weight: float = 1.0  # the mean rule's sum of the frames' weights forgetting^(age)


class ClassFusion:
    """Fuses per-frame class probabilities per object key."""

    def __init__(self, class_names: Sequence[str], forgetting: float = 1.0,
                 timeout: float = 5.0, unknown_threshold: float = 0.0,
                 tracks: dict | None = None, fused_temperature: float = 1.0,
                 rule: str = "product"):
        if not 0.0 <= forgetting <= 1.0:
            raise ValueError(f"forgetting must be in [0, 1], got {forgetting}")
        if not fused_temperature > 0:
            raise ValueError(f"fused_temperature must be > 0, got {fused_temperature}")
        if rule not in FUSION_RULES:
            raise ValueError(f"rule must be one of {FUSION_RULES}, got {rule!r}")
        self.rule = rule
        self.fused_temperature = float(fused_temperature)
        self.class_names = list(class_names)
        self.forgetting, self.timeout = float(forgetting), float(timeout)
        self.unknown_threshold = float(unknown_threshold)
        self.tracks: dict[Hashable, ClassTrack] = {} if tracks is None else tracks
        self.observations = 0  # frames fused, over all tracks
        self.restarts = 0  # tracks dropped for a timeout or a stamp that went back

    def forget(self) -> None:
        """Drop every track."""
        self.tracks.clear()

    def update(self, key: Hashable, probabilities: np.ndarray,
               stamp: float | None = None) -> FusedClass:
        """Fuses one new frame's probabilities of object `key` seen at `stamp` (seconds; None:
        now) and returns the fused answer."""
        now = time.monotonic() if stamp is None else float(stamp)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (len(self.class_names),):
            raise ValueError(f"{probabilities.shape} probabilities for "
                             f"{len(self.class_names)} classes")
        evidence = np.log(np.maximum(probabilities, MIN_PROBABILITY))
        track = self._live(key, now)
        if track is None:
            track = ClassTrack(np.zeros(len(self.class_names)), 0, now)
            log_posterior = evidence
        elif self.rule == "mean":
            # mean_t = (f w_{t-1} mean_{t-1} + p_t) / w_t, w_t = f w_{t-1} + 1, in logs.
            faded = self.forgetting * track.weight
            log_posterior = np.logaddexp(np.log(faded) + track.log_posterior if faded > 0
                                         else -np.inf, evidence) - np.log(faded + 1.0)
            track.weight = faded + 1.0
        else:
            log_posterior = self.forgetting * track.log_posterior + evidence
        track.log_posterior = log_posterior - _logsumexp(log_posterior)
        track.observations += 1
        self.observations += 1
        self._keep(key, track, now)
        return self.answer(track)

    def seen(self, key: Hashable, stamp: float | None = None) -> FusedClass | None:
        """Object `key` seen at `stamp` without new evidence (its last answer was reused): the
        fused answer as it stands, or None when the object has no live track."""
        now = time.monotonic() if stamp is None else float(stamp)
        track = self._live(key, now)
        if track is None:
            return None
        self._keep(key, track, now)
        return self.answer(track)

    def answer(self, track: ClassTrack) -> FusedClass:
        scaled = track.log_posterior / self.fused_temperature
        scores = np.exp(scaled - scaled.max())
        scores /= scores.sum()
        best = int(np.argmax(scores))
        confidence = float(scores[best])
        if confidence < self.unknown_threshold:
            return FusedClass(UNKNOWN_ID, UNKNOWN, scores, track.observations, confidence)
        return FusedClass(best, self.class_names[best], scores, track.observations, confidence)

    def _live(self, key: Hashable, now: float) -> ClassTrack | None:
        """The track of `key`, unless it timed out or time went back (then it is dropped)."""
        track = self.tracks.get(key)
        if track is not None and not still_current(track.seen, now, self.timeout):
            self.tracks.pop(key)
            self.restarts += 1
            return None
        return track

    def _keep(self, key: Hashable, track: ClassTrack, now: float) -> None:
        track.seen = now
        remember(self.tracks, key, track)


class FusingStage:
    """A keyed classification stage (called as `(points, key, stamp, frame_id)`) around `stage`
    (a `ReusedStage` of the classifier, or the classifier itself): each answer gains `fused`, the
    object's fused class. An answer `stage` reused (its `last_reused`) is fused only when the
    object has no live track (a restarted track takes it once)."""

    def __init__(self, stage: Callable[..., Any], fusion: ClassFusion):
        self.stage, self.fusion = stage, fusion

    @property
    def last_reused(self) -> bool:
        return bool(getattr(self.stage, "last_reused", False))

    def __call__(self, points: np.ndarray, key: Hashable = None, stamp: float | None = None,
                 frame_id: str = "") -> Any:
        if getattr(self.stage, "last_reused", None) is None:
            result = self.stage(points)  # a plain stage: every call is a new observation
        else:
            result = self.stage(points, key, stamp, frame_id)
        fused = self.fusion.seen(key, stamp) if self.last_reused else None
        if fused is None:
            fused = self.fusion.update(key, result.scores, stamp)
        return replace(result, fused=fused)


def fuse_sequence(probabilities: np.ndarray, forgetting: float,
                  fused_temperature: float = 1.0, rule: str = "product") -> np.ndarray:
    """(T, C) fused posteriors after each of T frames of one object (the fusion rule without
    tracks: for measurements and tests)."""
    fusion = ClassFusion(range(probabilities.shape[1]), forgetting, timeout=np.inf,
                         fused_temperature=fused_temperature, rule=rule)
    return np.stack([fusion.update(0, p, float(t)).scores for t, p in enumerate(probabilities)])


def _logsumexp(values: np.ndarray) -> float:
    top = float(values.max())
    return top + float(np.log(np.exp(values - top).sum()))
