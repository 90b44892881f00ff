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


def _face_cross(triangles: np.ndarray) -> np.ndarray:
    """(b - a) x (c - a) per triangle: twice its area, along its normal."""
    return np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])


def _triangles_and_areas(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    triangles = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    areas = 0.5 * np.linalg.norm(_face_cross(triangles), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no surface area to sample")
    return triangles, areas / total


def _points_in(triangles: np.ndarray, chosen: np.ndarray, rng: np.random.Generator
               ) -> np.ndarray:
    """One uniform point in each of triangles[chosen]."""
    u, v = rng.random((2, len(chosen)))
    flip = u + v > 1.0  # reflect into the triangle: uniform barycentric coordinates
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    a, b, c = triangles[chosen, 0], triangles[chosen, 1], triangles[chosen, 2]
    return (a + u[:, None] * (b - a) + v[:, None] * (c - a)).astype(np.float32)


def sample_surface(mesh, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points uniformly on the surface: faces drawn by area, barycentric inside each."""
    triangles, face_probability = _triangles_and_areas(mesh.vertices, mesh.faces)
    return _points_in(triangles, rng.choice(len(triangles), size=count, p=face_probability), rng)


class SurfaceSampler:
    """Fresh uniform samples of the surfaces of a mesh set's meshes, as `sample_surface` draws
    them, each mesh's triangles and area CDF kept after its first draw (a training loop draws
    new points of the same meshes every batch). With `normals`, each point also carries its
    face's unit normal: (count, 6)."""

    def __init__(self, vertices: list[np.ndarray], faces: list[np.ndarray],
                 normals: bool = False):
        if len(vertices) != len(faces):
            raise ValueError("one faces array per vertices array")
        self._vertices, self._faces, self.normals = vertices, faces, normals
        # Per mesh: triangles, the area CDF and (with normals) each face's unit normal.
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}

    def __call__(self, index: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, 3) float32 points of mesh `index`'s surface ((count, 6) with normals)."""
        if index not in self._cache:
            triangles, face_probability = _triangles_and_areas(self._vertices[index],
                                                               self._faces[index])
            face_normals = None
            if self.normals:
                cross = _face_cross(triangles)
                face_normals = (cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True),
                                                   1e-12)).astype(np.float32)
            self._cache[index] = (triangles.astype(np.float32), np.cumsum(face_probability),
                                  face_normals)
        triangles, cdf, face_normals = self._cache[index]
        chosen = np.minimum(np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right"),
                            len(triangles) - 1)
        points = _points_in(triangles, chosen, rng)
        if face_normals is None:
            return points
        return np.concatenate([points, face_normals[chosen]], axis=1)
