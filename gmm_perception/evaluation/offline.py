"""Offline evaluation: the bag's frames through the ROS-free stages, in order, deterministically.

Each frame takes the nodes' road: transform into the segmentation's fixed frame through the
bag's TF (as read_cloud does), preprocess, segment; then each object cloud, in id order, through
the registration node's preprocessing and the registrar. No middleware, no dropped frames.
"""
from __future__ import annotations

import time

import numpy as np

from gmm_perception.evaluation.bag import BagContents
from gmm_perception.evaluation.records import ClassifiedObject, Detection, EvaluationRun, \
    FrameRecord, SurfaceCloud, TruthObject
from gmm_perception.evaluation.stages import SceneStages
from gmm_perception.geometry.tf_tree import TransformCache, TransformError
from gmm_perception.geometry.transforms import invert_transform, transform_points
from gmm_perception.pipeline.preprocess import EmptyCloudError

# The whole bag is in memory: keep every sample (an hour) so any stamp can be looked up.
_HOUR_NS = 3600 * 10**9


def transform_cache(contents: BagContents) -> TransformCache:
    cache = TransformCache(cache_duration_ns=_HOUR_NS)
    for record in contents.static_transforms:
        cache.set_static_transform(record.parent, record.child, record.T_parent_child)
    for record in contents.transforms:
        cache.set_transform(record.parent, record.child, record.T_parent_child, record.stamp_ns)
    return cache


def truth_objects(contents: BagContents, world_frame: str, library: dict,
                  warnings: list[str]) -> list[TruthObject]:
    """Ground truth from /tf_static `truth/<name>` frames, expressed in `world_frame`."""
    cache = transform_cache(contents)
    classes = {obj.get("name"): obj.get("class", "") for obj in (contents.scene or {}).get(
        "objects", [])}
    truth = []
    for name, _ in sorted(contents.truth_poses().items()):
        try:
            T = cache.lookup(world_frame, f"truth/{name}")
        except TransformError as exc:
            warnings.append(f"ground truth '{name}' is not connected to '{world_frame}': {exc}")
            continue
        if name not in library:
            warnings.append(f"ground truth '{name}' has no model in the library: not scored")
        # The class: the scene description's, else the name without its _<index> suffix.
        default_class = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
        truth.append(TruthObject(name, T, library.get(name), classes.get(name, default_class)))
    if not truth:
        warnings.append("the bag has no ground truth (no truth/<name> frames on /tf_static): "
                        "registrations are reported but not scored")
    return truth


def sensor_path(contents: BagContents, world_frame: str) -> list[list[float]]:
    """The sensor's position in `world_frame` at each cloud that can be placed."""
    cache = transform_cache(contents)
    path = []
    for cloud in contents.clouds:
        try:
            path.append(cache.lookup(world_frame, cloud.frame_id, cloud.stamp_ns)[:3, 3].tolist())
        except TransformError:
            continue
    return path


def run_offline(contents: BagContents, stages: SceneStages, progress: bool = True
                ) -> EvaluationRun:
    started = time.perf_counter()
    run = EvaluationRun("offline", str(contents.path), stages.world_frame,
                        warnings=list(contents.warnings))
    run.truth = truth_objects(contents, stages.world_frame, stages.library, run.warnings)
    cache = transform_cache(contents)
    clouds = contents.clouds
    if progress:
        from tqdm import tqdm

        clouds = tqdm(clouds, desc="offline", unit="frame")
    for index, cloud in enumerate(clouds):
        frame = FrameRecord(index, cloud.stamp_ns)
        run.frames.append(frame)
        try:
            T = cache.lookup(stages.world_frame, cloud.frame_id, cloud.stamp_ns) \
                if stages.world_frame and stages.world_frame != cloud.frame_id else np.eye(4)
        except TransformError as exc:
            frame.status, frame.message = "unknown_frame", str(exc)
            continue
        points = cloud.points[np.isfinite(cloud.points).all(axis=1)]
        if len(points) == 0:
            frame.status, frame.message = "empty", "no finite points"
            continue
        tick = time.perf_counter()
        try:
            scene = stages.preprocess(transform_points(T, points))
        except EmptyCloudError as exc:
            frame.status, frame.message = "empty", str(exc)
            continue
        frame.stage_ms["preprocess"] = _ms_since(tick)
        tick = time.perf_counter()
        segmentation = stages.segmenter(scene)
        frame.stage_ms["segmentation"] = _ms_since(tick)
        frame.stage_ms["registration"] = 0.0
        if stages.classifier is not None:
            frame.stage_ms["classification"] = 0.0
        surface_stages = stages.surfaces
        for name in surface_stages:
            frame.stage_ms[name] = 0.0
        for obj in segmentation.objects:
            if surface_stages:
                frame.surfaces.append(SurfaceCloud(obj.id, "input", obj.points))
            for name, (preprocess, stage) in surface_stages.items():
                tick = time.perf_counter()
                try:
                    frame.surfaces.append(SurfaceCloud(obj.id, name,
                                                       stage(preprocess(obj.points))))
                except (EmptyCloudError, ValueError):
                    pass  # too few points: the node rejects such a cloud the same way
                frame.stage_ms[name] += _ms_since(tick)
            if stages.classifier is not None:
                tick = time.perf_counter()
                try:
                    result = stages.classifier(stages.classify_preprocess(obj.points))
                    frame.classifications.append(ClassifiedObject(
                        obj.id, result.label, float(result.scores[result.class_id])))
                except (EmptyCloudError, ValueError):
                    pass  # too few points: the node rejects such a cloud the same way
                frame.stage_ms["classification"] += _ms_since(tick)
            tick = time.perf_counter()
            try:
                result = stages.registrar.register(stages.object_preprocess(obj.points))
            except EmptyCloudError:
                continue
            elapsed = _ms_since(tick)
            frame.stage_ms["registration"] += elapsed
            frame.detections.append(Detection(
                obj.id, result.reference_name, invert_transform(result.transform),
                result.fitness, result.inlier_rmse, elapsed))
        frame.stage_ms["total"] = sum(frame.stage_ms.values())
        if not frame.detections:
            frame.status = "no_objects"
    run.seconds = time.perf_counter() - started
    return run


def _ms_since(tick: float) -> float:
    return (time.perf_counter() - tick) * 1e3
