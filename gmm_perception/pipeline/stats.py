"""Counters, rates and latency percentiles of a processing stage (thread-safe, bounded memory)."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StatsSnapshot:
    """Totals since start, rates over the last reporting window, latency percentiles in ms."""

    received: int
    processed: int
    dropped: int
    rejected: int
    failed: int
    input_rate_hz: float
    processed_rate_hz: float
    window_rejected: int
    window_failed: int
    window_dropped: int
    latency_p50_ms: float
    latency_p95_ms: float
    processing_p50_ms: float
    processing_p95_ms: float


class StageStats:
    """What a node's diagnostics and the evaluator report about one stage."""

    def __init__(self, latency_window: int = 512):
        self._lock = threading.Lock()
        self._totals = dict(received=0, processed=0, dropped=0, rejected=0, failed=0)
        self._window_start = dict(self._totals)
        self._window_time = time.monotonic()
        self._latency_ms: deque[float] = deque(maxlen=latency_window)
        self._processing_ms: deque[float] = deque(maxlen=latency_window)

    def count(self, event: str, n: int = 1) -> None:
        """Count `n` events of one kind: received, processed, dropped, rejected or failed."""
        with self._lock:
            self._totals[event] += n

    def record_processed(self, processing_ms: float, latency_ms: float | None) -> None:
        """A frame went through: wall time spent on it, and stamp-to-publish latency if known."""
        with self._lock:
            self._totals["processed"] += 1
            self._processing_ms.append(processing_ms)
            if latency_ms is not None:
                self._latency_ms.append(latency_ms)

    def snapshot(self, reset_window: bool = True) -> StatsSnapshot:
        """Totals, window rates (since the previous reset) and percentiles."""
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._window_time, 1e-9)
            delta = {k: v - self._window_start[k] for k, v in self._totals.items()}
            latency = np.array(self._latency_ms) if self._latency_ms else None
            processing = np.array(self._processing_ms) if self._processing_ms else None
            if reset_window:
                self._window_start = dict(self._totals)
                self._window_time = now
            totals = dict(self._totals)

        def percentile(values, q):
            return float(np.percentile(values, q)) if values is not None else float("nan")

        return StatsSnapshot(
            **totals,
            input_rate_hz=delta["received"] / elapsed,
            processed_rate_hz=delta["processed"] / elapsed,
            window_rejected=delta["rejected"],
            window_failed=delta["failed"],
            window_dropped=delta["dropped"],
            latency_p50_ms=percentile(latency, 50), latency_p95_ms=percentile(latency, 95),
            processing_p50_ms=percentile(processing, 50),
            processing_p95_ms=percentile(processing, 95),
        )
