"""The evaluation report: its files exist, read back, and say what scene_metrics computed."""
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gmm_perception.evaluation.records import Detection, EvaluationRun, FrameRecord, \
    TruthObject  # noqa: E402
from gmm_perception.evaluation.report import ReportPaths, summary_table, \
    write_report  # noqa: E402
from gmm_perception.evaluation.scene_metrics import scene_metrics  # noqa: E402
from gmm_perception.geometry.transforms import euler_to_matrix, make_transform  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def box_points(size=(0.4, 0.3, 0.2), n=12) -> np.ndarray:
    """Points on a box's surface: each face a grid, centred on the origin."""
    half = np.asarray(size) / 2
    u = np.linspace(-1, 1, n)
    a, b = np.meshgrid(u, u)
    a, b = a.ravel(), b.ravel()
    faces = []
    for axis in range(3):
        others = [i for i in range(3) if i != axis]
        for sign in (-1.0, 1.0):
            face = np.zeros((len(a), 3))
            face[:, axis] = sign
            face[:, others[0]] = a
            face[:, others[1]] = b
            faces.append(face)
    return np.concatenate(faces) * half


def sphere_points(radius=0.15, n=400) -> np.ndarray:
    """Fibonacci sphere: even, deterministic."""
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5 ** 0.5) * k
    return radius * np.stack([np.cos(azimuth) * np.sin(polar),
                              np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def pose(x, y, yaw_deg=0.0) -> np.ndarray:
    return make_transform(euler_to_matrix(0.0, 0.0, np.radians(yaw_deg)), [x, y, 0.1])


@pytest.fixture
def library() -> dict:
    return {"box": box_points(), "sphere": sphere_points()}


@pytest.fixture
def run(library) -> EvaluationRun:
    """Two objects, five evaluated frames, one frame without TF, one wrong-model detection."""
    T_box, T_sphere = pose(1.0, 0.0, 30.0), pose(-1.0, 0.5)
    truth = [TruthObject("box", T_box, library["box"]),
             TruthObject("sphere", T_sphere, library["sphere"])]
    frames = []
    for i in range(6):
        if i == 3:
            frames.append(FrameRecord(i, i * 10**8, status="unknown_frame",
                                      stage_ms={"total": 0.5}, message="no TF"))
            continue
        jitter = 0.004 * i
        detections = [
            Detection(1, "box", pose(1.0 + jitter, 0.0, 30.0 + i), 0.9, 0.01, 12.0 + i),
            # Frame 4: the sphere registered as a box (wrong model: a failure).
            Detection(2, "box" if i == 4 else "sphere", pose(-1.0, 0.5 + jitter), 0.8, 0.01,
                      10.0 + i),
        ]
        stage_ms = {"preprocess": 2.0 + i, "segmentation": 5.0 + i,
                    "registration": 22.0 + 2 * i}
        stage_ms["total"] = sum(stage_ms.values())
        frames.append(FrameRecord(i, i * 10**8, detections=detections, stage_ms=stage_ms))
    sensor_path = [[2.0 * np.cos(a), 2.0 * np.sin(a), 0.5] for a in np.linspace(0, 1.0, 6)]
    return EvaluationRun(mode="offline", bag="/tmp/demo_bag", world_frame="map", frames=frames,
                         truth=truth, warnings=["frame 3: no transform map <- lidar"],
                         sensor_path=sensor_path, seconds=1.25)


def check_png(path) -> None:
    assert path.exists()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def test_report_files(run, library, tmp_path):
    metrics, rows = scene_metrics(run, library)
    # The synthetic run exercises a failure and a skipped frame, as designed.
    assert metrics["frames"]["evaluated"] == 5
    assert metrics["frames"]["statuses"]["unknown_frame"] == 1
    assert 0.0 < metrics["registration"]["recall"] < 1.0

    out = tmp_path / "report"  # does not exist yet: write_report creates it
    paths = write_report(run, metrics, rows, library, out, title="Synthetic run")
    assert isinstance(paths, ReportPaths)
    assert {p.name for p in paths.plots} == {"error_over_time.png", "latency.png",
                                             "scene_top_down.png"}
    for plot in paths.plots:
        check_png(plot)

    loaded = json.loads(paths.metrics_json.read_text())
    assert loaded["registration"]["recall"] == pytest.approx(metrics["registration"]["recall"])
    assert set(loaded["per_object"]) == {"box", "sphere"}

    markdown = paths.markdown.read_text()
    assert markdown.startswith("# Synthetic run")
    assert "/tmp/demo_bag" in markdown
    for name in ("box", "sphere"):
        assert f"| {name} |" in markdown
    recall = f"{metrics['registration']['recall']:.1%}"
    assert f"| registration recall | {recall} |" in markdown
    assert "- frame 3: no transform map <- lidar" in markdown
    for plot in paths.plots:
        assert f"]({plot.name})" in markdown


def test_metrics_json_has_no_nan(run, library, tmp_path):
    """NaN is not JSON: it must come out as null, also inside numpy values."""
    metrics, rows = scene_metrics(run, library)
    metrics["extra"] = {"nan": float("nan"), "np": np.float32(0.5), "array": np.arange(3),
                        "np_nan": np.float64("nan")}
    paths = write_report(run, metrics, rows, library, tmp_path)
    text = paths.metrics_json.read_text()
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded["extra"] == {"nan": None, "np": 0.5, "array": [0, 1, 2], "np_nan": None}


def test_empty_run(tmp_path):
    run = EvaluationRun(mode="live", bag="empty.mcap", world_frame="map")
    metrics, rows = scene_metrics(run, {})
    paths = write_report(run, metrics, rows, {}, tmp_path / "empty")
    for plot in paths.plots:
        check_png(plot)
    assert json.loads(paths.metrics_json.read_text())["frames"]["total"] == 0
    markdown = paths.markdown.read_text()
    assert "## Warnings\n\nnone" in markdown


def test_frames_without_truth_or_detections(library, tmp_path):
    """Frames that found nothing, no ground truth: plots fall back, the report still writes."""
    frames = [FrameRecord(0, 0, status="no_objects", stage_ms={"total": 3.0}),
              FrameRecord(1, 1, status="dropped")]
    run = EvaluationRun(mode="live", bag="b", world_frame="map", frames=frames)
    metrics, rows = scene_metrics(run, library)
    paths = write_report(run, metrics, rows, library, tmp_path)
    for plot in paths.plots:
        check_png(plot)


def test_summary_table(run, library):
    metrics, _ = scene_metrics(run, library)
    table = summary_table(metrics)
    assert f"{metrics['registration']['recall']:.1%}" in table
    assert f"{metrics['detection']['recall']:.1%}" in table
    assert "5 / 6" in table
    assert "(total)" in table


def test_summary_table_prefers_end_to_end():
    summary = {"count": 3, "median": 40.0, "mean": 41.0, "p95": 55.0, "max": 60.0}
    metrics = {"latency_ms": {"total": {"count": 3, "median": 10.0, "p95": 12.0, "max": 13.0,
                                        "mean": 10.5},
                              "end_to_end": summary},
               "registration": {"recall": 0.25}}
    table = summary_table(metrics)
    assert "(end_to_end)" in table and "40.0 / 55.0 ms" in table
    assert "25.0%" in table
    assert "| frames evaluated | 0 / 0 |" in table  # missing sections default, not raise


def test_frames_dropped_are_shown_per_node_where_the_nodes_said():
    from gmm_perception.evaluation.report import _drops

    assert _drops({"dropped_by_nodes": 5}) == "5"
    assert _drops({"dropped_by_nodes": 7, "dropped_per_node": {"/segmentation": 0,
                                                               "/upsampling": 7}}) == \
        "7 (segmentation 0, upsampling 7)"
