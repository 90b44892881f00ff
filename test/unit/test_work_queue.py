"""DropOldestQueue: capacity bound with the displaced item returned, FIFO order, timeouts,
close/reopen waking a blocked consumer, clear, and conservation of items under a fast producer."""

import threading
import time

import pytest

from gmm_perception.pipeline.work_queue import DropOldestQueue

JOIN_S = 5.0  # generous bound for a thread that should finish at once; only hit on failure


def run_in_thread(fn):
    """Start `fn` on a daemon thread; return (thread, result list filled when it returns)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_rejected(capacity):
    with pytest.raises(ValueError, match="capacity"):
        DropOldestQueue(capacity)


def test_put_into_full_queue_returns_the_displaced_oldest_item():
    queue = DropOldestQueue(capacity=3)
    assert [queue.put(i) for i in range(5)] == [None, None, None, 0, 1]
    assert len(queue) == 3


def test_items_come_out_in_fifo_order():
    queue = DropOldestQueue(capacity=4)
    for item in "abcd":
        queue.put(item)
    assert [queue.get(timeout=0) for _ in range(4)] == list("abcd")
    assert len(queue) == 0


def test_capacity_one_keeps_only_the_newest():
    queue = DropOldestQueue()
    assert queue.put("old") is None
    assert queue.put("new") == "old"
    assert queue.get(timeout=0) == "new"


def test_get_on_empty_queue_times_out_with_none():
    queue = DropOldestQueue(capacity=2)
    assert queue.get(timeout=0.02) is None
    assert queue.get(timeout=0) is None


def test_close_wakes_a_blocked_consumer_with_none():
    queue = DropOldestQueue(capacity=2)
    thread, result = run_in_thread(queue.get)  # no timeout: blocks until closed
    thread.join(0.05)
    assert thread.is_alive(), "get() returned before anything was put or closed"
    queue.close()
    thread.join(JOIN_S)
    assert not thread.is_alive()
    assert result == [None]


def test_closed_queue_still_hands_out_pending_items_then_none():
    queue = DropOldestQueue(capacity=2)
    queue.put(1)
    queue.close()
    thread, result = run_in_thread(lambda: [queue.get(), queue.get()])
    thread.join(JOIN_S)
    assert not thread.is_alive(), "get() on a closed, empty queue blocked"
    assert result == [[1, None]]


def test_reopen_makes_get_wait_again():
    queue = DropOldestQueue(capacity=2)
    queue.close()
    queue.reopen()
    thread, result = run_in_thread(queue.get)
    thread.join(0.05)
    assert thread.is_alive(), "get() on a reopened, empty queue returned instead of waiting"
    queue.put("x")
    thread.join(JOIN_S)
    assert result == ["x"]


def test_clear_discards_pending_items_and_counts_them():
    queue = DropOldestQueue(capacity=5)
    for i in range(3):
        queue.put(i)
    assert queue.clear() == 3
    assert len(queue) == 0
    assert queue.clear() == 0
    assert queue.get(timeout=0) is None


def test_fast_producer_slow_consumer_loses_only_displaced_items():
    produced = 10_000
    queue = DropOldestQueue(capacity=4)
    dropped, consumed = [], []

    def producer():
        for i in range(produced):
            displaced = queue.put(i)
            if displaced is not None:
                dropped.append(displaced)
        queue.close()  # the consumer drains what is left, then gets None

    def consumer():
        while (item := queue.get()) is not None:
            consumed.append(item)
            time.sleep(0.0005)  # slower than the producer

    threads = [threading.Thread(target=producer, daemon=True),
               threading.Thread(target=consumer, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()

    assert all(a < b for a, b in zip(consumed, consumed[1:])), "consumer saw items out of order"
    assert consumed[-1] == produced - 1, "the newest item must never be lost"
    assert len(dropped) > 0, "the consumer was not slow enough to exercise dropping"
    assert len(dropped) + len(consumed) + len(queue) == produced
    assert sorted(dropped + consumed) == list(range(produced))


def test_a_keyed_queue_keeps_each_objects_newest_item_in_its_place():
    queue = DropOldestQueue(4, key=lambda item: item[0])
    assert queue.put(("a", 1)) is None and queue.put(("b", 1)) is None
    assert queue.put(("a", 2)) == ("a", 1)  # replaced in place: "a" keeps its turn
    assert queue.put((None, 1)) is None and queue.put((None, 2)) is None  # never replaced
    assert len(queue) == 4
    assert queue.put(("c", 1)) == ("a", 2)  # full: the oldest goes, as without a key
    assert [queue.get(0) for _ in range(4)] == [("b", 1), (None, 1), (None, 2), ("c", 1)]
    assert queue.get(0) is None
