"""Model choice by what the scan does not show: with the sensor's position, a hypothesis is also
scored by the share of the model's sensor-facing surface that the object's points cover, so a
large model that merely contains a partial view loses to the right one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gmm_perception.geometry.transforms import make_transform, rotation_z, transform_points
from gmm_perception.models.registry import load_model
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.configs import RegistrationConfig
from gmm_perception.pipeline.register import DeepGmrRegistrar, agreement

CHECKPOINT = share_dir() / "checkpoints" / "deepgmr" / "deepgmr_sh3d.pt"
VIEWPOINT = np.array([-3.0, 0.0, 1.2])  # in front of the boxes' x = -0.3 face, above them


def box_surface(low, high, spacing: float = 0.02) -> np.ndarray:
    """Points on the six faces of an axis-aligned box, on a grid of `spacing` metres."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        gu = np.arange(low[u], high[u] + 1e-9, spacing)
        gv = np.arange(low[v], high[v] + 1e-9, spacing)
        U, V = np.meshgrid(gu, gv, indexing="ij")
        for side in (low[axis], high[axis]):
            face = np.empty((U.size, 3))
            face[:, axis], face[:, u], face[:, v] = side, U.ravel(), V.ravel()
            faces.append(face)
    return np.unique(np.round(np.concatenate(faces), 6), axis=0)


# The right model: a 0.6 m cube. The wrong one: a box 1.8 m wide (across the line of sight)
# whose end is that cube, so every point of the cube's front and top faces lies on it too
# (fitness 1 for both).
SMALL = box_surface([-0.3, -0.3, 0.0], [0.3, 0.3, 0.6])
LONG = box_surface([-0.3, -0.3, 0.0], [0.3, 1.5, 0.6])


def scan_of_small() -> np.ndarray:
    """What the sensor at VIEWPOINT sees of the cube: its front (x = -0.3) and top faces."""
    front = SMALL[np.isclose(SMALL[:, 0], -0.3)]
    top = SMALL[np.isclose(SMALL[:, 2], 0.6)]
    return np.unique(np.concatenate([front, top]), axis=0)


@pytest.fixture(scope="module")
def registrar():
    if not CHECKPOINT.is_file():
        pytest.skip(f"no checkpoint at {CHECKPOINT}")
    model, _ = load_model(CHECKPOINT, "deepgmr")
    registrar = DeepGmrRegistrar(RegistrationConfig(upright_axis=(0.0, 0.0, 1.0), seed=0),
                                 model, torch.device("cpu"))
    registrar.add_reference(SMALL, "small")
    registrar.add_reference(LONG, "long")
    return registrar


def test_agreement_is_the_harmonic_mean_and_the_fitness_without_coverage():
    assert agreement(0.9, 0.6) == pytest.approx(2 * 0.9 * 0.6 / 1.5)
    assert agreement(0.8, float("nan")) == 0.8
    assert agreement(0.0, 0.0) == 0.0


def test_coverage_separates_models_that_fitness_cannot(registrar):
    scan = scan_of_small()
    identity = np.eye(4)
    small = registrar.refine(scan, "small", identity, 4096, VIEWPOINT)
    long = registrar.refine(scan, "long", identity, 4096, VIEWPOINT)
    assert small.fitness > 0.99 and long.fitness > 0.99  # the scan lies on both
    # Visible from the viewpoint: the front face and the top, 0.72 m^2 of the cube, 2.16 of
    # the long box, which the scan covers a third of.
    assert small.coverage > 0.9
    assert 0.2 < long.coverage < 0.5
    assert small.agreement > long.agreement
    blind = registrar.refine(scan, "long", identity, 4096)
    assert np.isnan(blind.coverage) and blind.agreement == blind.fitness


def test_global_registration_picks_the_right_model_with_the_viewpoint(registrar):
    # A patch of clutter beside the cube, on the long box's front face (small enough that the
    # cube stays a candidate by size): only the long box explains every point.
    cube = scan_of_small()
    strip = LONG[np.isclose(LONG[:, 0], -0.3) & (LONG[:, 1] > 0.39) & (LONG[:, 1] < 0.47)
                 & (LONG[:, 2] > 0.3)]
    for yaw in (0.7, 2.0, 4.0):
        pose = make_transform(rotation_z(np.array([yaw]))[0], np.array([2.0, -1.0, 0.0]))
        scan = transform_points(pose, np.concatenate([cube, strip]))
        viewpoint = transform_points(pose, VIEWPOINT[None])[0]
        result = registrar.register(scan, viewpoint)
        assert result.reference_name == "small"
        assert result.coverage > 0.8 and result.fitness > 0.8
