"""Training of NeuralQAAD (Wagner & Schwanecke 2022, Sec. 3.4): `gmm-perception train compression`.

An autodecoder fits the very set it stores, so this task has its own loop (phases and an
assignment per shape) instead of `train/loop.py`'s encoder-style protocol:

1. Chamfer phase (`chamfer.steps`): the augmented Chamfer distance (eq. 11: the larger of the two
   directed mean nearest distances, unsquared) between the folded sample of Q and as many random
   points of the shape's full cloud: the AtlasNetV2 scheme the paper starts from, and the
   "Chamfer-trained" row of the benchmark.
2. QAAD_GREEDY (Algorithm 1), once: Q's image for each code is matched to the shape's target
   subset (`target_points` = M fixed, seeded points of its cloud) leaf by leaf along the lockstep
   k-d trees of EM-kD, each leaf by the auction (`metrics/auction.py`, which always completes to a
   perfect matching). The union is a bijection A_i: Q -> target subset. With `greedy: false` A_i
   starts as a random bijection (the ablation "reassignment alone").
3. QAP phase (`qap.steps`): the mean squared error between each sampled q's fold and its assigned
   target A_i(q). With `reassign`, QAAD_REASSIGNMENT (Algorithm 2) first, on the sampled queries:
   each query's prediction takes its nearest target among the targets assigned to the sampled
   queries (the paper's target subset: so the displaced query's prediction is at hand), and the
   two swap targets when the summed squared error of both predictions does not grow. Proposals are
   applied in decreasing gain, each query at most once per step, so every applied swap lowers the
   loss as the paper guarantees. With `reassign: false`: the ablation "greedy alone".

Sampling: S points per patch, without replacement within a patch, same count per patch (Sec. 3.4).
Validation every `validate_every` steps on `val_shapes` rows of the table, spread over it: EM-kD
(auction, leaf 1024) and Chamfer between Q's image (M points, unjittered) and the target subset.
The autodecoder's job is to reproduce the set it stores, so selecting on it is not peeking; new
shapes (test / cross splits) are scored only by the benchmark. Files in `output_dir`: last.pt
(resumable: model, optimiser, assignment, phase, step, random state), chamfer.pt (best of the
Chamfer phase), best.pt (best of the QAP phase), log.csv.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from tqdm import tqdm

from gmm_perception.data.shape_set import ShapeSet
from gmm_perception.device import resolve_device
from gmm_perception.metrics.auction import auction_assignment
from gmm_perception.metrics.chamfer import chamfer_distance
from gmm_perception.metrics.emkd import DEFAULT_LEAF_SIZE, canonical_subspace_pairs, em_kd
from gmm_perception.models.checkpoint import load_checkpoint, save_checkpoint
from gmm_perception.models.neuralqaad import MODEL_NAME, NeuralQaad, NeuralQaadConfig, \
    augmented_chamfer

PHASES = ("chamfer", "qap")


@dataclass
class CompressionData:
    shapes: str = "data/seating/seating_points_100000.npz"  # `gmm-perception data seating`
    splits: tuple[str, ...] = ("train", "val", "test")  # the stored set; the rest are new shapes
    seed: int = 0  # Q's source shape and sample, the target subsets, the training draws

    def __post_init__(self):
        self.splits = tuple(self.splits)


@dataclass
class PhaseSettings:
    steps: int = 0
    batch_shapes: int = 8  # shapes per step
    points_per_patch: int = 128  # folded per shape and patch per step (16 patches: 2048 points)
    lr: float = 1e-3  # Adam, constant (the paper's)


@dataclass
class CompressionSettings:
    output_dir: str = "checkpoints/neuralqaad/run"
    chamfer: PhaseSettings = field(default_factory=lambda: PhaseSettings(steps=3000))
    qap: PhaseSettings = field(default_factory=lambda: PhaseSettings(steps=6000))
    greedy: bool = True  # QAAD_GREEDY initial assignment (else a random bijection)
    reassign: bool = True  # QAAD_REASSIGNMENT in every QAP step
    validate_every: int = 250
    val_shapes: int = 8
    max_minutes: float = 0.0  # stop (saving last.pt) after this much wall time; 0 = no limit
    threads: int = 0
    device: str = "auto"
    init_checkpoint: str = ""  # start from these weights (e.g. a Chamfer phase shared by ablations)

    def __post_init__(self):
        for name in PHASES:
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, PhaseSettings(**value))


class StoredSet:
    """The shapes the autodecoder stores: full clouds and their M-point target subsets."""

    def __init__(self, data: CompressionData, target_points: int):
        shapes = ShapeSet.load(data.shapes)
        keep = np.isin(shapes.split, data.splits)
        if not keep.any():
            raise ValueError(f"{data.shapes} has no shapes in splits {data.splits}")
        self.shapes = shapes.select(keep)
        self.clouds = self.shapes.points  # (N, P, 3) float32
        if self.clouds.shape[1] < target_points:
            raise ValueError(f"shapes hold {self.clouds.shape[1]} points, fewer than the model's "
                             f"input_points {target_points}")
        rng = np.random.default_rng([data.seed, 1])
        rows = [rng.choice(self.clouds.shape[1], target_points, replace=False)
                for _ in range(len(self.clouds))]
        self.targets = np.stack([cloud[row] for cloud, row in zip(self.clouds, rows)])

    def __len__(self) -> int:
        return len(self.clouds)


# ----------------------------------------------------------------------------- losses
def greedy_assignment(image: np.ndarray, target: np.ndarray,
                      leaf_size: int = DEFAULT_LEAF_SIZE) -> np.ndarray:
    """QAAD_GREEDY for one shape: A (M,) with image[q] matched to target[A[q]], a bijection."""
    assignment = np.empty(len(image), dtype=np.int64)
    for index_image, index_target in canonical_subspace_pairs(image, target, leaf_size):
        match = auction_assignment(image[index_image], target[index_target]).match
        assignment[index_image] = index_target[match]
    return assignment


def reassign(predicted: np.ndarray, assigned: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """QAAD_REASSIGNMENT on one shape's sampled queries (module docstring).

    predicted (S, 3) folds of the sampled queries, assigned (S,) their target indices, targets
    the shape's target subset. Returns the new target indices (S,), a permutation of `assigned`.
    """
    assigned = assigned.copy()
    points = targets[assigned]
    _, nearest = cKDTree(points).query(predicted)  # position of each query's nearest target
    other = nearest
    mine = np.arange(len(predicted))

    def squared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum((a - b) ** 2, axis=1)

    before = squared(predicted, points) + squared(predicted[other], points[other])
    after = squared(predicted, points[other]) + squared(predicted[other], points)
    gain = before - after
    candidates = np.flatnonzero((gain >= 0) & (other != mine))
    used = np.zeros(len(predicted), dtype=bool)
    for q in candidates[np.argsort(-gain[candidates], kind="stable")]:
        partner = other[q]
        if used[q] or used[partner]:
            continue
        used[q] = used[partner] = True
        assigned[q], assigned[partner] = assigned[partner], assigned[q]
    return assigned


# ----------------------------------------------------------------------------- trainer
class CompressionTrainer:
    def __init__(self, model_config: dict[str, Any], data: CompressionData,
                 settings: CompressionSettings, progress: bool = True):
        self.settings, self.data, self.progress = settings, data, progress
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.device = resolve_device(settings.device).device
        config = NeuralQaadConfig(**{**model_config, "shapes": 1})
        self.stored = StoredSet(data, config.input_points)
        self.model_config = {**model_config, "shapes": len(self.stored)}
        self.model = NeuralQaad(NeuralQaadConfig(**self.model_config))
        rng = np.random.default_rng([data.seed, 0])
        source = int(rng.integers(len(self.stored)))
        self.model.set_input_cloud(self.stored.targets[source])  # Q: a sample of one shape
        self.model.to(self.device)
        self.out = Path(settings.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.generator = torch.Generator(device=self.device).manual_seed(data.seed)
        self.rng = np.random.default_rng([data.seed, 2])
        self.assignment: np.ndarray | None = None
        self.step, self.phase = 0, PHASES[0]
        self.best = {name: math.inf for name in PHASES}
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.chamfer.lr)
        count = len(self.stored)
        wanted = min(settings.val_shapes, count)
        self.val_rows = np.unique(np.linspace(0, count - 1, wanted).round().astype(int))
        self.metadata = {"data": asdict(data), "settings": asdict(settings),
                         "model_ids": [str(i) for i in self.stored.shapes.model_ids],
                         "input_cloud_source": str(self.stored.shapes.model_ids[source])}

    # --------------------------------------------------------------------- state
    def save(self, path: Path, training: bool) -> None:
        state = None
        if training:
            state = {"optimizer": self.optimizer.state_dict(), "step": self.step,
                     "phase": self.phase, "best": dict(self.best),
                     "assignment": None if self.assignment is None
                     else torch.from_numpy(self.assignment.astype(np.int32)),
                     "torch_rng": self.generator.get_state(),
                     "numpy_rng": self.rng.bit_generator.state}
        save_checkpoint(path, model=MODEL_NAME, state_dict=self.model.state_dict(),
                        config={"model": self.model_config, "data": asdict(self.data)},
                        metadata={**self.metadata, "step": self.step, "phase": self.phase},
                        training_state=state)

    def resume(self, allowed: bool) -> bool:
        """Continue from last.pt when `allowed` and present, else start from init_checkpoint's
        weights when one is named. True when resumed."""
        path = self.out / "last.pt"
        if not (allowed and path.exists()):
            if self.settings.init_checkpoint:
                payload = load_checkpoint(self.settings.init_checkpoint, expected_model=MODEL_NAME,
                                          map_location=self.device)
                self.model.load_state_dict(payload["state_dict"])
            return False
        payload = load_checkpoint(path, expected_model=MODEL_NAME, map_location=self.device)
        self.model.load_state_dict(payload["state_dict"])
        state = payload["training_state"]
        self.step, self.phase, self.best = int(state["step"]), state["phase"], dict(state["best"])
        self._set_phase_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        if state["assignment"] is not None:
            self.assignment = state["assignment"].cpu().numpy().astype(np.int64)
        self.generator.set_state(state["torch_rng"].cpu())
        self.rng.bit_generator.state = state["numpy_rng"]
        return True

    def _set_phase_optimizer(self) -> None:
        lr = getattr(self.settings, self.phase).lr
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    # --------------------------------------------------------------------- steps
    def _sample(self, phase: PhaseSettings) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Shapes (B,), global Q indices (B, K*S) and input points (B, K, S, 3): S per patch,
        without replacement within a patch, jittered (the model's `jitter`)."""
        k, m = self.model.inputs.shape[:2]
        rows = self.rng.choice(len(self.stored), min(phase.batch_shapes, len(self.stored)),
                               replace=False)
        local, points = self.model.sample_inputs(len(rows), min(phase.points_per_patch, m),
                                                 self.generator, replace=False)
        offsets = torch.arange(k, device=self.device).view(1, k, 1) * m
        return rows, (local + offsets).reshape(len(rows), -1), points

    def chamfer_step(self) -> dict[str, float]:
        phase = self.settings.chamfer
        rows, _, points = self._sample(phase)
        predicted = self.model.fold(self.model.codes[torch.from_numpy(rows).to(self.device)],
                                    points).reshape(len(rows), -1, 3)
        count = predicted.shape[1]
        picks = [self.rng.choice(self.stored.clouds.shape[1], count, replace=False) for _ in rows]
        target = torch.from_numpy(np.stack([self.stored.clouds[r][p] for r, p in zip(rows, picks)]
                                           )).to(self.device)
        loss = augmented_chamfer(predicted, target).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def qap_step(self) -> dict[str, float]:
        phase = self.settings.qap
        rows, queries, points = self._sample(phase)
        predicted = self.model.fold(self.model.codes[torch.from_numpy(rows).to(self.device)],
                                    points).reshape(len(rows), -1, 3)
        query_index = queries.cpu().numpy()
        swapped = 0
        if self.settings.reassign:
            folded = predicted.detach().cpu().numpy()
            for slot, row in enumerate(rows):
                old = self.assignment[row, query_index[slot]]
                new = reassign(folded[slot], old, self.stored.targets[row])
                swapped += int(np.count_nonzero(new != old))
                self.assignment[row, query_index[slot]] = new
        targets = np.stack([self.stored.targets[row][self.assignment[row, query_index[slot]]]
                            for slot, row in enumerate(rows)])
        loss = (predicted - torch.from_numpy(targets).to(self.device)).square().sum(-1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "swapped": swapped / query_index.size}

    def start_qap(self) -> None:
        """QAAD_GREEDY (or a random bijection), then the QAP phase's optimiser."""
        count, m = len(self.stored), self.stored.targets.shape[1]
        if self.settings.greedy:
            images = self.images(np.arange(count))
            self.assignment = np.stack([
                greedy_assignment(image, target) for image, target in
                tqdm(zip(images, self.stored.targets), total=count, desc="QAAD_GREEDY",
                     disable=not self.progress)])
        else:
            self.assignment = np.stack([self.rng.permutation(m) for _ in range(count)])
        self.phase = "qap"
        self._set_phase_optimizer()

    # --------------------------------------------------------------------- validation
    @torch.no_grad()
    def images(self, rows: np.ndarray) -> np.ndarray:
        self.model.eval()
        codes = self.model.codes[torch.from_numpy(rows).to(self.device)]
        out = np.concatenate([self.model.decode_all(codes[i:i + 4]).cpu().numpy()
                              for i in range(0, len(rows), 4)])
        self.model.train()
        return out

    def validate(self) -> dict[str, float]:
        self.model.update_spacing()  # Q moves as it trains: keep the jitter's unit current
        images = self.images(self.val_rows)
        targets = self.stored.targets[self.val_rows]
        return {"val_emkd": float(np.mean([em_kd(a, b, workers=max(1, self.settings.threads))
                                           for a, b in zip(images, targets)])),
                "val_chamfer": float(np.mean([chamfer_distance(a, b)
                                              for a, b in zip(images, targets)]))}

    # --------------------------------------------------------------------- run
    def run(self, resume: bool = True) -> Path:
        self.resume(resume)
        s = self.settings
        total = s.chamfer.steps + s.qap.steps
        started = time.monotonic()
        log_path = self.out / "log.csv"
        new_log = not log_path.exists() or self.step == 0
        log = log_path.open("w" if new_log else "a", newline="")
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "phase", "loss", "swapped", "val_emkd", "val_chamfer",
                             "elapsed_min"])
        losses: list[float] = []
        swaps: list[float] = []
        bar = tqdm(total=total, initial=self.step, desc="NeuralQAAD", disable=not self.progress)
        try:
            while self.step < total:
                if self.phase == "chamfer" and self.step >= s.chamfer.steps:
                    self.save(self.out / "last.pt", training=True)
                    self.start_qap()
                result = self.chamfer_step() if self.phase == "chamfer" else self.qap_step()
                losses.append(result["loss"])
                swaps.append(result.get("swapped", 0.0))
                self.step += 1
                bar.update(1)
                bar.set_postfix(phase=self.phase, loss=f"{result['loss']:.5f}")
                end_of_phase = self.step in (s.chamfer.steps, total)
                if self.step % s.validate_every == 0 or end_of_phase:
                    metrics = self.validate()
                    elapsed = (time.monotonic() - started) / 60
                    writer.writerow([self.step, self.phase, np.mean(losses), np.mean(swaps),
                                     metrics["val_emkd"], metrics["val_chamfer"], elapsed])
                    log.flush()
                    losses, swaps = [], []
                    if metrics["val_emkd"] < self.best[self.phase]:
                        self.best[self.phase] = metrics["val_emkd"]
                        self.save(self.out / ("chamfer.pt" if self.phase == "chamfer"
                                              else "best.pt"), training=False)
                    self.save(self.out / "last.pt", training=True)
                    if s.max_minutes and elapsed >= s.max_minutes:
                        break
        finally:
            bar.close()
            log.close()
        self.save(self.out / "last.pt", training=True)
        return self.out / ("best.pt" if self.phase == "qap" else "chamfer.pt")


def train_compression(config: dict[str, Any], resume: bool = True) -> Path:
    trainer = CompressionTrainer(config["model"], CompressionData(**config["data"]),
                                 CompressionSettings(**config["train"]))
    return trainer.run(resume)
