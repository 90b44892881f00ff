"""Run a per-object stage again only when the object's cloud changed materially.

Classification, shape modelling and upsampling answer from an object's whole cloud; a standing
object's cloud hardly changes between frames, so its answer would not either. `ReusedStage`
keeps, per object key (the segmentation's id), the cloud the stage last ran on and its answer,
and runs the stage again when: the object is new, its frame changed, the stamps went backwards,
`rerun_period` passed, or at least `rerun_fraction` of the new cloud's points lie farther than
`rerun_distance` from the old cloud (the object moved, grew by accumulation, or is another one).
Otherwise it hands back the last answer and says so (`last_reused`), so a node can skip
publishing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np
from scipy.spatial import cKDTree

from gmm_perception.pipeline.configs import PreprocessConfig, ReuseConfig
from gmm_perception.pipeline.object_memory import MAX_OBJECTS, remember  # noqa: F401 - re-exported
from gmm_perception.pipeline.preprocess import ObjectStep, Preprocessor

TREE_POINTS = 2048  # of the cloud an answer came from, kept to compare later clouds against
PROBE_POINTS = 512  # of a new cloud, compared (the share of new points changes by ~2 % at 512)


@dataclass
class _Answer:
    tree: cKDTree
    stamp: float
    frame_id: str
    result: Any


class ReusedStage:
    """`stage(points)`, called as `(points, key, stamp, frame_id)` (a keyed ObjectStep stage)."""

    def __init__(self, stage: Callable[[np.ndarray], Any], config: ReuseConfig, seed: int = 0):
        self.stage, self.config = stage, config
        self._answers: dict[Hashable, _Answer] = {}
        self._rng = np.random.default_rng(seed)
        self.last_reused = False  # whether the last call handed back a kept answer
        self.runs = 0  # calls that ran the stage
        self.reuses = 0  # calls answered from a kept answer

    def __call__(self, points: np.ndarray, key: Hashable = None, stamp: float | None = None,
                 frame_id: str = "") -> Any:
        stamp = 0.0 if stamp is None else float(stamp)
        answer = self._answers.get(key)
        if answer is not None and not self._changed(answer, points, stamp, frame_id):
            remember(self._answers, key, answer)
            self.last_reused = True
            self.reuses += 1
            return answer.result
        self.last_reused = False
        result = self.stage(points)
        self.runs += 1
        remember(self._answers, key, _Answer(cKDTree(self._sample(points, TREE_POINTS)), stamp,
                                             frame_id, result))
        return result

    def new_fraction(self, key: Hashable, points: np.ndarray) -> float | None:
        """The share of `points` farther than rerun_distance from the cloud key's answer came
        from (None for an unknown key)."""
        answer = self._answers.get(key)
        return None if answer is None else self._new_fraction(answer, points)

    def _changed(self, answer: _Answer, points: np.ndarray, stamp: float, frame_id: str) -> bool:
        config = self.config
        if config.rerun_fraction <= 0 or frame_id != answer.frame_id or stamp < answer.stamp:
            return True
        if config.rerun_period > 0 and stamp - answer.stamp >= config.rerun_period:
            return True
        return self._new_fraction(answer, points) >= config.rerun_fraction

    def _new_fraction(self, answer: _Answer, points: np.ndarray) -> float:
        distances, _ = answer.tree.query(self._sample(points, PROBE_POINTS),
                                         distance_upper_bound=self.config.rerun_distance)
        return float(np.mean(~np.isfinite(distances)))

    def _sample(self, points: np.ndarray, count: int) -> np.ndarray:
        if len(points) <= count:
            return points
        return points[self._rng.choice(len(points), count, replace=False)]


def reused_step(configs: dict, stage: Callable[[np.ndarray], Any]) -> ObjectStep:
    """An object node's step around `stage` (its preprocessing, then `stage` run again for an
    object only when its cloud changed), from the node's configs: the nodes and the offline
    evaluator build it here, so both run a stage alike. The `ReusedStage` is the step's
    `stage`."""
    return ObjectStep(Preprocessor(configs[PreprocessConfig]),
                      ReusedStage(stage, configs[ReuseConfig]), keyed=True)
