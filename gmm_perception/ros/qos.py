"""QoS profiles from parameter values."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY_CHOICES = ("best_effort", "reliable")


def make_qos(reliability: str, depth: int, transient_local: bool = False) -> QoSProfile:
    """Keep-last QoS; `reliability` is 'best_effort' (sensor data) or 'reliable'."""
    if reliability not in RELIABILITY_CHOICES:
        raise ValueError(f"reliability must be one of {RELIABILITY_CHOICES}, got '{reliability}'")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if transient_local
                    else DurabilityPolicy.VOLATILE),
    )
