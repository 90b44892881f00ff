"""The evaluation report: metrics.json, three plots and a Markdown page that embeds them.

Everything here reads what `scene_metrics` already computed (the metrics dictionary and its
matched rows) plus the run's raw records for the plots, so the report never re-derives a number
the JSON holds differently. It runs headless (on CI and over SSH), hence the Agg backend, chosen
before pyplot is imported, and no ROS import: a report can be rebuilt from a run on any machine.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on the machines that run evaluations

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from gmm_perception.evaluation.records import EvaluationRun  # noqa: E402
from gmm_perception.evaluation.scene_metrics import EVALUATED, MatchRow  # noqa: E402
from gmm_perception.evaluation.surfaces import KIND_TITLES, last_clouds  # noqa: E402
from gmm_perception.evaluation.records import SURFACE_KINDS  # noqa: E402
from gmm_perception.geometry.transforms import transform_points  # noqa: E402

ERROR_PLOT = "error_over_time.png"
LATENCY_PLOT = "latency.png"
TOP_DOWN_PLOT = "scene_top_down.png"
SURFACES_PLOT = "surfaces.png"  # only when the pipeline has a shape-model or upsampling stage
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"

# Success threshold as a fraction of the diameter, as scene_metrics' default success rule.
SUCCESS_FRACTION = 0.1
# More points than this per object only slows the scatter without changing the picture.
MAX_POINTS_PER_OBJECT = 2000
# Latencies spanning more than this ratio (max / min) get a log-x histogram.
LOG_X_RATIO = 20.0
DPI = 110


@dataclass
class ReportPaths:
    """Where write_report put its files, for the CLI to print and tests to open."""

    markdown: Path
    metrics_json: Path
    plots: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# JSON


def _jsonable(value):
    """Plain JSON types: numpy scalars and arrays come out of the metrics, NaN is not JSON."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _write_metrics_json(metrics: dict, path: Path) -> None:
    """allow_nan=False so that a value _jsonable missed fails here, not in a JSON reader later."""
    path.write_text(json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------------------------
# Formatting


def _number(value) -> float | None:
    """A finite float, or None for anything absent, null or NaN (printed as n/a)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _formatted(value, template: str) -> str:
    value = _number(value)
    return "n/a" if value is None else template.format(value)


def _fraction(value) -> str:
    """Rates as percentages with one decimal: the form the tables and the CLI share."""
    return _formatted(value, "{:.1%}")


def _metres(value) -> str:
    """Millimetre resolution: ADD-S thresholds of objects a few decimetres wide are centimetres."""
    return _formatted(value, "{:.4f} m")


def _ms(value) -> str:
    return _formatted(value, "{:.1f}")


def _degrees(value) -> str:
    return _formatted(value, "{:.2f} deg")


def _stat(summary: dict | None, key: str):
    """A statistic of a scene_metrics summary; summaries of no values hold only their count."""
    return (summary or {}).get(key)


def _cell(text) -> str:
    """Names land in table cells: a '|' in one would split the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _drops(frames: dict) -> str:
    """The total, and per node where the nodes said (a surface stage dropping stale objects
    is by design; the segmentation dropping frames is not)."""
    per_node = frames.get("dropped_per_node") or {}
    total = str(frames.get("dropped_by_nodes", 0))
    if not per_node:
        return total
    return total + " (" + ", ".join(f"{name.strip('/')} {count}"
                                    for name, count in per_node.items()) + ")"


def _statuses(frames: dict) -> str:
    statuses = frames.get("statuses") or {}
    return ", ".join(f"{name}: {count}" for name, count in sorted(statuses.items())) or "none"


def _headline_stage(latency: dict) -> str | None:
    """end_to_end (live mode: stamp to result) says more than the sum of stages, so it wins."""
    for stage in ("end_to_end", "total"):
        if stage in latency:
            return stage
    return None


# --------------------------------------------------------------------------------------------
# Plots


def _no_data(ax, text: str = "no data") -> None:
    """An empty run still gets its plot files, so the report's links never dangle."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=14,
            color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)  # long evaluations write many reports: free each figure
    return path


def _diameter(metrics: dict, name: str) -> float | None:
    return _number((metrics.get("per_object", {}).get(name) or {}).get("diameter_m"))


def _plot_error_over_time(run: EvaluationRun, metrics: dict, rows: list[MatchRow],
                          path: Path) -> Path:
    """ADD-S per object per frame: shows when tracking was lost, not only how often."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    by_truth: dict[str, list[MatchRow]] = defaultdict(list)
    for row in rows:
        if _number(row.add_s) is not None:
            by_truth[row.truth].append(row)
    if not by_truth:
        _no_data(ax, "no matched detections")
        ax.set_title("ADD-S over time")
        return _save(fig, path)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, name in enumerate(sorted(by_truth)):
        colour = colours[k % len(colours)]
        mine = sorted(by_truth[name], key=lambda r: r.frame)
        frames = [r.frame for r in mine]
        errors = [r.add_s for r in mine]
        ax.plot(frames, errors, "-", color=colour, alpha=0.5, linewidth=1)
        ok = [r for r in mine if r.success]
        bad = [r for r in mine if not r.success]
        ax.plot([r.frame for r in ok], [r.add_s for r in ok], "o", color=colour,
                label=f"{name} success")
        if bad:
            ax.plot([r.frame for r in bad], [r.add_s for r in bad], "x", color=colour,
                    markersize=8, markeredgewidth=2, label=f"{name} failure")
        diameter = _diameter(metrics, name)
        if diameter is not None:
            ax.axhline(SUCCESS_FRACTION * diameter, color=colour, linestyle="--", linewidth=1,
                       label=f"{name} threshold {SUCCESS_FRACTION:g} x diameter")
    _shade_unevaluated(ax, run)
    ax.set_xlabel("frame index")
    ax.set_ylabel("ADD-S (m)")
    ax.set_ylim(bottom=0)
    ax.set_title("ADD-S over time (x: failure, o: success)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _shade_unevaluated(ax, run: EvaluationRun) -> None:
    """Frames without a result (no TF, malformed...) explain gaps in the lines."""
    labelled = False
    for frame in run.frames:
        if frame.status in EVALUATED:
            continue
        ax.axvspan(frame.index - 0.5, frame.index + 0.5, color="grey", alpha=0.15,
                   label=None if labelled else "frame not evaluated")
        labelled = True


def _stage_values(run: EvaluationRun) -> dict[str, np.ndarray]:
    values: dict[str, list[float]] = defaultdict(list)
    for frame in run.frames:
        for stage, ms in frame.stage_ms.items():
            if _number(ms) is not None:
                values[stage].append(float(ms))
    return {stage: np.asarray(v) for stage, v in sorted(values.items()) if v}


def _plot_latency(run: EvaluationRun, path: Path) -> Path:
    """One histogram per stage: a median hides the slow tail that stalls a live pipeline."""
    values = _stage_values(run)
    if not values:
        fig, ax = plt.subplots(figsize=(7, 3))
        _no_data(ax, "no latency samples")
        ax.set_title("Stage latency")
        return _save(fig, path)
    fig, axes = plt.subplots(len(values), 1, figsize=(7, 2.3 * len(values)), squeeze=False)
    for ax, (stage, ms) in zip(axes[:, 0], values.items()):
        _latency_histogram(ax, stage, ms)
    return _save(fig, path)


def _latency_histogram(ax, stage: str, ms: np.ndarray) -> None:
    positive = ms[ms > 0]
    log_x = (len(positive) == len(ms) and len(ms) > 1
             and positive.max() / positive.min() > LOG_X_RATIO)
    bins = min(40, max(5, len(ms)))
    if log_x:
        bins = np.geomspace(positive.min(), positive.max(), bins + 1)
        ax.set_xscale("log")
    ax.hist(ms, bins=bins, color="tab:blue", alpha=0.7)
    for q, style in ((50, "-"), (95, "--")):
        value = float(np.percentile(ms, q))
        ax.axvline(value, color="tab:red", linestyle=style, linewidth=1)
        ax.annotate(f"p{q} {value:.1f} ms", xy=(value, 1), xycoords=("data", "axes fraction"),
                    xytext=(3, -12 if q == 50 else -24), textcoords="offset points",
                    fontsize=8, color="tab:red")
    ax.set_title(f"{stage} (n={len(ms)})", fontsize=9)
    ax.set_xlabel("ms")
    ax.set_ylabel("frames")


def _subsample(points: np.ndarray, limit: int = MAX_POINTS_PER_OBJECT) -> np.ndarray:
    """Evenly strided, so the same run always draws the same picture."""
    if len(points) <= limit:
        return points
    return points[np.linspace(0, len(points) - 1, limit).astype(int)]


def _last_evaluated(run: EvaluationRun):
    for frame in reversed(run.frames):
        if frame.status in EVALUATED:
            return frame
    return None


def _plot_top_down(run: EvaluationRun, library: dict, path: Path) -> Path:
    """Truth against the final estimates in plan view: where and which objects went wrong."""
    fig, ax = plt.subplots(figsize=(7.5, 7.5))
    drawn = _draw_truth(ax, run)
    last = _last_evaluated(run)
    if last is not None:
        drawn |= _draw_detections(ax, last, library)
    drawn |= _draw_sensor_path(ax, run)
    if not drawn:
        _no_data(ax)
        ax.set_title("Scene, top-down")
        return _save(fig, path)
    suffix = f", detections of frame {last.index}" if last is not None else ""
    ax.set_title(f"Scene, top-down ({run.world_frame or 'world'}){suffix}", fontsize=10)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # only unlabelled markers: a legend would be empty
        ax.legend(fontsize=7, loc="best", markerscale=3)
    return _save(fig, path)


def _plot_surfaces(run: EvaluationRun, path: Path) -> Path:
    """Per object (rows) the true surface, the input cloud and each surface stage's cloud
    (columns) of the last evaluated frame, side view (x-z): the unseen far side of the scan and
    what the stages made of it."""
    evaluated = [i for i, frame in enumerate(run.frames) if frame.status in EVALUATED]
    clouds = last_clouds(run, evaluated)
    kinds = ["truth", *[k for k in SURFACE_KINDS if any(k in c for c in clouds.values())]]
    fig, axes = plt.subplots(max(len(clouds), 1), len(kinds),
                             figsize=(2.6 * len(kinds), 2.6 * max(len(clouds), 1)),
                             squeeze=False)
    if not clouds:
        _no_data(axes[0, 0], "no surface clouds matched to ground truth")
    for r, (name, by_kind) in enumerate(clouds.items()):
        low, high = by_kind["truth"].min(axis=0) - 0.1, by_kind["truth"].max(axis=0) + 0.1
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            if kind in by_kind:
                points = _subsample(by_kind[kind])
                ax.scatter(points[:, 0], points[:, 2], s=0.5,
                           c="0.5" if kind == "truth" else "tab:blue")
            ax.set(xlim=(low[0], high[0]), ylim=(low[2], high[2]), xticks=[], yticks=[])
            ax.set_aspect("equal")
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(KIND_TITLES.get(kind, "true surface"), fontsize=8)
    return _save(fig, path)


def _draw_truth(ax, run: EvaluationRun) -> bool:
    drawn = False
    for truth in run.truth:
        T = np.asarray(truth.T_world_object, dtype=float)
        if truth.model_points is None or len(truth.model_points) == 0:
            # No model to draw: still show where the object is.
            ax.plot(T[0, 3], T[1, 3], "+", color="grey", markersize=10)
            ax.annotate(truth.name, (T[0, 3], T[1, 3]), fontsize=8, color="dimgrey")
            drawn = True
            continue
        points = transform_points(T, _subsample(np.asarray(truth.model_points, dtype=float)))
        ax.scatter(points[:, 0], points[:, 1], s=1, color="lightgrey",
                   label=None if drawn else "ground truth")
        centre = points.mean(axis=0)
        ax.annotate(truth.name, (centre[0], centre[1]), fontsize=8, color="black", zorder=5,
                    ha="center", va="center")
        drawn = True
    return drawn


def _draw_detections(ax, frame, library: dict) -> bool:
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for k, detection in enumerate(frame.detections):
        model = library.get(detection.model)
        T = np.asarray(detection.T_world_object, dtype=float)
        label = f"id {detection.object_id}: {detection.model}"
        colour = colours[k % len(colours)]
        if model is None or len(model) == 0:
            ax.plot(T[0, 3], T[1, 3], "x", color=colour, label=f"{label} (no model)")
        else:
            points = transform_points(T, _subsample(np.asarray(model, dtype=float)))
            ax.scatter(points[:, 0], points[:, 1], s=2, color=colour, alpha=0.6, label=label)
            ax.annotate(label, (points[:, 0].max(), points[:, 1].max()), fontsize=7,
                        color=colour)
        drawn = True
    return drawn


def _draw_sensor_path(ax, run: EvaluationRun) -> bool:
    path = [p for p in run.sensor_path if p is not None and len(p) >= 2]
    if not path:
        return False
    xy = np.asarray([[p[0], p[1]] for p in path], dtype=float)
    ax.plot(xy[:, 0], xy[:, 1], "-", color="black", linewidth=1, label="sensor path")
    ax.plot(xy[0, 0], xy[0, 1], "o", color="black", markersize=4)
    ax.plot(xy[-1, 0], xy[-1, 1], ">", color="black", markersize=5)
    return True


# --------------------------------------------------------------------------------------------
# Markdown


def _summary_rows(metrics: dict) -> list[list[str]]:
    frames = metrics.get("frames", {})
    detection = metrics.get("detection", {})
    registration = metrics.get("registration", {})
    add_s = registration.get("add_s_m")
    return [
        ["frames (total / evaluated)", f"{frames.get('total', 0)} / {frames.get('evaluated', 0)}"],
        ["frame statuses", _statuses(frames)],
        ["frames dropped by nodes", _drops(frames)],
        ["detection precision", _fraction(detection.get("precision"))],
        ["detection recall", _fraction(detection.get("recall"))],
        ["registration recall", _fraction(registration.get("recall"))],
        ["final-frame recall", _fraction(registration.get("final_frame_recall"))],
        ["detections tracked (not registered globally)",
         _fraction(registration.get("tracked_share"))],
        ["registration ms per object, median (registered / tracked)",
         " / ".join(_formatted(_stat((registration.get("ms_per_object") or {}).get(mode),
                                     "median"), "{:.1f}") for mode in ("registered", "tracked"))],
        ["model accuracy", _fraction(registration.get("model_accuracy"))],
        ["ADD-S median / p95",
         f"{_metres(_stat(add_s, 'median'))} / {_metres(_stat(add_s, 'p95'))}"],
        ["RMSE median (right model)", _metres(_stat(registration.get("rmse_m"), "median"))],
        ["rotation error median (right model)",
         _degrees(_stat(registration.get("rotation_error_deg"), "median"))],
        ["translation error median (right model)",
         _metres(_stat(registration.get("translation_error_m"), "median"))],
    ] + _classification_rows(metrics)


def _classification_rows(metrics: dict) -> list[list[str]]:
    """Per-frame and fused classification (the report's summary and the CLI's share them); none
    for a run without classifications."""
    classification = metrics.get("classification") or {}
    if not classification.get("classified"):
        return []
    fused, final = classification.get("fused") or {}, classification.get("final_label") or {}
    targets = classification.get("targets") or {}

    def target(key: str) -> str:
        return f" (target >= {targets[key]:.0%})" if key in targets else ""

    rows = [["classification accuracy (per frame)", _fraction(classification.get("accuracy"))]]
    if fused.get("observations"):  # records with fused labels (older runs have none)
        rows += [[f"fused label accuracy, unknown = wrong{target('fused_accuracy')}",
                  _fraction(fused.get("accuracy"))],
                 ["fused label accuracy of the answered / answered share",
                  f"{_fraction(fused.get('accuracy_answered'))} / "
                  f"{_fraction(fused.get('coverage'))}"],
                 [f"final-label accuracy{target('final_label_accuracy')}",
                  f"{_fraction(final.get('accuracy'))} ({final.get('right', 0)} / "
                  f"{final.get('tracks', 0)} objects)"]]
    return rows


def _per_object_rows(metrics: dict) -> list[list[str]]:
    rows = []
    for name, obj in sorted(metrics.get("per_object", {}).items()):
        rows.append([name, _metres(obj.get("diameter_m")), str(obj.get("frames_matched", 0)),
                     _fraction(obj.get("recall")), _fraction(obj.get("model_accuracy")),
                     _metres(_stat(obj.get("add_s_m"), "median")),
                     _metres(_stat(obj.get("rmse_m"), "median")),
                     _degrees(_stat(obj.get("rotation_error_deg"), "median")),
                     "yes" if obj.get("final_frame_success") else "no"])
    return rows


def _latency_rows(metrics: dict) -> list[list[str]]:
    return [[stage, str(_stat(s, "count") or 0), _ms(_stat(s, "median")), _ms(_stat(s, "p95")),
             _ms(_stat(s, "max"))]
            for stage, s in sorted(metrics.get("latency_ms", {}).items())]


def _markdown(run: EvaluationRun, metrics: dict, title: str, plots: list[Path]) -> str:
    registration = metrics.get("registration", {})
    parts = [
        f"# {title}",
        "",
        f"- bag: `{run.bag}`",
        f"- mode: {run.mode}",
        f"- world frame: {run.world_frame}",
        f"- run time: {run.seconds:.1f} s",
        f"- success: {registration.get('success_rule', 'n/a')}",
        "",
        "## Summary",
        "",
        _table(["metric", "value"], _summary_rows(metrics)),
        "",
        "## Per object",
        "",
    ]
    objects = _per_object_rows(metrics)
    if objects:
        parts.append(_table(["object", "diameter", "frames matched", "recall",
                             "model accuracy", "ADD-S median", "RMSE median",
                             "rotation error median", "final-frame success"], objects))
    else:
        parts.append("No ground-truth objects with a model.")
    missing = metrics.get("truth_without_model") or []
    if missing:
        parts += ["", "Not scored (no library model): " + ", ".join(missing) + "."]
    classified = []
    for name, obj in sorted(metrics.get("per_object", {}).items()):
        if "classification" in obj:
            c = obj["classification"]
            classified.append([name, c["class"], c["most_common_label"], str(c["classified"]),
                               _fraction(c["accuracy"]), _fraction(c.get("fused_accuracy")),
                               c.get("final_label") or "n/a"])
    if classified:
        parts += ["", "## Classification", "",
                  "Per frame, and fused over the object's track (unknown = wrong); each answer "
                  "is scored against the object at its segmented box (or, where the run did "
                  "not record the boxes, the one its registration matched); the final label "
                  "is the fused label of the object's last scored answer.", "",
                  _table(["object", "class", "most common label", "classifications",
                          "accuracy per frame", "fused accuracy", "final label"], classified)]
    surfaces = metrics.get("surfaces") or {}
    if surfaces:
        kinds = [k for k in SURFACE_KINDS if k in surfaces["median_chamfer_m"]]
        rows = [[name, *[_metres((by_kind.get(k) or {}).get("chamfer_m")) for k in kinds]]
                for name, by_kind in surfaces["final_frame"].items()]
        rows.append(["median over all frames",
                     *[_metres(surfaces["median_chamfer_m"][k]) for k in kinds]])
        parts += ["", "## Surfaces", "", f"{surfaces['rule']}, last evaluated frame per object.",
                  "", _table(["object", *[KIND_TITLES[k] for k in kinds]], rows)]
    parts += ["", "## Latency (ms)", ""]
    latency = _latency_rows(metrics)
    parts.append(_table(["stage", "frames", "median", "p95", "max"], latency) if latency
                 else "No latency samples.")
    parts += ["", "## Warnings", ""]
    warnings = metrics.get("warnings") or []
    parts += [f"- {w}" for w in warnings] if warnings else ["none"]
    parts += ["", "## Plots", ""]
    captions = {ERROR_PLOT: "ADD-S over time", LATENCY_PLOT: "Stage latency",
                TOP_DOWN_PLOT: "Scene, top-down", SURFACES_PLOT: "Object surfaces"}
    for plot in plots:
        parts += [f"![{captions.get(plot.name, plot.stem)}]({plot.name})", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Public API


def write_report(run: EvaluationRun, metrics: dict, rows: list[MatchRow], library: dict,
                 output_dir: Path, title: str = "Scene evaluation") -> ReportPaths:
    """Write metrics.json, the three plots and report.md (linking them) into output_dir."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_json = output_dir / METRICS_JSON
    _write_metrics_json(metrics, metrics_json)
    plots = [
        _plot_error_over_time(run, metrics, rows, output_dir / ERROR_PLOT),
        _plot_latency(run, output_dir / LATENCY_PLOT),
        _plot_top_down(run, library, output_dir / TOP_DOWN_PLOT),
    ]
    if metrics.get("surfaces"):
        plots.append(_plot_surfaces(run, output_dir / SURFACES_PLOT))
    markdown = output_dir / REPORT_MD
    markdown.write_text(_markdown(run, metrics, title, plots) + "\n")
    return ReportPaths(markdown=markdown, metrics_json=metrics_json, plots=plots)


def summary_table(metrics: dict) -> str:
    """The few numbers worth a glance at the end of a CLI run, as a Markdown table."""
    frames = metrics.get("frames", {})
    detection = metrics.get("detection", {})
    registration = metrics.get("registration", {})
    latency = metrics.get("latency_ms", {})
    rows = [
        ["frames evaluated", f"{frames.get('evaluated', 0)} / {frames.get('total', 0)}"],
        ["detection recall", _fraction(detection.get("recall"))],
        ["registration recall", _fraction(registration.get("recall"))],
        ["final-frame recall", _fraction(registration.get("final_frame_recall"))],
        ["detections tracked (not registered globally)",
         _fraction(registration.get("tracked_share"))],
        ["model accuracy", _fraction(registration.get("model_accuracy"))],
        ["ADD-S median", _metres(_stat(registration.get("add_s_m"), "median"))],
    ]
    rows += _classification_rows(metrics)
    for kind, chamfer in ((metrics.get("surfaces") or {}).get("median_chamfer_m") or {}).items():
        rows.append([f"Chamfer to true surface, {KIND_TITLES[kind]}", _metres(chamfer)])
    stage = _headline_stage(latency)
    if stage is None:
        rows.append(["latency p50 / p95", "n/a"])
    else:
        s = latency[stage]
        rows.append([f"latency p50 / p95 ({stage})",
                     f"{_ms(_stat(s, 'median'))} / {_ms(_stat(s, 'p95'))} ms"])
    return _table(["metric", "value"], rows)
