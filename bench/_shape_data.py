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
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gmm_perception.data.held_out import TEST_SPLIT, HeldOutSet, held_out_set
from gmm_perception.data.shape_set import MeshSet, ShapeSet

# Neither the training's pool seed (0) nor its validation seed (1_000_003) nor the
# classification benchmark's: these scans and samples are new to every trained model.
SEED = 20_261_123


def load_test_shapes(data_dir: Path, max_models: int = 0, surface_points: tuple[int, ...] = (2048,),
                     scan_points: int = 2048, progress: bool = True, *, seed: int = SEED,
                     views: int = 1, unit_sphere: bool = True) -> HeldOutSet:
    """The SH3D test set of the module docstring; `max_models` 0 keeps every test model. Inputs
    cut from it take `rng(row, stream)` with streams from 100 up."""
    shapes = ShapeSet.load(data_dir / "sh3d" / "sh3d_points_2048.npz")
    meshes = MeshSet.load(data_dir / "sh3d" / "sh3d_meshes.npz")
    return held_out_set(shapes, meshes, split=TEST_SPLIT, seed=seed, max_models=max_models,
                        views=views, scan_points=scan_points, surface_points=surface_points,
                        unit_sphere=unit_sphere, progress=progress)


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
