"""What the per-object stages remember about each object (a pose track, a kept answer, a fused
class), bounded and kept fresh in one way.

Keys are the segmentation's object ids. Memories sit in a dict ordered least recently seen
first; `remember` re-inserts a key and drops the least recently seen beyond `capacity`, so a
stream of new ids never grows it without bound. `still_current` says whether a memory made at
stamp `seen` still applies at `now`: not after `timeout` seconds unseen, not when the stamps went
backwards (a bag replayed from its start).
"""
from __future__ import annotations

from typing import Any, Hashable

# Objects remembered at most per stage: a scene never holds this many at once.
MAX_OBJECTS = 256


def remember(memory: dict, key: Hashable, value: Any, capacity: int = MAX_OBJECTS) -> None:
    memory.pop(key, None)
    memory[key] = value
    while len(memory) > capacity:
        memory.pop(next(iter(memory)))


def still_current(seen: float, now: float, timeout: float) -> bool:
    return seen <= now <= seen + timeout
