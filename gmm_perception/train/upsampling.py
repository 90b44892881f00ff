"""Training task of ShapeGF (Cai et al., ECCV 2020) as a point-cloud upsampler: `upsampling`.

* Model: `models/shapegf.py`; loss: `models/shapegf_loss.py` (denoising score matching, one
  level per shape, weight sigma^-`weight_power`, 1 = the reference's).
* Data: the ShapeSet's train split (optionally restricted to `categories`). Each batch draws one
  input size N_in uniformly from [input_min, input_max] (one per batch, so inputs stack); an input
  is N_in of the shape's stored points (a sparse / low-resolution scan) or, with probability
  `partial_fraction`, N_in points of one simulated depth-camera view of its mesh (a partial scan).
  Targets are `target_points` of the stored dense cloud (all 2048 by default), of its points
  not in a sparse input (`targets: disjoint`), or fresh samples of the mesh surface every batch
  (`targets: surface`). The scans
  come from `data/partial_scans.scan_pool`: the same pool, rng and cache key as the shape-model
  and classification tasks, so with `pool_points` 2048, 8 views and seed 0 the shared cache file
  data/sh3d/partial_pool.npz is read as it is; the N_in points are drawn from the 2048 of a view.
* Augmentation: with `rotate_z`, one rotation about z (up) per sample, input and target alike.
  Clouds stay in the shape frame; the model normalises the input itself (the target goes to the
  same frame in the loss).
* Validation (`data.held_out`, with VALIDATION_SEED), on at most `val_max_shapes` models of
  the set's validation split (the shape pool's `val`; the SH3D set has none and validates on its
  `VALIDATION_SPLIT`, the test split, as its first checkpoint did) in the selected
  categories (fixed, seeded; 0 = all), each turned about z by a fixed seeded angle when
  `rotate_z`: `val_input_points` (512) of the stored cloud in, `val_output_points` (2048) out by
  `model.upsample` from the prior with `val_steps_per_level` steps per level and a fixed generator
  (`val_prior`; `val_loss_metric` names the metric that selects the checkpoint):
    val_chamfer        Chamfer (metrics.chamfer: sum of the two mean nearest distances,
                       unsquared) between the upsampled cloud and `val_output_points` fresh
                       samples of the mesh surface (the stored points without meshes); the
                       default val_loss;
    val_chamfer_input  the same distance for the sparse input itself (the reference to beat);
    val_chamfer_denoise  the upsampled cloud from `denoise_from_input` (levels <=
                       `val_start_sigma`);
    val_chamfer_guide  the same chains with the decoder's correction zeroed (the input guide
                       alone, `models.shapegf.guide_only`): what the network adds is the gap;
    val_emd_denoise, val_emd_guide  (with `val_emd`) their exact EMD to the truth;
    val_dsm            the score-matching loss of the validation shapes with fixed noise and
                       levels (every level once per shape, cycling).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from gmm_perception.data.held_out import held_out_set, held_out_shapes, validation_split
from gmm_perception.data.mesh_ops import SurfaceSampler
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.metrics.chamfer import chamfer_distance
from gmm_perception.models.registry import build_model
from gmm_perception.metrics.emd import earth_movers_distance
from gmm_perception.models.shapegf import DEFAULT_START_SIGMA, MODEL_NAME, guide_only
from gmm_perception.models.shapegf_loss import REFERENCE_WEIGHT_POWER, score_matching_loss, \
    shapegf_loss
from gmm_perception.data.partial_scans import sample_input_target_pairs, scan_pool

VALIDATION_SEED = 1_000_003
TARGET_SOURCES = ("stored", "disjoint", "surface")
_INPUT_STREAM = 100  # HeldOutSet.rng stream of the validation inputs


@dataclass
class UpsamplingData:
    shapes: str  # ShapeSet .npz (points, labels, train/test split)
    meshes: str = ""  # MeshSet .npz of the same models: needed for partial scans
    categories: list[str] = field(default_factory=list)  # class names to train on; [] = all
    input_min: int = 256  # sparse input size, drawn per batch in [input_min, input_max]
    input_max: int = 1024
    target_points: int = 2048  # dense target points per shape (<= stored)
    partial_fraction: float = 0.3  # share of inputs taken from a partial scan
    partial_views_per_mesh: int = 8  # scan pool size per training mesh (cache key)
    pool_points: int = 2048  # points per pooled scan (cache key; inputs are subsets)
    partial_cache: str = ""  # .npz keeping the pool ("" = rebuild every start)
    pool_seed: int = 0
    rotate_z: bool = True
    # Where the targets come from (data/partial_scans.sample_input_target_pairs): "stored", of
    # the stored cloud (the checkpoints trained before 2026-12-08); "disjoint", of the stored
    # points not in a sparse input (input_max + target_points <= stored points); "surface",
    # fresh samples of the mesh surface every batch (needs meshes): at the fine levels the
    # stored cloud's spacing exceeds sigma and a denoiser learns its points, not the surface.
    targets: str = "stored"
    # With surface targets: the loss keeps only the target's component along the surface normal
    # (models/shapegf_loss.score_matching_loss), the tangential noise left out.
    normal_targets: bool = False
    weight_power: float = REFERENCE_WEIGHT_POWER  # loss weight sigma^-p
    val_max_shapes: int = 8  # fixed held-out shapes to validate on (0 = all)
    val_input_points: int = 512
    val_output_points: int = 2048
    val_steps_per_level: int = 5
    # Also run the denoise-from-input chain (and, for a guided model, the same chain with the
    # correction zeroed); val_emd and the *_denoise metrics need it.
    val_denoise: bool = True
    # The levels the loss draws from: sigma <= train_sigma_max (0 = all). The scene's stage only
    # denoises from its start_sigma (0.03), so a model for it need not learn the coarse levels.
    train_sigma_max: float = 0.0
    val_prior: bool = True  # the prior sampler's Chamfer (the slow part of validation)
    val_start_sigma: float = DEFAULT_START_SIGMA  # where the validation's denoise chains start
    val_emd: bool = False  # EMD of the denoise and guide-only clouds (exact, ~1 s a cloud)
    # The validation metric selecting the best checkpoint: one that depends on the weights
    # (chamfer, chamfer_denoise, emd_denoise, dsm; the input's and the guide's do not).
    val_loss_metric: str = "chamfer"

    def __post_init__(self):
        self.categories = [str(c) for c in self.categories]
        if not 1 <= self.input_min <= self.input_max:
            raise ValueError("need 1 <= input_min <= input_max")
        if not 0.0 <= self.partial_fraction <= 1.0:
            raise ValueError("partial_fraction must lie in [0, 1]")
        if self.targets not in TARGET_SOURCES:
            raise ValueError(f"targets must be one of {TARGET_SOURCES}, got '{self.targets}'")
        if self.normal_targets and self.targets != "surface":
            raise ValueError("normal_targets needs targets: surface (the mesh gives the normals)")
        if self.train_sigma_max < 0 or self.val_start_sigma <= 0:
            raise ValueError("need train_sigma_max >= 0 and val_start_sigma > 0")
        computed = {"chamfer": self.val_prior, "dsm": True, "chamfer_denoise": self.val_denoise,
                    "emd_denoise": self.val_denoise and self.val_emd}
        if not computed.get(self.val_loss_metric, False):
            raise ValueError(f"val_loss_metric '{self.val_loss_metric}' must be one of "
                             f"{[k for k, on in computed.items() if on]} with these validation "
                             "settings")


@dataclass
class UpsamplingTask:
    model: dict[str, Any]
    data: UpsamplingData
    batch_size: int = 16
    progress: bool = True
    name: str = field(init=False, default=MODEL_NAME)

    def __post_init__(self):
        self.model = dict(self.model)
        d = self.data
        shapes = ShapeSet.load(d.shapes)
        self.class_names = list(shapes.class_names)
        unknown = sorted(set(d.categories) - set(self.class_names))
        if unknown:
            raise ValueError(f"unknown categories {unknown} (known: {self.class_names})")
        stored = shapes.points.shape[1]
        if stored < max(d.input_max, d.target_points, d.val_input_points):
            raise ValueError(f"shapes hold {stored} points, fewer than input_max, target_points "
                             "or val_input_points")
        if d.input_max > d.pool_points and d.partial_fraction > 0:
            raise ValueError("input_max exceeds pool_points")
        if d.targets == "disjoint" and d.input_max + d.target_points > stored:
            raise ValueError(f"disjoint targets need input_max + target_points <= the {stored} "
                             "stored points")
        if d.targets == "surface" and not d.meshes:
            raise ValueError("surface targets need data.meshes")
        if d.val_emd and not d.meshes and d.val_output_points != stored:
            raise ValueError(f"val_emd without meshes compares with the {stored} stored points: "
                             "val_output_points must equal it")
        wanted = np.isin(shapes.labels, [self.class_names.index(c) for c in d.categories]) \
            if d.categories else np.ones(len(shapes), dtype=bool)
        all_train = shapes.subset("train")
        self.train_rows = np.flatnonzero(wanted[shapes.split == "train"])  # rows of all_train
        self.train_shapes = all_train.select(self.train_rows)
        self.validation_split = validation_split(shapes)
        held = held_out_shapes(shapes, self.validation_split, d.categories)
        if len(self.train_shapes) == 0 or len(held) == 0:
            raise ValueError("the selected categories leave no train or no validation shapes")
        if d.partial_fraction > 0 and not d.meshes:
            raise ValueError("partial scans need data.meshes (or partial_fraction 0)")
        meshes = MeshSet.load(d.meshes) if d.meshes else None
        self.pool = (scan_pool(meshes, all_train, d.partial_views_per_mesh,
                               d.pool_points, d.pool_seed, d.partial_cache, self.progress)
                     if d.partial_fraction > 0 else None)
        self.surface_sampler = None if d.targets != "surface" else SurfaceSampler(
            *zip(*[(meshes.vertices[k], meshes.faces[k]) for k in
                   (meshes.index_of(m) for m in self.train_shapes.model_ids)]),
            normals=d.normal_targets)
        self.val_inputs, self.val_truth = self._validation_set(shapes, meshes)
        # The guide alone depends on the config and the inputs, not on the weights: its chains
        # run once per model config and validation setting.
        self._guide_sums: dict[tuple, dict[str, float]] = {}

    # ----------------------------------------------------------------------------- data
    def _validation_set(self, shapes: ShapeSet, meshes: MeshSet | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.data
        # The truth is a fresh sample of the surface where the meshes are known: the stored
        # points contain the input itself, which would score the input (and copies of it) as
        # lying exactly on the surface.
        held = held_out_set(shapes, meshes, split=self.validation_split, seed=VALIDATION_SEED,
                            categories=d.categories, max_models=d.val_max_shapes,
                            surface_points=(d.val_output_points,) if meshes is not None else (),
                            rotate=d.rotate_z, progress=self.progress)
        inputs = held.cut(held.stored, d.val_input_points, _INPUT_STREAM)
        truth = held.stored if meshes is None else held.surfaces[0]
        return torch.from_numpy(inputs), torch.from_numpy(truth)

    def _sample_clouds(self, rng: np.random.Generator, count: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """`count` (input, target) pairs: (count, N_in, 3) with one random N_in, and
        (count, target_points, 3)."""
        d = self.data
        n_in = int(rng.integers(d.input_min, d.input_max + 1))
        return sample_input_target_pairs(
            rng, self.train_shapes.points, self.pool, self.train_rows, count, n_in,
            d.target_points, d.partial_fraction, d.rotate_z, disjoint=d.targets == "disjoint",
            surface=self.surface_sampler)

    # ----------------------------------------------------------------------------- protocol
    def build(self) -> torch.nn.Module:
        return build_model(MODEL_NAME, self.model)

    def model_config(self) -> dict[str, Any]:
        return dict(self.model)

    def data_description(self) -> dict[str, Any]:
        return {**asdict(self.data), "class_names": self.class_names,
                "train_models": len(self.train_shapes), "val_models": len(self.val_inputs),
                "validation_split": self.validation_split,
                "partial_pool": None if self.pool is None else list(self.pool.shape[:2])}

    def train_batch(self, rng: np.random.Generator, device: torch.device):
        inputs, targets = self._sample_clouds(rng, self.batch_size)
        return torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)

    def loss(self, model, batch, generator: torch.Generator | None = None):
        inputs, targets = batch
        module = getattr(model, "module", model)  # DDP: encode/score live on the module
        return shapegf_loss(module, inputs, targets, self.data.weight_power, generator,
                            self.data.train_sigma_max, self.data.normal_targets)

    def validate(self, model, device: torch.device) -> dict[str, float]:
        """Metrics of the module docstring; call in eval mode under no_grad. Each sampler has
        its own fixed noise: the denoise chains of the model and of its guide alone share it."""
        d = self.data
        prior_noise = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
        dsm_noise = torch.Generator(device=device).manual_seed(VALIDATION_SEED + 1)
        guide_key = (repr(model.config), d.val_start_sigma, d.val_steps_per_level, d.val_emd)
        guide = guide_only(model) if d.val_denoise and guide_key not in self._guide_sums else None
        sums: defaultdict[str, float] = defaultdict(float)
        count = len(self.val_inputs)
        levels = len(model.sigmas)

        def add(run: str, clouds, truth) -> None:
            """Chamfer (and, for the chains, EMD) of one run's clouds; the prior's Chamfer is
            plain val_chamfer."""
            sums["chamfer" if run == "prior" else f"chamfer_{run}"] += sum(
                chamfer_distance(a, b) for a, b in zip(clouds, truth))
            if d.val_emd and run in ("denoise", "guide"):
                sums[f"emd_{run}"] += sum(earth_movers_distance(a, b)
                                          for a, b in zip(clouds, truth))

        for start in range(0, count, self.batch_size):
            inputs = self.val_inputs[start:start + self.batch_size].to(device)
            truth = self.val_truth[start:start + self.batch_size].numpy()
            if d.val_prior:
                add("prior", model.upsample(inputs, d.val_output_points, d.val_steps_per_level,
                                            generator=prior_noise).cpu().numpy(), truth)
            add("input", inputs.cpu().numpy(), truth)
            for key, sampler in (("denoise", model if d.val_denoise else None), ("guide", guide)):
                if sampler is not None:
                    chain_noise = torch.Generator(device=device).manual_seed(
                        VALIDATION_SEED + 2 + start)
                    add(key, sampler.upsample(inputs, d.val_output_points,
                                              d.val_steps_per_level, generator=chain_noise,
                                              denoise_from_input=True,
                                              start_sigma=d.val_start_sigma).cpu().numpy(), truth)
            code = model.encode(inputs)
            clean = code.to_model_frame(torch.from_numpy(truth).to(device))
            sigma = model.sigmas[(torch.arange(start, start + len(inputs)) % levels).to(device)]
            noise = torch.randn(clean.shape, generator=dsm_noise, device=device)
            _, per_shape = score_matching_loss(lambda x, s: model.score(x, code, s), clean,
                                               sigma, noise, d.weight_power)
            sums["dsm"] += float(per_shape.sum())
        if guide is not None:
            self._guide_sums[guide_key] = {k: v for k, v in sums.items() if k.endswith("_guide")}
        if d.val_denoise:
            sums.update(self._guide_sums.get(guide_key, {}))
        metrics = {f"val_{key}": value / count for key, value in sums.items()}
        order = ("chamfer", "chamfer_input", "dsm", "chamfer_denoise", "chamfer_guide",
                 "emd_denoise", "emd_guide")  # the log's columns, older ones first
        return {"val_loss": metrics[f"val_{d.val_loss_metric}"],
                **{f"val_{k}": metrics[f"val_{k}"] for k in order if f"val_{k}" in metrics}}
