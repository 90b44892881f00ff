"""Shared builder steps: mesh preparation, decimation, geometry hash, split, cache check."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from gmm_perception.data.mesh_dataset import (default_data_dir, geometry_hash, model_rng,
                                              outputs_current, prepare_mesh, save_outputs,
                                              simplify, stratified_split)


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GMM_PERCEPTION_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("GMM_PERCEPTION_DATA")
    assert default_data_dir().name == "data"


def test_geometry_hash_ignores_order_and_duplicated_vertices_only():
    box = trimesh.creation.box((1.0, 2.0, 3.0))
    reference = geometry_hash(box)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(box.vertices))
    shuffled = trimesh.Trimesh(box.vertices[order], np.argsort(order)[box.faces][::-1],
                               process=False)
    assert geometry_hash(shuffled) == reference
    rolled = trimesh.Trimesh(box.vertices, np.roll(box.faces, 1, axis=1), process=False)
    assert geometry_hash(rolled) == reference
    unmerged = trimesh.Trimesh(box.vertices[box.faces].reshape(-1, 3),
                               np.arange(3 * len(box.faces)).reshape(-1, 3), process=False)
    assert geometry_hash(unmerged) == reference
    assert geometry_hash(trimesh.creation.box((1.0, 2.0, 3.01))) != reference
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-1], process=False)
    assert geometry_hash(open_box) != reference


def test_prepare_mesh_normalises_rotates_and_rejects_degenerate():
    box = trimesh.creation.box((0.2, 0.4, 2.0))
    box.apply_translation((5, 5, 5))
    to_y_up = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # z -> y
    prepared = prepare_mesh(box, to_y_up, 64, np.random.default_rng(0))
    extent = np.ptp(prepared.vertices, axis=0)
    assert np.argmax(extent) == 1
    assert np.linalg.norm(prepared.vertices, axis=1).max() == pytest.approx(1.0)
    assert prepared.points.shape == (64, 3) and prepared.original_faces == 12
    flat = trimesh.Trimesh([[0, 0, 0], [1, 1, 1], [2, 2, 2]], [[0, 1, 2]], process=False)
    with pytest.raises(ValueError, match="area"):
        prepare_mesh(flat, np.eye(3), 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no faces"):
        prepare_mesh(trimesh.Trimesh([[0, 0, 0]], np.zeros((0, 3), int)), np.eye(3), 8,
                     np.random.default_rng(0))


def test_simplify_caps_faces_and_reports_how():
    sphere = trimesh.creation.icosphere(subdivisions=5)  # 20480 connected faces
    _, faces, report = simplify(sphere, 2000)
    assert 0 < len(faces) <= 2000
    assert report["method"] == "quadric" and report["p99_distance"] < 0.01
    # 6000 separate small triangles: nothing for quadric decimation to collapse.
    rng = np.random.default_rng(0)
    centres = rng.uniform(-0.5, 0.5, (6000, 1, 3))
    corners = centres + rng.normal(0, 0.01, (6000, 3, 3))
    confetti = trimesh.Trimesh(corners.reshape(-1, 3), np.arange(18000).reshape(-1, 3),
                               process=False)
    vertices, faces, report = simplify(confetti, 1000)
    assert 0 < len(faces) <= 1000 and faces.max() < len(vertices)
    assert report["method"] == "clustering"
    small = trimesh.creation.box()
    vertices, faces, report = simplify(small, 1000)
    np.testing.assert_array_equal(faces, small.faces)
    assert report is None


def test_stratified_split_is_per_class_and_stable():
    classes = ["a"] * 10 + ["b"] * 5 + ["c"]
    ids = [f"m{i}" for i in range(16)]
    split = stratified_split(classes, ids, 0.2, seed=0)
    assert list(split[:10]).count("test") == 2 and list(split[10:15]).count("test") == 1
    assert split[15] == "train"  # a single model cannot be split
    # Reordering the input or dropping another class leaves a class's split alone.
    order = np.random.default_rng(1).permutation(16)
    shuffled = stratified_split(np.array(classes)[order], np.array(ids)[order], 0.2, seed=0)
    assert dict(zip(np.array(ids)[order], shuffled)) == dict(zip(ids, split))
    only_a = stratified_split(classes[:10], ids[:10], 0.2, seed=0)
    np.testing.assert_array_equal(only_a, split[:10])
    assert any((stratified_split(classes, ids, 0.2, seed=s) != split).any() for s in (1, 2, 3))


def test_model_rng_depends_on_seed_and_id_only():
    assert model_rng(0, "x").random() == model_rng(0, "x").random()
    assert model_rng(0, "x").random() != model_rng(0, "y").random()
    assert model_rng(0, "x").random() != model_rng(1, "x").random()


def test_outputs_current_keeps_meshes_shared_across_point_counts(tmp_path):
    prepared = [prepare_mesh(trimesh.creation.box(), np.eye(3), 16, np.random.default_rng(0))]
    config = {"builder": "t", "points_per_model": 16, "seed": 0}
    points_path, meshes_path = tmp_path / "p16.npz", tmp_path / "m.npz"
    save_outputs(points_path, meshes_path, prepared, [0], ["box"], ["train"], ["b"],
                 {"config": config})
    assert outputs_current(points_path, meshes_path, config)
    assert not outputs_current(points_path, meshes_path, {**config, "seed": 1})
    # Another point count's points file next to the same mesh file: both stay current.
    config32 = {**config, "points_per_model": 32}
    prepared32 = [prepare_mesh(trimesh.creation.box(), np.eye(3), 32, np.random.default_rng(0))]
    save_outputs(tmp_path / "p32.npz", meshes_path, prepared32, [0], ["box"], ["train"], ["b"],
                 {"config": config32})
    assert outputs_current(points_path, meshes_path, config)
    assert outputs_current(tmp_path / "p32.npz", meshes_path, config32)
    assert not outputs_current(tmp_path / "absent.npz", meshes_path, config)
