"""Register once, then track: per object, global registration only when it is needed.

Global registration (DeepGMR, hypotheses, ICP, maybe the classical fallback) costs tens to hundreds
of milliseconds per object; an object that was registered well a frame ago is almost where it was.
`PoseTracker` keeps, per object key (the segmentation's id), the last pose and the reference it
matched. The next frame of that object starts ICP from that pose on `track_points` points; the
result is kept when its fitness stays at or above `track_fitness` ("tracked"). Global registration
runs ("registered") when the object is new, its frame changed, it went unseen for
`track_timeout`, the stamps went backwards (a bag replayed from its start), the tracked fit
dropped (the object moved too far or was swapped for another), or `track_recheck` seconds passed
since its last global registration; on a re-check the better of the tracked and the global fit
wins. Only a registration with fitness >= `track_fitness` starts or keeps a track.

Poses are tracked in the frame the clouds arrive in: objects from the segmentation node are in
the fixed frame already; with a moving sensor, a node's `target_frame` should name a fixed frame.
The prediction is the last pose (objects at rest); ICP's coarse pass (4 x icp_max_distance) takes
up what an object moves between two frames.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Hashable

import numpy as np

from gmm_perception.pipeline.object_memory import MAX_OBJECTS, remember, still_current
from gmm_perception.pipeline.register import DeepGmrRegistrar, Registration

MAX_TRACKS = MAX_OBJECTS  # tracks kept at most (object_memory)


@dataclass
class Track:
    reference_name: str
    transform: np.ndarray  # source frame -> reference, the last accepted pose
    frame_id: str
    started: float  # stamp (s) of the global registration that started the track
    checked: float  # stamp (s) of the last global registration
    seen: float  # stamp (s) of the last frame of the object


class PoseTracker:
    """Registers objects by key through `registrar`, tracking the ones it registered well."""

    def __init__(self, registrar: DeepGmrRegistrar, tracks: dict | None = None):
        self.registrar = registrar
        self.tracks: dict[Hashable, Track] = {} if tracks is None else tracks
        self.tracked_frames = 0  # frames answered by tracking
        self.registered_frames = 0  # frames that ran global registration

    def with_registrar(self, registrar: DeepGmrRegistrar) -> "PoseTracker":
        """The same tracks and counts around a new registrar (a changed configuration)."""
        tracker = PoseTracker(registrar, self.tracks)
        tracker.tracked_frames, tracker.registered_frames = (self.tracked_frames,
                                                             self.registered_frames)
        return tracker

    def forget(self) -> None:
        """Drop every track (the references changed)."""
        self.tracks.clear()

    def register(self, source: np.ndarray, key: Hashable = None, stamp: float | None = None,
                 frame_id: str = "", viewpoint: np.ndarray | None = None) -> Registration:
        """The pose of object `key` seen as `source` at `stamp` (seconds; None: now) in
        `frame_id`, tracked when its track allows, else registered globally. `viewpoint`: the
        sensor's position in `frame_id`, for the model choice of a global registration (and
        the comparison of a re-check)."""
        config = self.registrar.config
        now = time.monotonic() if stamp is None else float(stamp)
        if not config.tracking:
            self.tracks.clear()
            return self._global(source, viewpoint)
        track = self.tracks.get(key)
        if track is not None and not (
                track.frame_id == frame_id and still_current(track.seen, now, config.track_timeout)
                and any(ref.name == track.reference_name for ref in self.registrar.references)):
            track = self.tracks.pop(key)  # unseen too long, time went back, or other frame
            track = None
        result = None
        if track is not None:
            recheck = now - track.checked >= config.track_recheck
            # The coverage (hidden-point removal) only where it is compared: on a re-check.
            result = self.registrar.refine(source, track.reference_name, track.transform,
                                           config.track_points, viewpoint if recheck else None)
            if result.fitness < config.track_fitness:
                result = None  # lost: moved too far or another object under this id
            elif not recheck:
                self.tracked_frames += 1
                self._keep(key, track, result, now)
                return replace(result, mode="tracked", track_age=now - track.started)
        registered = self._global(source, viewpoint)
        if result is not None and result.rank >= registered.rank:
            # A re-check that did not beat the track: keep tracking, checked now.
            track.checked = now
            self._keep(key, track, result, now)
            return replace(result, mode="tracked", track_age=now - track.started,
                           seconds=result.seconds + registered.seconds)
        if registered.fitness >= config.track_fitness:
            started = track.started if (track is not None and result is not None) else now
            self._keep(key, Track(registered.reference_name, registered.transform, frame_id,
                                  started, now, now), registered, now)
            return replace(registered, track_age=now - started)
        self.tracks.pop(key, None)
        return registered

    def _global(self, source: np.ndarray, viewpoint: np.ndarray | None) -> Registration:
        self.registered_frames += 1
        return self.registrar.register(source, viewpoint)

    def _keep(self, key: Hashable, track: Track, result: Registration, now: float) -> None:
        track.reference_name, track.transform, track.seen = (result.reference_name,
                                                             result.transform, now)
        remember(self.tracks, key, track)
