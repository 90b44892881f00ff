"""Offline evaluation: the bag's frames through the ROS-free scene pipeline, in order,
deterministically (pipeline/scene.py: the nodes' own road, TF lookups from the bag's transforms).
No middleware, no dropped frames, no rclpy.
"""
from __future__ import annotations

import time

from gmm_perception.evaluation.bag import BagContents
from gmm_perception.evaluation.records import ClassifiedObject, Detection, EvaluationRun, \
    FrameRecord, SurfaceCloud, TruthObject
from gmm_perception.geometry.points import EmptyCloudError
from gmm_perception.geometry.tf_tree import TransformCache, TransformError
from gmm_perception.pipeline.scene import SceneFrame, ScenePipeline

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
    visibility = contents.truth_visibility(warnings) or {}
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
        truth.append(TruthObject(name, T, library.get(name), classes.get(name, default_class),
                                 visibility.get(name)))
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


def run_offline(contents: BagContents, scene: ScenePipeline, library: dict,
                progress: bool = True) -> EvaluationRun:
    """Every cloud of the bag through `scene.process_frame`, placed by the bag's TF."""
    started = time.perf_counter()
    run = EvaluationRun("offline", str(contents.path), scene.world_frame,
                        warnings=list(contents.warnings))
    run.truth = truth_objects(contents, scene.world_frame, library, run.warnings)
    cache = transform_cache(contents)
    clouds = contents.clouds
    if progress:
        from tqdm import tqdm

        clouds = tqdm(clouds, desc="offline", unit="frame")
    for index, cloud in enumerate(clouds):
        frame = FrameRecord(index, cloud.stamp_ns)
        run.frames.append(frame)
        try:
            result = scene.process_frame(cloud.points, cloud.frame_id, cloud.stamp_ns,
                                         cache.lookup)
        except TransformError as exc:
            frame.status, frame.message = "unknown_frame", str(exc)
            continue
        except EmptyCloudError as exc:
            frame.status, frame.message = "empty", str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - as a node's worker: count it, go on
            frame.status, frame.message = "failed", f"{type(exc).__name__}: {exc}"
            continue
        _record(frame, result)
    failed = [answer for frame in run.frames for answer in frame.failed_answers]
    if failed:
        run.warnings.append(f"{len(failed)} object answer(s) failed (a node counts each as a "
                            f"failed frame); the first: {failed[0]}")
    run.seconds = time.perf_counter() - started
    return run


def classified_object(object_id: int, classification) -> ClassifiedObject:
    """What the evaluation records of a `Classification` (with its fused class, as the
    classification node publishes them)."""
    fused = classification.fused
    return ClassifiedObject(object_id, classification.label,
                            float(classification.scores[classification.class_id]),
                            *(() if fused is None else (fused.label, fused.confidence,
                                                        fused.observations)))


def _record(frame: FrameRecord, result: SceneFrame) -> None:
    """A frame's answers as the evaluation records them (the surface stages' clouds beside
    the segmented input they were made from)."""
    frame.stage_ms = dict(result.stage_ms)
    frame.object_centres = {obj.id: obj.box_centre for obj in result.segmentation.objects}
    surfaces = {"shape_model", "upsampling"} & set(frame.stage_ms)
    for obj in result.segmentation.objects if surfaces else ():
        frame.surfaces.append(SurfaceCloud(obj.id, "input", obj.points))
    for answer in result.answers:
        if answer.failed:
            frame.failed_answers.append(f"{answer.stage} of object {answer.object_id}: "
                                        f"{answer.failed}")
        if answer.result is None:
            continue  # refused (too few points) or failed: a node publishes nothing either
        if answer.stage == "registration":
            registration = answer.result
            frame.detections.append(Detection(
                answer.object_id, registration.reference_name, registration.T_cloud_object,
                registration.fitness, registration.inlier_rmse, answer.milliseconds,
                registration.mode))
        elif answer.stage == "classification":
            frame.classifications.append(classified_object(answer.object_id, answer.result))
        elif answer.stage == "shape_model":
            frame.surfaces.append(SurfaceCloud(answer.object_id, "shape_model",
                                               answer.result.resampled))
        elif answer.stage == "upsampling":
            frame.surfaces.append(SurfaceCloud(answer.object_id, "upsampling",
                                               answer.result.points))
    frame.stage_ms["total"] = sum(frame.stage_ms.values())
    if not frame.detections:
        frame.status = "no_objects"
