"""The one place that decides which torch device the models run on."""
from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE_CHOICES = ("auto", "cpu", "cuda")
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class DeviceChoice:
    """The device to use, and why it differs from the request (empty when it does not)."""

    device: "torch.device"  # noqa: F821 - torch is imported lazily: ROS-only nodes never pay for it
    fallback_reason: str = ""


def resolve_device(requested: str) -> DeviceChoice:
    """Map auto|cpu|cuda|cuda:N to a torch device; CUDA requests fall back to the CPU when absent."""
    import torch

    requested = requested.strip().lower()
    kind = requested.split(":", 1)[0]
    if kind not in DEVICE_CHOICES or not _DEVICE_NAME.fullmatch(requested):
        raise ValueError(f"device must be one of {DEVICE_CHOICES} (or cuda:N), got '{requested}'")
    if kind == "cpu":
        return DeviceChoice(torch.device("cpu"))
    if not torch.cuda.is_available():
        reason = "" if kind == "auto" else f"'{requested}' requested but CUDA is not available"
        return DeviceChoice(torch.device("cpu"), reason)
    if requested == "auto":
        return DeviceChoice(torch.device("cuda"))
    index = torch.device(requested).index or 0
    if index >= torch.cuda.device_count():
        return DeviceChoice(torch.device("cuda"),
                            f"'{requested}' requested but only {torch.cuda.device_count()} GPU(s) exist")
    return DeviceChoice(torch.device(requested))


def describe_device(device: "torch.device") -> str:  # noqa: F821
    """A short human-readable name, e.g. 'cpu (2 threads)' or 'cuda:0 (NVIDIA H100)'."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
