"""Object clouds harvested from the scene pipeline's segmentation on simulated drives
(evaluation/scene_objects.py, data/scene_objects.py)."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from gmm_perception.data.mesh_ops import normalize_mesh, sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.data.scene_objects import SceneObjects
from gmm_perception.data.shape_set import MeshSet
from gmm_perception.evaluation.scene_metrics import surface_owner as owner
from gmm_perception.evaluation.scene_objects import HarvestSettings, drive_scene, harvest
from gmm_perception.paths import SOURCE_ROOT


def test_a_cluster_belongs_to_the_surface_that_holds_most_of_it():
    a = np.c_[np.linspace(0, 1, 200), np.zeros(200), np.zeros(200)]
    b = a + [0, 1.0, 0]
    surfaces = [cKDTree(a), cKDTree(b)]
    cloud = np.vstack([a[:85] + [0, 0.01, 0], b[:15] + [0, 0.01, 0]])
    assert owner(cloud, surfaces, 0.05, 0.8) == 0
    mixed = np.vstack([a[:70], b[:30]])
    assert owner(mixed, surfaces, 0.05, 0.8) is None  # two objects merged: left out
    assert owner(a + [0, 0, 0.5], surfaces, 0.05, 0.8) is None  # nobody's points
    assert owner(mixed, surfaces, 0.05, 0.6) == 0


@pytest.fixture(scope="module")
def meshes():
    """Procedural chairs, tables and box cabinets of the scenes' classes, in the train split."""
    rng = np.random.default_rng(0)
    made, labels = [], []
    for label, make in enumerate((lambda: procedural_mesh("chair", rng),
                                  lambda: procedural_mesh("table", rng),
                                  lambda: trimesh.creation.box((0.8, 0.5, 1.0)))):
        for _ in range(2):
            made.append(normalize_mesh(make()))
            labels.append(label)
    return MeshSet([np.asarray(m.vertices, np.float32) for m in made],
                   [np.asarray(m.faces, np.int32) for m in made], np.array(labels),
                   ["chair", "table", "cabinet"], np.array(["train"] * len(made)),
                   np.array([f"m{i}" for i in range(len(made))]))


def test_harvested_clouds_lie_on_their_objects_and_are_stored_losslessly(meshes, tmp_path):
    # The LiDAR: its 1 cm noise lets the check below hold the clouds to the exact surfaces.
    settings = HarvestSettings(frames=16, objects=3, depth_share=0.0,
                               far_object_probability=0.0, warm_up=3, keep_every=4)
    pipeline = SOURCE_ROOT / "config" / "scene_pipeline.yaml"
    objects = harvest(meshes, "train", 2, 5, pipeline, settings, progress=False)
    assert len(objects) > 0 and set(objects.frame.tolist()) <= {4, 8, 12}
    assert set(objects.class_name.tolist()) <= {"chair", "table", "cabinet"}
    assert (objects.point_counts() >= settings.min_points).all()
    for k_scene in (0, 1):  # the same draws, made again: every cloud on its own object
        scene, kind = drive_scene(meshes, "train", np.random.default_rng([5, k_scene]),
                                  settings, {"layouts": 0})
        mine = np.flatnonzero(objects.scene == k_scene)
        assert set(objects.sensor[mine].tolist()) == {kind} == {"lidar"}
        for k in mine:
            obj = scene.object(str(objects.object_name[k]))
            assert (obj.class_name, obj.model_id) == (objects.class_name[k], objects.model_id[k])
            # The ownership test (4000 surface samples) against a denser sample of its surface.
            surface = cKDTree(sample_surface(obj.mesh_world(), 40_000, np.random.default_rng(9)))
            distance = surface.query(objects.cloud(k))[0]
            assert np.mean(distance < settings.label_distance + 0.01) >= settings.purity
            assert objects.cloud(k)[:, 2].min() > 0.0  # the floor was segmented away
    again = SceneObjects.load(objects.save(tmp_path / "objects.npz"))
    assert np.array_equal(again.points, objects.points) and again.dropped == objects.dropped
    assert np.array_equal(again.object_name, objects.object_name)
