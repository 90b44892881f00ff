"""The seating set: a consistent family of high-resolution shapes for NeuralQAAD (issue 19).

NeuralQAAD compresses a *dataset of consistent shapes* (faces, bodies, skulls in the paper) into one
network and a code per shape; the network folds one shared input cloud into every member, so the
members must be alike. The pool's largest such family is seating: every model the pool labels
chair, armchair or sofa, plus its uncategorised SH3D models whose names say seat (stool, bench,
deck chair, ...; not "workbench", a table). The SH3D catalogues pose them all alike (z up, front
towards the catalogue's viewer) and the pool keeps that pose, centred in the unit sphere: the
canonical pose the autodecoder needs. 102 models in the pool of 2026-12-07 (83 labelled, 19 by
name).

Each model is sampled at `points` (default 100,000) area-weighted surface points, seeded per
model id, so rebuilding gives the same clouds. The pool's split travels with each shape: the
compressed set is train + val (the autodecoder fits these), test and cross are the "new shapes"
encoded against the frozen network. Built at set-up time from the pool (never committed):
`gmm-perception data seating`.
"""
from __future__ import annotations

import argparse
import re
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gmm_perception.data.mesh_dataset import default_data_dir
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.shape_set import MeshSet, ShapeSet

SEATING_CLASSES = ("chair", "armchair", "sofa")
SEAT_NAME = re.compile(r"chair|stool|bench|sofa|couch|seat|ottoman|pouf|settee|recliner", re.I)
NOT_SEAT_NAME = re.compile(r"workbench", re.I)
DEFAULT_POINTS = 100_000
COMPRESSED_SPLITS = ("train", "val")  # what the autodecoder stores; test / cross are new shapes


def is_seating(model_id: str, class_name: str) -> bool:
    """Labelled seating, or an uncategorised model whose name (after the source) says seat."""
    if class_name in SEATING_CLASSES:
        return True
    name = model_id.split(":", 1)[-1]
    return class_name == "uncategorised" and bool(SEAT_NAME.search(name)) \
        and not NOT_SEAT_NAME.search(name)


def seating_rows(meshes: MeshSet) -> np.ndarray:
    """Row indices of the seating family in a pool MeshSet."""
    names = [meshes.class_names[label] if label >= 0 else "uncategorised"
             for label in meshes.labels]
    return np.array([row for row, (model_id, name) in enumerate(zip(meshes.model_ids, names))
                     if is_seating(str(model_id), name)], dtype=np.intp)


def model_seed(model_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(model_id.encode())])


def output_path(out_dir: Path, points: int) -> Path:
    return out_dir / f"seating_points_{points}.npz"


def build_seating(pool_meshes: str | Path, out_dir: str | Path, points: int = DEFAULT_POINTS,
                  seed: int = 0, progress: bool = True) -> Path:
    """Sample every seating model of the pool at `points` points; write a ShapeSet (float32)."""
    meshes = MeshSet.load(pool_meshes)
    rows = seating_rows(meshes)
    if len(rows) == 0:
        raise ValueError(f"{pool_meshes} holds no seating models")
    clouds = np.empty((len(rows), points, 3), dtype=np.float32)
    for slot, row in enumerate(tqdm(rows, desc="seating", unit="shape", disable=not progress)):
        model_id = str(meshes.model_ids[row])
        clouds[slot] = sample_surface(meshes.mesh(int(row)), points, model_seed(model_id, seed))
    chosen = meshes.select(np.isin(np.arange(len(meshes)), rows))
    shapes = ShapeSet(points=clouds, labels=chosen.labels, class_names=list(chosen.class_names),
                      split=chosen.split, model_ids=chosen.model_ids,
                      meta={"builder": "seating", "points": points, "seed": seed,
                            "source": str(pool_meshes), "classes": list(SEATING_CLASSES),
                            "names": SEAT_NAME.pattern, "not_names": NOT_SEAT_NAME.pattern})
    return shapes.save(output_path(Path(out_dir), points))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gmm-perception data seating",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=Path, default=None,
                        help="pool meshes (default: <data>/pool/pool_meshes.npz)")
    parser.add_argument("--out", type=Path, default=None, help="default: <data>/seating")
    parser.add_argument("--points", type=int, default=DEFAULT_POINTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = default_data_dir()
    pool = args.pool or root / "pool" / "pool_meshes.npz"
    if not pool.exists():
        raise SystemExit(f"{pool} is missing: run `gmm-perception data pool` first")
    path = build_seating(pool, args.out or root / "seating", args.points, args.seed)
    shapes = ShapeSet.load(path)
    splits = {name: int(np.sum(shapes.split == name)) for name in np.unique(shapes.split)}
    print(f"wrote {path}: {len(shapes)} seating shapes x {args.points:,} points, splits {splits}")
    return 0
