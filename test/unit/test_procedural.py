"""Procedural classes: closed parts with outward winding, normalised into the unit sphere, z up
(tables carry their top highest), distinct classes, a stratified 80/20 split, and seeding."""

import numpy as np
import pytest

from gmm_perception.data.procedural import (
    PROCEDURAL_CLASSES,
    procedural_mesh,
    procedural_meshes,
    procedural_shapes,
)


def on_surface(points: np.ndarray, triangles: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """Per point: inside some triangle (within tol of its plane, barycentrics >= -tol)."""
    a, b, c = (triangles[:, k].astype(np.float64) for k in range(3))
    normal = np.cross(b - a, c - a)
    double_area = np.linalg.norm(normal, axis=1)
    keep = double_area > 1e-12
    a, b, c, normal, double_area = a[keep], b[keep], c[keep], normal[keep], double_area[keep]
    unit = normal / double_area[:, None]
    p = points.astype(np.float64)[:, None]
    near_plane = np.abs(((p - a) * unit).sum(axis=2)) < tol
    inside = np.ones(near_plane.shape, dtype=bool)
    for u, v in ((a, b), (b, c), (c, a)):  # same side of every edge as the normal says
        inside &= (np.cross(v - u, p - u) * unit).sum(axis=2) >= -tol * double_area
    return (near_plane & inside).any(axis=1)


@pytest.fixture(scope="module")
def meshes():
    return procedural_meshes(5, seed=0)


def test_every_class_with_its_split_and_ids(meshes):
    assert meshes.class_names == list(PROCEDURAL_CLASSES) and len(PROCEDURAL_CLASSES) == 8
    assert len(meshes) == 40 and len(set(meshes.model_ids)) == 40
    for label, name in enumerate(PROCEDURAL_CLASSES):
        in_class = meshes.labels == label
        assert np.sum(in_class & (meshes.split == "test")) == 1  # 20 % of 5
        assert all(m.startswith(name) for m in meshes.model_ids[in_class])


def test_meshes_are_closed_outward_and_normalised(meshes):
    """Every part closed, none inside out (positive volume each), the whole in the unit sphere."""
    for i in range(len(meshes)):
        mesh = meshes.mesh(i)
        assert mesh.is_watertight, meshes.model_ids[i]
        parts = mesh.split(only_watertight=False)
        assert len(parts) >= 2 and all(part.volume > 0 for part in parts), meshes.model_ids[i]
        vertices = np.asarray(mesh.vertices)
        np.testing.assert_allclose(0.5 * (vertices.min(axis=0) + vertices.max(axis=0)), 0,
                                   atol=1e-6)
        assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_z_is_up(meshes):
    for i in np.flatnonzero(meshes.labels == PROCEDURAL_CLASSES.index("table")):
        vertices = np.asarray(meshes.mesh(i).vertices)
        size = np.ptp(vertices, axis=0)
        top = vertices[vertices[:, 2] > vertices[:, 2].max() - 0.02 * size[2]]
        # the highest part spans the whole footprint: it is the top, not a leg end
        np.testing.assert_allclose(np.ptp(top[:, :2], axis=0), size[:2], rtol=1e-6)
    for i in np.flatnonzero(meshes.labels == PROCEDURAL_CLASSES.index("car")):
        vertices = np.asarray(meshes.mesh(i).vertices)
        ground = vertices[vertices[:, 2] < vertices[:, 2].min() + 1e-3]
        # it stands on its wheels: the lowest points are near the front and rear ends
        assert np.abs(ground[:, 0]).min() > 0.5 * np.abs(vertices[:, 0]).max()
    for i in np.flatnonzero(meshes.labels == PROCEDURAL_CLASSES.index("bookshelf")):
        size = np.ptp(np.asarray(meshes.mesh(i).vertices), axis=0)
        assert size[2] > size[0]  # taller than deep


def test_classes_are_distinct():
    """A nearest-class-mean on a radius/height occupancy histogram tells the test shapes apart:
    the classes differ in shape, not only in name."""
    shapes = procedural_shapes(10, num_points=512, seed=0)

    def descriptor(points):
        radius = np.linalg.norm(points[:, :2], axis=1)
        histogram, _, _ = np.histogram2d(radius, points[:, 2], bins=6, range=[[0, 1], [-1, 1]])
        return histogram.ravel() / len(points)

    features = np.array([descriptor(p) for p in shapes.points])
    train, test = shapes.split == "train", shapes.split == "test"
    means = np.array([features[train & (shapes.labels == c)].mean(axis=0)
                      for c in range(len(PROCEDURAL_CLASSES))])
    predicted = np.argmin(((features[test][:, None] - means[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean(predicted == shapes.labels[test]) >= 0.9


def test_shapes_sample_the_meshes(meshes):
    shapes = procedural_shapes(5, num_points=200, seed=0)
    assert shapes.points.shape == (40, 200, 3) and shapes.points.dtype == np.float32
    np.testing.assert_array_equal(shapes.split, meshes.split)
    np.testing.assert_array_equal(shapes.model_ids, meshes.model_ids)
    for i in (0, 17, 39):  # every sample lies on its mesh's surface
        assert on_surface(shapes.points[i], meshes.vertices[i][meshes.faces[i]]).all()


def test_seeding(meshes):
    again = procedural_meshes(5, seed=0)
    other = procedural_meshes(5, seed=1)
    more = procedural_meshes(7, seed=0)
    for i in range(len(meshes)):
        np.testing.assert_array_equal(again.vertices[i], meshes.vertices[i])
        assert not np.array_equal(other.vertices[i], meshes.vertices[i])
        # instance i of a class does not depend on how many were asked for
        np.testing.assert_array_equal(more.vertices[more.index_of(meshes.model_ids[i])],
                                      meshes.vertices[i])
    for label in range(len(PROCEDURAL_CLASSES)):  # proportions drawn per instance
        first, second = np.flatnonzero(meshes.labels == label)[:2]
        assert not np.allclose(np.ptp(meshes.vertices[first], axis=0),
                               np.ptp(meshes.vertices[second], axis=0))
    a = procedural_shapes(2, num_points=64, seed=0)
    np.testing.assert_array_equal(a.points, procedural_shapes(2, num_points=64, seed=0).points)
    assert not np.array_equal(a.points, procedural_shapes(2, num_points=64, seed=1).points)


def test_bad_requests():
    with pytest.raises(ValueError, match="unknown procedural class"):
        procedural_mesh("sofa", np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_per_class"):
        procedural_meshes(0)
