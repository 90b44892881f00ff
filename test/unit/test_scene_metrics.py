"""Scene metrics against hand-computed values: matching, ADD-S / ADD, success and recall, and
classification per frame, fused over the track and final."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gmm_perception.evaluation.records import ClassifiedObject, Detection, EvaluationRun, \
    FrameRecord, TruthObject
from gmm_perception.evaluation.report import summary_table, write_report
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


def classified_run() -> EvaluationRun:
    """Three objects over four frames, each classified per frame and fused (u: unknown).

    object (class)  id  per frame              fused                 detected
    cube (box)       1  box  pole box  box     u    box  box  box    0-3
    rod (pole)       2  pole box  box  box     pole pole box  box    0-3  (fused label changes)
    rod_2 (pole)     3  pole pole box  pole    pole u    u    pole   0-2  (frame 3 unmatched)
    plus object 9 in frame 0: classified, never detected, no fused label (an older record).
    """
    poses = {"cube": make_transform(np.eye(3), [5, 0, 0]),
             "rod": make_transform(np.eye(3), [0, 5, 0]),
             "rod_2": make_transform(np.eye(3), [0, -5, 0])}
    truth = [TruthObject("cube", poses["cube"], CUBE, "box"),
             TruthObject("rod", poses["rod"], ROD, "pole"),
             TruthObject("rod_2", poses["rod_2"], ROD, "pole")]
    labels = {1: ("box pole box box", "unknown box box box"),
              2: ("pole box box box", "pole pole box box"),
              3: ("pole pole box pole", "pole unknown unknown pole")}
    frames = []
    for k in range(4):
        frame = FrameRecord(k, k, detections=[detection(1, "cube", poses["cube"]),
                                              detection(2, "rod", poses["rod"])])
        if k < 3:
            frame.detections.append(detection(3, "rod_2", poses["rod_2"]))
        for object_id, (own, fused) in labels.items():
            frame.classifications.append(ClassifiedObject(
                object_id, own.split()[k], 0.7, fused.split()[k], 0.8, k + 1))
        frames.append(frame)
    frames[0].classifications.append(ClassifiedObject(9, "box", 0.9))
    return run_with(frames, truth)


LIBRARY = {"cube": CUBE, "rod": ROD, "rod_2": ROD}


def test_classification_per_frame_fused_and_final_against_hand_counts():
    metrics, rows = scene_metrics(classified_run(), LIBRARY)
    assert len(rows) == 11
    classification = metrics["classification"]
    # 13 records, 11 matched to a truth (rod_2's frame 3 and object 9 are not).
    assert classification["classified"] == 13 and classification["matched_to_truth"] == 11
    assert classification["accuracy"] == pytest.approx(6 / 11)  # 3 + 1 + 2 right
    fused = classification["fused"]
    # Answered (not unknown): cube 3, rod 4, rod_2 1; right among them: 3 + 2 + 1.
    assert fused["observations"] == 11 and fused["answered"] == 8
    assert fused["coverage"] == pytest.approx(8 / 11)
    assert fused["accuracy_answered"] == pytest.approx(6 / 8)
    assert fused["accuracy"] == pytest.approx(6 / 11)  # unknown counted wrong
    # Final labels: cube box (right), rod box (wrong: it changed), rod_2 unknown from its last
    # matched frame (wrong; its unmatched frame 3 says pole but is not its track's).
    assert classification["final_label"] == {"tracks": 3, "right": 1,
                                             "accuracy": pytest.approx(1 / 3)}
    assert classification["targets"] == {"final_label_accuracy": 0.9, "fused_accuracy": 0.8}
    per_object = {name: metrics["per_object"][name]["classification"]
                  for name in ("cube", "rod", "rod_2")}
    assert [c["final_label"] for c in per_object.values()] == ["box", "box", "unknown"]
    assert [c["fused_accuracy"] for c in per_object.values()] == pytest.approx([3 / 4, 2 / 4,
                                                                                1 / 3])
    assert [c["accuracy"] for c in per_object.values()] == pytest.approx([3 / 4, 1 / 4, 2 / 3])


def test_classifications_are_placed_by_the_segmented_box_where_the_run_recorded_it():
    """A classification does not need the registration: with the segmentation's box centres
    recorded, rod_2's frame 3 (no detection) is scored, object 9 (its box far from every
    truth) is not, and an object's box is scored as the truth whose surface is there."""
    run = classified_run()
    for frame in run.frames:
        frame.object_centres = {1: np.array([5.1, 0.1, 0.1]), 2: np.array([0.0, 5.0, 1.0]),
                                3: np.array([0.2, -5.0, 1.9]), 9: np.array([20.0, 0.0, 0.0])}
    classification = scene_metrics(run, LIBRARY)[0]["classification"]
    assert classification["classified"] == 13 and classification["matched_to_truth"] == 12
    assert classification["accuracy"] == pytest.approx(7 / 12)  # rod_2's frame 3 says pole
    # rod_2's last fused record is now frame 3's "pole": its final label is right.
    assert classification["final_label"]["right"] == 2
    # Object 1's box in frame 0 at 0.41 m from the rod's top point: scored as the rod's.
    run.frames[0].object_centres[1] = np.array([0.0, 4.6, 2.1])
    assert scene_metrics(run, LIBRARY)[0]["per_object"]["rod"]["classification"][
        "classified"] == 5
    # Beyond match_distance of every surface: not scored.
    run.frames[0].object_centres[1] = np.array([3.0, 2.0, 0.0])
    assert scene_metrics(run, LIBRARY)[0]["classification"]["matched_to_truth"] == 11


def test_records_without_fused_labels_score_per_frame_only():
    run = classified_run()
    for frame in run.frames:
        frame.classifications = [ClassifiedObject(c.object_id, c.label, c.score)
                                 for c in frame.classifications]
    classification = scene_metrics(run, LIBRARY)[0]["classification"]
    assert classification["accuracy"] == pytest.approx(6 / 11)
    assert classification["fused"]["observations"] == 0
    assert classification["fused"]["accuracy"] is None
    assert classification["final_label"]["tracks"] == 0
    table = summary_table(scene_metrics(run, LIBRARY)[0])
    assert "54.5%" in table and "fused" not in table and "final-label" not in table


def test_summary_and_report_show_the_fused_classification(tmp_path):
    run = classified_run()
    metrics, rows = scene_metrics(run, LIBRARY)
    table = summary_table(metrics)
    assert "| classification accuracy (per frame) | 54.5% |" in table
    assert "| fused label accuracy, unknown = wrong (target >= 80%) | 54.5% |" in table
    assert "| fused label accuracy of the answered / answered share | 75.0% / 72.7% |" in table
    assert "| final-label accuracy (target >= 90%) | 33.3% (1 / 3 objects) |" in table
    paths = write_report(run, metrics, rows, LIBRARY, tmp_path)
    report = paths.markdown.read_text()
    assert "| final-label accuracy (target >= 90%) | 33.3% (1 / 3 objects) |" in report
    assert "| rod_2 | pole | pole | 3 | 66.7% | 33.3% | unknown |" in report
    saved = json.loads(paths.metrics_json.read_text())["classification"]
    assert saved["final_label"]["accuracy"] == pytest.approx(1 / 3)
    assert saved["fused"]["coverage"] == pytest.approx(8 / 11)
