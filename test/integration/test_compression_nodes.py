"""compression_node and decompression_node as their own processes, over DDS (issue 19): a held-out
seating model (a Kator Legaz chair: a catalogue the NeuralQAAD checkpoint never stored) is
compressed to a latent code and reconstructed within an EM-kD bound; the same nodes carry Draco
and PointGMM codes; a code of another network and a malformed message are rejected while the
decoder carries on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time as TimeMsg
from sensor_msgs.msg import PointCloud2

from gmm_perception.data.mesh_dataset import default_data_dir
from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.pointcloud2 import object_id_of, read_xyz
from gmm_perception.data.shape_set import MeshSet
from gmm_perception.metrics.emkd import em_kd
from gmm_perception.models.registry import load_model
from gmm_perception.paths import share_dir
from gmm_perception.pipeline.compress import normalisation
from gmm_perception.ros.pointcloud import object_cloud
from gmm_perception_msgs.msg import CompressedCloud

pytestmark = pytest.mark.integration
COMPRESSOR, DECOMPRESSOR = "/compression_it", "/decompression_it"
IN = "/cmp_objects"
CHECKPOINT = share_dir() / "checkpoints" / "neuralqaad" / "neuralqaad_seating.pt"
DATA = default_data_dir() / "sh3d" / "sh3d_meshes.npz"
HELD_OUT = ("Kator Legaz#dining-chair", "Kator Legaz#cafe-chair")  # never in the stored set
POINTS = 20_000
SCALE, PLACE = 0.45, np.array([2.5, -0.8, 0.45])  # unit shape -> a 0.9 m chair 2.6 m away
# The reconstruction's EM-kD to the object, as a fraction of the object's radius (the unit
# sphere's 1): the bound the test asserts, and the factor by which encoding must beat the
# network's "average seat" (the mean of its stored codes, decoded without looking at the object).
EMKD_BOUND = 0.15  # measured 0.114 (neuralqaad_seating.pt of 2026-12-07, 150 encode steps)
BEATS_MEAN_CODE = 0.7  # measured 0.114 against 0.230: 0.49


@pytest.fixture(scope="module")
def chair():
    if not DATA.is_file():
        pytest.skip(f"no SH3D meshes at {DATA} (`gmm-perception data sh3d` builds them)")
    meshes = MeshSet.load(DATA)
    name = next((n for n in HELD_OUT if n in set(map(str, meshes.model_ids))), None)
    if name is None:
        pytest.skip(f"none of {HELD_OUT} in {DATA}")
    surface = sample_surface(meshes.mesh(meshes.index_of(name)), POINTS,
                             np.random.default_rng(7))
    return (surface * SCALE + PLACE).astype(np.float32)


def start_pair(start_node, codec: str, *extra):
    compressor = start_node("compression_node", "-r", "__node:=compression_it",
                            "-r", f"points:={IN}", "-p", f"codec:={codec}", *extra)
    decompressor = start_node("decompression_node", "-r", "__node:=decompression_it",
                              "-r", f"compressed:={COMPRESSOR}/compressed")
    return compressor, decompressor


def round_trip(probe, start_node, chair, codec: str, object_id: int):
    compressor, decompressor = start_pair(start_node, codec)
    codes = probe.record(CompressedCloud, f"{COMPRESSOR}/compressed")
    clouds = probe.record(PointCloud2, f"{DECOMPRESSOR}/points")
    publisher = probe.publisher(PointCloud2, IN)
    assert probe.wait_for_subscribers(publisher, timeout=60), compressor.log()
    answer = lambda: next((m for m in clouds if object_id_of(m) == object_id), None)  # noqa
    cloud = object_cloud(chair, object_id, "map", TimeMsg(sec=40 + object_id, nanosec=3))
    assert probe.publish_until(publisher, cloud, lambda: answer() is not None, attempts=6,
                               timeout=20.0), compressor.log() + decompressor.log()
    code = next(m for m in codes if m.object_id == object_id)
    decoded = answer()
    assert decoded.header.frame_id == "map"
    assert (decoded.header.stamp.sec, decoded.header.stamp.nanosec) == (40 + object_id, 3)
    points = read_xyz(decoded, drop_invalid=False)
    assert points.shape == (POINTS, 3) and np.isfinite(points).all()
    return code, points, (compressor, decompressor)


def test_a_held_out_chair_is_compressed_to_a_code_and_reconstructed_within_the_bound(
        probe, start_node, chair):
    if not CHECKPOINT.is_file():
        pytest.skip(f"no NeuralQAAD checkpoint at {CHECKPOINT}")
    code, points, _ = round_trip(probe, start_node, chair, "neuralqaad", 5)
    model, _ = load_model(CHECKPOINT, "neuralqaad")
    assert code.codec == "neuralqaad" and len(code.latent) == model.config.latent
    assert code.has_object_id and code.point_count == POINTS
    assert len(code.data) == 0 and 4 * len(code.latent) + 20 < chair.nbytes / 100
    radius = normalisation(chair)[1]
    error = em_kd(points, chair) / radius
    # The network's average seat placed where the object is: what a code that ignored the
    # object would give.
    with torch.no_grad():
        mean = model.decode(model.codes.mean(dim=0), POINTS,
                            torch.Generator().manual_seed(0)).numpy()
    centre, _ = normalisation(chair)
    average = em_kd(mean * radius + centre, chair) / radius
    print(f"EM-kD / radius: encoded {error:.4f}, average seat {average:.4f}")
    assert error < EMKD_BOUND
    assert error < BEATS_MEAN_CODE * average


# pointgmm: EM-kD / radius 0.053-0.063 over runs with pointgmm_pool.pt (0.079 with pointgmm_sh3d.pt)
@pytest.mark.parametrize("codec, bound", [("draco", 0.01), ("pointgmm", 0.1)])
def test_the_same_nodes_carry_draco_and_pointgmm_codes(probe, start_node, chair, codec, bound):
    code, points, _ = round_trip(probe, start_node, chair, codec, 6)
    assert code.codec == codec
    payload = len(code.data) + 4 * len(code.latent)
    assert 0 < payload < chair.nbytes
    error = em_kd(points, chair) / normalisation(chair)[1]
    print(f"{codec}: {payload} bytes, EM-kD / radius {error:.4f}")
    assert error < bound


def test_foreign_and_malformed_codes_are_rejected_and_the_decoder_carries_on(
        probe, start_node, chair):
    decompressor = start_node("decompression_node", "-r", "__node:=decompression_it",
                              "-r", "compressed:=/cmp_codes")
    clouds = probe.record(PointCloud2, f"{DECOMPRESSOR}/points")
    publisher = probe.publisher(CompressedCloud, "/cmp_codes")
    assert probe.wait_for_subscribers(publisher, timeout=60), decompressor.log()
    foreign = CompressedCloud(codec="neuralqaad", model_id="0123456789abcdef", point_count=100,
                              scale=1.0, has_object_id=True, object_id=1)
    foreign.latent = np.zeros(128, np.float32)
    foreign.header.frame_id, foreign.header.stamp = "map", TimeMsg(sec=1)
    broken = CompressedCloud(codec="draco", point_count=100, scale=float("nan"))
    broken.header.frame_id, broken.header.stamp = "map", TimeMsg(sec=2)
    for expected, msg in enumerate((foreign, broken), start=1):  # one at a time: queue size 1
        rejected = lambda: probe.diagnostic_count(DECOMPRESSOR, "rejected") >= expected  # noqa
        assert probe.publish_until(publisher, msg, rejected, attempts=10, timeout=3.0), \
            decompressor.log()
    # A good message after the bad ones: a (tiny) PointGMM code of one Gaussian.
    good = CompressedCloud(codec="pointgmm", point_count=300, scale=1.0, has_object_id=True,
                           object_id=9)
    good.latent = np.array([1.0, 1.0, 2.0, 3.0, 0.01, 0, 0, 0.01, 0, 0.01], np.float32)
    good.header.frame_id, good.header.stamp = "map", TimeMsg(sec=3)
    assert probe.publish_until(publisher, good, lambda: any(object_id_of(m) == 9
                                                            for m in clouds)), decompressor.log()
    points = read_xyz(next(m for m in clouds if object_id_of(m) == 9))
    assert points.shape == (300, 3)
    np.testing.assert_allclose(points.mean(axis=0), [1.0, 2.0, 3.0], atol=0.03)
    assert "0123456789abcdef" in decompressor.log()
