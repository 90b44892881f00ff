"""Parametric object classes built from primitives: a dataset that needs no download.

Eight classes (table, chair, stool, lamp, bottle, mug, bookshelf, car), each instance with its own
random proportions from a seeded generator; z up, x forward, normalised with normalize_mesh.
Parts are closed primitives kept as separate components (not boolean-unioned), so every mesh is
watertight per component. Hundreds of shapes take well under a second: unit primitives are built
once and scaled.

For unit tests and smoke training only: these classes are far easier to tell apart than real
objects, so never report an accuracy measured only on them.
"""
from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Callable

import numpy as np
import trimesh

from gmm_perception.data.mesh_ops import normalize_mesh, sample_surface
from gmm_perception.data.shape_set import MeshSet, ShapeSet

TEST_FRACTION = 0.2
_SECTIONS = 16  # around round parts: enough for sampling, cheap to build
_AXES = {  # proper rotations (no mirroring, so windings stay outward) taking z to the named axis
    "y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "z": np.eye(3),
}

Part = tuple[np.ndarray, np.ndarray]  # vertices (V,3), faces (F,3)


@lru_cache(maxsize=None)
def _unit(kind: str) -> Part:
    """Unit primitives centred on the origin, axis z: a unit cube; a cylinder and a cone (apex
    up) of radius 1 and height 1."""
    mesh = {"box": lambda: trimesh.creation.box(),
            "cylinder": lambda: trimesh.creation.cylinder(1.0, 1.0, sections=_SECTIONS),
            "cone": lambda: trimesh.creation.cone(1.0, 1.0, sections=_SECTIONS).apply_translation(
                (0.0, 0.0, -0.5))}[kind]()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _part(kind: str, size: tuple[float, float, float], center: tuple[float, float, float],
          axis: str = "z") -> Part:
    """A unit primitive scaled by `size` in its own frame (radius x, radius y, height for round
    ones), its axis turned to `axis`, moved to `center`."""
    vertices, faces = _unit(kind)
    return (vertices * size) @ _AXES[axis].T + center, faces


def _torus(major: float, minor: float, center: tuple[float, float, float], axis: str) -> Part:
    mesh = trimesh.creation.torus(major, minor, major_sections=_SECTIONS, minor_sections=8)
    return np.asarray(mesh.vertices) @ _AXES[axis].T + center, np.asarray(mesh.faces)


def _legs(rng: np.random.Generator, corners: list[tuple[float, float]], height: float,
          radius: float) -> list[Part]:
    """Vertical legs from the floor to `height`, round or square (one choice per object)."""
    kind = "cylinder" if rng.random() < 0.5 else "box"
    size = (radius, radius, height) if kind == "cylinder" else (2 * radius, 2 * radius, height)
    return [_part(kind, size, (x, y, height / 2)) for x, y in corners]


def _table(rng: np.random.Generator) -> list[Part]:
    length, width = rng.uniform(1.0, 1.8), rng.uniform(0.6, 1.0)
    height, top = rng.uniform(0.65, 0.8), rng.uniform(0.03, 0.07)
    radius, inset = rng.uniform(0.025, 0.05), rng.uniform(0.05, 0.15)
    x, y = length / 2 - inset, width / 2 - inset
    return [_part("box", (length, width, top), (0, 0, height - top / 2)),
            *_legs(rng, [(x, y), (x, -y), (-x, y), (-x, -y)], height - top, radius)]


def _chair(rng: np.random.Generator) -> list[Part]:
    seat, height, thick = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.5), rng.uniform(0.04, 0.07)
    back, back_thick = rng.uniform(0.35, 0.6), rng.uniform(0.03, 0.06)
    radius = rng.uniform(0.015, 0.03)
    c = seat / 2 - radius
    return [_part("box", (seat, seat, thick), (0, 0, height - thick / 2)),
            # the back stands on the rear (-x) edge of the seat
            _part("box", (back_thick, seat, back), (-seat / 2 + back_thick / 2, 0,
                                                    height + back / 2)),
            *_legs(rng, [(c, c), (c, -c), (-c, c), (-c, -c)], height - thick, radius)]


def _stool(rng: np.random.Generator) -> list[Part]:
    seat_r, height, thick = rng.uniform(0.15, 0.22), rng.uniform(0.45, 0.8), rng.uniform(0.03, 0.06)
    n_legs, leg_r = int(rng.integers(3, 5)), rng.uniform(0.012, 0.025)
    angles = 2 * np.pi * np.arange(n_legs) / n_legs
    ring = 0.75 * seat_r
    parts = [_part("cylinder", (seat_r, seat_r, thick), (0, 0, height - thick / 2)),
             *[_part("cylinder", (leg_r, leg_r, height - thick),
                     (ring * np.cos(a), ring * np.sin(a), (height - thick) / 2)) for a in angles]]
    if rng.random() < 0.5:  # a foot ring through the legs
        parts.append(_torus(ring, leg_r * 0.8, (0, 0, rng.uniform(0.25, 0.4) * height), "z"))
    return parts


def _lamp(rng: np.random.Generator) -> list[Part]:
    base_r, base_h = rng.uniform(0.1, 0.18), rng.uniform(0.02, 0.04)
    pole_r, pole_h = rng.uniform(0.008, 0.015), rng.uniform(0.4, 0.9)
    shade_r, shade_h = rng.uniform(0.12, 0.25), rng.uniform(0.15, 0.3)
    top = base_h + pole_h
    return [_part("cylinder", (base_r, base_r, base_h), (0, 0, base_h / 2)),
            _part("cylinder", (pole_r, pole_r, pole_h), (0, 0, base_h + pole_h / 2)),
            _part("cone", (shade_r, shade_r, shade_h), (0, 0, top - 0.2 * shade_h))]


def _bottle(rng: np.random.Generator) -> list[Part]:
    radius, body = rng.uniform(0.03, 0.06), rng.uniform(0.12, 0.25)
    shoulder, neck_r = rng.uniform(0.5, 1.2) * radius, rng.uniform(0.3, 0.45) * radius
    neck = rng.uniform(0.04, 0.08)
    neck_base = body + 0.5 * shoulder  # the neck rises out of the shoulder cone
    return [_part("cylinder", (radius, radius, body), (0, 0, body / 2)),
            _part("cone", (radius, radius, shoulder), (0, 0, body + shoulder / 2)),
            _part("cylinder", (neck_r, neck_r, neck), (0, 0, neck_base + neck / 2)),
            _part("cylinder", (1.15 * neck_r, 1.15 * neck_r, 0.015),
                  (0, 0, neck_base + neck))]


def _mug(rng: np.random.Generator) -> list[Part]:
    radius, height = rng.uniform(0.035, 0.06), rng.uniform(0.08, 0.12)
    major, minor = rng.uniform(0.28, 0.38) * height, rng.uniform(0.005, 0.009)
    # the handle loop stands in the x-z plane, half of it inside the body
    return [_part("cylinder", (radius, radius, height), (0, 0, height / 2)),
            _torus(major, minor, (radius, 0, height / 2), "y")]


def _bookshelf(rng: np.random.Generator) -> list[Part]:
    width, depth, height = rng.uniform(0.6, 1.2), rng.uniform(0.25, 0.4), rng.uniform(1.0, 2.0)
    t, shelves = rng.uniform(0.015, 0.03), int(rng.integers(2, 6))
    parts = [_part("box", (depth, t, height), (0, s * (width - t) / 2, height / 2))
             for s in (-1, 1)]
    parts.append(_part("box", (t, width, height), (-(depth - t) / 2, 0, height / 2)))  # back
    parts += [_part("box", (depth, width - 2 * t, t), (0, 0, z))
              for z in np.linspace(t / 2, height - t / 2, shelves + 2)]  # bottom, shelves, top
    return parts


def _car(rng: np.random.Generator) -> list[Part]:
    length, width = rng.uniform(3.8, 4.8), rng.uniform(1.6, 1.9)
    wheel_r, wheel_w = rng.uniform(0.3, 0.38), rng.uniform(0.18, 0.25)
    body_h, cabin_h = rng.uniform(0.5, 0.7), rng.uniform(0.4, 0.6)
    cabin_l = rng.uniform(0.4, 0.6) * length
    body_z = wheel_r + body_h / 2 - 0.1
    wx, wy = 0.34 * length, (width - wheel_w) / 2 + 0.02
    return [_part("box", (length, width, body_h), (0, 0, body_z)),
            _part("box", (cabin_l, 0.9 * width, cabin_h),
                  (-0.1 * length, 0, body_z + (body_h + cabin_h) / 2)),
            *[_part("cylinder", (wheel_r, wheel_r, wheel_w), (sx * wx, sy * wy, wheel_r), "y")
              for sx in (-1, 1) for sy in (-1, 1)]]


_BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "table": _table, "chair": _chair, "stool": _stool, "lamp": _lamp, "bottle": _bottle,
    "mug": _mug, "bookshelf": _bookshelf, "car": _car}
PROCEDURAL_CLASSES = tuple(_BUILDERS)


def procedural_mesh(class_name: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One normalised instance of `class_name` with proportions drawn from `rng`."""
    if class_name not in _BUILDERS:
        raise ValueError(f"unknown procedural class '{class_name}'; known: {PROCEDURAL_CLASSES}")
    parts = _BUILDERS[class_name](rng)
    offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
    mesh = trimesh.Trimesh(np.concatenate([v for v, _ in parts]),
                           np.concatenate([f + o for (_, f), o in zip(parts, offsets)]),
                           process=False)
    return normalize_mesh(mesh, "z")


def _split(n: int, seed: int, label: int) -> np.ndarray:
    """A seeded 80/20 train/test split of one class's n models."""
    test = np.random.default_rng([seed, label, 1]).permutation(n)[:round(TEST_FRACTION * n)]
    split = np.array(["train"] * n)
    split[test] = "test"
    return split


def procedural_meshes(n_per_class: int, seed: int = 0) -> MeshSet:
    """n_per_class meshes of every class; instance i of a class is the same for any n_per_class."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    vertices, faces, labels, splits, ids = [], [], [], [], []
    for label, name in enumerate(PROCEDURAL_CLASSES):
        for i in range(n_per_class):
            mesh = procedural_mesh(name, np.random.default_rng([seed, label, i]))
            vertices.append(np.asarray(mesh.vertices, dtype=np.float32))
            faces.append(np.asarray(mesh.faces, dtype=np.int32))
            labels.append(label)
            ids.append(f"{name}_{i:04d}")
        splits.append(_split(n_per_class, seed, label))
    return MeshSet(vertices, faces, labels, list(PROCEDURAL_CLASSES),
                   np.concatenate(splits), ids,
                   {"source": "procedural", "seed": seed, "n_per_class": n_per_class})


def procedural_shapes(n_per_class: int, num_points: int = 1024, seed: int = 0) -> ShapeSet:
    """procedural_meshes surface-sampled: num_points per shape, seeded per model."""
    meshes = procedural_meshes(n_per_class, seed)
    points = [sample_surface(meshes.mesh(i), num_points,
                             np.random.default_rng([seed, zlib.crc32(model_id.encode())]))
              for i, model_id in enumerate(meshes.model_ids)]
    return ShapeSet(np.stack(points), meshes.labels,
                    meshes.class_names, meshes.split, meshes.model_ids,
                    {**meshes.meta, "num_points": num_points})
