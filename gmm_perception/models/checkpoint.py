"""The one place that saves and loads model checkpoints.

A checkpoint is a plain dict that `torch.load(weights_only=True)` accepts: tensors, numbers,
strings, lists and dicts only, so loading one never runs code from the file.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import subprocess
from pathlib import Path
from typing import Any, Mapping

CHECKPOINT_FORMAT = 1
_REQUIRED_KEYS = ("format", "model", "config", "state_dict", "metadata")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match what the caller expects."""


def code_version() -> str:
    """The git commit of the code that produced a checkpoint ('unknown' outside a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_checkpoint(path: str | Path, *, model: str, state_dict: Mapping[str, Any],
                    config: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
                    training_state: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) and return its path.

    `training_state` (optimiser, scheduler, counters) makes a run resumable; shipped
    checkpoints leave it out to stay small.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "metadata": {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "code_version": code_version(), **dict(metadata or {})},
    }
    if training_state is not None:
        payload["training_state"] = dict(training_state)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, *, expected_model: str | tuple[str, ...] | None = None,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; every failure is a CheckpointError that names the file.
    `expected_model`: the model name (or names) the file must hold; None accepts any."""
    import torch

    path = Path(path).expanduser()
    if not str(path).strip():
        raise CheckpointError("the checkpoint path is unset")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for damaged files
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a torch file: {exc}") from exc
    if not isinstance(payload, dict) or any(key not in payload for key in _REQUIRED_KEYS):
        raise CheckpointError(f"checkpoint '{path}' lacks the keys {list(_REQUIRED_KEYS)}")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{path}' has format {payload['format']}, "
                              f"this code reads format {CHECKPOINT_FORMAT}")
    expected = (expected_model,) if isinstance(expected_model, str) else expected_model
    if expected is not None and payload["model"] not in expected:
        raise CheckpointError(f"checkpoint '{path}' holds model '{payload['model']}', "
                              f"expected {' or '.join(repr(name) for name in expected)}")
    return payload


def file_digest(path: str | Path) -> str:
    """Short SHA-256 of a file, for model cards and diagnostics."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
