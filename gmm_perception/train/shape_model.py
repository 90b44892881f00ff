"""Training task of PointGMM (Hertz et al., CVPR 2020) on the SH3D-derived shapes: `shape_model`.

* Model: `models/pointgmm.py`; loss: `models/pointgmm_loss.py` (hierarchical NLL of every level,
  KL with weight 1, smallest-eigenvalue penalty with weight 10, constant: see that module). The
  weights come from the config's optional `loss` section (`PointGmmLossWeights`).
* Data: the ShapeSet's train split, optionally restricted to `categories` (PointGMM learns a
  prior per category set). Full mode (`partial_fraction` 0): the input is `num_points` of the
  shape's stored surface points and the loss scores `target_points` of them (drawn
  independently; with both equal to the stored count, the same points in another order: the
  reference's auto-encoding set-up). Completion mode: with probability `partial_fraction` per
  sample the input is instead a simulated depth-camera scan of the shape's mesh (the D435 model
  of `registration_pairs._partial_view`) while the target stays the full cloud, so the network
  learns to decode the whole shape's hGMM from one view. Scans are ray cast once into a pool of
  `partial_views_per_mesh` views of every training mesh, optionally cached in `partial_cache`;
  the pool and its cache key are the classification task's, so both tasks can share one file
  (data/sh3d/partial_pool.npz). The pool covers the whole train split whatever `categories` say.
* Augmentation: with `rotate_z`, one random rotation about z (up) per sample, applied to input
  and target alike. Input and target stay in the shape's frame (unit sphere); the model
  normalises its input itself and returns the mixture in that frame.
* Validation (`data.held_out`, with VALIDATION_SEED), on the models of `held_out.validation_split`
  (the pool's val split; the SH3D set, which has none, its test split) in the selected categories, at most
  `val_max_shapes` of them (0 = all): full inputs (`num_points` of the stored cloud) and
  `val_partial_views` partial scans per mesh, each model turned about z by a fixed seeded angle
  when `rotate_z`. Held-out points are `val_held_out_points` fresh area-weighted samples of the
  mesh (points the model never saw; without meshes, half of the stored cloud is held out and the
  other half is the input). Metrics per input kind `tag` (full, partial), averaged over shapes:
    val_nll_{tag}_l{l}   NLL of level l's whole mixture (weights summing to 1 over the level) on
                         the held-out points, in the shape frame (unit sphere): comparable with
                         an EM fit of as many components;
    val_hnll_{tag}_l{l}  the hierarchical loss term of level l on the same points;
    val_chamfer_{tag}    Chamfer distance (metrics.chamfer: sum of the two mean nearest
                         distances, unsquared) between `val_chamfer_points` points sampled from
                         the finest level and the stored (true) cloud.
  val_loss (the scheduler's and the best checkpoint's) is the finest level's val_nll, weighted
  between full and partial inputs as training mixes them (1 - partial_fraction, partial_fraction),
  falling back to whichever set exists.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from gmm_perception.data import partial_scans
from gmm_perception.data.held_out import held_out_set, held_out_shapes, validation_split
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.metrics.chamfer import chamfer_distance
from gmm_perception.gmm.hierarchical import sample
from gmm_perception.models.pointgmm import MODEL_NAME
from gmm_perception.models.pointgmm_loss import PointGmmLossWeights, \
    hierarchical_log_likelihood, pointgmm_loss
from gmm_perception.models.registry import build_model

VALIDATION_SEED = 1_000_003
_INPUT_STREAM, _HALVES_STREAM = 100, 101  # HeldOutSet.rng streams of the validation inputs


@dataclass
class ShapeModelData:
    shapes: str  # ShapeSet .npz (points, labels, train/test split)
    meshes: str = ""  # MeshSet .npz of the same models: partial scans and held-out points
    categories: list[str] = field(default_factory=list)  # class names to train on; [] = all
    num_points: int = 2048  # input points per cloud
    target_points: int = 2048  # points per cloud scored by the loss
    partial_fraction: float = 0.0  # share of training inputs that are partial scans
    partial_views_per_mesh: int = 8  # size of the precomputed scan pool, per training mesh
    partial_cache: str = ""  # .npz keeping the pool between runs ("" = rebuild every start)
    val_partial_views: int = 2  # fixed partial scans per validation mesh (0 = none)
    val_held_out_points: int = 2048  # fresh mesh samples scored by the validation NLL
    val_chamfer_points: int = 2048  # points resampled from the finest level for the Chamfer
    val_max_shapes: int = 0  # validate on at most this many shapes (0 = all)
    rotate_z: bool = True
    pool_seed: int = 0

    def __post_init__(self):
        self.categories = [str(c) for c in self.categories]


@dataclass
class _EvalSet:
    inputs: torch.Tensor  # (S, N, 3) model inputs in the shape frame
    held_out: torch.Tensor  # (S, M, 3) points scored by the NLL
    truth: torch.Tensor  # (S, P, 3) the stored full cloud, for the Chamfer distance


@dataclass
class ShapeModelTask:
    model: dict[str, Any]
    data: ShapeModelData
    batch_size: int = 16
    weights: PointGmmLossWeights = field(default_factory=PointGmmLossWeights)
    progress: bool = True
    name: str = field(init=False, default=MODEL_NAME)

    def __post_init__(self):
        self.model = dict(self.model)
        d = self.data
        if not 0.0 <= d.partial_fraction <= 1.0:
            raise ValueError("partial_fraction must lie in [0, 1]")
        shapes = ShapeSet.load(d.shapes)
        self.class_names = list(shapes.class_names)
        unknown = sorted(set(d.categories) - set(self.class_names))
        if unknown:
            raise ValueError(f"unknown categories {unknown} (known: {self.class_names})")
        stored = shapes.points.shape[1]
        if stored < max(d.num_points, d.target_points):
            raise ValueError(f"shapes hold {stored} points, fewer than num_points="
                             f"{d.num_points} or target_points={d.target_points}")
        wanted = np.isin(shapes.labels, [self.class_names.index(c) for c in d.categories]) \
            if d.categories else np.ones(len(shapes), dtype=bool)
        all_train = shapes.subset("train")
        self.train_rows = np.flatnonzero(wanted[shapes.split == "train"])  # rows of all_train
        self.train_shapes = all_train.select(self.train_rows)
        self.validation_split = validation_split(shapes)
        self.test_shapes = held_out_shapes(shapes, self.validation_split, d.categories)
        if len(self.train_shapes) == 0 or len(self.test_shapes) == 0:
            raise ValueError("the selected categories leave no train or no test shapes")
        needs_meshes = d.partial_fraction > 0 or d.val_partial_views > 0
        if needs_meshes and not d.meshes:
            raise ValueError("partial scans need data.meshes (or partial_fraction 0 and "
                             "val_partial_views 0)")
        meshes = MeshSet.load(d.meshes) if d.meshes else None
        self.pool = (partial_scans.scan_pool(meshes, all_train, d.partial_views_per_mesh, d.num_points,
                               d.pool_seed, d.partial_cache, self.progress)
                     if d.partial_fraction > 0 else None)
        self.val_full, self.val_partial = self._validation_sets(shapes, meshes)

    # ----------------------------------------------------------------------------- data
    def _validation_sets(self, shapes: ShapeSet, meshes: MeshSet | None
                         ) -> tuple[_EvalSet, _EvalSet | None]:
        d = self.data
        held = held_out_set(shapes, meshes, split=self.validation_split, seed=VALIDATION_SEED,
                            categories=d.categories, max_models=d.val_max_shapes,
                            views=d.val_partial_views if meshes is not None else 0,
                            scan_points=d.num_points,
                            surface_points=(d.val_held_out_points,) if meshes is not None else (),
                            rotate=d.rotate_z, progress=self.progress)
        truth = held.stored
        if meshes is not None:
            held_out = held.surfaces[0]
            full = held.cut(truth, d.num_points, _INPUT_STREAM)
        else:  # no meshes: half of the stored cloud in, the other half held out
            stored = truth.shape[1]
            order = np.stack([held.rng(row, _HALVES_STREAM).permutation(stored)
                              for row in range(len(held))])
            half = stored // 2
            full = np.take_along_axis(truth, order[:, :half, None], axis=1)
            held_out = np.take_along_axis(truth, order[:, half:, None], axis=1)
        full_set = _EvalSet(*(torch.from_numpy(a) for a in (full, held_out, truth)))
        if held.scans is None:
            return full_set, None
        views = d.val_partial_views
        partial = held.scans.reshape(-1, d.num_points, 3)
        held_p, truth_p = (np.repeat(a, views, axis=0) for a in (held_out, truth))
        return full_set, _EvalSet(*(torch.from_numpy(a) for a in (partial, held_p, truth_p)))

    def _sample_clouds(self, rng: np.random.Generator, count: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """`count` (input, target) pairs: (count, num_points, 3), (count, target_points, 3)."""
        d = self.data
        return partial_scans.sample_input_target_pairs(
            rng, self.train_shapes.points, self.pool, self.train_rows, count, d.num_points,
            d.target_points, d.partial_fraction, d.rotate_z)

    # ----------------------------------------------------------------------------- protocol
    def build(self) -> torch.nn.Module:
        return build_model(MODEL_NAME, self.model)

    def model_config(self) -> dict[str, Any]:
        return dict(self.model)

    def data_description(self) -> dict[str, Any]:
        return {**asdict(self.data), "loss": asdict(self.weights),
                "class_names": self.class_names,
                "train_models": len(self.train_shapes), "val_split": self.validation_split,
                "val_models": len(self.val_full.inputs),
                "val_full": len(self.val_full.inputs),
                "val_partial": 0 if self.val_partial is None else len(self.val_partial.inputs),
                "partial_pool": None if self.pool is None else list(self.pool.shape[:2])}

    def train_batch(self, rng: np.random.Generator, device: torch.device):
        inputs, targets = self._sample_clouds(rng, self.batch_size)
        return torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)

    def loss(self, model, batch):
        inputs, targets = batch
        return pointgmm_loss(model(inputs), targets, self.weights)

    def evaluate(self, model, device: torch.device, dataset: _EvalSet) -> dict[str, float]:
        """Per-level NLL, hierarchical NLL and Chamfer on one evaluation set (module docstring),
        averaged over its objects; call in eval mode under no_grad."""
        generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
        sums: dict[str, float] = {}
        count = len(dataset.inputs)
        for start in range(0, count, self.batch_size):
            chunk = slice(start, start + self.batch_size)
            hgmm = model(dataset.inputs[chunk].to(device)).hgmm
            held = dataset.held_out[chunk].to(device)
            terms: dict[str, torch.Tensor] = {}
            for level, gmm in enumerate(hgmm.levels):
                terms[f"nll_l{level}"] = gmm.nll(held)
            for level, ll in enumerate(hierarchical_log_likelihood(hgmm, held)[0]):
                terms[f"hnll_l{level}"] = -ll.mean(dim=1)
            resampled = sample(hgmm, -1, self.data.val_chamfer_points, generator).cpu().numpy()
            truth = dataset.truth[chunk].numpy()
            terms["chamfer"] = torch.tensor([chamfer_distance(a, b)
                                             for a, b in zip(resampled, truth)])
            for key, values in terms.items():
                sums[key] = sums.get(key, 0.0) + float(values.sum())
        return {key: value / count for key, value in sums.items()}

    def validate(self, model, device: torch.device) -> dict[str, float]:
        metrics: dict[str, float] = {}
        finest: dict[str, float] = {}
        for tag, dataset in (("full", self.val_full), ("partial", self.val_partial)):
            if dataset is None:
                continue
            result = self.evaluate(model, device, dataset)
            for key, value in result.items():
                name, _, level = key.partition("_l")
                metrics[f"val_{name}_{tag}_l{level}" if level else f"val_{name}_{tag}"] = value
            depth = sum(key.startswith("nll_l") for key in result) - 1
            finest[tag] = result[f"nll_l{depth}"]
        share = self.data.partial_fraction
        if len(finest) == 2:
            val_loss = (1.0 - share) * finest["full"] + share * finest["partial"]
        else:
            val_loss = next(iter(finest.values()))
        return {"val_loss": float(val_loss), **metrics}
