"""ReusedStage: a per-object stage runs again only when the object's cloud changed materially
(closed-form shares of new points), its frame changed, time went back or the period passed."""
from __future__ import annotations

import numpy as np
import pytest

from gmm_perception.pipeline.configs import ReuseConfig
from gmm_perception.pipeline.reuse import MAX_OBJECTS, ReusedStage


def grid(offset: float = 0.0) -> np.ndarray:
    """400 points 0.1 m apart on a 20 x 20 plane, shifted along x by `offset`."""
    x, y = np.meshgrid(np.arange(20) * 0.1, np.arange(20) * 0.1)
    return np.stack([x.ravel() + offset, y.ravel(), np.zeros(400)], axis=1)


def counting_stage():
    calls = []

    def stage(points):
        calls.append(len(points))
        return f"answer {len(calls)}"
    return stage, calls


def test_a_standing_object_is_answered_once_and_a_moved_one_again():
    stage, calls = counting_stage()
    reused = ReusedStage(stage, ReuseConfig(rerun_fraction=0.2, rerun_distance=0.03,
                                            rerun_period=0.0))
    assert reused(grid(), 1, 0.0, "map") == "answer 1" and not reused.last_reused
    # The same object 1 cm further (less than rerun_distance): the answer is kept.
    assert reused(grid(0.01), 1, 0.1, "map") == "answer 1" and reused.last_reused
    # Moved 5 cm (half-way between grid points): every point is new.
    assert reused.new_fraction(1, grid(0.05)) == pytest.approx(1.0)
    assert reused(grid(0.05), 1, 0.2, "map") == "answer 2" and not reused.last_reused
    assert (reused.runs, reused.reuses) == (2, 1) and calls == [400, 400]


def test_the_share_of_new_points_decides():
    stage, _ = counting_stage()
    reused = ReusedStage(stage, ReuseConfig(rerun_fraction=0.2, rerun_distance=0.03,
                                            rerun_period=0.0))
    reused(grid(), 7, 0.0, "map")
    far = np.array([[10.0, 10.0, 10.0]])
    # 400 old points and 80 new ones far away: 80 / 480 = 1/6 new, below 0.2.
    grown = np.concatenate([grid(), np.repeat(far, 80, axis=0) + np.arange(80)[:, None]])
    assert reused.new_fraction(7, grown) == pytest.approx(80 / 480, abs=0.04)
    reused(grown, 7, 0.1, "map")
    assert reused.last_reused
    # 400 old and 200 new: 1/3 new, above 0.2.
    grown = np.concatenate([grid(), np.repeat(far, 200, axis=0) + np.arange(200)[:, None]])
    reused(grown, 7, 0.2, "map")
    assert not reused.last_reused
    assert reused.new_fraction(99, grid()) is None  # an object never answered


@pytest.mark.parametrize("stamp, frame_id, key", [
    (5.0, "map", 1),    # the period (3 s) passed
    (0.5, "map", 1),    # time went back (a replayed bag)
    (1.1, "odom", 1),   # another frame
    (1.1, "map", 2),    # another object
])
def test_every_reason_to_run_again(stamp, frame_id, key):
    stage, _ = counting_stage()
    reused = ReusedStage(stage, ReuseConfig(rerun_period=3.0))
    reused(grid(), 1, 1.0, "map")
    reused(grid(), 1, 1.05, "map")
    assert reused.last_reused
    reused(grid(), key, stamp, frame_id)
    assert not reused.last_reused


def test_fraction_zero_runs_every_frame_and_kept_answers_stay_bounded():
    stage, calls = counting_stage()
    every = ReusedStage(stage, ReuseConfig(rerun_fraction=0.0))
    for frame in range(3):
        every(grid(), 1, frame * 0.1, "map")
    assert len(calls) == 3 and every.reuses == 0
    bounded = ReusedStage(stage, ReuseConfig())
    for key in range(MAX_OBJECTS + 5):
        bounded(grid(), key, 0.0, "map")
    assert len(bounded._answers) == MAX_OBJECTS and 0 not in bounded._answers
