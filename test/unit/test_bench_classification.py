"""bench/classification.py's sensor-views part (bench/_classification_views.py): the binning and
aggregation against hand-computed numbers, labels matched by class name, and a smoke run of the
views path on the built pool."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import _classification_views as views_bench
from bench._classification_views import COUNT_EDGES, RANGE_EDGES, ViewRow, bin_index, \
    binned_accuracy, score_row, view_metrics

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
CHECKPOINT = ROOT / "checkpoints" / "gmcn" / "gmcn_sh3d.pt"


def test_bin_edges_belong_to_the_upper_bin():
    counts = [0, 499, 500, 999, 1000, 1999, 2000, 4999, 5000, 20_000]
    assert bin_index(counts, COUNT_EDGES).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    ranges = [0.3, 0.999, 1.0, 1.99, 2.0, 3.9, 4.0, 7.99, 8.0, 12.0]
    assert bin_index(ranges, RANGE_EDGES).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_binned_accuracy_counts_each_bin():
    correct = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    bins = np.array([0, 0, 1, 3, 3, 3])
    out = binned_accuracy(correct, bins, ("a", "b", "c", "d", "e"))
    assert [e["bin"] for e in out] == ["a", "b", "c", "d", "e"]
    assert [e["count"] for e in out] == [2, 1, 0, 3, 0]
    assert [e["correct"] for e in out] == [1, 1, 0, 2, 0]
    assert out[0]["accuracy"] == 0.5 and out[1]["accuracy"] == 1.0
    assert out[2]["accuracy"] is None and out[4]["accuracy"] is None
    assert out[3]["accuracy"] == pytest.approx(2 / 3)


def test_view_metrics_by_points_range_and_sensor():
    correct = np.array([True, False, False, True, True])
    points = np.array([300, 800, 800, 6000, 1500])
    distance = np.array([0.5, 9.0, 3.0, 0.8, 1.5])
    sensor = np.array(["lidar", "depth", "lidar", "depth", "lidar"])
    out = view_metrics(correct, points, distance, sensor)
    by_points = {e["bin"]: (e["count"], e["accuracy"]) for e in out["by_points"]}
    assert by_points == {"<500": (1, 1.0), "500-1k": (2, 0.0), "1k-2k": (1, 1.0),
                         "2k-5k": (0, None), ">=5k": (1, 1.0)}
    by_range = {e["bin"]: (e["count"], e["accuracy"]) for e in out["by_range"]}
    assert by_range == {"<1 m": (2, 1.0), "1-2 m": (1, 1.0), "2-4 m": (1, 0.0),
                        "4-8 m": (0, None), ">=8 m": (1, 0.0)}
    by_sensor = {e["bin"]: (e["count"], e["correct"]) for e in out["by_sensor"]}
    assert by_sensor == {"depth": (2, 1), "lidar": (3, 2)}
    # Accumulations have no range or sensor of their own.
    assert set(view_metrics(correct, points)) == {"by_points"}


def _row() -> ViewRow:
    """Three shapes (chair, bed, tree), two views each; every cloud is filled with its shape's
    index so that a fake model can tell which shape it sees."""
    shape_class = np.array(["chair", "bed", "tree"])
    view_shape = np.array([0, 0, 1, 1, 2, 2])
    return ViewRow(
        model_ids=np.array(["a", "b", "c"]), shape_class=shape_class,
        clouds=[np.full((20, 3), s, np.float32) for s in view_shape], view_shape=view_shape,
        points=np.array([300, 3000, 700, 700, 6000, 1200]),
        distance=np.array([9.0, 1.5, 3.0, 3.5, 0.5, 5.0]),
        sensor=np.array(["depth", "depth", "lidar", "lidar", "depth", "lidar"]),
        accumulated=[np.full((30, 3), s, np.float32) for s in (0, 1, 2)],
        accumulated_shape=np.array([0, 1, 2]), accumulated_points=np.array([400, 900, 5500]),
        note="1 of 4 uncategorised")


def _fake(class_names, answer):
    """A `run` whose model answers `answer(shape index)` (a class name) for every cloud, and
    records the labels it was given."""
    given = []

    def run(clouds, labels):
        given.append(labels.copy())
        logits = np.full((len(clouds), len(class_names)), -5.0)
        for i, cloud in enumerate(clouds):
            logits[i, class_names.index(answer(int(cloud[0, 0])))] = 0.0
        return {"objects": len(labels)}, logits

    return run, given


@pytest.mark.parametrize("class_names", [
    ["bed", "chair", "tree"],  # another order than the row's
    ["tree", "person", "chair", "bed"],  # a class the row lacks, yet another order
])
def test_labels_are_matched_by_class_name(class_names):
    row = _row()
    run, given = _fake(class_names, lambda s: str(row.shape_class[s]))  # always right
    out = score_row(row, class_names, run)
    truth = [class_names.index(c) for c in row.shape_class]
    assert given[0].tolist() == [truth[s] for s in row.view_shape]
    assert given[1].tolist() == truth
    assert out["shapes"] == 3 and out["dropped"] == "1 of 4 uncategorised"
    for setting in ("single", "accumulated"):
        assert all(e["accuracy"] in (None, 1.0) for e in out[setting]["by_points"])


def test_shapes_of_unknown_classes_are_dropped_and_bins_hand_computed():
    row = _row()
    # The model lacks "tree" and always answers "chair": right on the chair's two views only.
    class_names = ["chair", "bed"]
    run, given = _fake(class_names, lambda s: "chair")
    out = score_row(row, class_names, run)
    assert out["shapes"] == 2
    assert out["dropped"] == "1 of 4 uncategorised; 1 of 3 shapes of classes the model lacks (tree)"
    assert given[0].tolist() == [0, 0, 1, 1] and given[1].tolist() == [0, 1]
    single = out["single"]
    # Views kept: chair (300 pts, 9 m, depth, right), chair (3000, 1.5 m, depth, right),
    # bed (700, 3 m, lidar, wrong), bed (700, 3.5 m, lidar, wrong).
    assert [(e["count"], e["correct"]) for e in single["by_points"]] == \
        [(1, 1), (2, 0), (0, 0), (1, 1), (0, 0)]
    assert [(e["count"], e["correct"]) for e in single["by_range"]] == \
        [(0, 0), (1, 1), (2, 0), (0, 0), (1, 1)]
    assert [(e["bin"], e["accuracy"]) for e in single["by_sensor"]] == \
        [("depth", 1.0), ("lidar", 0.0)]
    # Accumulations kept: chair (400, right), bed (900, wrong).
    assert [(e["count"], e["correct"]) for e in out["accumulated"]["by_points"]] == \
        [(1, 1), (1, 0), (0, 0), (0, 0), (0, 0)]
    assert "by_range" not in out["accumulated"]


def test_rows_at_class_sizes_scale_each_shape_and_its_ranges_by_one_factor():
    from dataclasses import replace

    from gmm_perception.data.class_sizes import size_factor

    row = replace(_row(), pool_scale=np.array([0.5, 1.0, 2.0]),
                  class_scale=np.array([1.5, 2.0, 3.0]),
                  clouds=[np.full((20, 3), 1.0, np.float32) for _ in range(6)],
                  accumulated=[np.full((30, 3), 1.0, np.float32) for _ in range(3)])
    exact = views_bench.at_class_sizes(row, 0.0, seed=7)
    factor = np.array([3.0, 2.0, 1.5])  # class / pool metres per unit
    np.testing.assert_allclose([c[0, 0] for c in exact.clouds], factor[row.view_shape])
    np.testing.assert_allclose([c[0, 0] for c in exact.accumulated], factor)
    np.testing.assert_allclose(exact.distance, row.distance * factor[row.view_shape])
    assert exact.points.tolist() == row.points.tolist()  # the same returns
    spread = views_bench.at_class_sizes(row, 0.2, seed=7)
    ratio = np.array([c[0, 0] for c in spread.accumulated]) / factor
    assert np.all((ratio >= np.exp(-0.4)) & (ratio <= np.exp(0.4))) and not np.allclose(ratio, 1)
    again = views_bench.at_class_sizes(row, 0.2, seed=7)
    np.testing.assert_array_equal(np.array(again.distance), np.array(spread.distance))
    assert size_factor(np.random.default_rng(0), 0.0) == 1.0


def test_a_model_without_any_of_the_row_classes_scores_nothing():
    run, given = _fake(["person", "car"], lambda s: "car")
    assert score_row(_row(), ["person", "car"], run) is None and not given


def test_views_path_smoke(tmp_path):
    """Two shapes per pool row, four views each, through the real stage and checkpoint."""
    if not (DATA / "pool" / "pool_meshes.npz").is_file():
        pytest.skip(f"no shape pool in {DATA / 'pool'} (`gmm-perception data pool` builds it)")
    if not CHECKPOINT.is_file():
        pytest.skip(f"no checkpoint {CHECKPOINT}")
    import torch

    from bench.classification import evaluate
    from gmm_perception.data.views import ViewPool
    from gmm_perception.models.registry import load_model
    from gmm_perception.pipeline.classify import Classifier
    from gmm_perception.pipeline.configs import ClassifyConfig

    cache = tmp_path / "views.npz"
    rows, notes = views_bench.view_rows(DATA, 4, 7, max_models=2, cache=cache, progress=False)
    assert "pool test sh3d" in rows and "pool test pybullet" not in rows
    assert "uncategorised" in notes["pool test pybullet"]
    pool = ViewPool.load(cache)
    sensors = _pool_sensors(pool)  # with their noise models
    for row in rows.values():
        assert len(row.model_ids) == 2 and len(row.clouds) == 8 and len(row.accumulated) == 8
        views = np.concatenate([pool.views_of(pool.row_of(m)) for m in row.model_ids])
        for cloud, v in zip(row.clouds, views):
            clean = pool.view_points(int(v), "object")  # metres, not turned, no noise
            assert cloud.shape == clean.shape and not np.allclose(cloud, clean)
            # Upright, in metres, turned about z only: the z centroid and the xy distance of the
            # centroid from the axis are kept up to the mean of the zero-mean noise.
            sensor = sensors[pool.sensor_kind[v]]
            sigma = (sensor.depth_sigma(pool.distance[v]) if hasattr(sensor, "depth_sigma")
                     else sensor.range_noise_sigma)
            tolerance = 5 * sigma / np.sqrt(len(cloud)) + 2e-3
            assert abs(cloud[:, 2].mean() - clean[:, 2].mean()) < tolerance
            assert abs(np.linalg.norm(cloud[:, :2].mean(0)) -
                       np.linalg.norm(clean[:, :2].mean(0))) < tolerance
    again, _ = views_bench.view_rows(DATA, 4, 7, max_models=2, cache=cache, progress=False)
    assert all(np.array_equal(a, b) for name in rows
               for a, b in zip(rows[name].clouds + rows[name].accumulated,
                               again[name].clouds + again[name].accumulated))

    torch.set_num_threads(1)
    model, payload = load_model(CHECKPOINT, "gmcn")
    class_names = list(payload["config"]["data"]["class_names"])
    classifier = Classifier(ClassifyConfig(checkpoint=str(CHECKPOINT), temperature=1.0,
                                           unknown_threshold=0.0,
                                           classification_points=payload["config"]["data"][
                                               "num_points"]),
                            model, class_names, torch.device("cpu"))
    row = rows["pool test sh3d"]
    out = score_row(row, class_names, lambda c, labels: evaluate(
        classifier, c, labels, len(class_names)))
    for setting, total in (("single", 8), ("accumulated", 8)):
        result = out[setting]
        assert result["objects"] == total
        for key in ("by_points", "by_range", "by_sensor") if setting == "single" else (
                "by_points",):
            assert sum(e["count"] for e in result[key]) == total
            # The bins' predictions are the stage's: they add up to its accuracy.
            assert sum(e["correct"] for e in result[key]) / total == \
                pytest.approx(result["accuracy"])
    # The summary table shows each setting's ECE before and after the temperature.
    tables = []
    views_bench.print_view_tables({"pool test sh3d": {"GMCN": out}}, 4,
                                  lambda header, rows, align: tables.append((header, rows)))
    header, rows = tables[0]
    cell = rows[0][header.index("view ECE raw / cal.")]
    assert cell == f"{out['single']['ece_raw']:.3f} / {out['single']['ece_calibrated']:.3f}"


def _pool_sensors(pool):
    from gmm_perception.data.view_loader import _sensors

    return _sensors(pool.config.get("settings") or {})


def test_scene_objects_are_scored_per_cloud_and_fused_per_object_track():
    """Two objects (a chair seen 3 times, a lamp twice) and a tree the model lacks; a small
    cloud under min_points. The fake model answers by a fixed table: hand-computed results."""
    from bench._scene_objects import score_scene_objects
    from gmm_perception.data.scene_objects import SceneObjects

    names = ["chair", "chair", "chair", "lamp", "lamp", "tree", "chair"]
    counts = [300, 300, 300, 300, 300, 300, 50]
    objects = SceneObjects(
        np.zeros((sum(counts), 3), np.float32), np.concatenate([[0], np.cumsum(counts)]),
        np.array(names), np.array([f"m{i}" for i in range(7)]), np.zeros(7, np.int32),
        np.array(["chair_0", "chair_0", "chair_0", "lamp_0", "lamp_0", "tree_0", "chair_0"]),
        np.array([10, 5, 15, 5, 10, 5, 20], np.int32), np.array(["lidar"] * 7),
        np.array([1.5, 3.0, 9.0, 3.0, 3.0, 3.0, 3.0], np.float32), {})
    classes = ["chair", "lamp"]
    # Per kept cloud (file order 0-4): probabilities of (chair, lamp).
    table = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.1, 0.9]]))

    def run(clouds, labels):
        assert len(clouds) == 5 and labels.tolist() == [0, 0, 0, 1, 1]
        return {"accuracy": 0.6, "mean_class_accuracy": 0.75, "ece_raw": 0.1,
                "ece_calibrated": 0.05}, table
    out = score_scene_objects(objects, classes, run, 1.0, {
        "rule": "mean", "forgetting": 1.0, "fused_temperature": 1.0, "threshold": 0.7}, 200)
    assert (out["clouds"], out["small"]) == (5, 1) and "tree" in out["dropped"]
    # By range: clouds 0 (1.5 m), 1, 3, 4 (3 m), 2 (9 m); right: 0, 2, 4.
    assert [e["count"] for e in out["by_range"]] == [0, 1, 3, 0, 1]
    assert [e["correct"] for e in out["by_range"]] == [0, 1, 1, 0, 1]
    # The chair's track in frame order 5, 10, 15 = clouds 1, 0, 2: running means of chair
    # 0.2, 0.55, 0.6 -> lamp, chair, chair; the lamp's (frames 5, 10 = clouds 3, 4): lamp 0.4
    # then 0.65 -> chair, lamp. Right: 2 of 3 and 1 of 2; finals both right.
    fused = out["fused"]
    assert fused["tracks"] == 2 and fused["accuracy_all_steps"] == pytest.approx(3 / 5)
    assert fused["accuracy_final"] == 1.0
    # Top fused probabilities 0.8, 0.55, 0.6, 0.6, 0.65: only the first reaches 0.7 (wrong).
    assert fused["coverage"] == pytest.approx(1 / 5) and fused["accuracy_answered"] == 0.0
