"""A bounded hand-over from subscription callbacks to one worker: the newest frames win."""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """At most `capacity` pending items; putting into a full queue drops the oldest one.

    Callbacks must never block and memory must stay bounded under any input rate, so a
    perception node keeps only the newest frames and counts the ones it displaced.

    With `key` (e.g. the object a cloud holds), a new item replaces a pending item of the same
    key in its place in the line: a node that falls behind works on each object's newest cloud,
    every object in turn, instead of on a backlog of one object's old clouds. Items whose key
    is None are never replaced.
    """

    def __init__(self, capacity: int = 1, key: Callable[[T], Hashable] | None = None):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items: deque[tuple[Hashable, T]] = deque()  # (key or None, item)
        self._capacity = capacity
        self._key = key
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: T) -> T | None:
        """Enqueue `item`; return the item it displaced (None when nothing was dropped)."""
        key = self._key(item) if self._key is not None else None
        with self._ready:
            if key is not None:
                for index, (pending_key, pending) in enumerate(self._items):
                    if pending_key == key:
                        self._items[index] = (key, item)
                        self._ready.notify()
                        return pending
            dropped = self._items.popleft()[1] if len(self._items) >= self._capacity else None
            self._items.append((key, item))
            self._ready.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest pending item, waiting up to `timeout` s; None on timeout or when closed."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self._closed, timeout):
                return None
            return self._items.popleft()[1] if self._items else None

    def clear(self) -> int:
        """Discard pending items; return how many."""
        with self._ready:
            count = len(self._items)
            self._items.clear()
            return count

    def close(self) -> None:
        """Wake any waiting consumer; later gets return immediately."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def reopen(self) -> None:
        with self._ready:
            self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)
