"""Every parameter of the package: one frozen config per stage, the settings every node shares,
each node's output settings, and the table of which configs make up which node.

This module is the one place a parameter is declared: a stage is built from its config, the ROS
layer derives each node's parameter declarations from these fields (ros/parameters.py), and the
offline evaluator validates a pipeline YAML with `node_configs`, so a node and the evaluator
accept and refuse the same values with the same words. Plain data, cheap to import (no torch,
no open3d, no rclpy): a node that runs no model never loads one.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from gmm_perception.config import ConfigError, from_values, setting, settings, validate
from gmm_perception.geometry.points import MIN_OBJECT_POINTS
from gmm_perception.paths import share_dir

# Metres: "no limit" for crop boxes and ranges. A finite number, so that a parameter file can
# state it and a range can bound it; 1000 km is beyond any sensor.
NO_LIMIT = 1.0e6
SEED_DESCRIPTION = "Seed of the stage's random generators (resampling, RANSAC)."
# RANSAC draws 3 points per hypothesis: fewer points cannot define a plane.
RANSAC_POINTS = 3
ICP_MODES = ("none", "point_to_point", "point_to_plane")
GLOBAL_REGISTRATION_MODES = ("inline", "background")
REFERENCE_MODES = ("file", "library", "topic", "previous")
UPSAMPLING_MODES = ("prior", "denoise")
CODECS = ("neuralqaad", "draco", "pointgmm")
FUSION_RULES = ("product", "mean")  # pipeline/fuse.py


def _seed() -> Any:
    return setting(0, SEED_DESCRIPTION, low=0, high=2**31 - 1)


# The shape-model stage's PointGMM, also the pointgmm codec's: one mixture model per pipeline.
POINTGMM_CHECKPOINT = ("pointgmm", "pointgmm_pool.pt")


def _checkpoint(*parts: str, what: str) -> Any:
    return setting(str(share_dir().joinpath("checkpoints", *parts)), what, read_only=True)


@dataclass(frozen=True)
class PreprocessConfig:
    """The shared preprocessing stage. Every step is off at its default: an all-default stage
    returns the finite input points. Lengths are metres in the processing frame."""

    crop_min: tuple[float, float, float] = setting(
        (-NO_LIMIT,) * 3, "Lower corner [x, y, z] of the crop box, metres.",
        low=-NO_LIMIT, high=NO_LIMIT, length=3)
    crop_max: tuple[float, float, float] = setting(
        (NO_LIMIT,) * 3, "Upper corner [x, y, z] of the crop box, metres.",
        low=-NO_LIMIT, high=NO_LIMIT, length=3)
    min_range: float = setting(0.0, "Drop points closer than this to the frame origin (the "
                               "sensor), metres.", low=0.0, high=NO_LIMIT)
    max_range: float = setting(NO_LIMIT, "Drop points farther than this from the frame origin, "
                               "metres.", low=0.0, high=NO_LIMIT)
    voxel_size: float = setting(0.0, "Voxel grid edge in metres (0 disables downsampling).",
                                low=0.0, high=10.0)
    num_points: int = setting(0, "Resample the result to exactly this many points (0 keeps the "
                              "count).", low=0, high=10_000_000)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)

    def check(self) -> None:
        if any(low > high for low, high in zip(self.crop_min, self.crop_max)):
            raise ConfigError(f"crop_min {list(self.crop_min)} exceeds crop_max "
                              f"{list(self.crop_max)} on some axis")
        if self.min_range > self.max_range:
            raise ConfigError(f"min_range {self.min_range} exceeds max_range {self.max_range}")


@dataclass(frozen=True)
class SegmentConfig:
    """Ground removal, clustering and tracking (pipeline/segment.py). Lengths are metres in the
    frame of the clouds given to the segmenter."""

    plane_distance: float = setting(0.02, "RANSAC inlier distance of the ground plane, metres.",
                                    low=0.001, high=1.0)
    # A stereo depth camera's error grows with range (a D435: 1 mm + 3.6 mm/m^2 x z^2 along the
    # ray); seen from height h, the floor's points scatter vertically by about that x h / range.
    # Beyond 3-4 m a fixed 2 cm band leaves a carpet of floor points that the accumulation makes
    # dense and the clustering joins to the objects (clusters over max_cluster_extent: dropped).
    plane_distance_per_metre: float = setting(0.0, "Growth of the ground's inlier distance with "
                                              "range from the sensor: a point within "
                                              "plane_distance + this x range of the plane found "
                                              "is ground (a D435 at 1.2 m height: about 0.013, "
                                              "3 x its vertical scatter; 0 = fixed).",
                                              low=0.0, high=1.0)
    plane_iterations: int = setting(200, "RANSAC hypotheses per plane search.",
                                    low=1, high=100_000)
    # Keeps the top of a large box from being taken for the floor where no floor is visible.
    min_plane_points: float = setting(0.1, "Inliers a plane needs to be removed: below 1 a "
                                      "fraction of the cloud, from 1 a point count.",
                                      low=0.0, high=1e9)
    max_plane_tilt_deg: float = setting(30.0, "Only remove a plane whose normal is within this "
                                        "angle of 'up' (90 accepts any plane).",
                                        low=0.0, high=90.0)
    up: tuple[float, float, float] = setting((0.0, 0.0, 1.0), "Up direction [x, y, z] in the "
                                             "processing frame (non-zero).",
                                             low=-1e6, high=1e6, length=3)
    cluster_eps: float = setting(0.05, "DBSCAN neighbourhood radius, metres.",
                                 low=0.001, high=10.0)
    # A spinning LiDAR's rings lie range x (vertical resolution) apart: beyond cluster_eps /
    # that resolution, a fixed radius splits an object into one flat cluster per ring.
    cluster_eps_per_metre: float = setting(0.0, "Clustering radius growth with range: clusters "
                                           "closer than max(cluster_eps, this x range from the "
                                           "sensor) are merged (a LiDAR: about 1.5 x its "
                                           "vertical resolution in radians; 0 = fixed radius).",
                                           low=0.0, high=1.0)
    # Separate from min_cluster_points, which bounds the cluster's size: a density of 30 would
    # split sparse (far away) objects into noise.
    dbscan_min_points: int = setting(5, "DBSCAN density: neighbours within cluster_eps (itself "
                                     "included) that make a core point.", low=1, high=1000)
    min_cluster_points: int = setting(30, "Smaller clusters are noise.", low=1, high=10_000_000)
    max_cluster_extent: float = setting(3.0, "Clusters with a longer box edge (walls, furniture) "
                                        "are discarded, metres.", low=0.01, high=1000.0)
    max_objects: int = setting(32, "Largest clusters kept per frame (also the history depth of "
                               "the node's ~/objects).", low=1, high=1000, read_only=True)
    track_distance: float = setting(0.3, "Farthest centroid motion between frames that keeps "
                                    "an object's id, metres.", low=0.001, high=100.0)
    track_timeout_frames: int = setting(10, "Frames an object may go unseen before its id is "
                                        "dropped.", low=1, high=100_000)
    accumulate_frames: int = setting(1, "Frames whose non-ground points are clustered together "
                                     "(1 = per frame; needs a fixed frame).", low=1, high=100)
    accumulate_voxel: float = setting(0.0, "Voxel of the accumulated cloud, metres "
                                      "(0 = cluster_eps / 2).", low=0.0, high=1.0)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)

    def check(self) -> None:
        if math.hypot(*self.up) < 1e-9:
            raise ConfigError(f"up must be a non-zero 3-vector, got {list(self.up)}")

    @property
    def unit_up(self) -> np.ndarray:
        up = np.asarray(self.up, dtype=np.float64)
        return up / np.linalg.norm(up)

    @property
    def voxel(self) -> float:
        """Voxel edge of the accumulated cloud: fine enough that DBSCAN at cluster_eps still
        connects neighbouring voxels of one surface."""
        return self.accumulate_voxel if self.accumulate_voxel > 0 else self.cluster_eps / 2

    def min_plane_inliers(self, point_count: int) -> int:
        """Inliers a plane needs to be removed from a cloud of `point_count` points."""
        if self.min_plane_points < 1:
            return max(RANSAC_POINTS, math.ceil(self.min_plane_points * point_count))
        return max(RANSAC_POINTS, math.ceil(self.min_plane_points))


@dataclass(frozen=True)
class ReuseConfig:
    """When a per-object stage (classification, shape model, upsampling) answers an object
    again from its last answer instead of running: objects mostly stand still, and a model pass
    per object per frame is what keeps a scene from sensor rate (issue 16)."""

    rerun_fraction: float = setting(0.2, "Run again for an object once this fraction of its "
                                    "points are new: farther than rerun_distance from the cloud "
                                    "the stage last ran on (0: run every frame).",
                                    low=0.0, high=1.0)
    rerun_distance: float = setting(0.03, "Distance beyond which a point counts as new, metres.",
                                    low=0.001, high=10.0)
    rerun_period: float = setting(3.0, "Seconds (cloud stamps) after which the stage runs again "
                                  "for an object anyway (0: only on change).",
                                  low=0.0, high=3600.0)
    republish: bool = setting(False, "On frames where the stage did not run, publish the last "
                              "answer again with the new stamp (for subscribers that want every "
                              "frame); off: publish only new answers.")

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class RegistrationConfig:
    """The registration stage: which network, which references, how hypotheses are refined and
    scored. Lengths are metres."""

    checkpoint: str = _checkpoint("deepgmr", "deepgmr_pool.pt", what="DeepGMR checkpoint file.")
    reference_mode: str = setting("file", "Where the reference comes from: a model file, every "
                                  "model file of a directory (library: best match wins), the "
                                  "'reference' topic, or the previous frame (scan-to-scan).",
                                  choices=REFERENCE_MODES, read_only=True)
    reference_file: str = setting("", "Reference model (PLY/PCD/OBJ/OFF/STL/NPY/XYZ) in metres, "
                                  "for reference_mode 'file'.", read_only=True)
    library_dir: str = setting("", "Directory of reference models (same formats), for "
                               "reference_mode 'library'; each file's stem names its model.",
                               read_only=True)
    reference_name: str = setting("", "Name reported in results (default: the file's stem).",
                                  read_only=True)
    registration_points: int = setting(1024, "Points per cloud given to the network (as in "
                                       "training).", low=64, high=8192, read_only=True)
    hypotheses: int = setting(2, "Pose hypotheses per reference kept by fitness: 1 = DeepGMR's T "
                              "only, 2 = also the inverse of its independent reverse estimate "
                              "T_hat.", low=1, high=2)
    upright_axis: tuple[float, float, float] = setting(
        (0.0, 0.0, 0.0), "Objects stand upright: the 'up' direction [x, y, z] shared by the "
        "cloud frame and the models, so only turns about it are tried (zeros: any rotation).",
        low=-1e6, high=1e6, length=3)
    icp: str = setting("point_to_point", "Refinement after the global estimate.",
                       choices=ICP_MODES)
    icp_max_distance: float = setting(0.05, "ICP correspondence distance, metres.",
                                      low=0.001, high=10.0)
    inlier_threshold: float = setting(0.05, "Distance for fitness and inlier RMSE, metres.",
                                      low=0.001, high=10.0)
    fallback: bool = setting(True, "When the best fitness after ICP is below fallback_fitness, "
                             "also run FPFH + RANSAC + ICP (Open3D) and keep the better fit, so "
                             "the stage is never worse than the classical method.")
    fallback_fitness: float = setting(0.8, "The fallback runs when the network's best fitness "
                                      "(after ICP) is below this fraction of source points.",
                                      low=0.0, high=1.0)
    # 0.07 was the best of 0.035-0.1 on the pool's val views (partial and scan_to_model recall
    # 0.45/0.34 at 0.05, 0.46/0.41 at 0.07, 0.43/0.45 at 0.1), and RANSAC is faster there.
    fallback_voxel: float = setting(0.07, "FPFH voxel of the fallback as a fraction of each "
                                    "reference's radius (normals at 2, features at 5 voxels).",
                                    low=0.005, high=0.5)
    fallback_references: int = setting(1, "References the fallback tries per frame, best fit "
                                       "first (each costs one RANSAC and one ICP).",
                                       low=1, high=64)
    fallback_iterations: int = setting(100_000, "Most RANSAC iterations per fallback try (it "
                                       "stops earlier at 0.999 confidence): bounds its time.",
                                       low=100, high=10_000_000)
    viewpoint_frame: str = setting("", "The sensor's frame (TF): with it the models are also "
                                   "scored by the share of their surface facing the sensor that "
                                   "the object's points show, so a large model that merely "
                                   "contains a partial view loses to the right one ('': fit "
                                   "alone).")
    tracking: bool = setting(True, "Register once, then track: an object (by segmentation id) "
                             "registered with fitness >= track_fitness is refined by ICP from "
                             "its last pose in the next frames; global registration runs again "
                             "when the tracked fit drops, the object is new or unseen for "
                             "track_timeout, or track_recheck has passed. Objects are tracked in "
                             "the cloud's frame: with a moving sensor set target_frame to a "
                             "fixed frame.")
    global_registration: str = setting("inline", "Where global registration runs: inline (the "
                                       "frame's answer waits for it) or background (one job per "
                                       "object; frames are answered at once from the objects' "
                                       "tracks, a new object once its first pose is found).",
                                       choices=GLOBAL_REGISTRATION_MODES)
    track_fitness: float = setting(0.85, "Fitness of a good track: tracked while its ICP fit "
                                   "stays above it, re-checked every track_recheck; a global "
                                   "fit below it starts a poor track, retried every "
                                   "track_retry.", low=0.0, high=1.0)
    track_recheck: float = setting(5.0, "Seconds (cloud stamps) after which a tracked object "
                                   "is registered globally again; the better fit wins.",
                                   low=0.0, high=3600.0)
    track_retry: float = setting(1.0, "Seconds after which an object whose global fitness was "
                                 "below track_fitness (a partial view, a fragment, an object "
                                 "not in the library) is registered globally again; until then "
                                 "it is tracked from that pose.", low=0.0, high=3600.0)
    track_timeout: float = setting(2.0, "Seconds an object may go unseen before its track is "
                                   "dropped.", low=0.0, high=3600.0)
    track_points: int = setting(512, "Source points ICP uses per tracked frame (a random "
                                "subset): bounds a tracked frame's cost.", low=16, high=100_000)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)

    @property
    def unit_upright_axis(self) -> np.ndarray | None:
        up = np.asarray(self.upright_axis, dtype=np.float64)
        norm = float(np.linalg.norm(up))
        return up / norm if norm > 0 else None


@dataclass(frozen=True)
class ClassifyConfig:
    """The classification stage (GMCN or the PointNet baseline)."""

    checkpoint: str = _checkpoint("dgcnn_cls", "dgcnn_views_sized_scenes.pt",
                                  what="Classifier checkpoint (gmcn, pointnet_cls or dgcnn_cls).")
    classification_points: int = setting(2048, "Points per object given to the model (as in "
                                         "training).", low=64, high=16384, read_only=True)
    # Single sensor views in training hold 200 returns or more (data/views.py). On the pool's
    # val scene objects (the pipeline's own clouds, harvested 2026-12-08 with the depth drives),
    # dgcnn_views_sized_scenes.pt is right on 0.44 of the clouds of 30-100 points at a mean
    # confidence 0.49, 0.54 at 100-200 points (0.57), 0.79 at 200-400 (0.78), 0.66 above (its
    # previous version: 0.40 / 0.55 / 0.74 / 0.66): an object just coming into view or half
    # hidden gets wrong answers, which a track's fusion would start from.
    min_points: int = setting(200, "Objects with fewer points are not classified (nothing "
                              "published, nothing fused); the refusal is counted in "
                              "/diagnostics.", low=MIN_OBJECT_POINTS, high=1_000_000)
    temperature: float = setting(0.0, "Temperature T of the scores softmax(logits / T) "
                                 "(calibration); 0 = the checkpoint's calibration file "
                                 "(<checkpoint stem>.calibration.json beside it, T fitted on "
                                 "validation views), 1 when it has none.", low=0.0, high=100.0)
    # The calibration picks the rule and its forgetting per checkpoint on the pool's val tracks
    # (`python -m gmm_perception.train.calibrate`, by the fused NLL): the numbers are in each
    # model card.
    fusion_rule: str = setting("", "How an object's frames are fused (pipeline/fuse.py): "
                               "'product' (L = forgetting * L_prev + log p: naive Bayes over "
                               "views, over-confident when frames repeat) or 'mean' (the "
                               "probabilities averaged, older frames weighted by forgetting^age: "
                               "a repeated frame does not compound); '' = the checkpoint's "
                               "calibration file's, 'product' without one.",
                               choices=("",) + FUSION_RULES)
    fusion_forgetting: float = setting(-1.0, "Weight of the older frames in the fusion: 1 = "
                                       "every frame weighs alike, smaller lets old frames fade, "
                                       "0 = the last frame only; -1 = the checkpoint's "
                                       "calibration file's (its fused temperature was fitted "
                                       "with it), 0.9 without one.", low=-1.0, high=1.0)
    fusion_timeout: float = setting(5.0, "Seconds (cloud stamps) an object may go unseen before "
                                    "its fused class starts anew (also when stamps go back).",
                                    low=0.0, high=3600.0)
    unknown_threshold: float = setting(-1.0, "The fused label is 'unknown' while the fused "
                                       "class's probability is below this; -1 = the "
                                       "checkpoint's calibration file's (chosen on validation "
                                       "for 90 % accuracy of the answered), 0 = never "
                                       "unknown.", low=-1.0, high=1.0)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)


# Multiples of the input's point spacing a resampled point may lie from the observed points.
# bench/shape_model_resample.py (12 pool val furniture models, 0.5-2 m, 256-4096 points; median
# Chamfer to the true surface, m): plain draws 0.056 (whole-surface inputs; the inputs 0.024)
# and 0.097 (single views; inputs 0.065); 0.5 / 1 / 2 / 3 / 5 spacings: 0.030 / 0.031 / 0.032 /
# 0.033 / 0.035 and 0.062 / 0.061 / 0.060 / 0.058 / 0.058. 2 is within 2 % of the best sum of
# the two and keeps 95 % of the points within 1.7 spacings of an observed one.
RESAMPLE_MAX_DISTANCE = 2.0


@dataclass(frozen=True)
class ShapeModelConfig:
    """The shape-model stage (PointGMM)."""

    checkpoint: str = _checkpoint(*POINTGMM_CHECKPOINT, what="PointGMM checkpoint.")
    input_points: int = setting(0, "Points per object given to the model; 0 = as in training "
                                "(the checkpoint's data.num_points).", low=0, high=16384,
                                read_only=True)
    resample_points: int = setting(2048, "Points drawn from the finest level (~/resampled).",
                                   low=1, high=200_000)
    # 15 iterations: the fewest within 0.05 nats/point of EM-512 on full clouds (10: +0.13,
    # 15: +0.035, at 1/27 of its time; bench/shape_model.py, pointgmm_sh3d.pt). Support: the
    # largest within 0.05 nats/point of EM-512 on full clouds, for the most completion on
    # partial scans; pointgmm_pool.pt on 16 pool val shapes, refined NLL of the true surface
    # (EM-512 -1.539): full -1.501 / -1.464 / -1.439 at support 0.2 / 0.3 / 0.4, partial 2.29 /
    # 1.45 / 0.79; Chamfer of partial scans' draws to the full shape
    # 0.145 / 0.143 (the scan itself 0.166).
    refine_iterations: int = setting(15, "EM iterations of the finest level on the object's "
                                     "points, from the network's mixture (coarser levels: "
                                     "merges of their children); published and resampled "
                                     "refined; 0 = the network's mixture as predicted.",
                                     low=0, high=200)
    refine_support: float = setting(0.2, "Refinement keeps a Gaussian as predicted (mean, "
                                    "covariance, weight) when the object's points give it less "
                                    "than this fraction of the responsibility mass its weight "
                                    "expects: a partial scan keeps the network's completion of "
                                    "the unseen side. 0 = plain EM.", low=0.0, high=1.0)
    resample_max_distance: float = setting(
        RESAMPLE_MAX_DISTANCE, "~/resampled keeps to the observed surface: draws farther than "
        "this many times the input's point spacing (median nearest-neighbour distance) from "
        "every observed point are drawn again (then pulled in to that distance); 0 = plain "
        "draws of the finest level (completion of unseen sides included).",
        low=0.0, high=1000.0)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)


# Points per square metre of an object's bounding surface from which the upsampler passes the
# cloud through. bench/upsampling_density.py (12 pool val furniture models, 0.5-2 m, 128-8192
# points, shapegf_sh3d.pt): below 300 ShapeGF brings 80-100 % of the clouds closer to the true
# surface; at 300-1000 only 26 % of whole-surface clouds (64 % of single views), above 1000
# 0-22 % (whole surfaces: 0.016 -> 0.027 m).
DENSITY_THRESHOLD = 300.0


@dataclass(frozen=True)
class UpsampleConfig:
    """The upsampling stage (ShapeGF)."""

    checkpoint: str = _checkpoint("shapegf", "shapegf_sh3d.pt", what="ShapeGF checkpoint.")
    output_points: int = setting(2048, "Points of each dense cloud.", low=1, high=65536)
    steps_per_level: int = setting(5, "Langevin steps per noise level: the cost is linear in it "
                                   "(the paper's 10).", low=1, high=50)
    mode: str = setting("denoise", "prior: annealed Langevin from the uniform prior over every "
                        "level (the paper's sampler); denoise: from the input points over the "
                        "levels <= start_sigma (cheaper, keeps the input's layout).",
                        choices=UPSAMPLING_MODES)
    # 0.03 (the levels 0.028, 0.017, 0.01) chosen on 16 pool val shapes (issue 18): from 0.1 the
    # coarse levels pull the chains into clumps (EMD 0.085 against jitter's 0.068, 512 -> 2048),
    # from 0.03 EMD 0.066 at the same Chamfer, in two thirds of the time.
    start_sigma: float = setting(0.03, "denoise mode: largest noise level run, in the model's "
                                 "normalised units (shape radius 1); 0 = the model's default "
                                 "(0.1).", low=0.0, high=1.0)
    max_input_points: int = setting(1024, "Larger inputs are resampled down to this many points "
                                    "(the model was trained on 256-1024).",
                                    low=MIN_OBJECT_POINTS, high=65536)
    density_threshold: float = setting(DENSITY_THRESHOLD, "Objects with at least this many "
                                       "points per square metre of their bounding surface (box "
                                       "along the cloud's principal axes) pass through untouched, "
                                       "flagged upsampled=0; 0 = upsample every object.",
                                       low=0.0, high=1.0e7)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class CompressionConfig:
    """The compression stage (pipeline/compress.py): one object cloud in, one CompressedCloud
    out, with the codec named in the message so that any decompression node decodes it."""

    codec: str = setting("neuralqaad", "neuralqaad: a latent code of the NeuralQAAD autodecoder "
                         "(the checkpoint's network decodes it); draco: Google Draco's bytes "
                         "(DracoPy); pointgmm: the PointGMM shape model's finest mixture.",
                         choices=CODECS, read_only=True)
    checkpoint: str = _checkpoint("neuralqaad", "neuralqaad_seating.pt",
                                  what="NeuralQAAD checkpoint (codec neuralqaad).")
    pointgmm_checkpoint: str = _checkpoint(*POINTGMM_CHECKPOINT,
                                           what="PointGMM checkpoint (codec pointgmm).")
    encode_steps: int = setting(150, "neuralqaad: Adam steps optimising a new object's code "
                                "against the frozen network (about 15 ms each on 2 cores).",
                                low=1, high=5000)
    headings: int = setting(1, "neuralqaad: headings about z tried for an object whose pose is "
                            "unknown (the model knows the set's canonical pose); 1 = the input "
                            "is in it.", low=1, high=36)
    draco_quantization_bits: int = setting(11, "draco: bits per coordinate (position "
                                           "quantisation).", low=1, high=30)
    draco_compression_level: int = setting(7, "draco: 0 (fastest) to 10 (smallest).",
                                           low=0, high=10)
    max_points: int = setting(200000, "Larger clouds are randomly subsampled to this many "
                              "points before encoding.", low=16, high=10_000_000)
    seed: int = _seed()

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class DecompressionConfig:
    """The decompression stage: a CompressedCloud back to points."""

    output_points: int = setting(0, "Points of each decoded cloud; 0 = as many as the "
                                 "original had.", low=0, high=10_000_000)
    checkpoint: str = _checkpoint("neuralqaad", "neuralqaad_seating.pt",
                                  what="NeuralQAAD checkpoint: decodes messages whose model_id "
                                  "is this file's digest.")
    seed: int = _seed()

    def __post_init__(self):
        validate(self)


RELIABILITY_CHOICES = ("best_effort", "reliable")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class NodeConfig:
    """How a node runs: lifecycle, device, QoS, the hand-over queue, TF, health reporting."""

    autostart: bool = setting(True, "Walk the lifecycle to active at start-up (no lifecycle "
                              "manager needed); false waits for configure/activate requests.",
                              read_only=True)
    device: str = setting("auto", "Torch device for models: auto picks CUDA when present, cpu, "
                          "or cuda (falls back to the CPU with a warning).",
                          choices=DEVICE_CHOICES, read_only=True)
    input_reliability: str = setting("best_effort", "Reliability QoS of the input subscription "
                                     "(sensor data is best effort).",
                                     choices=RELIABILITY_CHOICES, read_only=True)
    input_depth: int = setting(1, "History depth of the input subscription.", low=1, high=100,
                               read_only=True)
    output_reliability: str = setting("reliable", "Reliability QoS of the outputs.",
                                      choices=RELIABILITY_CHOICES, read_only=True)
    output_depth: int = setting(5, "History depth of the outputs.", low=1, high=100,
                                read_only=True)
    queue_size: int = setting(1, "Frames waiting for the worker; when full the oldest is "
                              "dropped and counted (1 = always the newest). Object nodes keep "
                              "only each object's newest cloud (an older one is replaced in "
                              "its place and counted as dropped).", low=1, high=32,
                              read_only=True)
    target_frame: str = setting("", "Frame to transform input clouds into before processing, "
                                "through TF (empty keeps the input frame).", read_only=True)
    tf_timeout: float = setting(0.1, "Seconds to wait for the transform of an input stamp.",
                                low=0.0, high=5.0)
    diagnostics_period: float = setting(1.0, "Seconds between /diagnostics messages.",
                                        low=0.1, high=60.0, read_only=True)
    stall_timeout: float = setting(60.0, "Seconds one frame may keep the worker busy before the "
                                   "worker is reported stalled (ERROR) and replaced "
                                   "(0 disables the check).", low=0.0, high=3600.0)

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class RegistrationOutputConfig:
    """What registration_node publishes besides ~/result."""

    child_frame: str = setting("object", "TF child frame of the registered object "
                               "(<child_frame>_<id> for segmented objects).")
    publish_tf: bool = setting(True, "Broadcast the object's pose on /tf.")

    def __post_init__(self):
        validate(self)

    def check(self) -> None:
        if not self.child_frame.strip("/ "):
            raise ConfigError("child_frame must name a frame")


@dataclass(frozen=True)
class ClassificationOutputConfig:
    """What classification_node publishes besides ~/classification."""

    publish_mixture: bool = setting(False, "Publish GMCN's fitted input mixture on ~/mixture.")
    marker_height: float = setting(0.15, "Label marker above the object's top, metres.",
                                   low=0.0, high=10.0)

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class ShapeModelOutputConfig:
    """What shape_model_node draws on ~/markers."""

    marker_level: int = setting(-1, "Level drawn as ellipsoids on ~/markers: 0 (the roots) to the "
                                "model's depth; -1 = the finest.", low=-1, high=16)

    def __post_init__(self):
        validate(self)


# executable -> the configs its parameters come from, in declaration order. Object stages
# preprocess their input with the shared preprocessing stage first.
NODE_CONFIGS: dict[str, tuple[type, ...]] = {
    "preprocess_node": (NodeConfig, PreprocessConfig),
    "segmentation_node": (NodeConfig, PreprocessConfig, SegmentConfig),
    "registration_node": (NodeConfig, PreprocessConfig, RegistrationConfig,
                          RegistrationOutputConfig),
    "classification_node": (NodeConfig, PreprocessConfig, ClassifyConfig, ReuseConfig,
                            ClassificationOutputConfig),
    "shape_model_node": (NodeConfig, PreprocessConfig, ShapeModelConfig, ReuseConfig,
                         ShapeModelOutputConfig),
    "upsampling_node": (NodeConfig, PreprocessConfig, UpsampleConfig, ReuseConfig),
    "compression_node": (NodeConfig, CompressionConfig),
    "decompression_node": (NodeConfig, DecompressionConfig),
}


def declared_settings(config_classes: tuple[type, ...]) -> dict[str, dataclasses.Field]:
    """Parameter name -> its field, over the configs of one node. A name in several configs
    (`seed`) is one parameter feeding all of them, so it must mean the same in each."""
    merged: dict[str, dataclasses.Field] = {}
    for config_class in config_classes:
        for field in settings(config_class):
            known = merged.get(field.name)
            if known is not None and (known.default, dict(known.metadata)) != (
                    field.default, dict(field.metadata)):
                raise TypeError(f"parameter '{field.name}' is declared differently by two "
                                f"configs of one node ({config_class.__name__})")
            merged.setdefault(field.name, field)
    return merged


def default_values(executable: str) -> dict[str, Any]:
    """The declared defaults of one node's parameters."""
    return {name: field.default for name, field
            in declared_settings(NODE_CONFIGS[executable]).items()}


def node_configs(executable: str, values: Mapping[str, Any]) -> dict[type, Any]:
    """Every config of one node of the table from its parameter values (defaults for the
    missing ones), validated; ConfigError names the first refused value or rule, as the node
    would."""
    if executable not in NODE_CONFIGS:
        raise ConfigError(f"unknown node '{executable}' (known: {sorted(NODE_CONFIGS)})")
    return build_configs(NODE_CONFIGS[executable], values, executable)


def build_configs(classes: tuple[type, ...], values: Mapping[str, Any], owner: str
                  ) -> dict[type, Any]:
    """`classes` built from `values`, validated; keys no class declares are refused."""
    unknown = set(values) - set(declared_settings(classes)) - {"use_sim_time"}
    if unknown:
        raise ConfigError(f"{owner} declares no parameter(s) {sorted(unknown)}")
    return {config_class: from_values(config_class, values) for config_class in classes}
