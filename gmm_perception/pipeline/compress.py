"""The compression stage (issue 19): an object cloud to a compact code and back, three codecs.

* neuralqaad: the object is normalised as the NeuralQAAD set is (bounding-box centre, unit
  sphere), optionally turned about z to the best of `headings` candidate headings, and
  autodecoded: a latent code optimised against the frozen network (`models/neuralqaad.autodecode`).
  The message carries the code, the normalisation and the network's digest (`model_id`): a
  decoder with another network refuses it. Decoding folds the stored input cloud with the code.
* draco: Google Draco's point-cloud bytes (DracoPy), positions quantised to
  `draco_quantization_bits` over the cloud's bounding box. Lossless in count.
* pointgmm: the PointGMM shape model's finest mixture (network, then EM refinement: the
  shape-model stage), 10 floats per Gaussian (weight, mean, the covariance's upper triangle);
  decoding samples it.

Payload bytes (`Compressed.payload_bytes`): what a link carries for the cloud besides the header
and names: the latent floats (float32), Draco's bytes and the 5 floats of the normalisation.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gmm_perception.data.pointcloud2 import MalformedCloudError
from gmm_perception.geometry.points import object_points, resample
from gmm_perception.pipeline.configs import CompressionConfig, DecompressionConfig

MIN_POINTS = 16
_UPPER = np.triu_indices(3)  # xx, xy, xz, yy, yz, zz


class UndecodableError(MalformedCloudError):
    """A message this decoder cannot decode: another network's code, an unknown codec, a code
    of the wrong size. The sender's problem: a node rejects the message and goes on."""


@dataclass
class Compressed:
    codec: str
    model_id: str  # the decoder network's file digest (neuralqaad); "" for the others
    point_count: int  # points of the encoded cloud
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0
    heading: float = 0.0  # radians about z from the model's canonical pose to the cloud's
    latent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    data: bytes = b""
    seconds: float = 0.0  # encoding time

    @property
    def payload_bytes(self) -> int:
        return 4 * int(np.size(self.latent)) + len(self.data) + 4 * 5


def normalisation(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and radius about it: the pool's unit-sphere frame."""
    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    radius = float(np.linalg.norm(points - centre, axis=1).max())
    return centre, radius if radius > 0 else 1.0


def turn_z(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return points @ rotation.T


# ----------------------------------------------------------------------------- codecs
class DracoCodec:
    name = "draco"

    def __init__(self, quantization_bits: int = 11, compression_level: int = 7):
        self.bits, self.level = quantization_bits, compression_level

    def encode(self, points: np.ndarray) -> Compressed:
        import DracoPy

        data = DracoPy.encode(np.ascontiguousarray(points, np.float32),
                              quantization_bits=self.bits, compression_level=self.level)
        return Compressed(self.name, "", len(points), data=bytes(data))

    @staticmethod
    def decode(compressed: Compressed, count: int, rng: np.random.Generator) -> np.ndarray:
        import DracoPy

        points = np.asarray(DracoPy.decode(compressed.data).points, dtype=np.float32)
        return points if count == len(points) else resample(points, count, rng)


class MixtureCodec:
    name = "pointgmm"

    def __init__(self, modeller):
        self.modeller = modeller  # pipeline.shape_model.ShapeModeller

    def encode(self, points: np.ndarray) -> Compressed:
        finest = self.modeller(points).levels[-1]
        latent = np.concatenate([finest["weights"], finest["means"].ravel(),
                                 finest["covariances"][:, _UPPER[0], _UPPER[1]].ravel()])
        return Compressed(self.name, "", len(points), latent=latent.astype(np.float32))

    @staticmethod
    def decode(compressed: Compressed, count: int, rng: np.random.Generator) -> np.ndarray:
        latent = np.asarray(compressed.latent, np.float64)
        if latent.size == 0 or latent.size % 10:
            raise UndecodableError(f"a pointgmm code holds 10 floats per Gaussian, got "
                                   f"{latent.size}")
        k = latent.size // 10
        weights = np.clip(latent[:k], 0.0, None)
        if not weights.sum() > 0:
            raise UndecodableError("a pointgmm code with no positive weight")
        means = latent[k:4 * k].reshape(k, 3)
        covariances = np.zeros((k, 3, 3))
        covariances[:, _UPPER[0], _UPPER[1]] = latent[4 * k:].reshape(k, 6)
        covariances = covariances + np.triu(covariances, 1).transpose(0, 2, 1)
        # Float32 rounding can leave a flat Gaussian a hair indefinite: lift it to PSD.
        values, vectors = np.linalg.eigh(covariances)
        roots = vectors * np.sqrt(np.clip(values, 0.0, None))[:, None, :]
        chosen = rng.choice(k, count, p=weights / weights.sum())
        noise = rng.standard_normal((count, 3))
        return (means[chosen] + np.einsum("nij,nj->ni", roots[chosen], noise)).astype(np.float32)


class NeuralQaadCodec:
    name = "neuralqaad"

    def __init__(self, model, model_id: str, device, encode_steps: int = 150, headings: int = 1,
                 seed: int = 0):
        import torch

        self.model, self.model_id, self.device = model.eval(), model_id, device
        self.encode_steps, self.headings = encode_steps, headings
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def _autodecode(self, unit: np.ndarray, steps: int):
        import torch

        from gmm_perception.models.neuralqaad import augmented_chamfer, autodecode

        points = torch.from_numpy(unit.astype(np.float32)).to(self.device)
        code = autodecode(self.model, points, steps, generator=self.generator)
        with torch.no_grad():
            folded = self.model.decode(code, min(4096, len(unit) * 2), self.generator)[None]
            sample = points[torch.randint(len(points), (4096,), generator=self.generator,
                                          device=self.device)][None]
            return code, float(augmented_chamfer(folded, sample)[0])

    def encode(self, points: np.ndarray) -> Compressed:
        centre, scale = normalisation(points)
        unit = (points - centre) / scale
        headings = [2 * math.pi * h / self.headings for h in range(self.headings)]
        if len(headings) > 1:  # a short fit per heading, then the full fit of the best one
            trial = max(10, self.encode_steps // 5)
            scores = [self._autodecode(turn_z(unit, -angle), trial)[1] for angle in headings]
            headings = [headings[int(np.argmin(scores))]]
        code, _ = self._autodecode(turn_z(unit, -headings[0]), self.encode_steps)
        return Compressed(self.name, self.model_id, len(points), centre=centre, scale=scale,
                          heading=headings[0], latent=code.cpu().numpy().astype(np.float32))

    def stored(self, row: int, point_count: int) -> Compressed:
        """The code the network already holds for its `row`-th stored shape (the set's frame)."""
        code = self.model.codes[row].detach().cpu().numpy().astype(np.float32)
        return Compressed(self.name, self.model_id, point_count, latent=code)

    def decode(self, compressed: Compressed, count: int, rng: np.random.Generator) -> np.ndarray:
        import torch

        if compressed.model_id != self.model_id:
            raise UndecodableError(f"encoded by network {compressed.model_id or '(none)'}, this "
                                    f"decoder holds {self.model_id}")
        code = torch.from_numpy(np.asarray(compressed.latent, np.float32)).to(self.device)
        if code.numel() != self.model.config.latent:
            raise UndecodableError(f"a code of {code.numel()} floats for a "
                                   f"{self.model.config.latent}-float model")
        generator = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**31)))
        with torch.no_grad():
            unit = self.model.decode(code, count, generator).cpu().numpy()
        return (turn_z(unit, compressed.heading) * compressed.scale
                + compressed.centre).astype(np.float32)


# ----------------------------------------------------------------------------- stages
class Compressor:
    """One codec, as configured: points (N, 3) in, `Compressed` out."""

    def __init__(self, config: CompressionConfig, codec):
        self.config, self.codec = config, codec
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, points: np.ndarray) -> Compressed:
        started = time.perf_counter()
        points = object_points(points, "compress", MIN_POINTS)
        if len(points) > self.config.max_points:
            points = resample(points, self.config.max_points, self._rng)
        compressed = self.codec.encode(points)
        compressed.seconds = time.perf_counter() - started
        return compressed


class Decompressor:
    """Any codec's message back to points; neuralqaad needs the network that encoded it."""

    def __init__(self, config: DecompressionConfig, neuralqaad: NeuralQaadCodec | None = None,
                 missing_network: str = "no NeuralQAAD network loaded"):
        self.config, self.neuralqaad = config, neuralqaad
        self.missing_network = missing_network  # why neuralqaad codes cannot be decoded
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, compressed: Compressed) -> np.ndarray:
        count = self.config.output_points or compressed.point_count
        if count < 1:
            raise UndecodableError("the message holds no point count and output_points is 0")
        if compressed.codec == DracoCodec.name:
            return DracoCodec.decode(compressed, count, self._rng)
        if compressed.codec == MixtureCodec.name:
            return MixtureCodec.decode(compressed, count, self._rng)
        if compressed.codec == NeuralQaadCodec.name:
            if self.neuralqaad is None:
                raise UndecodableError(f"a code of network {compressed.model_id or '(none)'}: "
                                       f"{self.missing_network}")
            return self.neuralqaad.decode(compressed, count, self._rng)
        raise UndecodableError(f"unknown codec '{compressed.codec}'")


# ----------------------------------------------------------------------------- loaders
def load_neuralqaad_codec(checkpoint: str, device, encode_steps: int = 150, headings: int = 1,
                          seed: int = 0) -> tuple[NeuralQaadCodec, dict]:
    """The NeuralQAAD codec of a checkpoint; its model id is the file's digest."""
    from gmm_perception.models.checkpoint import file_digest
    from gmm_perception.models.registry import load_model

    model, payload = load_model(checkpoint, "neuralqaad", device)
    return NeuralQaadCodec(model, file_digest(checkpoint), device, encode_steps, headings,
                           seed), payload


def load_compressor(config: CompressionConfig, device) -> tuple[Compressor, dict]:
    """(compression stage, payload of the checkpoint it runs: {'model': 'draco'} for Draco)."""
    if config.codec == DracoCodec.name:
        codec = DracoCodec(config.draco_quantization_bits, config.draco_compression_level)
        return Compressor(config, codec), {"model": "draco", "metadata": {}}
    if config.codec == MixtureCodec.name:
        from gmm_perception.pipeline.configs import ShapeModelConfig
        from gmm_perception.pipeline.scene import load_shape_modeller

        modeller, payload = load_shape_modeller(
            ShapeModelConfig(checkpoint=config.pointgmm_checkpoint, seed=config.seed), device)
        return Compressor(config, MixtureCodec(modeller)), payload
    codec, payload = load_neuralqaad_codec(config.checkpoint, device, config.encode_steps,
                                           config.headings, config.seed)
    return Compressor(config, codec), payload


def load_decompressor(config: DecompressionConfig, device) -> tuple[Decompressor, dict]:
    """(decompression stage, payload of its NeuralQAAD checkpoint). Without a usable network
    (none named, or the file missing or corrupt) the stage still decodes draco and pointgmm
    messages and rejects neuralqaad ones with the reason; the payload is {'model': 'none'} and
    its metadata carries the reason for the node's log."""
    from gmm_perception.models.checkpoint import CheckpointError

    if not config.checkpoint:
        return Decompressor(config, None, "the decoder names no NeuralQAAD checkpoint"), \
            {"model": "none", "metadata": {}}
    try:
        codec, payload = load_neuralqaad_codec(config.checkpoint, device, seed=config.seed)
    except (CheckpointError, OSError) as exc:
        reason = f"NeuralQAAD checkpoint unusable: {exc}"
        return Decompressor(config, None, reason), {"model": "none",
                                                     "metadata": {"problem": reason}}
    return Decompressor(config, codec), payload
