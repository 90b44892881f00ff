"""The offline evaluator's classification step fuses as the classification node does: its
records' fused labels, scores and observation counts equal pipeline.fuse's over the same frames
(forgetting from the config, the unknown threshold from the checkpoint's calibration file), and
a reused answer adds no evidence."""
import json

import numpy as np
import torch

from gmm_perception.evaluation.offline import classified_object
from gmm_perception.evaluation.stages import object_step
from gmm_perception.pipeline.classify import Classifier, calibration_path
from gmm_perception.pipeline.configs import ClassifyConfig, default_values, node_configs
from gmm_perception.pipeline.fuse import UNKNOWN, fuse_sequence

NAMES = ["a", "b", "c"]
FORGETTING, THRESHOLD = 0.8, 0.55


def clouds(count: int) -> list[np.ndarray]:
    """One object's frames, each cloud a new draw of a different box (the step runs again)."""
    rng = np.random.default_rng(3)
    return [(rng.uniform(-1, 1, (600, 3)) * rng.uniform(0.2, 0.6, 3)
             + [2.0 + 0.2 * k, 0.0, 0.5]).astype(np.float32) for k in range(count)]


def test_offline_fused_fields_equal_pipeline_fuse_on_the_same_frames(gmcn, tmp_path,
                                                                     one_torch_thread):
    checkpoint = tmp_path / "model.pt"
    calibration_path(checkpoint).write_text(json.dumps({"temperature": 1.0,
                                                        "unknown_threshold": THRESHOLD}))
    values = {**default_values("classification_node"), "checkpoint": str(checkpoint),
              "classification_points": 512, "fusion_forgetting": FORGETTING}
    configs = node_configs("classification_node", values)
    classifier = Classifier(configs[ClassifyConfig], gmcn, NAMES, torch.device("cpu"))
    step = object_step("classification", configs, classifier)
    frames = clouds(6)
    frames.insert(3, frames[2])  # frame 3 sees frame 2's cloud again: its answer is reused
    records, new_scores, reused = [], [], []
    for k, points in enumerate(frames):
        result = step(points, 7, 10**9 + k * 10**8, "map")  # 10 Hz, stamps in ns as a bag's
        reused.append(step.stage.last_reused)
        if not reused[-1]:
            new_scores.append(result.scores)
        records.append(classified_object(7, result))
    assert reused == [False, False, False, True, False, False, False]
    # pipeline.fuse over the new answers only; the reused frame repeats the fused answer before.
    fused = fuse_sequence(np.array(new_scores), FORGETTING)
    expected = [0, 1, 2, 2, 3, 4, 5]
    for record, k in zip(records, expected):
        scores = fused[k]
        label = NAMES[int(np.argmax(scores))] if scores.max() >= THRESHOLD else UNKNOWN
        assert record.fused_label == label
        assert record.fused_score == np.float64(scores.max()).item()
        assert record.observations == k + 1
    labels = {r.fused_label for r in records}
    assert UNKNOWN in labels and labels - {UNKNOWN}, labels  # the sequence exercises both
    # The frame's own answer is recorded beside the fused one, as before.
    assert all(r.label in NAMES and 0 < r.score <= 1 for r in records)
