"""The classification benchmark's sensor views: what a robot gets, scored by point count, range
and sensor (bench/classification.py, issue 17).

Views. `data.views` views (a RealSense D435 and an Ouster OS1-64 at realistic ranges, 200-20,000
returns per view) of the shape pool's categorised shapes (its "uncategorised" dropped) in the
benchmark rows of the pool (`data.held_out.benchmark_sources`: "pool test <source>" and
"cross-source <source>"; a row with no categorised shape is missing with the reason), built once
and cached under data/views with the benchmark's seed (the training pools use seed 0 on train and
val shapes: other file, other seed). `max_models` keeps a fixed seeded subset of each row's
shapes (cached in a file of its own, so that a small run never overwrites the full one).

Each view: fresh seeded sensor noise and the object's upright frame in metres, as
`data.view_loader.ViewLoader.view_cloud` makes them (the scene pipeline classifies object clouds
in a z-up fixed frame at real size), then turned about z by its shape's seeded heading.
Accumulations: per shape, the cyclic windows of ACCUMULATED consecutive views (V of them when
V > ACCUMULATED, else one of all V), merged as the scene pipeline accumulates frames
(`data.views.accumulate` at the pool's voxel) from the same noisy turned views. Every model
scores the same clouds.

Scores per model and row: accuracy and mean class accuracy of single views and accumulations;
single-view accuracy binned by returns (COUNT_EDGES), by range (sensor to object centre,
RANGE_EDGES) and by sensor, accumulations by their point count; every bin with its count. A
model's classes are matched by name: shapes of a class it does not know are dropped (noted).
The pool draws each shape's size (0.3-2 m across) whatever its class and sets the range for the
point count, so a range bin mixes distance with object size (the near bins hold small objects).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from gmm_perception.data.views import SENSOR_KINDS, accumulate
from gmm_perception.metrics.classification import labels_by_name

COUNT_EDGES = (500, 1000, 2000, 5000)
COUNT_NAMES = ("<500", "500-1k", "1k-2k", "2k-5k", ">=5k")
RANGE_EDGES = (1.0, 2.0, 4.0, 8.0)  # metres
RANGE_NAMES = ("<1 m", "1-2 m", "2-4 m", "4-8 m", ">=8 m")
ACCUMULATED = 3
CACHE_NAME = "pool_bench_classes"  # data/views/<name>_<V>v_seed<seed>.npz
UNCATEGORISED = "uncategorised"
# per-shape rng streams: [seed, crc32(model id), stream]
_HEADING_STREAM, _NOISE_STREAM, _SIZE_STREAM = 1, 2, 3


@dataclass
class ViewRow:
    """One benchmark row's clouds (object frame, metres, noisy, turned about z)."""

    model_ids: np.ndarray  # (S,)
    shape_class: np.ndarray  # (S,) class name of each shape
    clouds: list[np.ndarray]  # V single views
    view_shape: np.ndarray  # (V,) index into model_ids
    points: np.ndarray  # (V,) returns in the view
    distance: np.ndarray  # (V,) metres, sensor to object centre
    sensor: np.ndarray  # (V,) SENSOR_KINDS name
    accumulated: list[np.ndarray]  # A accumulations
    accumulated_shape: np.ndarray  # (A,)
    accumulated_points: np.ndarray  # (A,) points after voxelisation
    note: str = ""  # what the row dropped before any model ("47 of 109 uncategorised")
    # (S,) metres per unit of each shape: as the pool drew it, and at its class's real size
    # (data/class_sizes.py), for `at_class_sizes`.
    pool_scale: np.ndarray | None = None
    class_scale: np.ndarray | None = None


def at_class_sizes(row: ViewRow, spread: float, seed: int) -> ViewRow:
    """The row with every shape at its class's real size, spread as training spreads it (per
    shape a seeded factor), for models trained on metric sizes. Ray casting is scale-free but for
    the noise: the views of a shape made f times larger are those of the sensor f times farther,
    so the clouds and the ranges are scaled by one factor per shape."""
    from gmm_perception.data.class_sizes import size_factor

    factor = np.array([row.class_scale[s] / row.pool_scale[s] * size_factor(
        np.random.default_rng([seed, zlib.crc32(str(m).encode()), _SIZE_STREAM]), spread)
        for s, m in enumerate(row.model_ids)])
    return replace(row, clouds=[c * np.float32(factor[s]) for c, s in
                                zip(row.clouds, row.view_shape)],
                   distance=row.distance * factor[row.view_shape],
                   accumulated=[c * np.float32(factor[s]) for c, s in
                                zip(row.accumulated, row.accumulated_shape)])


def bin_index(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Bin of each value: 0 below edges[0], k for edges[k-1] <= value < edges[k]."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float),
                           side="right")


def binned_accuracy(correct: np.ndarray, bins: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    """Per bin name: count, correct and accuracy (None for an empty bin)."""
    correct, bins = np.asarray(correct, dtype=bool), np.asarray(bins)
    out = []
    for k, name in enumerate(names):
        hit = correct[bins == k]
        out.append({"bin": name, "count": int(len(hit)), "correct": int(hit.sum()),
                    "accuracy": float(hit.mean()) if len(hit) else None})
    return out


def view_metrics(correct: np.ndarray, points: np.ndarray, distance: np.ndarray | None = None,
                 sensor: np.ndarray | None = None) -> dict:
    """The binned accuracies of one setting: by point count, and (single views) by range and by
    sensor."""
    out = {"by_points": binned_accuracy(correct, bin_index(points, COUNT_EDGES), COUNT_NAMES)}
    if distance is not None:
        out["by_range"] = binned_accuracy(correct, bin_index(distance, RANGE_EDGES), RANGE_NAMES)
    if sensor is not None:
        out["by_sensor"] = binned_accuracy(
            correct, np.array([SENSOR_KINDS.index(s) for s in sensor], dtype=np.int64),
            SENSOR_KINDS)
    return out


def _seeded_subset(count: int, max_models: int, seed: int) -> np.ndarray:
    """The sorted rows data.held_out keeps with `max_models` (all when 0 or >= count)."""
    if not max_models or max_models >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_models, replace=False))


def cache_path(data_dir: Path, views: int, seed: int, max_models: int) -> Path:
    from gmm_perception.data.views import default_view_path

    name = CACHE_NAME + (f"_max{max_models}" if max_models else "")
    return default_view_path(name, views, seed, data_dir)


def view_rows(data_dir: Path, views: int, seed: int, max_models: int = 0,
              cache: Path | None = None, workers: int = 1, progress: bool = True
              ) -> tuple[dict[str, ViewRow], dict[str, str]]:
    """({row: ViewRow}, {row: note}) for the pool rows of the module docstring; a row without
    categorised shapes (or no pool at all) has only its note."""
    from gmm_perception.data.class_sizes import class_scale
    from gmm_perception.data.held_out import benchmark_sources
    from gmm_perception.data.pool import load_pool
    from gmm_perception.data.view_loader import ViewLoader
    from gmm_perception.data.views import cached_view_pool
    from gmm_perception.geometry.transforms import rotation_z

    try:
        meshes = load_pool(data_dir, meshes=True)
    except FileNotFoundError as error:
        return {}, {"pool": str(error)}
    chosen: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    for name, row in benchmark_sources(data_dir, meshes=True, sh3d=False).items():
        categorised = np.asarray(row.class_names)[row.labels] != UNCATEGORISED
        if not categorised.any():
            notes[name] = f"no categorised shape: all {len(row)} are {UNCATEGORISED}"
            continue
        ids = row.model_ids[categorised]
        chosen[name] = ids[_seeded_subset(len(ids), max_models, seed)]
        notes[name] = (f"{len(row) - categorised.sum()} of {len(row)} {UNCATEGORISED}"
                       if not categorised.all() else "")
    if not chosen:
        return {}, notes
    every = [str(m) for ids in chosen.values() for m in ids]
    pool = cached_view_pool(cache or cache_path(data_dir, views, seed, max_models), meshes,
                            every, views, seed, workers=workers, progress=progress)
    # The training loader's own sensor noise and sensor-to-object change (view_cloud), kept
    # in metres: training divides by the shape's scale, the scene pipeline does not.
    loader = ViewLoader(pool, noise=True, seed=seed)
    mesh_row = {str(m): i for i, m in enumerate(meshes.model_ids)}
    rows = {}
    for name, ids in chosen.items():
        clouds, view_shape, accumulated, accumulated_shape = [], [], [], []
        every_view = []
        for s, model_id in enumerate(ids):
            key = zlib.crc32(str(model_id).encode())
            heading = np.random.default_rng([seed, key, _HEADING_STREAM]).uniform(0, 2 * np.pi)
            turn = rotation_z(np.array([heading]))[0].T  # row vectors: x @ R^T = R x
            shape_views = pool.views_of(pool.row_of(str(model_id)))
            turned = [loader.view_cloud(int(v), np.random.default_rng(
                [seed, key, _NOISE_STREAM, j])) @ turn for j, v in enumerate(shape_views)]
            clouds += [c.astype(np.float32) for c in turned]
            view_shape += [s] * len(turned)
            every_view += list(shape_views)
            n = len(turned)
            windows = ([[(j + k) % n for k in range(ACCUMULATED)] for j in range(n)]
                       if n > ACCUMULATED else [list(range(n))])
            accumulated += [accumulate([turned[k] for k in w], loader.voxel) for w in windows]
            accumulated_shape += [s] * len(windows)
        every_view = np.asarray(every_view, dtype=np.int64)
        labels = pool.labels[[pool.row_of(str(m)) for m in ids]]
        rows[name] = ViewRow(
            model_ids=np.asarray(ids), shape_class=np.asarray(pool.class_names)[labels],
            clouds=clouds, view_shape=np.asarray(view_shape, dtype=np.int64),
            points=np.asarray(pool.point_count(every_view)), distance=pool.distance[every_view],
            sensor=np.asarray(SENSOR_KINDS)[pool.sensor_kind[every_view]],
            accumulated=accumulated, accumulated_shape=np.asarray(accumulated_shape, np.int64),
            accumulated_points=np.array([len(c) for c in accumulated], dtype=np.int64),
            note=notes[name], pool_scale=pool.scale[[pool.row_of(str(m)) for m in ids]],
            class_scale=np.array([class_scale(str(c), meshes.vertices[mesh_row[str(m)]])
                                  for c, m in zip(np.asarray(pool.class_names)[labels], ids)]))
    return rows, notes


def shape_labels(row: ViewRow, class_names: list[str]) -> tuple[np.ndarray, str]:
    """(per shape its label in `class_names` by name, -1 when the model lacks the class; the
    note of what was dropped, "" when nothing)."""
    labels = labels_by_name(row.shape_class, class_names)
    unknown = sorted(set(row.shape_class[labels < 0]))
    note = (f"{int(np.sum(labels < 0))} of {len(labels)} shapes of classes the model lacks "
            f"({', '.join(unknown)})" if unknown else "")
    return labels, note


Run = Callable[[list[np.ndarray], np.ndarray], tuple[dict, np.ndarray]]


def score_row(row: ViewRow, class_names: list[str], run: Run) -> dict | None:
    """One model on one row: {"dropped", "shapes", "single", "accumulated"}, each setting the
    metrics of `run` (clouds, labels) -> (metrics, (N, C) log-scores) plus the binned
    accuracies; None when the model knows none of the row's classes."""
    labels, note = shape_labels(row, class_names)
    if not (labels >= 0).any():
        return None
    out = {"dropped": "; ".join(n for n in (row.note, note) if n),
           "shapes": int(np.sum(labels >= 0))}
    for setting, clouds, shape, points, distance, sensor in (
            ("single", row.clouds, row.view_shape, row.points, row.distance, row.sensor),
            ("accumulated", row.accumulated, row.accumulated_shape, row.accumulated_points,
             None, None)):
        keep = labels[shape] >= 0
        truth = labels[shape][keep]
        metrics, logits = run([c for c, k in zip(clouds, keep) if k], truth)
        correct = logits.argmax(1) == truth
        out[setting] = {**metrics, **view_metrics(
            correct, points[keep], None if distance is None else distance[keep],
            None if sensor is None else sensor[keep])}
    return out


def _ece(metrics: dict) -> str:
    """ECE before / after the checkpoint's temperature (15 bins)."""
    return f"{metrics['ece_raw']:.3f} / {metrics['ece_calibrated']:.3f}"


def _cell(entry: dict) -> str:
    return "-" if entry["accuracy"] is None else f"{entry['accuracy']:.3f} ({entry['count']})"


def print_view_tables(results: dict[str, dict[str, dict]], views: int,
                      print_table: Callable) -> None:
    """The summary and binned tables of `results` ({row: {model: score_row(...)}})."""
    pairs = [(row, model, r) for row, models in results.items() for model, r in models.items()]
    print(f"\nSensor views (D435 depth camera, OS1-64 LiDAR; object frame in metres, sensor "
          f"noise): {views} single views per shape and accumulations of {ACCUMULATED} views:\n")
    print_table(["set", "model", "shapes", "dropped (not a class)", "views", "view acc.",
                 "view mean class acc.", "view ECE raw / cal.", "accumulations", "accum. acc.",
                 "accum. mean class acc.", "accum. ECE raw / cal."],
                [[row, model, str(r["shapes"]), r["dropped"] or "-",
                  str(r["single"]["objects"]), f"{r['single']['accuracy']:.3f}",
                  f"{r['single']['mean_class_accuracy']:.3f}", _ece(r["single"]),
                  str(r["accumulated"]["objects"]), f"{r['accumulated']['accuracy']:.3f}",
                  f"{r['accumulated']['mean_class_accuracy']:.3f}", _ece(r["accumulated"])]
                 for row, model, r in pairs], "llrlrrrrrrrr")
    for title, setting, key, names in (
            ("Single views: accuracy (views) by returns", "single", "by_points", COUNT_NAMES),
            ("Single views: accuracy (views) by range, sensor to object centre", "single",
             "by_range", RANGE_NAMES),
            ("Single views: accuracy (views) by sensor", "single", "by_sensor", SENSOR_KINDS),
            (f"Accumulations of {ACCUMULATED} views: accuracy (clouds) by points after the "
             "voxel grid", "accumulated", "by_points", COUNT_NAMES)):
        print(f"\n{title}:\n")
        print_table(["set", "model", *names],
                    [[row, model, *(_cell(e) for e in r[setting][key])]
                     for row, model, r in pairs], "ll" + "r" * len(names))


def plot_view_accuracy(results: dict[str, dict[str, dict]], path: Path) -> Path:
    """Single-view accuracy against returns and against range: a line per model and row (solid:
    the first row, then dashed, dotted, ...), empty bins left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 5))
    FigureCanvasAgg(figure)
    models = list(dict.fromkeys(m for models in results.values() for m in models))
    styles = ("-", "--", ":", "-.")
    for panel, (key, names, label) in enumerate((
            ("by_points", COUNT_NAMES, "returns in the view"),
            ("by_range", RANGE_NAMES, "range, sensor to object centre"))):
        axes = figure.add_subplot(1, 2, panel + 1)
        for r, (row, by_model) in enumerate(results.items()):
            for model, result in by_model.items():
                accuracy = [np.nan if e["accuracy"] is None else e["accuracy"]
                            for e in result["single"][key]]
                axes.plot(range(len(names)), accuracy, styles[r % len(styles)], marker="o",
                          color=f"C{models.index(model)}", label=f"{model}, {row}")
        axes.set(xticks=range(len(names)), xticklabels=names, xlabel=label, ylim=(0, 1.02),
                 ylabel="accuracy")
        axes.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    columns = max(1, min(3, len(labels)))
    figure.legend(handles, labels, loc="lower center", ncol=columns, fontsize=7)
    figure.suptitle("Classification of single sensor views (D435, OS1-64)", fontsize=10)
    # Room under the panels for the legend (one line per `columns` entries).
    figure.tight_layout(rect=(0, 0.05 * -(-len(labels) // columns) + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path
