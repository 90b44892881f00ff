"""The held-out shapes, thread budget, timing and figures shared by the model benchmarks, so that
they score the same test objects the same way.

Test set: `gmm_perception.data.held_out` (the module the training tasks validate through), on the
SH3D test split (`TEST_SPLIT`: models no training ever saw), optionally a fixed seeded subset, with
this module's SEED. Per model, all drawn from generators seeded with [SEED, mesh index], so a
model's clouds do not depend on which other models are in the run (`--max-models` only drops
models): the stored surface cloud, simulated depth-camera scans (the D435 model of the training
tasks) and independent fresh area-weighted samples of the true mesh surface (ground truth that no
input point is part of). With `unit_sphere` (the shape-model and upsampling benchmarks) everything
is mapped into the unit sphere of the *true* shape, so distances and NLLs compare across methods
and with the training's validation numbers; each model is turned about z by one seeded angle (all
of its clouds alike), as the training's validation does.

Rows (`load_benchmark_rows`): one held-out set per row of `data.held_out.benchmark_sources`, the
set the registration benchmark reports too: "sh3d test" (the set above, as in earlier model
cards), then, when the shape pool is built (`gmm-perception data pool`), "pool test <source>" per
training source and "cross-source <source>" per source of the cross-source test. Each row is drawn
as above with the same seed and options; its per-model key is the model's row in the SH3D MeshSet
(the SH3D row: as before) or in the row's own pool MeshSet, and `max_models` applies per row.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from gmm_perception.data.held_out import TEST_SPLIT, HeldOutSet, benchmark_sources, held_out_set
from gmm_perception.data.shape_set import MeshSet, ShapeSet

# Neither the training's pool seed (0) nor its validation seed (1_000_003) nor the
# classification benchmark's: these scans and samples are new to every trained model.
SEED = 20_261_123

SH3D_ROW = "sh3d test"  # data.held_out.benchmark_sources' name of the SH3D test split's row


def load_test_shapes(data_dir: Path, max_models: int = 0, surface_points: tuple[int, ...] = (2048,),
                     scan_points: int = 2048, progress: bool = True, *, seed: int = SEED,
                     views: int = 1, unit_sphere: bool = True) -> HeldOutSet:
    """The SH3D test set of the module docstring (the "sh3d test" row of `load_benchmark_rows`);
    `max_models` 0 keeps every test model. Inputs cut from it take `rng(row, stream)` with streams
    from 100 up."""
    sets, _ = load_benchmark_rows(data_dir, max_models, surface_points, scan_points, progress,
                                  seed=seed, views=views, unit_sphere=unit_sphere, pool=False)
    return sets[SH3D_ROW]


def row_split(shapes: ShapeSet) -> str:
    """The one split the shapes of a benchmark row hold ('test' or 'cross')."""
    splits = np.unique(shapes.split)
    if len(splits) != 1:
        raise ValueError(f"a benchmark row holds one split, this one {splits.tolist()}")
    return str(splits[0])


def load_benchmark_rows(data_dir: Path, max_models: int = 0,
                        surface_points: tuple[int, ...] = (2048,), scan_points: int = 2048,
                        progress: bool = True, *, seed: int = SEED, views: int = 1,
                        unit_sphere: bool = True, pool: bool = True,
                        classes: Sequence[str] | None = None
                        ) -> tuple[dict[str, HeldOutSet], dict[str, str]]:
    """(row name -> held-out set, row name -> note) for the rows of the module docstring, in
    benchmark_sources' order; `max_models` per row (0 = every model), the other options as
    `load_test_shapes`. `pool=False`: the SH3D row only. Without a built pool the pool rows are
    left out (benchmark_sources says why on stderr).

    `classes` (a classifier's class names): each row keeps only the models whose category is one
    of them, matched by name, and its labels index `classes`; the note says how many were
    dropped ("47 of 109 (47 uncategorised)", "" when none), and a row with none left is not in
    the sets and its note says why."""
    shapes = ShapeSet.load(data_dir / "sh3d" / "sh3d_points_2048.npz")
    meshes = MeshSet.load(data_dir / "sh3d" / "sh3d_meshes.npz")
    # The SH3D row from the whole SH3D set (held_out_set takes its test split), so that its
    # per-model keys stay the rows of the whole MeshSet: the same clouds as earlier cards.
    sources = {SH3D_ROW: (shapes, meshes)}
    if pool:
        point_sets = benchmark_sources(data_dir, pool=True, sh3d=False)
        mesh_sets = benchmark_sources(data_dir, meshes=True, pool=True, sh3d=False) \
            if point_sets else {}
        sources.update({name: (point_sets[name], mesh_sets[name]) for name in point_sets
                        if name in mesh_sets})
    sets: dict[str, HeldOutSet] = {}
    notes: dict[str, str] = {}
    for name, (row_shapes, row_meshes) in sources.items():
        if not len(row_shapes):
            notes[name] = "no models in this row"
            continue
        split = row_split(row_shapes.subset(TEST_SPLIT) if name == SH3D_ROW else row_shapes)
        categories: list[str] = []
        if classes is not None:
            in_split = row_shapes.subset(split)
            names = np.asarray(row_shapes.class_names)[in_split.labels]
            unknown = sorted(set(names) - set(classes))
            dropped = ", ".join(f"{np.sum(names == c)} {c}" for c in unknown)
            notes[name] = (f"{np.isin(names, unknown).sum()} of {len(in_split)} ({dropped})"
                           if unknown else "")
            if len(unknown) == len(set(names)):
                notes[name] = (f"no model of the classifier's classes: all {len(in_split)} "
                               f"dropped ({dropped})")
                continue
            if unknown:
                categories = [c for c in row_shapes.class_names if c in classes]
        held = held_out_set(row_shapes, row_meshes, split=split, seed=seed,
                            categories=categories, max_models=max_models, views=views,
                            scan_points=scan_points, surface_points=surface_points,
                            unit_sphere=unit_sphere, progress=progress)
        if classes is not None:
            held.labels = np.array([list(classes).index(held.class_names[label])
                                    for label in held.labels], dtype=np.int64)
            held.class_names = list(classes)
        sets[name] = held
    return sets, notes


def limit_threads(threads: int) -> None:
    """Cap torch and every BLAS/OpenMP pool loaded so far at `threads` for the rest of the
    process. Import the libraries to be timed (open3d) before calling.

    On a machine whose cores are busy (e.g. trainings running), 2 threads can be many times slower
    than 1 (measured here with two trainings on 2 cores: ShapeGF denoise 1.0 s vs 6-9 s, one EM fit
    of 128 components 1.7 s vs 24 s): thread pools spin-wait for a core. Time on an idle machine,
    or pass --threads 1 there."""
    import importlib

    import torch
    from threadpoolctl import threadpool_limits

    importlib.import_module("sklearn.mixture")  # loads scikit-learn's OpenMP runtime, to cap it
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # applied now; stays until restored, which nothing does


def timed(function, *args, **kwargs):
    """(function's result, wall milliseconds)."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, (time.perf_counter() - started) * 1e3


def time_summary(ms) -> dict:
    ms = np.asarray(ms, dtype=float)
    ms = ms[np.isfinite(ms)]
    if not len(ms):
        return {"ms_median": float("nan"), "ms_p95": float("nan")}
    return {"ms_median": float(np.median(ms)), "ms_p95": float(np.percentile(ms, 95))}


def plot_clouds(path: Path, rows: dict[str, dict[str, np.ndarray]], title: str) -> Path:
    """A PNG grid of 3-D scatter plots: one row per entry of `rows`, one panel per cloud (title ->
    (n, 3) points), all on the same unit-sphere axes and viewpoint so panels compare by eye."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(len(panels) for panels in rows.values())
    figure = Figure(figsize=(2.6 * columns, 2.8 * len(rows)))
    FigureCanvasAgg(figure)
    for r, (row_name, panels) in enumerate(rows.items()):
        for c, (name, cloud) in enumerate(panels.items()):
            axes = figure.add_subplot(len(rows), columns, r * columns + c + 1, projection="3d")
            axes.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=0.5, c=cloud[:, 2],
                         cmap="viridis", depthshade=False)
            axes.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticks=[], yticks=[], zticks=[])
            axes.set_box_aspect((1, 1, 1))
            axes.view_init(elev=20, azim=-60)
            axes.set_title(f"{row_name}: {name}" if c == 0 else name, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path


@dataclass
class SizedObject:
    """A validation shape at a real size, in metres, for tuning a stage's parameter."""

    model_id: str
    size_m: float  # across (twice the radius of the true shape's unit sphere)
    truth: np.ndarray  # (T, 3) fresh samples of the true surface
    surface: np.ndarray  # (P, 3) other samples of the whole surface (many views accumulated)
    view: np.ndarray  # (P, 3) one simulated depth-camera view (one side only)
    rng: Callable[[int], np.random.Generator]  # the model's generator of a stream (HeldOutSet)

    def inputs(self, count: int) -> dict[str, np.ndarray]:
        """`count` points of the whole surface ("surface") and of the view ("view")."""
        return {kind: cloud[self.rng(101 + count).choice(len(cloud), count, replace=False)]
                .astype(np.float32)
                for kind, cloud in (("surface", self.surface), ("view", self.view))}


def sized_validation_objects(data_dir: Path, max_models: int, seed: int, points: int,
                             truth_points: int = 20_000, source: str = "sh3d"
                             ) -> list[SizedObject]:
    """Pool val shapes of `source` (never a test or cross-source shape: parameters are chosen on
    them), each scaled to 0.5-2 m across (one seeded draw per model), with `points` of its
    whole surface and of one view to cut inputs from."""
    from gmm_perception.data import pool as shape_pool
    from gmm_perception.data.held_out import POOL_VALIDATION_SPLIT

    shapes = shape_pool.select(shape_pool.load_pool(data_dir), POOL_VALIDATION_SPLIT, source)
    meshes = shape_pool.select(shape_pool.load_pool(data_dir, meshes=True),
                               POOL_VALIDATION_SPLIT, source)
    held = held_out_set(shapes, meshes, split=POOL_VALIDATION_SPLIT, seed=seed,
                        max_models=max_models, views=1, scan_points=points,
                        surface_points=(truth_points, points), unit_sphere=True)
    objects = []
    for row in range(len(held)):
        radius = held.rng(row, 100).uniform(0.25, 1.0)
        objects.append(SizedObject(str(held.model_ids[row]), 2 * radius,
                                   held.surfaces[0][row] * radius,
                                   held.surfaces[1][row] * radius, held.scans[row, 0] * radius,
                                   partial(held.rng, row)))
    return objects
