"""Object clouds as the scene pipeline makes them, harvested from simulated robot drives.

The classifier's training views (data/views.py) are single scans or a few scans merged, of a
whole object alone. What the classification node gets on a robot is different: the segmentation
node's clusters (pipeline/segment.py), the ground plane cut away with the bottom of the legs,
frames accumulated in the fixed frame while the sensor moves, objects partly hidden by others,
far ones sparse. This module makes such clouds with the scene pipeline's own segmentation, so a
model can train and be checked on them (issue 17: "the accumulated multi-view clouds the scene
pipeline produces"), and so that a robot-made set exists beside the curated shapes (issue 19).

Per scene (all from rng [seed, scene]): `build_demo_scene` with shapes of one split of a mesh
set at their classes' real sizes, sometimes a far object 10-15 m away, a sensor (OS1-64 LiDAR
or D435 depth camera, as `evaluation.bag.demo_sensor`) driving a random half ellipse past it
(the LiDAR facing the way it drives, the depth camera turned to the scene).
Every frame goes through the segmentation of the pipeline YAML (its preprocessing and
SegmentConfig, e.g. accumulation and the range-adaptive radius of config/scene_pipeline.yaml),
in the world frame, seen from the sensor's position. Every `keep_every` frames each segmented
object is recorded when one ground-truth object owns at least `purity` of its points (nearest
posed surface within `label_distance`); clusters that merge two objects, or floor and clutter,
are left out (counted).

Stored as `data.scene_objects.SceneObjects`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from gmm_perception.data.mesh_ops import sample_surface
from gmm_perception.data.scene_objects import SceneObjects, default_path
from gmm_perception.data.shape_set import MeshSet
from gmm_perception.evaluation.scene import DrivePath, add_far_object, build_demo_scene, \
    scan_frames, sensor_poses
from gmm_perception.evaluation.scene_metrics import surface_owner
from gmm_perception.geometry.points import EmptyCloudError
from gmm_perception.geometry.transforms import transform_points

SURFACE_SAMPLES = 4000  # points per object's posed surface for the ownership test
SCENE_CENTRE = np.array([0.0, 0.0, 0.5])  # where the depth camera looks, metres


@dataclass(frozen=True)
class HarvestSettings:
    """How scenes are made and which clusters are kept."""

    frames: int = 60  # per drive, at the sensor's 10 Hz: 6 s
    depth_share: float = 0.3  # of the drives with the D435 depth camera (the rest OS1-64)
    objects: int = 5  # per scene, distinct classes (DEFAULT_CLASSES of evaluation/scene.py)
    far_object_probability: float = 0.3  # one more object 11-15 m from the scene's centre
    warm_up: int = 5  # frames before the first record (the accumulation fills)
    keep_every: int = 5  # record the objects of every k-th frame after the warm-up
    min_points: int = 30  # smaller clusters are not recorded
    purity: float = 0.8  # share of a cluster's points one ground-truth object must own
    # Metres from a posed surface that count as its points: the D435's noise is several cm at
    # 3-5 m; objects stand at least 0.3 m apart (evaluation/scene.py GAP).
    label_distance: float = 0.1
    # The depth drives' SegmentConfig.plane_distance_per_metre, as a D435 user sets it: with the
    # pipeline's fixed 2 cm band the floor's scatter at 3-8 m joined every object after a few
    # accumulated frames (the depth drives among 30 val drives gave 9 clouds, 3 over 200 points).
    depth_plane_distance_per_metre: float = 0.013


def _drive(rng: np.random.Generator) -> DrivePath:
    """A half ellipse past the arena (3 m) at 3.5-8 m, from a random side, either sense."""
    return DrivePath(semi_x=float(rng.uniform(4.5, 8.0)), semi_y=float(rng.uniform(3.5, 6.0)),
                     start_deg=float(rng.uniform(0.0, 360.0)),
                     arc_deg=float(rng.choice([-180.0, 180.0])))


def _scene(meshes: MeshSet, rng: np.random.Generator, objects: int, split: str,
           path: DrivePath, dropped: dict):
    """A scene of the split's shapes; a draw that cannot be laid out (a model whose class size
    makes it wider than the arena, e.g. a lying figure sized as a standing person's height) is
    drawn again (counted in dropped["layouts"])."""
    for _ in range(20):
        try:
            return build_demo_scene(meshes, rng, num_objects=objects, split=split,
                                    arena_radius=3.0, path=path)
        except ValueError:
            dropped["layouts"] += 1
    raise ValueError(f"no layout of {objects} objects of '{split}' in 20 draws")


def _poses(kind: str, sensor, scene, frames: int) -> np.ndarray:
    """The LiDAR looks where the robot drives (it sees all round); the depth camera, whose
    field is 87 degrees, turns to the scene's centre as it passes (a pan unit, or a robot
    facing what it inspects), or it would see the objects only when it drives at them."""
    if kind == "depth":
        return np.stack([sensor.look_at(eye, SCENE_CENTRE)
                         for eye in scene.trajectory.eyes(frames)])
    return sensor_poses(frames, sensor, scene.trajectory)


def drive_scene(meshes: MeshSet, split: str, rng: np.random.Generator,
                settings: HarvestSettings, dropped: dict):
    """(scene with its drive path, sensor kind) of one harvest draw from `rng`."""
    kind = "depth" if rng.random() < settings.depth_share else "lidar"
    scene = _scene(meshes, rng, settings.objects, split, _drive(rng), dropped)
    if rng.random() < settings.far_object_probability:
        angle, radius = rng.uniform(0.0, 2 * np.pi), rng.uniform(11.0, 15.0)
        add_far_object(scene, meshes, rng, radius * np.array([np.cos(angle), np.sin(angle)]),
                       split=split)
    return scene, kind


def harvest(meshes: MeshSet, split: str, scenes: int, seed: int, pipeline: str | Path,
            settings: HarvestSettings = HarvestSettings(), progress: bool = True
            ) -> SceneObjects:
    """`scenes` drives through scenes of `split`'s shapes, segmented as `pipeline`'s
    segmentation node does; the records of the module docstring."""
    from gmm_perception.evaluation.bag import demo_sensor
    from gmm_perception.evaluation.stages import SEGMENTATION, pipeline_entries, \
        resolved_configs
    from gmm_perception.pipeline.configs import PreprocessConfig, SegmentConfig
    from gmm_perception.pipeline.preprocess import Preprocessor
    from gmm_perception.pipeline.segment import Segmenter

    configs = resolved_configs(pipeline_entries(pipeline)[SEGMENTATION])
    records: dict[str, list] = {key: [] for key in (
        "points", "class_name", "model_id", "scene", "object_name", "frame", "sensor",
        "range_m")}
    dropped = {"impure": 0, "small": 0, "layouts": 0}
    indices = range(scenes)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"scene objects ({split})", unit="scene")
    for k in indices:
        rng = np.random.default_rng([seed, k])
        scene, kind = drive_scene(meshes, split, rng, settings, dropped)
        sensor = demo_sensor(kind)[0]
        surfaces = [cKDTree(sample_surface(obj.mesh_world(), SURFACE_SAMPLES, rng))
                    for obj in scene.objects]
        preprocess = Preprocessor(configs[PreprocessConfig])
        segment = configs[SegmentConfig]
        if kind == "depth":
            segment = replace(segment,
                              plane_distance_per_metre=settings.depth_plane_distance_per_metre)
        segmenter = Segmenter(segment)
        poses = _poses(kind, sensor, scene, settings.frames)
        for frame in scan_frames(scene, sensor, poses, np.random.default_rng([seed, k, 1])):
            eye = frame.T_world_sensor[:3, 3]
            try:
                points = preprocess(transform_points(frame.T_world_sensor, frame.points))
            except EmptyCloudError:  # nothing in view (a depth camera facing away)
                continue
            result = segmenter(points, eye)
            if frame.index < settings.warm_up or frame.index % settings.keep_every:
                continue
            for obj in result.objects:
                if len(obj.points) < settings.min_points:
                    dropped["small"] += 1
                    continue
                index = surface_owner(obj.points, surfaces, settings.label_distance,
                                      settings.purity)
                if index is None:
                    dropped["impure"] += 1
                    continue
                truth = scene.objects[index]
                records["points"].append(obj.points.astype(np.float32))
                records["class_name"].append(truth.class_name)
                records["model_id"].append(truth.model_id)
                records["scene"].append(k)
                records["object_name"].append(truth.name)
                records["frame"].append(frame.index)
                records["sensor"].append(kind)
                records["range_m"].append(float(np.linalg.norm(
                    obj.box_centre - eye)))
    counts = [len(p) for p in records["points"]]
    return SceneObjects(
        np.concatenate(records["points"]) if counts else np.empty((0, 3), np.float32),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        np.array(records["class_name"], dtype=str), np.array(records["model_id"], dtype=str),
        np.array(records["scene"], dtype=np.int32), np.array(records["object_name"], dtype=str),
        np.array(records["frame"], dtype=np.int32), np.array(records["sensor"], dtype=str),
        np.array(records["range_m"], dtype=np.float32), dropped)


def main(argv: list[str] | None = None) -> int:
    """`gmm-perception data scene-objects`: object clouds of the scene pipeline's segmentation
    on simulated robot drives through scenes of the pool's shapes (cached per split, scenes
    and seed)."""
    import argparse
    import collections

    from gmm_perception.data.mesh_dataset import default_data_dir
    from gmm_perception.data.pool import load_pool
    from gmm_perception.paths import SOURCE_ROOT

    parser = argparse.ArgumentParser(prog="gmm-perception data scene-objects",
                                     description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--split", default="train", help="pool split the scenes' shapes are of")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline", type=Path, default=SOURCE_ROOT / "config" /
                        "scene_pipeline.yaml", help="whose segmentation makes the clouds")
    args = parser.parse_args(argv)
    path = default_path(args.split, args.scenes, args.seed, args.data_dir)
    if not path.is_file():
        harvest(load_pool(args.data_dir, meshes=True), args.split, args.scenes, args.seed,
                args.pipeline).save(path)
    objects = SceneObjects.load(path)
    classes = collections.Counter(objects.class_name.tolist())
    print(f"{len(objects)} object clouds ({dict(sorted(classes.items()))}; left out: "
          f"{objects.dropped}), median {int(np.median(objects.point_counts()))} points: {path}")
    return 0
