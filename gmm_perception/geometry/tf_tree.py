"""Time-indexed transform tree, the ROS-free core of our tf buffer.

Each child frame stores either one static ``(parent, T_parent_child)`` or a
time-sorted, duration-bounded history of them (stamps are integer
nanoseconds). ``lookup(target, source, t)`` walks both frames up to their
common ancestor and returns ``T_target_source``, which maps points expressed
in ``source`` into ``target`` (tf2's ``lookupTransform`` semantics).

Re-parenting: the parent of a dynamic frame at time ``t`` is the parent of its
sample at or before ``t`` (of the oldest sample if ``t`` is earlier). Between
two samples with different parents nothing is interpolated; the earlier sample
holds until the new parent's first stamp, as in tf2. A sample whose stamp
equals an existing one replaces it, so the latest received parent wins for a
stamp. A static sample for a frame replaces its dynamic history and vice
versa: the most recent kind of publication wins.

Not thread-safe; the ROS wrapper serialises access with a lock.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gmm_perception.geometry.transforms import compose, interpolate_transform, invert_transform

NANOSECONDS_PER_SECOND = 1_000_000_000
DEFAULT_CACHE_DURATION_NS = 10 * NANOSECONDS_PER_SECOND
# Sensors stamped a few ms after the newest tf sample are routine (clock jitter
# between publishers); holding the boundary sample for that long beats failing.
DEFAULT_EXTRAPOLATION_TOLERANCE_NS = 10_000_000
LATEST_TIME = 0  # Like tf2's Time(0): the latest time all links on the path share.


class TransformError(LookupError):
    """Base class for every failed transform lookup."""


class UnknownFrameError(TransformError):
    """A requested frame has never been seen."""


class ConnectivityError(TransformError):
    """The frames exist but belong to trees that are not connected."""


class ExtrapolationError(TransformError):
    """A link on the path has no data at the requested time."""


def _format_stamp(stamp_ns: int) -> str:
    return f"{stamp_ns / NANOSECONDS_PER_SECOND:.9f} s"


@dataclass
class _History:
    """Samples of one dynamic child frame, sorted by stamp."""

    stamps: list[int] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    transforms: list[NDArray[np.float64]] = field(default_factory=list)

    def insert(self, stamp_ns: int, parent: str, T: NDArray[np.float64]) -> None:
        index = bisect.bisect_left(self.stamps, stamp_ns)
        if index < len(self.stamps) and self.stamps[index] == stamp_ns:
            self.parents[index] = parent
            self.transforms[index] = T
            return
        self.stamps.insert(index, stamp_ns)
        self.parents.insert(index, parent)
        self.transforms.insert(index, T)

    def prune_before(self, oldest_kept_ns: int) -> None:
        count = bisect.bisect_left(self.stamps, oldest_kept_ns)
        del self.stamps[:count], self.parents[:count], self.transforms[:count]

    def sample_index_at(self, stamp_ns: int) -> int:
        """Index of the sample at or before ``stamp_ns``, clamped to the stored range."""
        return max(bisect.bisect_right(self.stamps, stamp_ns) - 1, 0)


class TransformCache:
    """Transform tree with bounded, interpolated history per child frame."""

    def __init__(
        self,
        cache_duration_ns: int = DEFAULT_CACHE_DURATION_NS,
        extrapolation_tolerance_ns: int = DEFAULT_EXTRAPOLATION_TOLERANCE_NS,
    ) -> None:
        if cache_duration_ns <= 0:
            raise ValueError(f"cache_duration_ns must be positive, got {cache_duration_ns}")
        if extrapolation_tolerance_ns < 0:
            raise ValueError(
                f"extrapolation_tolerance_ns must be >= 0, got {extrapolation_tolerance_ns}"
            )
        self._cache_duration_ns = int(cache_duration_ns)
        self._tolerance_ns = int(extrapolation_tolerance_ns)
        self._dynamic: dict[str, _History] = {}
        self._static: dict[str, tuple[str, NDArray[np.float64]]] = {}
        # Like tf2, a frame once seen stays known even after its samples are
        # pruned or it is re-parented; later failures are then connectivity or
        # extrapolation errors, which say more than "unknown frame".
        self._frames: set[str] = set()

    def set_transform(
        self, parent: str, child: str, T_parent_child: ArrayLike, stamp_ns: int
    ) -> bool:
        """Store a dynamic sample; False if it was dropped as older than the cache window."""
        T = self._validated(parent, child, T_parent_child)
        stamp_ns = int(stamp_ns)
        history = self._dynamic.get(child)
        newest_ns = stamp_ns if history is None else max(history.stamps[-1], stamp_ns)
        oldest_kept_ns = newest_ns - self._cache_duration_ns
        if stamp_ns < oldest_kept_ns:
            return False
        self._frames.update((parent, child))
        self._static.pop(child, None)
        history = self._dynamic.setdefault(child, _History())
        history.insert(stamp_ns, parent, T)
        history.prune_before(oldest_kept_ns)
        return True

    def set_static_transform(self, parent: str, child: str, T_parent_child: ArrayLike) -> None:
        """Store a time-independent transform, replacing anything known about ``child``."""
        T = self._validated(parent, child, T_parent_child)
        self._frames.update((parent, child))
        self._dynamic.pop(child, None)
        self._static[child] = (parent, T)

    @property
    def frames(self) -> list[str]:
        """Every frame ever seen as a parent or a child, sorted."""
        return sorted(self._frames)

    def lookup(
        self, target_frame: str, source_frame: str, time_ns: int = LATEST_TIME
    ) -> NDArray[np.float64]:
        """``T_target_source`` at ``time_ns`` (0 = latest time shared by every link on the path)."""
        for frame in (target_frame, source_frame):
            if frame not in self._frames:
                known = ", ".join(self.frames) or "(none)"
                raise UnknownFrameError(f"frame '{frame}' does not exist; known frames: {known}")
        if target_frame == source_frame:
            return np.eye(4)
        if time_ns == LATEST_TIME:
            # Resolve against the newest topology first, then walk again at the
            # resolved time in case a frame was re-parented in between.
            source_links, target_links = self._paths(target_frame, source_frame, None)
            time_ns = self._latest_common_time(source_links + target_links)
        source_links, target_links = self._paths(target_frame, source_frame, time_ns)
        # Links are listed from the leaf upward; T_ancestor_leaf composes them top-down.
        T_ancestor_source = compose(
            *(self._link_at(child, time_ns) for child in reversed(source_links))
        )
        T_ancestor_target = compose(
            *(self._link_at(child, time_ns) for child in reversed(target_links))
        )
        return invert_transform(T_ancestor_target) @ T_ancestor_source

    def can_transform(
        self, target_frame: str, source_frame: str, time_ns: int = LATEST_TIME
    ) -> bool:
        """Whether ``lookup`` with the same arguments would succeed."""
        try:
            self.lookup(target_frame, source_frame, time_ns)
        except TransformError:
            return False
        return True

    @staticmethod
    def _validated(parent: str, child: str, T_parent_child: ArrayLike) -> NDArray[np.float64]:
        if not parent or not child:
            raise ValueError(f"frame ids must be non-empty, got parent={parent!r} child={child!r}")
        if parent == child:
            raise ValueError(f"frame '{child}' cannot be its own parent")
        T = np.array(T_parent_child, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"transform must have shape (4, 4), got {T.shape}")
        if not np.all(np.isfinite(T)):
            raise ValueError(f"transform {parent} -> {child} contains non-finite values")
        return T

    def _parent_of(self, child: str, time_ns: int | None) -> str | None:
        """Parent at ``time_ns`` (None = newest sample); None for a root frame."""
        if child in self._static:
            return self._static[child][0]
        history = self._dynamic.get(child)
        if history is None:
            return None
        index = -1 if time_ns is None else history.sample_index_at(time_ns)
        return history.parents[index]

    def _chain_to_root(self, frame: str, time_ns: int | None) -> list[str]:
        """Frames from ``frame`` up to its root, inclusive."""
        chain = [frame]
        visited = {frame}
        parent = self._parent_of(frame, time_ns)
        while parent is not None:
            if parent in visited:
                raise TransformError(f"frames form a loop: {' -> '.join([*chain, parent])}")
            chain.append(parent)
            visited.add(parent)
            parent = self._parent_of(parent, time_ns)
        return chain

    def _paths(
        self, target_frame: str, source_frame: str, time_ns: int | None
    ) -> tuple[list[str], list[str]]:
        """Child frames whose links lead from source and from target up to their common ancestor."""
        source_chain = self._chain_to_root(source_frame, time_ns)
        target_chain = self._chain_to_root(target_frame, time_ns)
        target_depth = {frame: depth for depth, frame in enumerate(target_chain)}
        for source_depth, frame in enumerate(source_chain):
            if frame in target_depth:
                # Links are named by their child; the ancestor's own link is excluded.
                return source_chain[:source_depth], target_chain[: target_depth[frame]]
        raise ConnectivityError(
            f"cannot transform '{source_frame}' into '{target_frame}': they are in "
            f"disconnected trees rooted at '{source_chain[-1]}' and '{target_chain[-1]}'"
        )

    def _latest_common_time(self, children: list[str]) -> int:
        """Newest stamp every dynamic link has reached; LATEST_TIME if all are static."""
        newest = [self._dynamic[child].stamps[-1] for child in children if child in self._dynamic]
        return min(newest, default=LATEST_TIME)

    def _link_at(self, child: str, time_ns: int) -> NDArray[np.float64]:
        """``T_parent_child`` at ``time_ns``, interpolated between bracketing samples."""
        if child in self._static:
            return self._static[child][1]
        history = self._dynamic[child]
        oldest, newest = history.stamps[0], history.stamps[-1]
        index = history.sample_index_at(time_ns)
        if not oldest - self._tolerance_ns <= time_ns <= newest + self._tolerance_ns:
            direction = "past" if time_ns < oldest else "future"
            raise ExtrapolationError(
                f"transform '{history.parents[index]}' -> '{child}' would need extrapolation "
                f"into the {direction}: requested time {_format_stamp(time_ns)}, available "
                f"[{_format_stamp(oldest)}, {_format_stamp(newest)}]"
            )
        if time_ns <= oldest or index == len(history.stamps) - 1:
            return history.transforms[index]
        if history.parents[index] != history.parents[index + 1]:
            return history.transforms[index]
        start, end = history.stamps[index], history.stamps[index + 1]
        return interpolate_transform(
            history.transforms[index],
            history.transforms[index + 1],
            (time_ns - start) / (end - start),
        )
