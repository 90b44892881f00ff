"""The compression stage's codecs: round trips against independent computations."""

import numpy as np
import pytest
import torch

from gmm_perception.data.pointcloud2 import MalformedCloudError
from gmm_perception.metrics.chamfer import chamfer_distance
from gmm_perception.models.neuralqaad import NeuralQaad, NeuralQaadConfig
from gmm_perception.pipeline.compress import Compressed, Compressor, Decompressor, DracoCodec, \
    MixtureCodec, NeuralQaadCodec, UndecodableError, normalisation, turn_z
from gmm_perception.pipeline.configs import CompressionConfig, DecompressionConfig


def box_surface(rng, n, size=(0.6, 0.4, 0.9), centre=(2.0, -1.0, 0.45)):
    """Points on the surface of a box: a cloud with a known extent."""
    points = rng.uniform(-0.5, 0.5, (n, 3))
    axis = rng.integers(3, size=n)
    points[np.arange(n), axis] = rng.choice([-0.5, 0.5], n)
    return (points * size + centre).astype(np.float32)


@pytest.mark.parametrize("bits", [8, 11, 14])
def test_draco_round_trip_is_within_its_quantisation_step(bits):
    rng = np.random.default_rng(bits)
    points = box_surface(rng, 20_000)
    compressor = Compressor(CompressionConfig(codec="draco", draco_quantization_bits=bits),
                            DracoCodec(bits, 7))
    compressed = compressor(points)
    assert compressed.codec == "draco" and compressed.point_count == len(points)
    assert 0 < compressed.payload_bytes < points.nbytes
    decoded = Decompressor(DecompressionConfig(checkpoint=""))(compressed)
    assert decoded.shape == points.shape
    # Draco quantises over the largest extent of the bounding box: half a step per axis.
    step = np.ptp(points, axis=0).max() / (2 ** bits - 1)
    nearest = chamfer_distance(decoded, points)
    assert nearest <= 2 * np.sqrt(3) * step
    assert len(Decompressor(DecompressionConfig(output_points=500, checkpoint=""))(compressed)) \
        == 500


def test_a_mixture_code_decodes_to_its_mixtures_samples():
    weights = np.array([0.25, 0.75])
    means = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    covariances = np.array([np.diag([0.01, 0.04, 0.09]),
                            [[0.05, 0.02, 0.0], [0.02, 0.05, 0.0], [0.0, 0.0, 0.01]]])
    upper = np.triu_indices(3)
    latent = np.concatenate([weights, means.ravel(),
                             covariances[:, upper[0], upper[1]].ravel()]).astype(np.float32)
    compressed = Compressed("pointgmm", "", 40_000, latent=latent)
    points = MixtureCodec.decode(compressed, 40_000, np.random.default_rng(0))
    second = np.linalg.norm(points - means[1], axis=1) < np.linalg.norm(points - means[0], axis=1)
    assert second.mean() == pytest.approx(0.75, abs=0.01)
    np.testing.assert_allclose(points[second].mean(axis=0), means[1], atol=0.01)
    np.testing.assert_allclose(np.cov(points[second].T), covariances[1], atol=0.005)
    np.testing.assert_allclose(np.cov(points[~second].T), covariances[0], atol=0.005)
    with pytest.raises(UndecodableError, match="10 floats"):
        MixtureCodec.decode(Compressed("pointgmm", "", 10, latent=latent[:-1]), 10,
                            np.random.default_rng(0))


def test_normalisation_and_heading_invert():
    rng = np.random.default_rng(1)
    points = box_surface(rng, 1000)
    centre, scale = normalisation(points)
    unit = (points - centre) / scale
    assert np.linalg.norm(unit, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(turn_z(turn_z(unit, 0.7), -0.7), unit, atol=1e-6)


def tiny_codec(seed=0):
    config = NeuralQaadConfig(shapes=2, latent=8, input_points=512, patches=4,
                              shared_widths=(32, 16), patch_widths=(16,))
    model = NeuralQaad(config)
    model.set_input_cloud(box_surface(np.random.default_rng(seed), 512, centre=(0, 0, 0)))
    return NeuralQaadCodec(model, f"digest{seed}", torch.device("cpu"), encode_steps=5)


def test_the_neuralqaad_codec_round_trips_in_the_objects_frame_and_checks_the_network():
    codec = tiny_codec()
    rng = np.random.default_rng(2)
    points = box_surface(rng, 3000)
    compressed = codec.encode(points)
    assert compressed.model_id == "digest0" and compressed.latent.shape == (8,)
    assert compressed.payload_bytes == 8 * 4 + 20
    decoded = Decompressor(DecompressionConfig(checkpoint=""), codec)(compressed)
    assert decoded.shape == (3000, 3)
    # The decoded cloud lives where the object was: same centre and extent to within the
    # untrained fold's error (the fold starts as the identity on Q, a box like the object).
    np.testing.assert_allclose(normalisation(decoded)[0], normalisation(points)[0], atol=0.1)
    other = tiny_codec(seed=1)
    with pytest.raises(UndecodableError, match="digest0"):
        Decompressor(DecompressionConfig(checkpoint=""), other)(compressed)
    with pytest.raises(UndecodableError, match="digest0: no NeuralQAAD network"):
        Decompressor(DecompressionConfig(checkpoint=""))(compressed)
    assert issubclass(UndecodableError, MalformedCloudError)  # nodes reject, not fail
    with pytest.raises(UndecodableError, match="unknown codec"):
        Decompressor(DecompressionConfig(checkpoint=""))(Compressed("zip", "", 10))


def test_the_compress_and_decompress_commands_round_trip_a_dataset(tmp_path, capsys):
    from gmm_perception.cli import main
    from gmm_perception.data.shape_set import ShapeSet
    from gmm_perception.models.checkpoint import save_checkpoint

    rng = np.random.default_rng(5)
    clouds = np.stack([box_surface(rng, 1000, centre=(0, 0, 0)) for _ in range(3)])
    shapes = ShapeSet(points=clouds, labels=np.zeros(3), class_names=["chair"],
                      split=["train", "train", "cross"], model_ids=["a", "b", "c"])
    shapes_path = shapes.save(tmp_path / "set.npz")
    codec = tiny_codec()
    config = {key: getattr(codec.model.config, key) for key in vars(codec.model.config)}
    checkpoint = save_checkpoint(tmp_path / "nq.pt", model="neuralqaad",
                                 state_dict=codec.model.state_dict(), config={"model": config},
                                 metadata={"model_ids": ["a", "b"]})
    archive = tmp_path / "archive"
    assert main(["compress", "--shapes", str(shapes_path), "--checkpoint", str(checkpoint),
                 "--encode-steps", "3", "--out", str(archive), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    # 3 clouds x 1000 points x 3 floats against network + input cloud + 3 codes of 8 floats.
    floats = codec.model.parameter_floats()
    expected = 9000 / (floats["network"] + floats["input_cloud"] + 3 * 8)
    assert f"{expected:,.1f}:1 as the paper counts" in printed
    codes = np.load(archive / "codes.npz")
    # Stored shapes take their codes from the checkpoint's table; the new one is encoded.
    np.testing.assert_array_equal(codes["latent"][:2], codec.model.codes.detach().numpy())
    assert (archive / "network.pt").is_file()
    out = tmp_path / "clouds.npz"
    assert main(["decompress", str(archive), "--points", "250", "--out", str(out),
                 "--device", "cpu"]) == 0
    decoded = np.load(out)
    assert [decoded[f"cloud_{i}"].shape for i in range(3)] == [(250, 3)] * 3
    assert list(decoded["names"]) == ["a", "b", "c"]

    draco = tmp_path / "draco"
    assert main(["compress", "--shapes", str(shapes_path), "--codec", "draco", "--bits", "14",
                 "--out", str(draco)]) == 0
    assert main(["decompress", str(draco), "--out", str(tmp_path / "d.npz")]) == 0
    back = np.load(tmp_path / "d.npz")
    for i in range(3):  # Draco keeps the count; 14 bits keep every point within 1e-3
        assert back[f"cloud_{i}"].shape == (1000, 3)
        assert chamfer_distance(back[f"cloud_{i}"], clouds[i]) < 1e-3
