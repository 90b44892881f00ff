"""Training task of the object classifiers (GMCN and the PointNet and DGCNN baselines).

One task class trains any of them (`model_name`: "gmcn", "pointnet_cls" or "dgcnn_cls") on the
same data with the same augmentation, so the comparison differs in the model only:

* data: ShapeSet points (full surface samples) of the train split, and, with probability
  `partial_fraction` per sample, a simulated depth-camera partial scan of the same object's mesh
  (MeshSet, `registration_pairs._partial_view`: the D435 model used for the registration pairs),
  which is what a robot sees. Ray casting is slow, so `partial_views_per_mesh` views of every
  training mesh are made once at task start (progress bar; optionally cached in `partial_cache`)
  and batches draw from that pool.
* augmentation, per sample: a random rotation about z (z is up in this data), a random scale per
  axis in [scale_low, scale_high], jitter N(0, jitter_sigma) clipped to +-jitter_clip.
* model input: `prepare` of the model's module, i.e. for GMCN the k-means + EM mixture fit, done
  per batch in batched torch on the training device (about 5-10 ms per object on a busy CPU
  core, a few % of a GMCN training step, so precomputing fits of the pool would save little and
  would freeze the augmentation; validation inputs, which are fixed, are fitted once).
* validation (`data.held_out`, with VALIDATION_SEED): the models of `VALIDATION_SPLIT` (today the
  test split: the datasets have no validation split yet, so the best checkpoint is picked on the
  models the benchmark scores), each as `num_points` of its stored cloud and as
  `val_partial_views` partial scans of its mesh, every model turned about z by a fixed seeded
  angle: overall accuracy, mean class accuracy and NLL of each, per-class accuracy over both;
  val_loss (what the scheduler and the best checkpoint follow) is the mean of the two NLLs.
* GMCN's data-set weight normalisation (`fitting.dataset_weight_scale`) is computed at task start
  from `weight_scale_samples` augmented training clouds and stored in the model config
  (`input_weight_scale`), unless the config sets it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from gmm_perception.data.held_out import POOL_VALIDATION_SPLIT, VALIDATION_SPLIT, held_out_set
from gmm_perception.data.partial_scans import scan_pool
from gmm_perception.data.shape_set import MeshSet, ShapeSet
from gmm_perception.geometry.transforms import rotation_z
from gmm_perception.train.classification_views import ViewMix, ViewSource
from gmm_perception.metrics.classification import accuracy, per_class_accuracy
from gmm_perception.models.gmcn import MODEL_NAME as GMCN, GmcnConfig, fit_input
from gmm_perception.models.registry import CLASSIFIERS, build_model

VALIDATION_SEED = 1_000_003
_FULL_STREAM = 100  # HeldOutSet.rng stream of the full clouds' point subsets


@dataclass
class ClassificationData:
    shapes: str  # ShapeSet .npz (points, labels, train/test split)
    meshes: str = ""  # MeshSet .npz of the same models, for partial scans ("" = no partial scans)
    num_points: int = 2048  # points per cloud given to the model
    partial_fraction: float = 0.5  # share of training samples that are partial scans
    partial_views_per_mesh: int = 8  # size of the precomputed pool, per training mesh
    partial_cache: str = ""  # .npz to keep the pool in between runs ("" = rebuild every start)
    val_partial_views: int = 4  # fixed partial scans per validation mesh
    rotate_z: bool = True
    scale_low: float = 0.85  # per-axis scale factor range
    scale_high: float = 1.15
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    class_balanced: bool = False  # draw classes uniformly, then a model of the class
    weight_scale_samples: int = 128  # GMCN: clouds used for the data-set weight normalisation
    pool_seed: int = 0
    # Sensor views of the shape pool (train/classification_views.py) instead of the SH3D set's
    # depth scans: `view_pool` is the views' cache file ("" = the SH3D mode above). Then
    # `shapes`/`meshes` are the pool's, `classes` the categories kept (in this order),
    # `partial_fraction` the share of single views, `accumulated_fraction` that of 2-6 views
    # accumulated, sampling is class-balanced and validation is the pool's `val` split.
    view_pool: str = ""
    classes: list[str] = field(default_factory=list)
    views_per_shape: int = 24
    accumulated_fraction: float = 0.3
    accumulated_views: tuple[int, int] = (2, 6)
    val_views: int = 8  # single views per validation shape
    val_accumulated: int = 4  # accumulations of 3 views per validation shape
    # Sensor views at their classes' real sizes in metres (data/class_sizes.py, spread
    # log-normally by `size_spread`) instead of the unit shape: for models that read size.
    metric_sizes: bool = False
    size_spread: float = 0.2
    # The scene pipeline's own object clouds (`gmm-perception data scene-objects`, train and
    # val files; metric sizes only): `scene_fraction` of the samples of each class they have.
    scene_objects: str = ""
    scene_val_objects: str = ""
    scene_fraction: float = 0.0


def _preparer(model_name: str, model_config: dict[str, Any]
              ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Raw clouds -> model input: the model's own `prepare` (GMCN's input fit, the others'
    normalisation), of a model built from the config, which holds no weights it uses."""
    if model_name not in CLASSIFIERS:
        raise ValueError(f"classification trains one of {CLASSIFIERS}, not '{model_name}'")
    return build_model(model_name, model_config).prepare


@dataclass
class _EvalSet:
    inputs: torch.Tensor  # prepared model inputs, on the CPU
    labels: np.ndarray


@dataclass
class ClassificationTask:
    model_name: str
    model: dict[str, Any]
    data: ClassificationData
    batch_size: int = 16
    progress: bool = True
    name: str = field(init=False)

    def __post_init__(self):
        if self.model_name not in CLASSIFIERS:
            raise ValueError(f"model_name must be one of {CLASSIFIERS}, got '{self.model_name}'")
        self.name = self.model_name
        self.model = dict(self.model)
        d = self.data
        if not 0.0 <= d.partial_fraction <= 1.0:
            raise ValueError("partial_fraction must lie in [0, 1]")
        shapes = ShapeSet.load(d.shapes)
        self.views = None
        if d.view_pool:
            self._init_views(shapes)
            return
        if shapes.points.shape[1] < d.num_points:
            raise ValueError(f"shapes hold {shapes.points.shape[1]} points, fewer than "
                             f"num_points={d.num_points}")
        self.class_names = list(shapes.class_names)
        configured = self.model.setdefault("num_classes", len(self.class_names))
        if configured != len(self.class_names):
            raise ValueError(f"model num_classes={configured} but the data has "
                             f"{len(self.class_names)} classes")
        self.train_shapes = shapes.subset("train")

        needs_meshes = d.partial_fraction > 0 or d.val_partial_views > 0
        if needs_meshes and not d.meshes:
            raise ValueError("partial scans need data.meshes (or partial_fraction 0 and "
                             "val_partial_views 0)")
        meshes = MeshSet.load(d.meshes) if needs_meshes else None
        self.pool = (scan_pool(meshes, self.train_shapes, d.partial_views_per_mesh,
                               d.num_points, d.pool_seed, d.partial_cache, self.progress)
                     if meshes is not None and d.partial_fraction > 0
                     else None)

        if self.model_name == GMCN and "input_weight_scale" not in self.model:
            self.model["input_weight_scale"] = self._weight_scale()
        self.prepare = _preparer(self.model_name, self.model)
        self.val_full, self.val_partial = self._validation_sets(shapes, meshes)
        self.val_sets = {"full": self.val_full}
        if self.val_partial is not None:
            self.val_sets["partial"] = self.val_partial

    def _init_views(self, shapes: ShapeSet) -> None:
        d = self.data
        if not d.meshes or not d.classes:
            raise ValueError("view training needs data.meshes and data.classes")
        self.views = ViewSource(shapes, MeshSet.load(d.meshes), list(d.classes), d.view_pool,
                                d.views_per_shape, d.pool_seed, d.num_points,
                                ViewMix(d.partial_fraction, d.accumulated_fraction,
                                        tuple(d.accumulated_views), d.scene_fraction),
                                train_split="train", val_split=POOL_VALIDATION_SPLIT,
                                progress=self.progress,
                                size_spread=d.size_spread if d.metric_sizes else None,
                                scene_objects=((d.scene_objects, d.scene_val_objects)
                                               if d.scene_objects else None))
        self.class_names = list(d.classes)
        configured = self.model.setdefault("num_classes", len(self.class_names))
        if configured != len(self.class_names):
            raise ValueError(f"model num_classes={configured} but data.classes holds "
                             f"{len(self.class_names)}")
        self.train_shapes = self.views.shapes.subset("train")
        self.pool = None
        if self.model_name == GMCN and "input_weight_scale" not in self.model:
            self.model["input_weight_scale"] = self._weight_scale()
        self.prepare = _preparer(self.model_name, self.model)
        val = self.views.validation(d.val_views, d.val_accumulated)
        self.val_models = len(self.views.val.rows)
        self.val_sets = {tag: _EvalSet(self._prepared(clouds), labels)
                         for tag, (clouds, labels) in val.items()}
        self.val_full, self.val_partial = self.val_sets["full"], self.val_sets.get("partial")

    # ----------------------------------------------------------------------------- data
    def _augment(self, clouds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = self.data
        b = len(clouds)
        if d.rotate_z:
            clouds = clouds @ rotation_z(rng.uniform(0, 2 * np.pi, b)).transpose(0, 2, 1)
        if d.scale_low != 1.0 or d.scale_high != 1.0:
            clouds = clouds * rng.uniform(d.scale_low, d.scale_high, (b, 1, 3))
        if d.jitter_sigma > 0:
            clouds = clouds + np.clip(d.jitter_sigma * rng.standard_normal(clouds.shape),
                                      -d.jitter_clip, d.jitter_clip)
        return clouds.astype(np.float32)

    def _sample_clouds(self, rng: np.random.Generator, count: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """`count` augmented training clouds (count, num_points, 3) and their labels."""
        d = self.data
        if self.views is not None:
            clouds, labels = self.views.sample(rng, count)
            return self._augment(clouds, rng), labels
        labels = self.train_shapes.labels
        if d.class_balanced:
            present = np.unique(labels)
            classes = rng.choice(present, count)
            index = np.array([rng.choice(np.flatnonzero(labels == c)) for c in classes])
        else:
            index = rng.integers(len(labels), size=count)
        stored = self.train_shapes.points.shape[1]
        clouds = np.empty((count, d.num_points, 3), dtype=np.float32)
        for row, k in enumerate(index):
            if self.pool is not None and rng.random() < d.partial_fraction:
                clouds[row] = self.pool[k, rng.integers(self.pool.shape[1])]
            else:
                pick = (rng.permutation(stored) if stored == d.num_points
                        else rng.choice(stored, d.num_points, replace=False))
                clouds[row] = self.train_shapes.points[k, pick]
        return self._augment(clouds, rng), labels[index]

    def _weight_scale(self) -> float:
        from gmm_perception.gmm.fitting import dataset_weight_scale

        rng = np.random.default_rng([self.data.pool_seed, 7])
        clouds, _ = self._sample_clouds(rng, self.data.weight_scale_samples)
        config = GmcnConfig(**{**self.model, "input_weight_scale": 1.0})
        mixtures = torch.cat([fit_input(torch.from_numpy(chunk), config)
                              for chunk in np.array_split(clouds, max(1, len(clouds) // 32))])
        return dataset_weight_scale(mixtures)

    def _prepared(self, clouds: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        parts = [self.prepare(torch.from_numpy(clouds[s:s + 32]).to(device))
                 for s in range(0, len(clouds), 32)]
        return torch.cat(parts)

    def _validation_sets(self, shapes: ShapeSet, meshes: MeshSet | None
                         ) -> tuple[_EvalSet, _EvalSet | None]:
        d = self.data
        held = held_out_set(shapes, meshes, split=VALIDATION_SPLIT, seed=VALIDATION_SEED,
                            views=d.val_partial_views if meshes is not None else 0,
                            scan_points=d.num_points, progress=self.progress)
        self.val_models = len(held)
        full = held.cut(held.stored, d.num_points, _FULL_STREAM)
        full_set = _EvalSet(self._prepared(full), held.labels.copy())
        if held.scans is None:
            return full_set, None
        partial = held.scans.reshape(-1, d.num_points, 3)
        labels = np.repeat(held.labels, d.val_partial_views)
        return full_set, _EvalSet(self._prepared(partial), labels)

    # ----------------------------------------------------------------------------- protocol
    def build(self) -> torch.nn.Module:
        return build_model(self.name, self.model)

    def model_config(self) -> dict[str, Any]:
        return dict(self.model)

    def data_description(self) -> dict[str, Any]:
        return {**asdict(self.data), "class_names": self.class_names,
                "train_models": len(self.train_shapes),
                "val_split": POOL_VALIDATION_SPLIT if self.views is not None else VALIDATION_SPLIT,
                "val_models": self.val_models,
                "val_clouds": {tag: len(s.labels) for tag, s in self.val_sets.items()},
                "partial_pool": None if self.pool is None else list(self.pool.shape[:2]),
                "views": None if self.views is None else {
                    "shapes": len(self.views.pool), "views": self.views.pool.num_views,
                    "key": self.views.pool.config.get("key")}}

    def train_batch(self, rng: np.random.Generator, device: torch.device):
        clouds, labels = self._sample_clouds(rng, self.batch_size)
        inputs = self.prepare(torch.from_numpy(clouds).to(device))
        return inputs, torch.as_tensor(labels, device=device)

    def loss(self, model, batch):
        inputs, labels = batch
        nll = torch.nn.functional.nll_loss(model(inputs), labels)
        regulariser = getattr(model, "module", model).regularisation_loss()
        return nll + regulariser, {"nll": float(nll.detach())}

    def _evaluate(self, model, device: torch.device, dataset: _EvalSet
                  ) -> tuple[float, np.ndarray]:
        losses, predictions = [], []
        labels = torch.as_tensor(dataset.labels)
        for start in range(0, len(labels), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            log_probs = model(dataset.inputs[chunk].to(device)).cpu()
            losses.append(torch.nn.functional.nll_loss(log_probs, labels[chunk], reduction="sum"))
            predictions.append(log_probs.argmax(dim=1).numpy())
        return float(torch.stack(losses).sum()) / len(labels), np.concatenate(predictions)

    def validate(self, model, device: torch.device) -> dict[str, float]:
        n = len(self.class_names)
        metrics: dict[str, float] = {}
        truth, predicted, losses = [], [], []
        for tag, dataset in self.val_sets.items():
            loss, prediction = self._evaluate(model, device, dataset)
            losses.append(loss)
            metrics[f"val_nll_{tag}"] = loss
            metrics[f"val_acc_{tag}"] = accuracy(dataset.labels, prediction)
            metrics[f"val_macc_{tag}"] = float(np.nanmean(
                per_class_accuracy(dataset.labels, prediction, n)))
            truth.append(dataset.labels)
            predicted.append(prediction)
        per_class = per_class_accuracy(np.concatenate(truth), np.concatenate(predicted), n)
        for name, value in zip(self.class_names, per_class):
            metrics[f"val_class_acc_{name}"] = float(value)
        return {"val_loss": float(np.mean(losses)), **metrics}
