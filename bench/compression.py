"""Benchmark point-cloud compression on the seating set (issue 19): NeuralQAAD against Draco,
PointGMM mixtures and downsampling, one run, the same shapes.

Usage: python bench/compression.py [--stored 6] [--new 6] [--robot-made 6] [--threads 2]
                                   [--json out.json] [--qap PT] [--chamfer PT] [--atlasnet PT]

Shapes: `data/seating/seating_points_100000.npz` (`gmm-perception data seating`), 100,000 points
each. "stored": a seeded subset of the shapes the NeuralQAAD checkpoint stores (its codes are
looked up: the dataset-compression task of the paper); "new": the cross split's models (a
catalogue no training saw), which NeuralQAAD must encode by autodecoding (timed; target <= 5 s);
"robot-made" (issue 19's second set): what a robot's own pipeline makes of seating, i.e. the
scene-object clouds of chairs, armchairs and sofas from simulated drives through scenes of TEST
shapes (`gmm-perception data scene-objects --split test --scenes 40`), every cloud of one
object's track together (partial: the sides the drive saw; world frame, metres, any heading),
the --robot-made tracks with the most points, the classes in turn. Each is split into two random halves: one is
compressed, the other is its "resample" (the floor); NeuralQAAD encodes them as new shapes.

Rows, per shape set:
  * NeuralQAAD, Chamfer-trained (--chamfer) and QAP-trained (--qap), the shipped checkpoints;
  * the AtlasNet-style baseline without weight sharing at equal parameters (--atlasnet);
  * Draco (DracoPy, compression level 7) at 8, 11 and 14 quantisation bits on the whole cloud,
    and at 11 bits after random downsampling to NeuralQAAD's bytes per shape (code only, and
    code plus its share of the network);
  * voxel downsampling (float32 xyz) to the same two byte budgets;
  * PointGMM's finest mixture (512 Gaussians, 10 floats each: the shape-model stage);
  * "resample": another independent 100,000-point sample of the same mesh, the floor every
    method is judged against (target: NeuralQAAD's EM-kD within 2x of it).
Every decoded cloud is brought to 100,000 points (a random subset, or random repeats) and scored
against the original: EM-kD (auction, leaf 1024) and Chamfer (sum of the two mean nearest
distances), both in the unit sphere. Bytes per shape: what a link carries per shape (codes,
Draco bytes, xyz floats, plus the 5 floats of the normalisation for NeuralQAAD); the "+ network"
columns add the network and input cloud divided over the stored shapes. Ratio: raw float32 xyz
(1.2 MB) over bytes. Writes compression.json, compression_example.png (original / NeuralQAAD /
Draco at equal bytes) and compression.md beside it.
"""
from __future__ import annotations

import argparse
import sys
import time
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path[0] = str(REPO_ROOT)

from bench._report import environment, print_table, write_json  # noqa: E402
from bench._shape_data import plot_clouds  # noqa: E402
from gmm_perception.data.mesh_dataset import default_data_dir  # noqa: E402
from gmm_perception.data.mesh_ops import sample_surface  # noqa: E402
from gmm_perception.data.seating import model_seed  # noqa: E402
from gmm_perception.data.shape_set import MeshSet, ShapeSet  # noqa: E402
from gmm_perception.geometry.points import resample, voxel_downsample  # noqa: E402
from gmm_perception.metrics.chamfer import chamfer_distance  # noqa: E402
from gmm_perception.metrics.emkd import em_kd  # noqa: E402
from gmm_perception.models.checkpoint import file_digest  # noqa: E402
from gmm_perception.pipeline.compress import Compressed, DracoCodec, MixtureCodec, \
    NeuralQaadCodec, load_neuralqaad_codec  # noqa: E402
from gmm_perception.pipeline.configs import ShapeModelConfig  # noqa: E402
from gmm_perception.pipeline.scene import load_shape_modeller  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "bench" / "results" / "compression.json"
RAW_BYTES_PER_POINT = 12  # float32 xyz
NORMALISATION_BYTES = 20  # centre, scale, heading
ROBOT_MADE = "robot-made"
ROBOT_MADE_CLASSES = ("chair", "armchair", "sofa")  # the seating set's family
ROBOT_VOXEL = 0.005  # metres: the accumulated windows of one track overlap
FLOOR_FACTOR = 2.0  # target: NeuralQAAD's EM-kD within 2x of an independent resample's
ENCODE_TARGET_S = 5.0


def voxel_to_points(points: np.ndarray, most: int) -> np.ndarray:
    """The finest voxel grid leaving at most `most` points (bisection on the voxel size)."""
    low, high = 1e-4, 2.0
    best = voxel_downsample(points, high)
    for _ in range(30):
        middle = np.sqrt(low * high)
        cloud = voxel_downsample(points, middle)
        if len(cloud) <= most:
            high, best = middle, cloud
        else:
            low = middle
    return best


def draco_at_bytes(points: np.ndarray, budget: int, rng: np.random.Generator,
                   bits: int = 11) -> Compressed:
    """Draco of the largest random subset whose bytes fit `budget` (bisection on the count)."""
    codec = DracoCodec(bits, 7)
    order = rng.permutation(len(points))
    low, high, best = 1, len(points), None
    while low <= high:
        middle = (low + high) // 2
        encoded = codec.encode(points[order[:middle]])
        if len(encoded.data) <= budget:
            best, low = encoded, middle + 1
        else:
            high = middle - 1
    return best if best is not None else codec.encode(points[order[:1]])


class Scored:
    def __init__(self):
        self.rows: dict[str, dict[str, list]] = {}

    def add(self, name: str, **values) -> None:
        row = self.rows.setdefault(name, {})
        for key, value in values.items():
            row.setdefault(key, []).append(value)

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: {key: float(np.nanmean(values)) if key != "encode_s" else
                       float(np.nanmax(values)) for key, values in row.items()}
                for name, row in self.rows.items()}


def score(decoded: np.ndarray, original: np.ndarray, rng: np.random.Generator, threads: int
          ) -> dict[str, float]:
    cloud = resample(np.asarray(decoded, np.float32), len(original), rng)
    return {"emkd": em_kd(cloud, original, workers=threads),
            "chamfer": chamfer_distance(cloud, original)}


def neuralqaad_codecs(args, device) -> dict[str, tuple[NeuralQaadCodec, dict]]:
    files = {"NeuralQAAD (Chamfer-trained)": args.chamfer, "NeuralQAAD (QAP-trained)": args.qap,
             "AtlasNet-style, no sharing": args.atlasnet}
    codecs = {}
    for name, path in files.items():
        if path.is_file():
            codecs[name] = load_neuralqaad_codec(str(path), device, args.encode_steps)
        else:
            print(f"  {name}: no checkpoint at {path}: row left out", file=sys.stderr)
    return codecs


def seating_shapes(rows: list[int], shapes: ShapeSet, meshes: MeshSet) -> list[tuple]:
    """(model id, its 100,000 points, an independent sample of its mesh) per row."""
    out = []
    for row in rows:
        model_id, original = str(shapes.model_ids[row]), shapes.points[row]
        out.append((model_id, original, sample_surface(meshes.mesh(meshes.index_of(model_id)),
                                                       len(original), model_seed(model_id, 1))))
    return out


def robot_made_shapes(path: Path, classes: tuple[str, ...], count: int,
                      rng: np.random.Generator) -> list[tuple]:
    """The robot-made set: per object track of `classes` in the scene objects at `path` (the
    scene pipeline's segmented, accumulated clouds of simulated drives), every cloud of the
    track together (world frame, metres; at most one point per ROBOT_VOXEL), split into two
    random halves: (scene/object, one half, the other half as its independent sample). The
    `count` tracks with the most points, taken from the classes in turn (the largest are all
    sofas otherwise)."""
    from gmm_perception.data.scene_objects import SceneObjects

    objects = SceneObjects.load(path)
    seating = np.flatnonzero(np.isin(objects.class_name, classes))
    tracks = {key: seating[rows] for key, rows in objects.tracks(seating).items()}
    clouds = {key: voxel_downsample(np.concatenate([objects.cloud(k) for k in ks]), ROBOT_VOXEL)
              for key, ks in tracks.items()}
    by_class = {name: sorted((key for key in clouds
                              if objects.class_name[tracks[key][0]] == name),
                             key=lambda key: -len(clouds[key])) for name in classes}
    turns = [key for row in zip_longest(*by_class.values()) for key in row if key is not None]
    out = []
    for key in turns[:count]:
        cloud = clouds[key][rng.permutation(len(clouds[key]))]
        half = len(cloud) // 2
        out.append((f"scene {key[0]} {key[1]} ({objects.class_name[tracks[key][0]]}, "
                    f"{len(cloud):,} points)", cloud[:half], cloud[half:2 * half]))
    return out


def run_set(tag: str, originals: list[tuple], codecs: dict, modeller, args,
            rng: np.random.Generator, figure: dict) -> Scored:
    """Every method on `originals`: (name, cloud, an independent sample of its surface)."""
    scored = Scored()
    for done, (model_id, original, resample) in enumerate(originals, start=1):
        scored.add("resample (independent sample)", bytes=len(original) * RAW_BYTES_PER_POINT,
                   encode_s=np.nan, decode_ms=np.nan, **score(resample, original, rng,
                                                              args.threads))
        budgets = {}
        for name, (codec, payload) in codecs.items():
            stored_ids = list(payload["metadata"].get("model_ids", []))
            started = time.perf_counter()
            if tag == "stored":
                compressed = codec.stored(stored_ids.index(model_id), len(original))
                encode_s = np.nan  # stored at training time
            else:
                compressed = codec.encode(original)
                encode_s = time.perf_counter() - started
            started = time.perf_counter()
            decoded = codec.decode(compressed, len(original), rng)
            decode_ms = 1e3 * (time.perf_counter() - started)
            floats = codec.model.parameter_floats()
            network_bytes = 4 * (floats["network"] + floats["input_cloud"]) / len(stored_ids)
            scored.add(name, bytes=compressed.payload_bytes, encode_s=encode_s,
                       decode_ms=decode_ms, amortised_bytes=compressed.payload_bytes
                       + network_bytes, **score(decoded, original, rng, args.threads))
            budgets.setdefault("code", compressed.payload_bytes)
            budgets.setdefault("code + network share", compressed.payload_bytes + network_bytes)
            if name.endswith("(QAP-trained)") and done == 1:
                figure[f"{tag}: original"] = original
                figure[f"{tag}: {name}"] = decoded
        for bits in (8, 11, 14):
            codec = DracoCodec(bits, 7)
            started = time.perf_counter()
            compressed = codec.encode(original)
            encode_s = time.perf_counter() - started
            started = time.perf_counter()
            decoded = codec.decode(compressed, len(original), rng)
            scored.add(f"Draco {bits} bits", bytes=compressed.payload_bytes - NORMALISATION_BYTES,
                       encode_s=encode_s, decode_ms=1e3 * (time.perf_counter() - started),
                       **score(decoded, original, rng, args.threads))
        for budget_name, budget in budgets.items():
            compressed = draco_at_bytes(original, int(budget), rng)
            decoded = DracoCodec.decode(compressed, compressed.point_count, rng)
            scored.add(f"Draco 11 bits, downsampled to {budget_name} bytes",
                       bytes=len(compressed.data), encode_s=np.nan, decode_ms=np.nan,
                       points=compressed.point_count, **score(decoded, original, rng,
                                                              args.threads))
            voxels = voxel_to_points(original, max(1, int(budget) // RAW_BYTES_PER_POINT))
            scored.add(f"voxel downsampling to {budget_name} bytes",
                       bytes=len(voxels) * RAW_BYTES_PER_POINT, encode_s=np.nan,
                       decode_ms=np.nan, points=len(voxels),
                       **score(voxels, original, rng, args.threads))
            if budget_name == "code + network share" and done == 1:
                figure[f"{tag}: Draco at equal bytes ({len(compressed.data)} B, "
                       f"{compressed.point_count} pts)"] = decoded
        if modeller is not None:
            codec = MixtureCodec(modeller)
            started = time.perf_counter()
            compressed = codec.encode(original)
            encode_s = time.perf_counter() - started
            started = time.perf_counter()
            decoded = codec.decode(compressed, len(original), rng)
            scored.add("PointGMM mixture (512 Gaussians)",
                       bytes=4 * len(compressed.latent), encode_s=encode_s,
                       decode_ms=1e3 * (time.perf_counter() - started),
                       **score(decoded, original, rng, args.threads))
        print(f"  {tag} {done}/{len(originals)}: {model_id}", file=sys.stderr, flush=True)
    return scored


def table(tag: str, summary: dict, raw_bytes: float) -> list[list[str]]:
    out = []
    for name, s in summary.items():
        amortised = s.get("amortised_bytes")
        out.append([tag, name, f"{s['bytes']:,.0f}",
                    "-" if amortised is None else f"{amortised:,.0f}",
                    f"{raw_bytes / s['bytes']:,.0f}:1",
                    "-" if amortised is None else f"{raw_bytes / amortised:,.0f}:1",
                    f"{s['emkd']:.4f}", f"{s['chamfer']:.4f}",
                    "-" if np.isnan(s["encode_s"]) else f"{s['encode_s']:.2f}",
                    "-" if np.isnan(s["decode_ms"]) else f"{s['decode_ms']:.0f}"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=6, help="stored shapes scored")
    parser.add_argument("--new", type=int, default=6, help="new (cross) shapes scored")
    shipped = REPO_ROOT / "checkpoints" / "neuralqaad"
    parser.add_argument("--qap", type=Path, default=shipped / "neuralqaad_seating.pt")
    parser.add_argument("--chamfer", type=Path,
                        default=shipped / "neuralqaad_seating_chamfer.pt")
    parser.add_argument("--atlasnet", type=Path, default=shipped / "atlasnet_seating.pt")
    parser.add_argument("--encode-steps", type=int, default=150)
    parser.add_argument("--no-pointgmm", action="store_true")
    parser.add_argument("--robot-made", type=int, default=6,
                        help="robot-made objects scored (0 = none)")
    parser.add_argument("--robot-made-objects", type=Path,
                        default=default_data_dir() / "scene_objects" / "pool_test_40scenes_seed0.npz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    data = default_data_dir()
    shapes = ShapeSet.load(data / "seating" / "seating_points_100000.npz")
    meshes = MeshSet.load(data / "pool" / "pool_meshes.npz")
    codecs = neuralqaad_codecs(args, device)
    if not codecs:
        raise SystemExit("no NeuralQAAD checkpoint (--qap, --chamfer, --atlasnet)")
    stored_ids = set(next(iter(codecs.values()))[1]["metadata"]["model_ids"])
    rng = np.random.default_rng(args.seed)
    stored_rows = [i for i, m in enumerate(shapes.model_ids) if str(m) in stored_ids]
    new_rows = [i for i, m in enumerate(shapes.model_ids)
                if str(m) not in stored_ids and shapes.split[i] == "cross"]
    picks = {"stored": sorted(rng.choice(stored_rows, min(args.stored, len(stored_rows)),
                                         replace=False).tolist()),
             "new": new_rows[:args.new]}
    modeller = None
    if not args.no_pointgmm:
        modeller, _ = load_shape_modeller(ShapeModelConfig(seed=args.seed), device)
    figure: dict = {}
    sets = {tag: seating_shapes(rows, shapes, meshes) for tag, rows in picks.items() if rows}
    if args.robot_made > 0 and args.robot_made_objects.is_file():
        sets[ROBOT_MADE] = robot_made_shapes(args.robot_made_objects, ROBOT_MADE_CLASSES,
                                             args.robot_made, rng)
    elif args.robot_made > 0:
        print(f"  no scene objects at {args.robot_made_objects} (gmm-perception data "
              "scene-objects --split test --scenes 40): robot-made rows left out",
              file=sys.stderr)
    results = {tag: run_set(tag, originals, codecs, modeller, args, rng, figure).summary()
               for tag, originals in sets.items()}
    raw = shapes.points.shape[1] * RAW_BYTES_PER_POINT
    print(f"\nCompression of {shapes.points.shape[1]:,}-point seating shapes ({raw:,} bytes raw "
          f"float32 xyz); EM-kD and Chamfer in the unit sphere, means over the shapes; encode s "
          f"is the largest. {ROBOT_MADE}: the scene pipeline's accumulated clouds of "
          f"{', '.join(ROBOT_MADE_CLASSES)} on test drives, one half of each object's points "
          f"(the other half is its independent sample), metres, ratios against its own raw "
          f"bytes\n")
    rows = [line for tag, summary in results.items() for line in table(
        tag, summary, summary["resample (independent sample)"]["bytes"])]
    print_table(["shapes", "method", "bytes / shape", "+ network", "ratio", "ratio + network",
                 "EM-kD", "Chamfer", "encode s", "decode ms"], rows, "llrrrrrrrr")
    dataset = {}
    for name, (codec, payload) in codecs.items():
        floats = codec.model.parameter_floats()
        count = len(payload["metadata"]["model_ids"])
        data_floats = count * shapes.points.shape[1] * 3
        dataset[name] = {"stored_shapes": count, **floats,
                         "ratio": data_floats / sum(floats.values()),
                         "checkpoint_digest": file_digest(codec_path(args, name))}
        print(f"{name}: {count} shapes x {shapes.points.shape[1]:,} points = {data_floats:,} "
              f"floats stored as {sum(floats.values()):,} (network {floats['network']:,}, "
              f"input cloud {floats['input_cloud']:,}, codes {floats['codes']:,}): "
              f"{dataset[name]['ratio']:.0f}:1 as the paper counts")
    lines = targets(results, dataset)
    for line in lines:
        print(line)
    example = args.json.with_name("compression_example.png")
    plot_clouds(example, {tag: {name.split(": ", 1)[1]: cloud[::max(1, len(cloud) // 10_000)]
                                for name, cloud in figure.items() if name.startswith(tag)}
                          for tag in results}, "original / NeuralQAAD (QAP) / Draco at equal bytes")
    write_json(args.json, {"environment": environment(),
                           "shapes": {tag: [name for name, _, _ in originals]
                                      for tag, originals in sets.items()},
                           "results": results, "dataset": dataset, "targets": lines})
    print(f"wrote {example}")
    return 0


def codec_path(args, name: str) -> Path:
    if name.startswith("AtlasNet"):
        return args.atlasnet
    return args.chamfer if "Chamfer" in name else args.qap


def targets(results: dict, dataset: dict) -> list[str]:
    """The issue's targets, each with its numbers."""
    lines = []
    for tag, summary in results.items():
        floor = summary["resample (independent sample)"]["emkd"]
        for name in ("NeuralQAAD (Chamfer-trained)", "NeuralQAAD (QAP-trained)",
                     "AtlasNet-style, no sharing"):
            if name not in summary:
                continue
            s = summary[name]
            lines.append(f"{tag}, {name}: EM-kD {s['emkd']:.4f} vs resample floor {floor:.4f} "
                         f"({s['emkd'] / floor:.1f}x; target <= {FLOOR_FACTOR:g}x: "
                         f"{'met' if s['emkd'] <= FLOOR_FACTOR * floor else 'missed'})")
            for budget in ("code", "code + network share"):  # a link's bytes; an archive's
                draco = summary.get(f"Draco 11 bits, downsampled to {budget} bytes")
                if draco is not None:
                    lines.append(f"{tag}, {name}: Draco at the {budget} bytes "
                                 f"({draco['bytes']:,.0f}): EM-kD {draco['emkd']:.4f} vs "
                                 f"{s['emkd']:.4f} ("
                                 f"{'beaten' if s['emkd'] < draco['emkd'] else 'not beaten'})")
            if tag != "stored":
                lines.append(f"{tag}, {name}: encode {s['encode_s']:.2f} s at most (target <= "
                             f"{ENCODE_TARGET_S:g} s: "
                             f"{'met' if s['encode_s'] <= ENCODE_TARGET_S else 'missed'})")
        chamfer, qap = (summary.get(f"NeuralQAAD ({kind}-trained)") for kind in ("Chamfer", "QAP"))
        if chamfer and qap:
            lines.append(f"{tag}: QAP training against Chamfer training: EM-kD {qap['emkd']:.4f} "
                         f"vs {chamfer['emkd']:.4f} ({100 * (1 - qap['emkd'] / chamfer['emkd']):.0f}"
                         " % lower)")
        atlas = summary.get("AtlasNet-style, no sharing")
        if chamfer and atlas:
            lines.append(f"{tag}: weight sharing at equal parameters and equal (Chamfer) training: "
                         f"EM-kD {chamfer['emkd']:.4f} vs AtlasNet-style {atlas['emkd']:.4f}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
