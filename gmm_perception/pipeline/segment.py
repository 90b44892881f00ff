"""Scene segmentation: remove the supporting plane, cluster what stands on it, track the clusters.

Robots see scenes, not isolated objects: the later stages (registration, classification, shape
modelling) each want one object's points. This stage turns a scene cloud into objects:

1. the dominant plane whose normal is close to `up` (the floor or a table top) is found with
   Open3D's RANSAC (``segment_plane``) and its inliers are removed;
2. the remaining points are clustered with Open3D's DBSCAN (``cluster_dbscan``); clusters that
   are too small (noise) or too large (walls, furniture) are discarded;
3. an :class:`ObjectTracker` matches the clusters to those of earlier frames, so an object keeps
   its id while it (or the sensor) moves a little between frames.

With ``accumulate_frames > 1`` the non-ground points of the last frames are clustered together,
so a sensor moving around an object sees more of its surface over time. Ids and accumulation
only make sense when every frame is in the same fixed frame (``map``, ``odom``): the ROS node
transforms its input into ``target_frame`` for that reason.

Open3D is imported when the first :class:`Segmenter` is built, not with this module: the import
takes about 3 s, and modules that only need the result types (or the node's message helpers)
should not pay for it.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from gmm_perception.geometry.points import voxel_downsample
from gmm_perception.pipeline.configs import RANSAC_POINTS, SegmentConfig

# A plane found first but tilted too far (a wall) is set aside and the search repeated on the
# rest, so a large wall does not hide the floor. Bounded: each attempt costs a full RANSAC.
PLANE_ATTEMPTS = 3


@dataclass(frozen=True, eq=False)
class SegmentedObject:
    """One object of a frame; box and centroid are axis-aligned in the cloud frame."""

    id: int  # stable across frames while the object is tracked (see ObjectTracker)
    points: np.ndarray  # (M,3) float32
    centroid: np.ndarray  # (3,) float64, mean of the points
    box_min: np.ndarray  # (3,) float32
    box_max: np.ndarray  # (3,) float32

    @property
    def extent(self) -> np.ndarray:
        return self.box_max - self.box_min

    @property
    def box_centre(self) -> np.ndarray:
        return (self.box_min + self.box_max) / 2.0


@dataclass(frozen=True, eq=False)
class Segmentation:
    """What one call of :class:`Segmenter` found."""

    # (a, b, c, d) with a*x + b*y + c*z + d = 0, unit normal (a, b, c) on the side of `up`;
    # None when no acceptable plane was found (nothing was removed as ground).
    plane: np.ndarray | None
    ground_points: int  # input points removed as plane inliers
    objects: list[SegmentedObject] = field(default_factory=list)  # ordered by id

    @property
    def normal(self) -> np.ndarray | None:
        return None if self.plane is None else self.plane[:3]


@dataclass
class Track:
    id: int
    centroid: np.ndarray
    unseen: int = 0  # consecutive frames without a matching cluster


class ObjectTracker:
    """Stable object ids across frames by matching cluster centroids to the existing tracks.

    Each frame the clusters are assigned to tracks with the Hungarian method on centroid
    distance, gated at `track_distance` (a pair farther apart is never matched). A matched
    track takes the cluster's centroid; an unmatched cluster starts a track with the next id
    (ids only increase, from 1, and are never reused); a track unmatched for `timeout_frames`
    frames in a row is dropped, so an object that comes back after that gets a new id.

    Ids are only stable when all centroids are given in one fixed frame (map, odom): in a
    sensor frame a turning robot moves every centroid by more than the gate. The matching
    does not depend on the order of the clusters.
    """

    def __init__(self, track_distance: float, timeout_frames: int):
        self.track_distance = track_distance
        self.timeout_frames = timeout_frames
        self.tracks: list[Track] = []
        self.next_id = 1

    def reset(self) -> None:
        """Forget all tracks; ids keep increasing, so an old id never names a new object."""
        self.tracks = []

    def update(self, centroids: np.ndarray) -> list[int]:
        """The id of each centroid (rows of a (K,3) array), in the same order."""
        centroids = np.asarray(centroids, dtype=np.float64).reshape(-1, 3)
        ids: list[int | None] = [None] * len(centroids)
        matched_tracks: set[int] = set()
        if self.tracks and len(centroids):
            previous = np.stack([track.centroid for track in self.tracks])
            distance = np.linalg.norm(previous[:, None, :] - centroids[None, :, :], axis=2)
            # Out-of-gate pairs cost more than any set of in-gate pairs, so the assignment first
            # maximises the number of in-gate matches, then minimises their total distance.
            forbidden = self.track_distance * (min(distance.shape) + 1) + 1.0
            cost = np.where(distance <= self.track_distance, distance, forbidden)
            for row, column in zip(*linear_sum_assignment(cost)):
                if distance[row, column] <= self.track_distance:
                    track = self.tracks[row]
                    track.centroid, track.unseen = centroids[column].copy(), 0
                    ids[column] = track.id
                    matched_tracks.add(row)
        kept = []
        for index, track in enumerate(self.tracks):
            if index not in matched_tracks:
                track.unseen += 1
            if track.unseen < self.timeout_frames:
                kept.append(track)
        self.tracks = kept
        for column, object_id in enumerate(ids):
            if object_id is None:
                ids[column] = self.next_id
                self.tracks.append(Track(self.next_id, centroids[column].copy()))
                self.next_id += 1
        return ids


def _as_points(points) -> np.ndarray:
    """(N,3) float32 finite rows; a wrong shape is the caller's bug and raises ValueError."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    keep = np.isfinite(points).all(axis=1)
    return points if keep.all() else points[keep]


class Segmenter:
    """Callable stage: (N,3) points in a fixed frame -> :class:`Segmentation`.

    Keeps state between calls (tracks, and with accumulate_frames > 1 the recent frames), so
    use one instance per input stream, from one thread. Open3D's RANSAC takes its random
    numbers from a process-wide generator; it is seeded with ``config.seed`` before every plane
    search, which makes the result a function of the input alone (as long as no other thread
    runs Open3D random sampling at the same time).
    """

    def __init__(self, config: SegmentConfig | None = None):
        import open3d  # noqa: F401  # the ~3 s import happens here, not on the first frame

        self.config = config or SegmentConfig()
        self.tracker = ObjectTracker(self.config.track_distance, self.config.track_timeout_frames)
        self._frames: deque[np.ndarray] = deque(maxlen=self.config.accumulate_frames)

    def reconfigure(self, config: SegmentConfig) -> None:
        """Use new parameters but keep the tracks (ids) and the newest accumulated frames."""
        self.config = config
        self.tracker.track_distance = config.track_distance
        self.tracker.timeout_frames = config.track_timeout_frames
        self._frames = deque(self._frames, maxlen=config.accumulate_frames)

    def reset(self) -> None:
        """Drop the tracks and the accumulated frames (e.g. after the fixed frame jumped)."""
        self.tracker.reset()
        self._frames.clear()

    @property
    def accumulated_points(self) -> int:
        """Points held for accumulation (bounded by accumulate_frames voxelised frames)."""
        return sum(len(frame) for frame in self._frames)

    def __call__(self, points, sensor: np.ndarray | None = None) -> Segmentation:
        """Segment one frame seen from `sensor` (its position in the points' frame; None: that
        frame's origin). Empty or degenerate input gives an empty result, never an error (the
        frame still counts for the tracks' timeout); a wrong shape raises ValueError."""
        points = _as_points(points)
        plane, ground = self.find_plane(points, sensor)
        rest = points if ground is None else points[~ground]
        if self.config.accumulate_frames > 1:
            rest = self._accumulate(rest)
        clusters = self.cluster(rest, sensor)
        ids = self.tracker.update(np.array([c.mean(axis=0, dtype=np.float64) for c in clusters])
                                  if clusters else np.empty((0, 3)))
        objects = [SegmentedObject(id=int(object_id), points=cluster,
                                   centroid=cluster.mean(axis=0, dtype=np.float64),
                                   box_min=cluster.min(axis=0), box_max=cluster.max(axis=0))
                   for object_id, cluster in zip(ids, clusters)]
        objects.sort(key=lambda obj: obj.id)
        return Segmentation(plane=plane, ground_points=0 if ground is None else int(ground.sum()),
                            objects=objects)

    def find_plane(self, points: np.ndarray, sensor: np.ndarray | None = None
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The removable plane (unit normal towards `up`) and the mask of its inliers: RANSAC's
        within plane_distance, and with plane_distance_per_metre every point within
        plane_distance + that x its range from `sensor` (None: the frame's origin).

        (None, None) when the cloud is too small, no plane has min_plane_points inliers, or no
        large enough plane lies within max_plane_tilt_deg of `up`.
        """
        import open3d as o3d

        config = self.config
        needed = config.min_plane_inliers(len(points))
        up = config.unit_up
        max_tilt = math.radians(config.max_plane_tilt_deg)
        candidates = np.arange(len(points))
        for _ in range(PLANE_ATTEMPTS):
            if len(candidates) < needed:
                break
            cloud = o3d.geometry.PointCloud(
                o3d.utility.Vector3dVector(points[candidates].astype(np.float64)))
            o3d.utility.random.seed(config.seed)
            model, inliers = cloud.segment_plane(config.plane_distance, RANSAC_POINTS,
                                                 config.plane_iterations)
            model = np.asarray(model, dtype=np.float64)
            inliers = np.asarray(inliers, dtype=np.int64)
            norm = np.linalg.norm(model[:3])
            if len(inliers) < needed or norm < 1e-12:  # too small, or collinear points only
                break
            model = model / norm
            if model[:3] @ up < 0:
                model = -model
            if math.acos(min(1.0, float(model[:3] @ up))) <= max_tilt + 1e-9:
                mask = np.zeros(len(points), dtype=bool)
                mask[candidates[inliers]] = True
                if config.plane_distance_per_metre > 0:
                    mask |= ground_band(points, model, config.plane_distance,
                                        config.plane_distance_per_metre,
                                        np.zeros(3) if sensor is None else sensor)
                return model, mask
            candidates = np.delete(candidates, inliers)  # a wall: look for the floor in the rest
        return None, None

    def cluster(self, points: np.ndarray, sensor: np.ndarray | None = None) -> list[np.ndarray]:
        """Clusters of object size, the largest max_objects of them, largest first; with
        cluster_eps_per_metre, DBSCAN's clusters that lie within the radius their range from
        `sensor` allows are merged first (`merge_by_range`)."""
        import open3d as o3d

        config = self.config
        if len(points) < max(config.min_cluster_points, config.dbscan_min_points):
            return []
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
        labels = np.asarray(cloud.cluster_dbscan(config.cluster_eps, config.dbscan_min_points,
                                                 print_progress=False))
        order = np.argsort(labels, kind="stable")
        starts = np.flatnonzero(np.diff(labels[order], prepend=-2))
        groups = [indices for indices in np.split(order, starts[1:]) if labels[indices[0]] >= 0]
        if config.cluster_eps_per_metre > 0 and len(groups) > 1:
            groups = merge_by_range(points, groups, config.cluster_eps,
                                    config.cluster_eps_per_metre,
                                    np.zeros(3) if sensor is None else sensor)
        clusters = []
        for indices in groups:
            if len(indices) < config.min_cluster_points:
                continue  # a cluster too small to be an object
            cluster = points[indices]
            if (cluster.max(axis=0) - cluster.min(axis=0)).max() > config.max_cluster_extent:
                continue
            clusters.append(cluster)
        clusters.sort(key=len, reverse=True)  # stable: equal sizes keep DBSCAN's order
        return clusters[:config.max_objects]

    def _accumulate(self, points: np.ndarray) -> np.ndarray:
        """This frame's non-ground points together with those of the previous frames.

        Each frame is voxelised before it is stored and the union again after, so memory holds
        at most accumulate_frames voxel grids of the scene, whatever the input rate or density.
        Objects that move smear over the accumulated frames: accumulate only for a static scene.
        """
        voxel = self.config.voxel
        self._frames.append(voxel_downsample(points, voxel, fixed_grid=True) if len(points)
                            else points)
        union = np.concatenate(list(self._frames))
        return voxel_downsample(union, voxel, fixed_grid=True) if len(union) else union


def ground_band(points: np.ndarray, plane: np.ndarray, distance: float, per_metre: float,
                sensor: np.ndarray) -> np.ndarray:
    """Mask of the points within distance + per_metre x (their range from `sensor`) of `plane`
    (a, b, c, d with a unit normal)."""
    height = np.abs(points.astype(np.float64) @ plane[:3] + plane[3])
    reach = np.linalg.norm(points - np.asarray(sensor, dtype=np.float64), axis=1)
    return height <= distance + per_metre * reach


def merge_by_range(points: np.ndarray, groups: list[np.ndarray], eps: float,
                   eps_per_metre: float, sensor: np.ndarray) -> list[np.ndarray]:
    """Groups of point indices joined (transitively) where two come closer than
    max(eps, eps_per_metre x the range of the nearer one from `sensor`): at range, the rings of
    a LiDAR are farther apart than a fixed clustering radius, and one object falls apart into
    flat slices. Boxes are compared first; the closest points only where the boxes are near."""
    from scipy.spatial import cKDTree

    sensor = np.asarray(sensor, dtype=np.float64)
    low = np.stack([points[g].min(axis=0) for g in groups]).astype(np.float64)
    high = np.stack([points[g].max(axis=0) for g in groups]).astype(np.float64)
    ranges = np.linalg.norm((low + high) / 2 - sensor, axis=1)
    gaps = np.linalg.norm(np.maximum(0.0, np.maximum(low[:, None] - high[None],
                                                     low[None] - high[:, None])), axis=2)
    radius = np.maximum(eps, eps_per_metre * np.minimum(ranges[:, None], ranges[None]))
    parent = list(range(len(groups)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    trees: dict[int, cKDTree] = {}
    for i, j in zip(*np.nonzero(np.triu(gaps <= radius, k=1))):
        if root(i) == root(j):
            continue
        small, large = (i, j) if len(groups[i]) <= len(groups[j]) else (j, i)
        if large not in trees:
            trees[large] = cKDTree(points[groups[large]])
        if trees[large].query(points[groups[small]], distance_upper_bound=radius[i, j])[0].min() \
                <= radius[i, j]:
            parent[root(i)] = root(j)
    merged: dict[int, list[np.ndarray]] = {}
    for i, group in enumerate(groups):
        merged.setdefault(root(i), []).append(group)
    return [np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]
            for parts in merged.values()]
