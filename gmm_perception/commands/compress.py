"""`gmm-perception compress` / `decompress`: a dataset or a bag's object clouds as codes and back.

compress writes an archive folder: `codes.npz` (one row per cloud: codec, code or bytes, the
normalisation, the point count, the cloud's name) and, for neuralqaad, `network.pt`, a copy of the
checkpoint that decodes the codes. A dataset (ShapeSet .npz) whose shapes the checkpoint stores
takes its codes from the checkpoint's table; any other cloud is encoded (autodecoded for
neuralqaad). It prints the compression ratio as the paper counts it (floats of the clouds :
floats of network, input cloud and codes) and as bytes on disk (raw float32 xyz : the archive's
files). decompress decodes an archive into clouds (.npz) at any point count.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

CODECS = ("neuralqaad", "draco", "pointgmm")


def add_compress_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--shapes", type=Path, help="ShapeSet .npz (e.g. the seating set)")
    source.add_argument("--bag", type=Path, help="rosbag2 holding object clouds")
    parser.add_argument("--topic", default="/segmentation/objects",
                        help="--bag: the PointCloud2 topic of object clouds")
    parser.add_argument("--split", action="append", default=None,
                        help="--shapes: only these splits (repeatable; default all)")
    parser.add_argument("--codec", choices=CODECS, default="neuralqaad")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="neuralqaad (default: the shipped seating checkpoint)")
    parser.add_argument("--encode-steps", type=int, default=150)
    parser.add_argument("--bits", type=int, default=11, help="draco quantisation bits")
    parser.add_argument("--out", type=Path, required=True, help="archive folder to write")
    parser.add_argument("--device", default="auto")


def add_decompress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("archive", type=Path, help="a folder written by `compress`")
    parser.add_argument("--points", type=int, default=0,
                        help="points per cloud (0 = as many as each had)")
    parser.add_argument("--out", type=Path, required=True, help=".npz of the decoded clouds")
    parser.add_argument("--device", default="auto")


def _clouds(args) -> tuple[list[str], list[np.ndarray]]:
    if args.shapes is not None:
        from gmm_perception.data.shape_set import ShapeSet

        shapes = ShapeSet.load(args.shapes)
        keep = np.ones(len(shapes), bool) if not args.split else np.isin(shapes.split, args.split)
        return [str(m) for m in shapes.model_ids[keep]], list(shapes.points[keep])
    from gmm_perception.evaluation.bag import BagReader, CloudRecord

    names, clouds = [], []
    with BagReader(args.bag, points_topic=args.topic) as reader:
        for record in reader.records():
            if isinstance(record, CloudRecord) and len(record.points):
                finite = record.points[np.isfinite(record.points).all(axis=1)]
                names.append(f"{record.stamp_ns}:{record.frame_id}:"
                             f"{'' if record.object_id is None else record.object_id}")
                clouds.append(finite)
        for warning in reader.warnings:
            print(f"warning: {warning}")
    return names, clouds


def _codec(args, device):
    """The stage's codec as `compression_node` would build it, and for neuralqaad (checkpoint
    path, payload): the network that goes into the archive."""
    from gmm_perception.pipeline.compress import load_compressor
    from gmm_perception.pipeline.configs import CompressionConfig

    overrides = {"checkpoint": str(args.checkpoint)} if args.checkpoint else {}
    config = CompressionConfig(codec=args.codec, encode_steps=args.encode_steps,
                               draco_quantization_bits=args.bits, **overrides)
    compressor, payload = load_compressor(config, device)
    return compressor.codec, ((config.checkpoint, payload) if args.codec == "neuralqaad"
                              else None)


def compress_main(args) -> int:
    import torch

    from gmm_perception.device import resolve_device

    device = resolve_device(args.device).device
    names, clouds = _clouds(args)
    if not clouds:
        raise SystemExit("no clouds to compress")
    codec, network = _codec(args, device)
    stored = {}
    if network is not None:
        stored = {str(m): i for i, m in enumerate(network[1]["metadata"].get("model_ids", []))}
    rows, started = [], time.perf_counter()
    for name, cloud in tqdm(list(zip(names, clouds)), desc=f"compress ({args.codec})",
                            unit="cloud"):
        if name in stored:  # the autodecoder already holds this shape's code
            rows.append(codec.stored(stored[name], len(cloud)))
        else:
            with torch.enable_grad():
                rows.append(codec.encode(np.asarray(cloud, np.float32)))
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    longest = max(1, max(len(r.data) for r in rows))
    latent = max(1, max(np.size(r.latent) for r in rows))
    np.savez(args.out / "codes.npz", names=np.array(names), codec=args.codec,
             model_id=rows[0].model_id,
             point_count=np.array([r.point_count for r in rows], np.int64),
             centre=np.stack([np.asarray(r.centre, np.float32) for r in rows]),
             scale=np.array([r.scale for r in rows], np.float32),
             heading=np.array([r.heading for r in rows], np.float32),
             latent=np.stack([np.pad(np.asarray(r.latent, np.float32),
                                     (0, latent - np.size(r.latent))) for r in rows]),
             latent_size=np.array([np.size(r.latent) for r in rows], np.int64),
             data=np.stack([np.frombuffer(r.data.ljust(longest, b"\0"), np.uint8)
                            for r in rows]),
             data_size=np.array([len(r.data) for r in rows], np.int64))
    files = [args.out / "codes.npz"]
    data_floats = sum(3 * len(c) for c in clouds)
    code_floats = sum(np.size(r.latent) for r in rows)
    network_floats = 0
    if network is not None:
        shutil.copyfile(network[0], args.out / "network.pt")
        files.append(args.out / "network.pt")
        floats = codec.model.parameter_floats()
        network_floats = floats["network"] + floats["input_cloud"]
    on_disk = sum(f.stat().st_size for f in files)
    print(f"{len(rows)} clouds, {data_floats:,} floats ({4 * data_floats:,} bytes as float32 "
          f"xyz), compressed in {seconds:.1f} s")
    if args.codec != "draco":
        print(f"floats: network + input cloud {network_floats:,}, codes {code_floats:,}: "
              f"{data_floats / (network_floats + code_floats):,.1f}:1 as the paper counts")
    print(f"bytes on disk: {on_disk:,} ({', '.join(f.name for f in files)}): "
          f"{4 * data_floats / on_disk:,.1f}:1")
    return 0


def decompress_main(args) -> int:
    from gmm_perception.device import resolve_device
    from gmm_perception.pipeline.compress import Compressed, Decompressor, load_decompressor
    from gmm_perception.pipeline.configs import DecompressionConfig

    device = resolve_device(args.device).device
    archive = np.load(args.archive / "codes.npz")
    network = args.archive / "network.pt"
    config = DecompressionConfig(output_points=args.points,
                                 checkpoint=str(network) if network.is_file() else "")
    decoder, _ = load_decompressor(config, device)
    if str(archive["codec"]) == "neuralqaad" and decoder.neuralqaad is None:
        raise SystemExit(f"{args.archive} holds neuralqaad codes but no usable network.pt")
    clouds = {}
    for i, name in enumerate(tqdm(archive["names"], desc="decompress", unit="cloud")):
        compressed = Compressed(
            str(archive["codec"]), str(archive["model_id"]), int(archive["point_count"][i]),
            centre=archive["centre"][i], scale=float(archive["scale"][i]),
            heading=float(archive["heading"][i]),
            latent=archive["latent"][i][:int(archive["latent_size"][i])],
            data=archive["data"][i][:int(archive["data_size"][i])].tobytes())
        clouds[f"cloud_{i}"] = decoder(compressed)
    np.savez(args.out, names=archive["names"], **clouds)
    print(f"decoded {len(clouds)} clouds into {args.out}")
    return 0
