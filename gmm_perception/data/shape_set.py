"""Categorised shape collections in one compact file each: sampled points, and the meshes.

Every builder (SH3D, CGAL, ModelNet, procedural) produces these two containers, and every
trainer, scan simulator and evaluator reads them, so the formats live in one place.
Conventions: metres-free unit shapes (centred, inside the unit sphere), z up, x forward.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "test")  # what the categorised sets (SH3D, ModelNet, procedural) use
# The shape pool (data/pool.py) adds a validation part and a cross-source test ("cross").
ALL_SPLITS = SPLITS + ("val", "cross")
SHAPE_META_PREFIX = "shape_meta__"  # npz key prefix of the per-shape metadata arrays


def _save_npz(path: str | Path, **arrays) -> Path:
    """Compressed .npz written atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def _check_split(split: str) -> None:
    if split not in ALL_SPLITS:
        raise ValueError(f"split must be one of {ALL_SPLITS}, got '{split}'")


def _shape_meta(shape_meta: dict[str, Any] | None, m: int) -> dict[str, np.ndarray]:
    """Per-shape metadata as str arrays of length m (source, file, licence, ...)."""
    out = {str(k): np.asarray(v, dtype=str) for k, v in (shape_meta or {}).items()}
    for key, values in out.items():
        if values.shape != (m,):
            raise ValueError(f"shape_meta['{key}'] must have one entry per shape ({m}), "
                             f"got shape {values.shape}")
    return out


def _shape_meta_arrays(shape_meta: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {SHAPE_META_PREFIX + k: v for k, v in shape_meta.items()}


def _load_shape_meta(data) -> dict[str, np.ndarray]:
    return {k[len(SHAPE_META_PREFIX):]: data[k] for k in data.files
            if k.startswith(SHAPE_META_PREFIX)}


@dataclass
class ShapeSet:
    """M shapes of P surface points each, with class labels and a by-model train/test split."""

    points: np.ndarray  # (M, P, 3) float32
    labels: np.ndarray  # (M,) int64 indices into class_names
    class_names: list[str]
    split: np.ndarray  # (M,) str, "train" or "test"
    model_ids: np.ndarray  # (M,) str, unique per source model
    meta: dict[str, Any] = field(default_factory=dict)
    # Optional per-shape string arrays (the pool's source, file, licence, up_known, ...).
    shape_meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.points = np.asarray(self.points, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=str)
        self.model_ids = np.asarray(self.model_ids, dtype=str)
        m = len(self.points)
        if self.points.ndim != 3 or self.points.shape[2] != 3:
            raise ValueError(f"points must be (M, P, 3), got {self.points.shape}")
        if not (len(self.labels) == len(self.split) == len(self.model_ids) == m):
            raise ValueError("points, labels, split and model_ids must have one entry per shape")
        if m and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError("labels must index class_names")
        if not set(np.unique(self.split)) <= set(ALL_SPLITS):
            raise ValueError(f"split values must be in {ALL_SPLITS}")
        self.shape_meta = _shape_meta(self.shape_meta, m)

    def __len__(self) -> int:
        return len(self.points)

    def select(self, mask: np.ndarray) -> "ShapeSet":
        return ShapeSet(self.points[mask], self.labels[mask], list(self.class_names),
                        self.split[mask], self.model_ids[mask], dict(self.meta),
                        {k: v[mask] for k, v in self.shape_meta.items()})

    def subset(self, split: str) -> "ShapeSet":
        _check_split(split)
        return self.select(self.split == split)

    def class_table(self) -> list[tuple[str, int, int]]:
        """(class, train count, test count) per class."""
        return [(name, int(np.sum((self.labels == i) & (self.split == "train"))),
                 int(np.sum((self.labels == i) & (self.split == "test"))))
                for i, name in enumerate(self.class_names)]

    def save(self, path: str | Path, half_precision: bool = False) -> Path:
        """One .npz; float16 halves the size at ~1e-3 precision on unit shapes."""
        return _save_npz(
            path, points=self.points.astype(np.float16 if half_precision else np.float32),
            labels=self.labels, class_names=np.asarray(self.class_names, dtype=str),
            split=self.split, model_ids=self.model_ids, meta=json.dumps(self.meta),
            **_shape_meta_arrays(self.shape_meta))

    @classmethod
    def load(cls, path: str | Path) -> "ShapeSet":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["points"].astype(np.float32), data["labels"],
                       [str(c) for c in data["class_names"]], data["split"], data["model_ids"],
                       json.loads(str(data["meta"])), _load_shape_meta(data))


@dataclass
class MeshSet:
    """Normalised triangle meshes (for ray-cast scans), stored concatenated with offsets."""

    vertices: list[np.ndarray]  # each (V_i, 3) float32
    faces: list[np.ndarray]  # each (F_i, 3) int32
    labels: np.ndarray
    class_names: list[str]
    split: np.ndarray
    model_ids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    shape_meta: dict[str, np.ndarray] = field(default_factory=dict)  # as ShapeSet's

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=str)
        self.model_ids = np.asarray(self.model_ids, dtype=str)
        if not (len(self.vertices) == len(self.faces) == len(self.labels) == len(self.split)
                == len(self.model_ids)):
            raise ValueError("one vertices/faces/label/split/model_id entry per mesh")
        self.shape_meta = _shape_meta(self.shape_meta, len(self.vertices))

    def __len__(self) -> int:
        return len(self.vertices)

    def select(self, mask: np.ndarray) -> "MeshSet":
        keep = np.flatnonzero(mask)
        return MeshSet([self.vertices[i] for i in keep], [self.faces[i] for i in keep],
                       self.labels[keep], list(self.class_names), self.split[keep],
                       self.model_ids[keep], dict(self.meta),
                       {k: v[keep] for k, v in self.shape_meta.items()})

    def subset(self, split: str) -> "MeshSet":
        _check_split(split)
        return self.select(self.split == split)

    def mesh(self, index: int):
        """The index-th mesh as a trimesh.Trimesh."""
        import trimesh

        return trimesh.Trimesh(self.vertices[index], self.faces[index], process=False)

    def index_of(self, model_id: str) -> int:
        matches = np.flatnonzero(self.model_ids == model_id)
        if len(matches) != 1:
            raise KeyError(f"model '{model_id}' is not in this mesh set")
        return int(matches[0])

    def save(self, path: str | Path) -> Path:
        return _save_npz(
            path, vertices=np.concatenate(self.vertices).astype(np.float32),
            faces=np.concatenate(self.faces).astype(np.int32),
            vertex_offsets=np.cumsum([0] + [len(v) for v in self.vertices]),
            face_offsets=np.cumsum([0] + [len(f) for f in self.faces]),
            labels=self.labels, class_names=np.asarray(self.class_names, dtype=str),
            split=self.split, model_ids=self.model_ids, meta=json.dumps(self.meta),
            **_shape_meta_arrays(self.shape_meta))

    @classmethod
    def load(cls, path: str | Path) -> "MeshSet":
        with np.load(path, allow_pickle=False) as data:
            v_off, f_off = data["vertex_offsets"], data["face_offsets"]
            # Read each array once: every data[key] decompresses it anew, and a slice per mesh
            # would keep its own full copy alive (the 377-mesh SH3D set ran out of memory).
            all_vertices, all_faces = data["vertices"], data["faces"]
            vertices = [all_vertices[a:b] for a, b in zip(v_off[:-1], v_off[1:])]
            faces = [all_faces[a:b] for a, b in zip(f_off[:-1], f_off[1:])]
            return cls(vertices, faces, data["labels"], [str(c) for c in data["class_names"]],
                       data["split"], data["model_ids"], json.loads(str(data["meta"])),
                       _load_shape_meta(data))
