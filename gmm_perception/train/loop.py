"""A model-agnostic training loop: resumable checkpoints, validation, plateau LR, CSV log, DDP.

A task (one per model, in its own module) owns the data and the loss; this loop owns
everything else, so every model trains, logs and resumes the same way.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from gmm_perception.device import resolve_device
from gmm_perception.models.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainSettings:
    output_dir: str
    epochs: int = 100
    steps_per_epoch: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr: float = 1e-6
    seed: int = 0
    max_minutes: float = 0.0  # stop (and save) after this much wall time; 0 = no limit
    grad_clip: float = 0.0  # clip the gradient's global norm to this; 0 = no clipping
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    init_checkpoint: str = ""  # start from these weights when there is no last.pt to resume
    # Also keep the weights of every k-th epoch as epoch_<k>.pt (0 = none): a comparison at equal
    # epochs with a slower model picks the snapshot of the epoch that model reached.
    snapshot_every: int = 0
    # Verifies the distributed path: every rank writes its final state dict and its last epoch's
    # training losses to <output_dir>/rank<k>.pt (test/integration/test_distributed_training.py).
    save_rank_states: bool = False


class TrainingTask(Protocol):
    """What a model contributes to training."""

    name: str  # registry name of the model

    def build(self) -> torch.nn.Module: ...

    def model_config(self) -> dict[str, Any]: ...

    def data_description(self) -> dict[str, Any]: ...

    def train_batch(self, rng: np.random.Generator, device: torch.device) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    def validate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Metrics on held-out data; must include 'val_loss' (lower is better)."""
        ...


class Distributed:
    """torchrun-style DDP when WORLD_SIZE > 1, a no-op otherwise."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        if self.enabled and torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return resolve_device(requested).device

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def average_buffers(self, model: torch.nn.Module) -> None:
        """Average the floating buffers (BatchNorm running statistics) over the ranks.

        DDP keeps the parameters in step but each rank's last forward pass updates its buffers
        from its own batch; averaging them makes validation and checkpoints use every rank's
        statistics and leaves the replicas identical.
        """
        if not self.enabled:
            return
        for buffer in model.buffers():
            if torch.is_floating_point(buffer):
                torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
                buffer.div_(self.world_size)

    def agree(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's `flag` on every rank (e.g. "the time budget is not spent yet"): ranks that
        decided alone could part ways, one waiting for ever in a collective the other left."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())

    def close(self) -> None:
        if self.enabled:
            torch.distributed.destroy_process_group()


def append_log_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row to a CSV log, under the header the file already has: a run resumed by
    newer code may report other columns (new ones are left out, missing ones empty) instead of
    writing values under the wrong names."""
    fields = list(row)
    if path.is_file() and path.stat().st_size > 0:
        with open(path, newline="") as handle:
            fields = next(csv.reader(handle), fields)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="", extrasaction="ignore")
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow(row)


def train(task: TrainingTask, settings: TrainSettings, resume: bool = True) -> Path:
    """Run (or resume) training; returns the path of the best checkpoint."""
    dist = Distributed()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = dist.device(settings.device)
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.csv"

    torch.manual_seed(settings.seed + dist.rank)
    model = task.build().to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=settings.plateau_factor, patience=settings.plateau_patience,
        min_lr=settings.min_lr)
    epoch, best = 0, math.inf
    rng = np.random.default_rng([settings.seed, dist.rank])
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, expected_model=task.name, map_location=device)
        model.load_state_dict(state["state_dict"])
        training = state["training_state"]
        optimiser.load_state_dict(training["optimiser"])
        scheduler.load_state_dict(training["scheduler"])
        epoch, best = training["epoch"], training["best"]
        rng = np.random.default_rng([settings.seed, dist.rank, epoch])  # fresh batches on resume
        if dist.is_main:
            print(f"resuming {task.name} at epoch {epoch} (best val_loss {best:.5f})")
    elif settings.init_checkpoint:
        # Weights only (e.g. a shipped checkpoint): the optimiser starts afresh.
        model.load_state_dict(load_checkpoint(settings.init_checkpoint, expected_model=task.name,
                                              map_location=device)["state_dict"])
        if dist.is_main:
            print(f"starting {task.name} from the weights of {settings.init_checkpoint}")
    wrapped = dist.wrap(model, device)
    config = {"model": task.model_config(), "train": asdict(settings),
              "data": task.data_description()}
    started = time.monotonic()
    budget = settings.max_minutes * 60 if settings.max_minutes > 0 else math.inf
    losses: list[float] = []

    while epoch < settings.epochs and dist.agree(time.monotonic() - started < budget, device):
        wrapped.train()
        losses = []
        steps = tqdm(range(settings.steps_per_epoch), desc=f"epoch {epoch + 1}/{settings.epochs}",
                     disable=not dist.is_main, leave=False)
        for _ in steps:
            loss, _ = task.loss(wrapped, task.train_batch(rng, device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimiser.step()
            losses.append(loss.item())
            steps.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        epoch += 1
        dist.average_buffers(model)
        model.eval()
        with torch.no_grad():
            metrics = task.validate(model, device)
        scheduler.step(metrics["val_loss"])
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)),
               "lr": optimiser.param_groups[0]["lr"],
               "elapsed_min": (time.monotonic() - started) / 60, **metrics}
        if not dist.is_main:
            continue
        print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()))
        append_log_row(log_path, row)
        metadata = {"epoch": epoch, "metrics": metrics}
        if metrics["val_loss"] < best:
            best = metrics["val_loss"]
            save_checkpoint(best_path, model=task.name, state_dict=model.state_dict(),
                            config=config, metadata=metadata)
        if settings.snapshot_every > 0 and epoch % settings.snapshot_every == 0:
            save_checkpoint(out / f"epoch_{epoch:04d}.pt", model=task.name,
                            state_dict=model.state_dict(), config=config, metadata=metadata)
        save_checkpoint(last_path, model=task.name, state_dict=model.state_dict(), config=config,
                        metadata=metadata, training_state={
                            "optimiser": optimiser.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best})
    if settings.save_rank_states:
        torch.save({"rank": dist.rank, "world_size": dist.world_size, "train_losses": losses,
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
                   out / f"rank{dist.rank}.pt")
    dist.close()
    return best_path
