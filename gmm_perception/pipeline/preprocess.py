"""The shared preprocessing stage: crop, range gate, voxel downsample, resample to a fixed count."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gmm_perception.geometry.points import EmptyCloudError, finite_points, resample, \
    voxel_downsample
from gmm_perception.geometry.transforms import transform_points
from gmm_perception.pipeline.configs import NO_LIMIT, PreprocessConfig


# (target_frame, source_frame, stamp) -> 4x4 transform from source to target; raises
# geometry.tf_tree.TransformError when it cannot.
Lookup = Callable[[str, str, Any], np.ndarray]


def cloud_in_frame(points: np.ndarray, frame_id: str, stamp: Any, target_frame: str,
                   lookup: Lookup | None) -> tuple[np.ndarray, str, np.ndarray]:
    """A received cloud's finite points in `target_frame` (empty: its own frame), that frame's
    name, and where the received frame's origin lies in it (the sensor's position, for a cloud
    in its sensor frame: what ranges are measured from). EmptyCloudError when no point is
    finite; the lookup's TransformError when the frame cannot be placed."""
    points = finite_points(points)
    if target_frame and target_frame != frame_id:
        if lookup is None:
            raise ValueError(f"no transform lookup to bring '{frame_id}' into '{target_frame}'")
        T = lookup(target_frame, frame_id, stamp)
        return transform_points(T, points), target_frame, np.asarray(T, dtype=np.float64)[:3, 3]
    return points, frame_id, np.zeros(3)


def crop(points: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Keep points inside the axis-aligned box and the range shell."""
    keep = np.ones(len(points), dtype=bool)
    if max(config.crop_min) > -NO_LIMIT or min(config.crop_max) < NO_LIMIT:
        keep &= ((points >= np.asarray(config.crop_min, dtype=np.float32))
                 & (points <= np.asarray(config.crop_max, dtype=np.float32))).all(axis=1)
    if config.min_range > 0 or config.max_range < NO_LIMIT:
        as_double = points.astype(np.float64)  # exact at the bounds, like the crop box
        squared_range = np.einsum("ij,ij->i", as_double, as_double)
        keep &= (squared_range >= config.min_range ** 2) & (squared_range <= config.max_range ** 2)
    return points if keep.all() else points[keep]


class Preprocessor:
    """Callable stage; its random generator makes resampling reproducible per stage instance."""

    def __init__(self, config: PreprocessConfig = PreprocessConfig()):
        self.config = config
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """The processed points; EmptyCloudError when no finite point survives the crop (the
        input's problem, not the stage's: nodes reject such a cloud)."""
        finite = finite_points(points)
        points = crop(finite, self.config)
        if len(points) == 0:
            raise EmptyCloudError(f"none of {len(finite)} points lies inside the crop box and "
                                  "range limits")
        if self.config.voxel_size > 0:
            points = voxel_downsample(points, self.config.voxel_size)
        if self.config.num_points > 0:
            points = resample(points, self.config.num_points, self._rng)
        return np.ascontiguousarray(points, dtype=np.float32)


class ObjectStep:
    """One object node's work: its preprocessing, then its stage. A `keyed` stage tracks objects
    over frames (registration: `PoseTracker.register`) and is also given the object's id, the
    stamp in seconds and the frame. A step with a `viewpoint_frame` (the sensor's TF frame) is
    also given the sensor's position in the cloud's frame, looked up by its caller (the node or
    the scene pipeline) with `viewpoint`."""

    def __init__(self, preprocess: Preprocessor, stage: Callable[..., Any], keyed: bool = False,
                 viewpoint_frame: str = ""):
        self.preprocess, self.stage, self.keyed = preprocess, stage, keyed
        self.viewpoint_frame = viewpoint_frame

    def __call__(self, points: np.ndarray, object_id: Any = None, stamp: Any = None,
                 frame_id: str = "", viewpoint: np.ndarray | None = None) -> Any:
        if self.keyed and self.viewpoint_frame:
            return self.stage(self.preprocess(points), object_id, stamp_seconds(stamp), frame_id,
                              viewpoint=viewpoint)
        if self.keyed:
            return self.stage(self.preprocess(points), object_id, stamp_seconds(stamp), frame_id)
        return self.stage(self.preprocess(points))

    def viewpoint(self, frame_id: str, stamp: Any, lookup: Lookup | None) -> np.ndarray | None:
        """The sensor's position in `frame_id` at `stamp` (None without a viewpoint_frame or a
        lookup); a lookup's error propagates to the caller, who decides what a miss costs."""
        if not self.viewpoint_frame or lookup is None:
            return None
        return np.asarray(lookup(frame_id, self.viewpoint_frame, stamp), dtype=np.float64)[:3, 3]


def stamp_seconds(stamp: Any) -> float | None:
    """A stamp as float seconds: integer nanoseconds (bag records), float seconds, or a ROS
    time message (sec, nanosec); None stays None."""
    if stamp is None or isinstance(stamp, float):
        return stamp
    if isinstance(stamp, (int, np.integer)):
        return int(stamp) * 1e-9
    return stamp.sec + 1e-9 * stamp.nanosec
