"""ShapeSets from the public benchmarks: ModelNet40/10 (OFF trees and PointNet's HDF5 release) and
ShapeNetCore (v1 and v2 folder layouts).

Every result follows the ShapeSet conventions: z up, centred on the bounding-box centre, inside
the unit sphere. Up axes of the sources:
- ModelNet OFF meshes are z up (ModelNet10 is manually aligned; ModelNet40's original release is
  mostly upright, rotated about z only, and has a few misaligned models);
- PointNet's `modelnet40_ply_hdf5_2048` is y up (its augmentation rotates about y);
- ShapeNetCore meshes are y up (OBJ convention).
Sampling is seeded per model (seed and model id), so a model's points do not depend on which other
classes or files were loaded. Unreadable models are skipped, logged and listed in meta["skipped"].
"""
from __future__ import annotations

import csv
import json
import logging
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import h5py
import numpy as np
from tqdm import tqdm

from gmm_perception.data.formats import FormatError, load_mesh
from gmm_perception.data.mesh_ops import Y_UP_TO_Z_UP, normalize_mesh, sample_surface
from gmm_perception.data.shape_set import SPLITS, ShapeSet

log = logging.getLogger(__name__)

# The 13 ShapeNetCore categories of 3D-R2N2 and most completion/reconstruction benchmarks.
SHAPENET_SYNSETS = {
    "02691156": "airplane", "02828884": "bench", "02933112": "cabinet", "02958343": "car",
    "03001627": "chair", "03211117": "display", "03636649": "lamp", "03691459": "loudspeaker",
    "04090263": "rifle", "04256520": "sofa", "04379243": "table", "04401088": "telephone",
    "04530566": "watercraft",
}
SHAPENET_TEST_FRACTION = 0.2


class _Model(NamedTuple):
    path: Path
    class_name: str
    split: str
    model_id: str


def _model_rng(seed: int, model_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(model_id.encode())])


def _check_up_axis(up_axis: str) -> None:
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' or 'z', got '{up_axis}'")


def _synset_key(folder: str) -> str:
    """Synset ids zero-padded to 8 digits: some copies of the split CSV lost the leading 0."""
    return folder.zfill(8) if folder.isdigit() else folder


def _sample_models(models: list[_Model], num_points: int, seed: int, up_axis: str,
                   meta: dict, progress: bool, desc: str) -> ShapeSet:
    """Normalise and surface-sample each model's mesh into one ShapeSet."""
    _check_up_axis(up_axis)  # before the loop, which treats ValueError as a broken model
    class_names = sorted({m.class_name for m in models})
    points, kept, skipped = [], [], dict(meta.get("skipped", {}))
    for model in tqdm(models, desc=desc, unit="model", disable=not progress):
        try:
            mesh = normalize_mesh(load_mesh(model.path), up_axis)
            points.append(sample_surface(mesh, num_points, _model_rng(seed, model.model_id)))
        except ValueError as exc:  # FormatError included: one broken model must not sink the set
            skipped[model.model_id] = str(exc)
            continue
        kept.append(model)
    if skipped:
        log.warning("%s: skipped %d models (see meta['skipped'])", desc, len(skipped))
    if not kept:
        raise ValueError(f"{desc}: none of the {len(models)} models could be read")
    return ShapeSet(np.stack(points), [class_names.index(m.class_name) for m in kept],
                    class_names, [m.split for m in kept], [m.model_id for m in kept],
                    {**meta, "num_points": num_points, "seed": seed, "up_axis": up_axis,
                     "skipped": skipped})


def _select(available: Sequence[str], wanted: Sequence[str] | None, root: Path) -> list[str]:
    if wanted is None:
        return list(available)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ValueError(f"{root}: no class {unknown}; available: {sorted(available)}")
    return [c for c in available if c in set(wanted)]


def load_modelnet_folder(root: str | Path, num_points: int = 1024, seed: int = 0,
                         classes: Sequence[str] | None = None, up_axis: str = "z",
                         progress: bool = True) -> ShapeSet:
    """ModelNet40/10 as distributed: `<root>/<class>/{train,test}/*.off`, the split kept.

    Class names are sorted (ModelNet's label order); model ids are `<class>/<file stem>`.
    """
    root = Path(root)
    available = sorted(d.name for d in root.iterdir()
                       if d.is_dir() and any((d / s).is_dir() for s in SPLITS)) \
        if root.is_dir() else []
    if not available:
        raise FileNotFoundError(f"{root}: no <class>/train or <class>/test folders")
    models = [_Model(path, name, split, f"{name}/{path.stem}")
              for name in _select(available, classes, root) for split in SPLITS
              for path in sorted((root / name / split).glob("*.off"))]
    if not models:
        raise FileNotFoundError(f"{root}: no .off files in the class folders")
    return _sample_models(models, num_points, seed, up_axis,
                          {"source": "modelnet", "root": str(root)}, progress, "ModelNet")


def _h5_files(files_or_dir: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(files_or_dir, (str, Path)) and Path(files_or_dir).is_dir():
        files = sorted(Path(files_or_dir).glob("ply_data_*.h5"))
        if not files:
            raise FileNotFoundError(f"{files_or_dir}: no ply_data_*.h5 files")
        return files
    if isinstance(files_or_dir, (str, Path)):
        return [Path(files_or_dir)]
    return [Path(f) for f in files_or_dir]


def _h5_model_ids(path: Path, count: int) -> list[str]:
    """Original model names from the release's `ply_data_<split>_<n>_id2file.json` when present
    (`airplane/airplane_0627.ply` -> `airplane/airplane_0627`, as load_modelnet_folder names it),
    else `<file stem>/<index>`."""
    stem = path.stem
    numbered = re.fullmatch(r"(.*\D)(\d+)", stem)  # ply_data_train0 -> ply_data_train_0_id2file
    id_file = path.with_name(f"{numbered[1]}_{numbered[2]}_id2file.json") if numbered else None
    if id_file is None or not id_file.is_file():
        return [f"{stem}/{i}" for i in range(count)]
    names = json.loads(id_file.read_text())
    if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str)
                                                                      for n in names):
        raise FormatError(id_file, f"expected a list of {count} file names")
    return [str(PurePosixPath(n).with_suffix("")) for n in names]


def load_modelnet_h5(files_or_dir: str | Path | Iterable[str | Path],
                     num_points: int | None = None, seed: int = 0,
                     up_axis: str = "y") -> ShapeSet:
    """PointNet's `modelnet40_ply_hdf5_2048`: `ply_data_{train,test}<n>.h5` with `data` (B,2048,3)
    float32 and `label` (B,1) uint8, class names from `shape_names.txt` beside the files.

    The split comes from each file name. Points are rotated to z up and re-normalised like
    normalize_mesh (bounding-box centre, farthest point on the unit sphere: the release centres
    on the centroid); `num_points` keeps a seeded random subset of each shape.
    """
    _check_up_axis(up_axis)
    files = _h5_files(files_or_dir)
    if not files:
        raise ValueError("no HDF5 files given")
    names_file = files[0].parent / "shape_names.txt"
    if not names_file.is_file():
        raise FileNotFoundError(f"{names_file}: class names file is missing")
    class_names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    points, labels, split, model_ids = [], [], [], []
    for path in files:
        kind = [s for s in SPLITS if s in path.stem]
        if len(kind) != 1:
            raise FormatError(path, "file name names neither 'train' nor 'test'")
        with h5py.File(path, "r") as f:
            if "data" not in f or "label" not in f:
                raise FormatError(path, f"needs datasets 'data' and 'label', has {sorted(f)}")
            data = np.asarray(f["data"][:], dtype=np.float64)
            label = np.asarray(f["label"][:]).reshape(-1).astype(np.int64)
        if data.ndim != 3 or data.shape[2] != 3 or len(label) != len(data):
            raise FormatError(path, f"'data' {data.shape} and 'label' ({len(label)},) do not form "
                                    "(B, P, 3) and (B, 1)")
        if len(label) and (label.min() < 0 or label.max() >= len(class_names)):
            raise FormatError(path, f"labels outside the {len(class_names)} names of {names_file}")
        if up_axis == "y":
            data = data @ Y_UP_TO_Z_UP.T
        data -= 0.5 * (data.min(axis=1, keepdims=True) + data.max(axis=1, keepdims=True))
        data /= np.linalg.norm(data, axis=2).max(axis=1)[:, None, None]
        if num_points is not None:
            if num_points > data.shape[1]:
                raise ValueError(f"{path}: num_points {num_points} exceeds the {data.shape[1]} "
                                 "points per shape")
            rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
            keep = np.argsort(rng.random(data.shape[:2]), axis=1)[:, :num_points]
            data = np.take_along_axis(data, keep[:, :, None], axis=1)
        points.append(data)
        labels.append(label)
        split += [kind[0]] * len(data)
        model_ids += _h5_model_ids(path, len(data))
    return ShapeSet(np.concatenate(points), np.concatenate(labels), class_names, split, model_ids,
                    {"source": "modelnet_h5", "files": [str(f) for f in files],
                     "num_points": num_points, "seed": seed, "up_axis": up_axis})


def _shapenet_mesh(model_dir: Path) -> Path | None:
    for relative in ("models/model_normalized.obj", "model.obj"):  # v2, v1
        if (model_dir / relative).is_file():
            return model_dir / relative
    return None


def _read_split_file(path: Path) -> dict[tuple[str, str], str]:
    """ShapeNet's official split CSV (`id,synsetId,subSynsetId,modelId,split`) as
    {(synset, model id): train|test}; 'val' counts as train, since ShapeSet holds two splits and
    validation folds are carved from train."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"synsetId", "modelId", "split"} <= set(rows[0]):
        raise FormatError(path, "expected a CSV with columns id,synsetId,subSynsetId,modelId,split")
    splits = {}
    for row in rows:
        value = row["split"].strip().lower()
        if value not in ("train", "val", "test"):
            raise FormatError(path, f"split '{row['split']}' of model {row['modelId']} is not "
                                    "train, val or test")
        splits[_synset_key(row["synsetId"].strip()), row["modelId"].strip()] = \
            "test" if value == "test" else "train"
    return splits


def load_shapenet_folder(root: str | Path, num_points: int = 1024, seed: int = 0,
                         split_file: str | Path | None = None,
                         classes: Sequence[str] | None = None, up_axis: str = "y",
                         progress: bool = True) -> ShapeSet:
    """ShapeNetCore: `<root>/<synset or class>/<model id>/models/model_normalized.obj` (v2) or
    `.../<model id>/model.obj` (v1).

    Synset folders get their names from SHAPENET_SYNSETS, other folder names are used as they
    are; `classes` selects by either. Split: `split_file` when given (models it lacks are
    skipped), else a seeded 80/20 per class by model. Model ids are `<synset>/<model id>`.
    """
    root = Path(root)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    by_name = {SHAPENET_SYNSETS.get(f, f): f for f in folders}
    if classes is not None:
        unknown = [c for c in classes if c not in folders and c not in by_name]
        if unknown:
            raise ValueError(f"{root}: no class {unknown}; available: {sorted(by_name)}")
        folders = [f for f in folders if f in classes or SHAPENET_SYNSETS.get(f, f) in classes]
    splits = _read_split_file(Path(split_file)) if split_file is not None else None
    models, skipped = [], {}
    for folder in folders:
        found = [(d.name, mesh) for d in sorted((root / folder).iterdir())
                 if d.is_dir() and (mesh := _shapenet_mesh(d)) is not None]
        if splits is None:
            order = np.random.default_rng([seed, zlib.crc32(folder.encode())]).permutation(
                len(found))
            test = set(order[:round(SHAPENET_TEST_FRACTION * len(found))].tolist())
            assigned = ["test" if i in test else "train" for i in range(len(found))]
        else:
            assigned = [splits.get((_synset_key(folder), model_id)) for model_id, _ in found]
        for (model_id, mesh), split in zip(found, assigned):
            if split is None:
                skipped[f"{folder}/{model_id}"] = "not in the split file"
            else:
                models.append(_Model(mesh, SHAPENET_SYNSETS.get(folder, folder), split,
                                     f"{folder}/{model_id}"))
    if not models:
        raise FileNotFoundError(f"{root}: no ShapeNet models (<class>/<id>/models/"
                                "model_normalized.obj or <class>/<id>/model.obj)"
                                + (" listed in the split file" if skipped else ""))
    return _sample_models(models, num_points, seed, up_axis,
                          {"source": "shapenet", "root": str(root),
                           "split_file": str(split_file) if split_file else None,
                           "skipped": skipped}, progress, "ShapeNet")
