"""Background global registrations in a child process (pipeline/registrar_process.py): the same
answer as the node's own registrar for the same cloud, and nothing left running after it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.procedural import procedural_mesh
from gmm_perception.geometry.transforms import make_transform, rotation_z, transform_points
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.configs import RegistrationConfig
from gmm_perception.pipeline.registrar_process import RegistrarProcess
from gmm_perception.pipeline.scene import load_registrar

CHECKPOINT = share_dir() / "checkpoints" / "deepgmr" / "deepgmr_sh3d.pt"


def test_the_child_answers_as_the_registrar_here_and_stops_with_its_jobs(tmp_path):
    if not CHECKPOINT.is_file():
        pytest.skip(f"no checkpoint at {CHECKPOINT}")
    mesh = procedural_mesh("chair", np.random.default_rng(2))
    mesh.apply_scale(0.4)
    path = tmp_path / "chair.ply"
    mesh.export(path)
    config = RegistrationConfig(checkpoint=str(CHECKPOINT), reference_mode="file",
                                reference_file=str(path), upright_axis=(0.0, 0.0, 1.0))
    pose = make_transform(rotation_z(np.array([0.8]))[0], np.array([1.5, -0.4, 0.0]))
    scan = transform_points(pose, sample_surface(mesh, 2000, np.random.default_rng(3)))
    viewpoint = np.array([-1.0, 0.0, 1.2])

    child = RegistrarProcess(config)
    try:
        assert child.references == 1
        remote = child.submit(None, scan, viewpoint).result(timeout=120)
    finally:
        child.shutdown()
    # Per-cloud random draws: the same cloud gets the same answer in either process.
    local = load_registrar(config, torch.device("cpu"))[0].register(scan, viewpoint)
    assert remote.reference_name == local.reference_name == "chair"
    np.testing.assert_allclose(remote.transform, local.transform, atol=1e-9)
    assert remote.fitness == local.fitness and remote.coverage == local.coverage
    assert child._child.poll() is not None  # the child is gone
    late = child.submit(None, scan, viewpoint)
    with pytest.raises(RuntimeError, match="stopped"):
        late.result(timeout=5)
