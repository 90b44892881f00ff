"""`gmm-perception data <source> [options]`: build the datasets (cached; re-runs are instant)."""
from __future__ import annotations

import argparse
from pathlib import Path

from gmm_perception.data.mesh_dataset import default_data_dir


def pairs_main(argv: list[str] | None = None) -> int:
    """Registration pairs of the held-out SH3D models, cached by configuration."""
    from gmm_perception.data.held_out import TEST_SPLIT
    from gmm_perception.data.registration_pairs import MESH_SETTINGS, SETTINGS, cached_pairs
    from gmm_perception.data.sh3d import output_paths
    from gmm_perception.data.shape_set import MeshSet, ShapeSet

    parser = argparse.ArgumentParser(prog="gmm-perception data pairs", description=pairs_main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--setting", choices=SETTINGS, default="noisy")
    parser.add_argument("--count", type=int, default=None, help="default: one per test model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=1024, help="points per cloud")
    args = parser.parse_args(argv)
    points_path, meshes_path = output_paths(args.data_dir / "sh3d", 2048)
    if not points_path.is_file():
        raise SystemExit(f"{points_path} is missing: run `gmm-perception data sh3d` first")
    shapes = (MeshSet.load(meshes_path) if args.setting in MESH_SETTINGS
              else ShapeSet.load(points_path))
    test = shapes.subset(TEST_SPLIT)
    out = args.data_dir / "pairs" / f"sh3d_{args.setting}_seed{args.seed}_{args.points}.npz"
    pairs = cached_pairs(out, test, args.setting, args.count, args.seed, args.points,
                         progress=True)
    print(f"{len(pairs)} {args.setting} pairs: {out}")
    return 0


def views_main(argv: list[str] | None = None) -> int:
    """Cached single-view depth-camera and LiDAR scans of the pool's shapes (data/views.py), the
    views training samples from without ray casting; shapes added later are scanned alone."""
    from gmm_perception.data.pool import load_pool, select
    from gmm_perception.data.views import cached_view_pool, default_view_path

    parser = argparse.ArgumentParser(prog="gmm-perception data views",
                                     description=views_main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--splits", default="train,val", help="pool splits to scan")
    parser.add_argument("--views", type=int, default=8, help="views per shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    splits = args.splits.split(",")
    meshes = select(load_pool(args.data_dir, meshes=True), split=splits)
    path = default_view_path("pool_" + "_".join(splits), args.views, args.seed, args.data_dir)
    views = cached_view_pool(path, meshes, views_per_shape=args.views, seed=args.seed,
                             workers=args.workers)
    print(f"{len(meshes)} shapes x {args.views} views ({len(views.model_ids)} shapes held): {path}")
    return 0


def main(argv: list[str]) -> int:
    from gmm_perception.data import cgal, pool, seating, sh3d

    sources = {"sh3d": sh3d.main, "cgal": cgal.main, "pool": pool.main, "pairs": pairs_main,
               "views": views_main, "seating": seating.main}
    if not argv or argv[0] not in sources:
        raise SystemExit(f"usage: gmm-perception data {{{','.join(sources)}}} [options]")
    return sources[argv[0]](argv[1:])
