"""Scene metrics against hand-computed values: matching, ADD-S / ADD, success and recall."""
from __future__ import annotations

import numpy as np
import pytest

from gmm_perception.evaluation.records import Detection, EvaluationRun, FrameRecord, TruthObject
from gmm_perception.evaluation.scene_metrics import scene_metrics
from gmm_perception.geometry.transforms import make_transform

# A 1 x 1 x 1 m cube's 8 corners: diameter sqrt(3), success threshold 0.1 sqrt(3) = 0.173 m.
CUBE = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=float)
ROD = np.array([[0, 0, z] for z in np.linspace(0, 2, 9)], dtype=float)  # 2 m long, diameter 2


def detection(object_id, model, T, fitness=1.0):
    return Detection(object_id, model, T, fitness, 0.0, 10.0)


def run_with(frames, truth):
    return EvaluationRun("offline", "bag", "world", frames=frames, truth=truth)


def test_exact_poses_score_zero_error_and_full_recall():
    cube_pose, rod_pose = make_transform(np.eye(3), [5, 0, 0]), make_transform(np.eye(3), [0, 5, 0])
    truth = [TruthObject("cube", cube_pose, CUBE), TruthObject("rod", rod_pose, ROD)]
    frames = [FrameRecord(i, i, detections=[detection(1, "cube", cube_pose),
                                            detection(2, "rod", rod_pose)]) for i in range(3)]
    metrics, rows = scene_metrics(run_with(frames, truth), {"cube": CUBE, "rod": ROD})
    assert len(rows) == 6 and all(row.success for row in rows)
    assert metrics["registration"]["recall"] == 1.0
    assert metrics["registration"]["add_s_m"]["max"] == pytest.approx(0.0)
    assert metrics["registration"]["rotation_error_deg"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["detection"]["precision"] == metrics["detection"]["recall"] == 1.0


def test_a_shift_gives_closed_form_add_and_add_s():
    truth = [TruthObject("cube", np.eye(4), CUBE)]
    shifted = make_transform(np.eye(3), [0.1, 0, 0])
    frames = [FrameRecord(0, 0, detections=[detection(1, "cube", shifted)])]
    metrics, rows = scene_metrics(run_with(frames, truth), {"cube": CUBE})
    # ADD: every corner moved 0.1 m. ADD-S: each true corner's nearest shifted corner is 0.1 m.
    assert rows[0].add == pytest.approx(0.1) and rows[0].rmse == pytest.approx(0.1)
    assert rows[0].add_s == pytest.approx(0.1)
    assert rows[0].translation_error == pytest.approx(0.1)
    assert rows[0].success  # 0.1 < 0.173
    frames[0].detections[0] = detection(1, "cube", make_transform(np.eye(3), [0.2, 0, 0]))
    _, rows = scene_metrics(run_with(frames, truth), {"cube": CUBE})
    assert not rows[0].success  # 0.2 > 0.173


def test_symmetric_turn_counts_for_add_s_but_not_add():
    # The cube turned by 90 degrees about its own vertical axis lands on itself.
    centre = CUBE.mean(axis=0)
    turn = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    T = make_transform(turn, centre - turn @ centre)
    truth = [TruthObject("cube", np.eye(4), CUBE)]
    _, rows = scene_metrics(run_with([FrameRecord(0, 0, detections=[detection(1, "cube", T)])],
                                     truth), {"cube": CUBE})
    assert rows[0].add_s == pytest.approx(0.0, abs=1e-12)
    assert rows[0].add > 0.5 and rows[0].rotation_error_deg == pytest.approx(90.0)
    # RMSE of the corner displacements, computed directly.
    moved = CUBE @ turn.T + (centre - turn @ centre)
    assert rows[0].rmse == pytest.approx(np.sqrt(np.mean(np.sum((moved - CUBE) ** 2, axis=1))))
    assert rows[0].success


def test_wrong_model_far_detection_and_missing_frames():
    truth = [TruthObject("cube", np.eye(4), CUBE), TruthObject("rod", make_transform(
        np.eye(3), [10, 0, 0]), ROD)]
    frames = [
        # The rod model placed with its centre on the cube's: the wrong model in the right place.
        FrameRecord(0, 0, detections=[detection(1, "rod", make_transform(np.eye(3),
                                                                          [0.5, 0.5, -0.5])),
                                      detection(2, "cube", make_transform(np.eye(3), [50, 0, 0]))]),
        FrameRecord(1, 1, status="unknown_frame"),
        FrameRecord(2, 2, status="no_objects"),
    ]
    metrics, rows = scene_metrics(run_with(frames, truth), {"cube": CUBE, "rod": ROD})
    assert len(rows) == 1 and rows[0].truth == "cube" and rows[0].model == "rod"
    assert not rows[0].success and np.isnan(rows[0].add)
    assert metrics["frames"]["evaluated"] == 2  # unknown_frame is not evaluated
    assert metrics["detection"]["matched"] == 1 and metrics["detection"]["detections"] == 2
    assert metrics["detection"]["recall"] == pytest.approx(1 / 4)  # 2 objects x 2 frames
    assert metrics["registration"]["recall"] == 0.0
    assert metrics["registration"]["model_accuracy"] == 0.0
    assert metrics["per_object"]["rod"]["frames_matched"] == 0


def test_truth_without_a_model_is_listed_not_scored():
    truth = [TruthObject("ghost", np.eye(4), None)]
    metrics, rows = scene_metrics(run_with([FrameRecord(0, 0)], truth), {})
    assert rows == [] and metrics["truth_without_model"] == ["ghost"]
    assert metrics["registration"]["recall"] == 0.0


def test_tracked_share_and_time_per_object_by_mode():
    pose = make_transform(np.eye(3), [5, 0, 0])
    truth = [TruthObject("cube", pose, CUBE)]
    modes = ["registered", "tracked", "tracked", "tracked"]
    costs = [80.0, 4.0, 6.0, 5.0]
    frames = [FrameRecord(i, i, detections=[Detection(1, "cube", pose, 1.0, 0.0, ms, mode)])
              for i, (mode, ms) in enumerate(zip(modes, costs))]
    registration = scene_metrics(run_with(frames, truth), {"cube": CUBE})[0]["registration"]
    assert registration["tracked_share"] == pytest.approx(0.75)
    assert registration["ms_per_object"]["tracked"]["median"] == pytest.approx(5.0)
    assert registration["ms_per_object"]["registered"]["max"] == pytest.approx(80.0)
    assert scene_metrics(run_with([FrameRecord(0, 0)], truth),
                         {"cube": CUBE})[0]["registration"]["tracked_share"] is None


def test_recall_counts_an_object_only_in_the_frames_it_is_visible_in():
    cube_pose, rod_pose = make_transform(np.eye(3), [5, 0, 0]), make_transform(np.eye(3), [0, 5, 0])
    # The cube is in view in frames 1 and 2 of 0-3 (stamps 10 ns apart); the rod in all four.
    truth = [TruthObject("cube", cube_pose, CUBE, visible_ns=frozenset({10, 20})),
             TruthObject("rod", rod_pose, ROD)]
    frames = []
    for k in range(4):
        found = [detection(1, "cube", cube_pose)]  # held by the pipeline also out of view
        if k < 2:
            found.append(detection(2, "rod", rod_pose))  # the rod is missed in frames 2 and 3
        frames.append(FrameRecord(k, 10 * k, detections=found))
    metrics, rows = scene_metrics(run_with(frames, truth), {"cube": CUBE, "rod": ROD})
    assert len(rows) == 6 and all(row.success for row in rows)
    # Chances: cube 2 + rod 4; successes: cube in frames 1, 2 and rod in 0, 1.
    assert metrics["registration"]["recall"] == pytest.approx(4 / 6)
    assert metrics["detection"]["recall"] == pytest.approx(4 / 6)
    assert metrics["detection"]["precision"] == 1.0  # out of view is not a false positive
    assert metrics["per_object"]["cube"]["recall"] == 1.0
    assert metrics["per_object"]["cube"]["frames_visible"] == 2
    assert metrics["per_object"]["cube"]["frames_matched"] == 4
    assert metrics["per_object"]["rod"]["recall"] == pytest.approx(0.5)
    assert metrics["registration"]["final_frame_recall"] == 0.0  # only the rod is in view
    # An object never in view: no chances, recall 0 for it, nothing counted for the others.
    truth[0] = TruthObject("cube", cube_pose, CUBE, visible_ns=frozenset())
    metrics, _ = scene_metrics(run_with(frames, truth), {"cube": CUBE, "rod": ROD})
    assert metrics["registration"]["recall"] == pytest.approx(2 / 4)
    assert metrics["per_object"]["cube"]["recall"] == 0.0
    assert metrics["per_object"]["cube"]["frames_visible"] == 0
    # Without visibility (older bags) every object counts in every frame, as before.
    truth[0] = TruthObject("cube", cube_pose, CUBE)
    metrics, _ = scene_metrics(run_with(frames, truth), {"cube": CUBE, "rod": ROD})
    assert metrics["registration"]["recall"] == pytest.approx(6 / 8)
    assert metrics["registration"]["final_frame_recall"] == pytest.approx(0.5)
