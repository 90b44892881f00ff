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
wins.

A global fit whose agreement (fitness, and with a viewpoint its coverage: register.py) is below
`track_fitness` (an object seen from too little of it yet, a wrong model that contains a
partial view, a segmentation fragment, an object not in the library) also starts a track, a
poor one: it is tracked while its fitness stays within POOR_TRACK_MARGIN of the fitness it
started with, and registered globally again after `track_retry` seconds or as soon as its cloud
has grown by POOR_TRACK_GROWTH (the segmentation accumulates it: new evidence), not every frame.
Global registration of every poor object in every frame was most of the registration node's time
on the demo (74 of its 109 global registrations went to fragments that no library model fits).

Where global registration runs (`global_registration`): "inline", in the frame that needs it
(the answer waits for it); or "background": a job per object on an executor, the frame answered
at once from the track (an object without one waits: no answer until its first pose), the job's
result adopted at the object's next frame, so tracked objects never wait behind another
object's hundreds of milliseconds. Without an executor a background job runs at once but is
still adopted at the next frame, as one finished within a frame period would be: the offline
evaluator's replay of the node.

Poses are tracked in the frame the clouds arrive in: objects from the segmentation node are in
the fixed frame already; with a moving sensor, a node's `target_frame` should name a fixed frame.
The prediction is the last pose (objects at rest); ICP's coarse pass (4 x icp_max_distance) takes
up what an object moves between two frames.
"""
from __future__ import annotations

import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import Hashable

import numpy as np

from gmm_perception.pipeline.object_memory import MAX_OBJECTS, remember, still_current
from gmm_perception.pipeline.register import DeepGmrRegistrar, Registration

MAX_TRACKS = MAX_OBJECTS  # tracks kept at most (object_memory)
# A poor track is lost when its tracked fitness falls this far below its last global fit...
POOR_TRACK_MARGIN = 0.1
# ...and is registered again early once its cloud holds this factor more points.
POOR_TRACK_GROWTH = 1.25
# Background jobs in flight at most (one per object); more objects wait for their next frame.
MAX_PENDING = 8


@dataclass
class Track:
    reference_name: str
    transform: np.ndarray  # source frame -> reference, the last accepted pose
    frame_id: str
    started: float  # stamp (s) of the global registration that started the track
    checked: float  # stamp (s) of the last global registration
    seen: float  # stamp (s) of the last frame of the object
    fitness: float = 1.0  # of the last global registration
    agreement: float = 1.0  # of the last global registration: below track_fitness, a poor track
    points: int = 0  # source points at the last global registration
    fresh: bool = False  # set by a background job: its first answer reports "registered"


@dataclass
class _Job:
    """A global registration in the background, and what it is compared with when adopted."""

    future: Future  # without an executor: already done (the offline evaluator's replay)
    tracked: Registration | None  # the track's own fit of the same cloud (None: no/lost track)
    points: int
    frame_id: str
    stamp: float


class PoseTracker:
    """Registers objects by key through `registrar`, tracking the ones it registered well."""

    def __init__(self, registrar: DeepGmrRegistrar, tracks: dict | None = None,
                 executor: Executor | None = None):
        self.registrar = registrar
        self.tracks: dict[Hashable, Track] = {} if tracks is None else tracks
        self.executor = executor  # background jobs (None: run at once, adopted next frame)
        self.jobs: dict[Hashable, _Job] = {}
        self.tracked_frames = 0  # frames answered by tracking
        self.registered_frames = 0  # frames that ran global registration
        self.waiting_frames = 0  # frames of objects without a pose yet (background mode)

    def with_registrar(self, registrar: DeepGmrRegistrar) -> "PoseTracker":
        """The same tracks, jobs and counts around a new registrar (a changed configuration)."""
        tracker = PoseTracker(registrar, self.tracks, self.executor)
        tracker.jobs = self.jobs
        tracker.tracked_frames, tracker.registered_frames, tracker.waiting_frames = (
            self.tracked_frames, self.registered_frames, self.waiting_frames)
        return tracker

    def forget(self) -> None:
        """Drop every track and pending job (the references changed)."""
        self.tracks.clear()
        self.jobs.clear()

    def register(self, source: np.ndarray, key: Hashable = None, stamp: float | None = None,
                 frame_id: str = "", viewpoint: np.ndarray | None = None
                 ) -> Registration | None:
        """The pose of object `key` seen as `source` at `stamp` (seconds; None: now) in
        `frame_id`, tracked when its track allows, else registered globally (in the
        background: None while the object has no pose yet). `viewpoint`: the sensor's
        position in `frame_id`, for the model choice of a global registration (and the
        comparison of a re-check)."""
        config = self.registrar.config
        now = time.monotonic() if stamp is None else float(stamp)
        if not config.tracking:
            self.tracks.clear()
            return self._global(source, viewpoint)
        background = config.global_registration == "background"
        if background:
            self._adopt(key)
        track = self.tracks.get(key)
        if track is not None and not (
                track.frame_id == frame_id and still_current(track.seen, now, config.track_timeout)
                and any(ref.name == track.reference_name for ref in self.registrar.references)):
            track = self.tracks.pop(key)  # unseen too long, time went back, or other frame
            track = None
        result = None
        if track is not None:
            good = track.agreement >= config.track_fitness
            period = config.track_recheck if good else config.track_retry
            recheck = now - track.checked >= period or (
                not good and len(source) >= POOR_TRACK_GROWTH * track.points)
            # The coverage (hidden-point removal) only where it is compared: on a re-check.
            result = self.registrar.refine(source, track.reference_name, track.transform,
                                           config.track_points, viewpoint if recheck else None)
            floor = config.track_fitness if good else track.fitness - POOR_TRACK_MARGIN
            if result.fitness < floor:
                result = None  # lost: moved too far or another object under this id
            elif not recheck or background:
                if recheck:
                    self._submit(key, source, viewpoint, result, frame_id, now)
                return self._tracked(key, track, result, now)
        if background:
            self._submit(key, source, viewpoint, result, frame_id, now)
            self.waiting_frames += 1
            return None
        return self._settle(key, track, result, self._global(source, viewpoint), len(source),
                            frame_id, now)

    def _tracked(self, key: Hashable, track: Track, result: Registration,
                 now: float) -> Registration:
        self.tracked_frames += 1
        mode = "registered" if track.fresh else "tracked"
        track.fresh = False
        self._keep(key, track, result, now)
        return replace(result, mode=mode, track_age=now - track.started)

    def _settle(self, key: Hashable, track: Track | None, result: Registration | None,
                registered: Registration, points: int, frame_id: str, now: float
                ) -> Registration:
        """The global result against the track's own fit of the same cloud: the better one
        carries the track on (or starts it)."""
        if result is not None and result.rank >= registered.rank:
            # A re-check that did not beat the track: keep tracking, checked now.
            _checked(track, result, registered, points, now)
            self._keep(key, track, result, now)
            return replace(result, mode="tracked", track_age=now - track.started,
                           seconds=result.seconds + registered.seconds)
        started = track.started if (track is not None and result is not None) else now
        self._keep(key, Track(registered.reference_name, registered.transform, frame_id,
                              started, now, now, registered.fitness, registered.agreement,
                              points), registered, now)
        return replace(registered, track_age=now - started)

    def _submit(self, key: Hashable, source: np.ndarray, viewpoint: np.ndarray | None,
                tracked: Registration | None, frame_id: str, now: float) -> None:
        """A background global registration of this cloud, unless one runs for the object or
        MAX_PENDING do."""
        if key in self.jobs or len(self.jobs) >= MAX_PENDING:
            return
        self.registered_frames += 1
        source = np.array(source, copy=True)  # the caller's buffer may be reused
        if self.executor is None:
            future = Future()
            future.set_result(self.registrar.register(source, viewpoint))
        else:
            future = self.executor.submit(self.registrar.register, source, viewpoint)
        self.jobs[key] = _Job(future, tracked, len(source), frame_id, now)

    def _adopt(self, key: Hashable) -> None:
        """A finished background job of `key`: settled against the track as inline."""
        job = self.jobs.get(key)
        if job is None or not job.future.done():
            return
        del self.jobs[key]
        try:
            registered = job.future.result()
        except Exception:  # noqa: BLE001 - a failed job: the next due frame submits again
            return
        track = self.tracks.get(key)
        if track is not None and track.frame_id != job.frame_id:
            return  # the object moved to another frame meanwhile: the job is stale
        tracked = job.tracked if track is not None else None
        if tracked is not None and tracked.rank >= registered.rank:
            # The track held: it goes on from its current pose, checked at the job's stamp.
            _checked(track, tracked, registered, job.points, job.stamp)
            return
        self._settle(key, track, None, registered, job.points, job.frame_id, job.stamp)
        if tracked is not None:  # a re-check that found better: the track's age goes on
            self.tracks[key].started = track.started
        self.tracks[key].fresh = True

    def close(self) -> None:
        """Stop the background jobs (a node shutting down or reconfigured)."""
        for job in self.jobs.values():
            job.future.cancel()
        self.jobs.clear()

    def _global(self, source: np.ndarray, viewpoint: np.ndarray | None) -> Registration:
        self.registered_frames += 1
        return self.registrar.register(source, viewpoint)

    def _keep(self, key: Hashable, track: Track, result: Registration, now: float) -> None:
        track.reference_name, track.transform, track.seen = (result.reference_name,
                                                             result.transform, now)
        remember(self.tracks, key, track)


def _checked(track: Track, tracked: Registration, registered: Registration, points: int,
             now: float) -> None:
    """A re-check the track survived: its quality is the better of the two fits."""
    track.checked, track.points = now, points
    track.fitness = max(tracked.fitness, registered.fitness)
    track.agreement = max(tracked.agreement, registered.agreement)
