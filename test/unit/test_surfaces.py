"""Surface metrics of the evaluator: clouds matched to the nearest true object and scored with
the Chamfer distance to its surface, checked against closed forms on grids (float32 clouds: 1e-6 m tolerances)."""
from __future__ import annotations

import numpy as np
import pytest

from gmm_perception.evaluation.records import EvaluationRun, FrameRecord, SurfaceCloud, \
    TruthObject
from gmm_perception.evaluation.report import SURFACES_PLOT, write_report
from gmm_perception.evaluation.scene_metrics import scene_metrics
from gmm_perception.geometry.transforms import make_transform

# A 1 m square of 11 x 11 points in the z = 0 plane of the model frame (0.1 m spacing).
SQUARE = np.stack(np.meshgrid(np.linspace(0, 1, 11), np.linspace(0, 1, 11), [0.0]),
                  -1).reshape(-1, 3)
POSE = make_transform(np.eye(3), [5.0, 0.0, 0.0])


def test_chamfer_to_the_true_surface_per_kind_and_final_frame():
    truth = [TruthObject("square", POSE, SQUARE)]
    world = SQUARE + POSE[:3, 3]
    lifted = world + [0, 0, 0.03]  # every point 3 cm off the surface, both ways: 0.03 + 0.03
    half = world[world[:, 0] <= 5.5]  # the near half of the square: only one direction misses
    far = world + [20.0, 0, 0]  # no truth within the match distance: not scored
    frames = [FrameRecord(0, 0, surfaces=[SurfaceCloud(1, "input", half),
                                          SurfaceCloud(1, "upsampling", lifted),
                                          SurfaceCloud(2, "input", far)]),
              FrameRecord(1, 1, surfaces=[SurfaceCloud(1, "input", world),
                                          SurfaceCloud(1, "shape_model", world)]),
              FrameRecord(2, 2, status="dropped",
                          surfaces=[SurfaceCloud(1, "input", lifted)])]  # not evaluated
    metrics, _ = scene_metrics(EvaluationRun("offline", "bag", "world", frames=frames,
                                             truth=truth), {"square": SQUARE})
    surfaces = metrics["surfaces"]
    # Half the square (x <= 0.5: 6 of 11 columns): the other 5 columns are 0.1 ... 0.5 m from
    # it, each column 11 points of 121: mean over the truth = 11 * (0.1+...+0.5) / 121.
    half_chamfer = 11 * sum(0.1 * k for k in range(1, 6)) / 121
    assert surfaces["median_chamfer_m"]["input"] == pytest.approx(half_chamfer / 2, abs=1e-6)  # {half, 0}
    assert surfaces["median_chamfer_m"]["upsampling"] == pytest.approx(0.06, abs=1e-6)
    assert surfaces["median_chamfer_m"]["shape_model"] == pytest.approx(0.0, abs=1e-6)
    assert surfaces["clouds"] == {"input": 2, "shape_model": 1, "upsampling": 1}
    final = surfaces["final_frame"]["square"]
    assert final["input"] == {"frame": 1, "points": 121, "chamfer_m": pytest.approx(0.0, abs=1e-6)}
    assert final["upsampling"]["frame"] == 0


def test_runs_without_surface_clouds_report_none(tmp_path):
    run = EvaluationRun("offline", "bag", "world", frames=[FrameRecord(0, 0)],
                        truth=[TruthObject("square", POSE, SQUARE)])
    metrics, rows = scene_metrics(run, {"square": SQUARE})
    assert metrics["surfaces"] == {}
    paths = write_report(run, metrics, rows, {"square": SQUARE}, tmp_path)
    assert not (tmp_path / SURFACES_PLOT).exists()
    assert "## Surfaces" not in paths.markdown.read_text()


def test_report_has_the_surface_table_and_figure(tmp_path):
    world = SQUARE + POSE[:3, 3]
    run = EvaluationRun("offline", "bag", "world", truth=[TruthObject("square", POSE, SQUARE)],
                        frames=[FrameRecord(0, 0, surfaces=[
                            SurfaceCloud(1, "input", world[:60]),
                            SurfaceCloud(1, "shape_model", world)])])
    metrics, rows = scene_metrics(run, {"square": SQUARE})
    paths = write_report(run, metrics, rows, {"square": SQUARE}, tmp_path)
    text = paths.markdown.read_text()
    assert "## Surfaces" in text and "PointGMM resampled" in text
    assert (tmp_path / SURFACES_PLOT).stat().st_size > 1000
    assert f"]({SURFACES_PLOT})" in text


def test_surface_kinds_are_checked():
    with pytest.raises(ValueError):
        SurfaceCloud(1, "mesh", SQUARE)
