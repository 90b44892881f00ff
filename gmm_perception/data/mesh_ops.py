"""Mesh normalisation and area-weighted surface sampling, shared by every dataset builder."""
from __future__ import annotations

import numpy as np

# Rotation taking a y-up model (Java3D / OBJ convention) to ROS's z-up: (x, y, z) -> (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def normalize_mesh(mesh, up_axis: str = "z"):
    """A copy rotated to z up, centred on its bounding-box centre, scaled into the unit sphere.

    The bounding-box centre (not the vertex mean) keeps the result independent of how densely
    each part is tessellated. The farthest vertex ends on the unit sphere.
    """
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' or 'z', got '{up_axis}'")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if up_axis == "y":
        vertices = vertices @ Y_UP_TO_Z_UP.T
    if len(vertices) == 0 or not np.isfinite(vertices).all():
        raise ValueError("mesh has no vertices or non-finite vertices")
    vertices = vertices - 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    radius = np.linalg.norm(vertices, axis=1).max()
    if radius <= 0:
        raise ValueError("mesh is degenerate (all vertices coincide)")
    out = mesh.copy()
    out.vertices = vertices / radius
    return out


def sample_surface(mesh, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points uniformly on the surface: faces drawn by area, barycentric inside each."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    triangles = vertices[np.asarray(mesh.faces)]
    areas = 0.5 * np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0],
                                          triangles[:, 2] - triangles[:, 0]), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no surface area to sample")
    chosen = rng.choice(len(triangles), size=count, p=areas / total)
    u, v = rng.random((2, count))
    flip = u + v > 1.0  # reflect into the triangle: uniform barycentric coordinates
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    a, b, c = triangles[chosen, 0], triangles[chosen, 1], triangles[chosen, 2]
    return (a + u[:, None] * (b - a) + v[:, None] * (c - a)).astype(np.float32)
