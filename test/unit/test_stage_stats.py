"""StageStats: totals, window deltas and their reset, rates under a controlled clock, latency
percentiles against closed forms, the bounded sample window, NaN when empty, thread safety."""

import math
import threading
import time
from types import SimpleNamespace

import pytest

from gmm_perception.pipeline import stats as stats_module
from gmm_perception.pipeline.stats import StageStats


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """Replaces the clock the stats module reads (time.monotonic) with a settable one."""
    fake = FakeClock()
    monkeypatch.setattr(stats_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def linear_percentile_of_range(lo: int, hi: int, q: float) -> float:
    """Closed form of the linear-interpolation percentile of the integers lo..hi (inclusive)."""
    return lo + (hi - lo) * q / 100.0


def test_totals_accumulate_every_kind_of_event():
    stats = StageStats()
    stats.count("received", 7)
    stats.count("received")
    stats.count("dropped", 2)
    stats.count("rejected", 3)
    stats.count("failed")
    stats.record_processed(1.0, 2.0)
    stats.record_processed(1.0, None)
    snap = stats.snapshot()
    assert (snap.received, snap.processed, snap.dropped, snap.rejected, snap.failed) == (8, 2, 2, 3, 1)


def test_window_counts_reset_but_totals_do_not():
    stats = StageStats()
    stats.count("rejected", 2)
    stats.count("failed", 3)
    stats.count("dropped", 4)
    first = stats.snapshot()
    assert (first.window_rejected, first.window_failed, first.window_dropped) == (2, 3, 4)

    stats.count("rejected")
    second = stats.snapshot()
    assert (second.window_rejected, second.window_failed, second.window_dropped) == (1, 0, 0)
    assert (second.rejected, second.failed, second.dropped) == (3, 3, 4)


def test_snapshot_without_reset_keeps_the_window_open():
    stats = StageStats()
    stats.count("failed", 2)
    assert stats.snapshot(reset_window=False).window_failed == 2
    stats.count("failed")
    assert stats.snapshot(reset_window=False).window_failed == 3
    assert stats.snapshot().window_failed == 3
    assert stats.snapshot().window_failed == 0


def test_rates_are_window_counts_over_elapsed_time(clock):
    stats = StageStats()
    stats.count("received", 50)
    for _ in range(20):
        stats.record_processed(1.0, None)
    clock.now += 10.0
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(5.0)
    assert snap.processed_rate_hz == pytest.approx(2.0)

    stats.count("received", 6)
    clock.now += 2.0
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(3.0)
    assert snap.processed_rate_hz == 0.0


def test_rate_window_without_reset_spans_from_the_last_reset(clock):
    stats = StageStats()
    stats.count("received", 10)
    clock.now += 5.0
    assert stats.snapshot(reset_window=False).input_rate_hz == pytest.approx(2.0)
    stats.count("received", 10)
    clock.now += 5.0
    assert stats.snapshot(reset_window=False).input_rate_hz == pytest.approx(2.0)


def test_rates_with_no_elapsed_time_are_finite(clock):
    stats = StageStats()
    snap = stats.snapshot()
    assert snap.input_rate_hz == 0.0
    assert math.isfinite(snap.processed_rate_hz)


def test_percentiles_match_the_linear_interpolation_closed_form():
    stats = StageStats(latency_window=1000)
    for value in range(101):  # 0..100
        stats.record_processed(processing_ms=value * 2.0, latency_ms=float(value))
    snap = stats.snapshot()
    assert snap.latency_p50_ms == pytest.approx(50.0)
    assert snap.latency_p95_ms == pytest.approx(95.0)
    assert snap.processing_p50_ms == pytest.approx(100.0)
    assert snap.processing_p95_ms == pytest.approx(190.0)


def test_percentiles_interpolate_between_samples():
    stats = StageStats()
    for value in [4.0, 1.0, 3.0, 2.0]:  # unsorted on purpose
        stats.record_processed(value, value)
    snap = stats.snapshot()
    assert snap.latency_p50_ms == pytest.approx(2.5)
    assert snap.latency_p95_ms == pytest.approx(1 + 3 * 0.95)


def test_only_the_last_latency_window_samples_count():
    stats = StageStats(latency_window=10)
    for value in range(100):
        stats.record_processed(float(value), float(value))
    snap = stats.snapshot()  # samples 90..99 remain
    assert snap.latency_p50_ms == pytest.approx(linear_percentile_of_range(90, 99, 50))
    assert snap.latency_p95_ms == pytest.approx(linear_percentile_of_range(90, 99, 95))
    assert snap.processing_p50_ms == pytest.approx(94.5)
    assert snap.processed == 100


def test_percentiles_are_nan_without_samples():
    snap = StageStats().snapshot()
    for value in (snap.latency_p50_ms, snap.latency_p95_ms,
                  snap.processing_p50_ms, snap.processing_p95_ms):
        assert math.isnan(value)


def test_missing_latency_leaves_latency_percentiles_nan():
    stats = StageStats()
    stats.record_processed(3.0, None)
    snap = stats.snapshot()
    assert math.isnan(snap.latency_p50_ms)
    assert snap.processing_p50_ms == pytest.approx(3.0)


def test_samples_survive_window_reset():
    stats = StageStats()
    stats.record_processed(7.0, 8.0)
    stats.snapshot()
    snap = stats.snapshot()
    assert snap.latency_p50_ms == pytest.approx(8.0)


class YieldingOne(int):
    """The count 1, whose addition runs Python code that releases the GIL: without the lock,
    another thread's update can land between reading and writing a total and be lost."""

    def __new__(cls):
        return super().__new__(cls, 1)

    def __radd__(self, other):
        time.sleep(0)
        return int(other) + 1


def test_concurrent_counting_is_exact():
    stats = StageStats(latency_window=16)
    threads_n, per_thread = 4, 250
    barrier = threading.Barrier(threads_n)

    def work():
        barrier.wait()
        for _ in range(per_thread):
            stats.count("received", YieldingOne())
            stats.count("dropped", 2)
            stats.record_processed(1.0, 1.0)

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = stats.snapshot()
    assert snap.received == threads_n * per_thread
    assert snap.dropped == 2 * threads_n * per_thread
    assert snap.processed == threads_n * per_thread
