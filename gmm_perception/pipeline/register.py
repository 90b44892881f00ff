"""Registration stage: DeepGMR's global estimate from any starting pose, optional ICP refinement.

Clouds are centred and scaled as in training (reference radius -> 1) before the network and the
transform is mapped back to metres afterwards, so callers work in their own units and frames.

The registrar holds a library of one or more named reference models. Each reference's mixture is
computed once when it is added; a frame then costs one batched network pass over the source (one
row per reference, because each reference fixes the scale) and a closed-form alignment per
reference. With several references the best alignment by fitness wins (model library mode).

Every hypothesis is scored by fit (fitness, then inlier RMSE). Fitness alone says only that the
object's points lie on the model, so a large model that contains a partial view (a sofa for an
armchair seen from one side) wins it. Given the sensor's position (`viewpoint`), a hypothesis is
also scored by what the scan does *not* show: the share of the model's surface that would face
the sensor in that pose (hidden-point removal) with an observed point near it (`coverage`: a
model part where the sensor saw past the object is unexplained), and hypotheses rank by the
harmonic mean of fitness and coverage (`agreement`). "Near" grows with range (the angle
COVERAGE_ANGLE_DEG, at least inlier_threshold), as a sensor's sampling does. With an upright
axis, model points below the object's lowest observed point are left out: the segmentation
removed that band with the floor, so no model could be seen there. With a viewpoint the
best hypothesis of each of the `REFINED_REFERENCES` best-fitting references is refined, so every
plausible model gets its ICP before the models are compared. When the best fitness after ICP is
below `fallback_fitness` (and `fallback` is on), the classical path also runs: FPFH + RANSAC
(Open3D) + the same ICP, on the `fallback_references` best-fitting references, and the better fit
wins. Each reference's FPFH features are computed once when it is added, at a voxel of
`fallback_voxel` times its radius. The result's `method` names the winning path and `fallback`
says whether the fallback ran and whether it won; the registrar counts both.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import open3d as o3d
import torch
from scipy.spatial import cKDTree

from gmm_perception.data.formats import MESH_EXTENSIONS, POINT_EXTENSIONS, load_cloud
from gmm_perception.geometry.points import resample
from gmm_perception.geometry.transforms import invert_transform, make_transform
from gmm_perception.gmm.registration import IsotropicGmm, align_mixtures
from gmm_perception.config import ConfigError
from gmm_perception.pipeline.configs import RegistrationConfig

# A cluster wider than its model by more than this factor cannot be that model (noise margin).
MAX_SIZE_RATIO = 1.3
# ICP and the fit statistics use at most this many source points: a random subset this large
# changes them by well under the sensor noise and keeps a 100k-point cloud inside a frame budget.
MAX_REFINE_POINTS = 1024
ICP_COARSE_FACTOR = 4.0  # first ICP pass: this times icp_max_distance
DUPLICATE_DEG = 5.0  # hypotheses closer than this (and than icp_max_distance) are refined once
# Hypotheses (over references and directions) that ICP refines, best pre-ICP fit first.
REFINED_HYPOTHESES = 2
# With a viewpoint, also the best hypothesis of each reference up to this many references.
REFINED_REFERENCES = 3
COVERAGE_POINTS = 1024  # model points the coverage is measured on (a fixed subset)
# A model point is explained by an observed point within max(inlier_threshold, its range x
# tan(this angle)): at least the ring spacing of a 16-channel LiDAR (2 degrees: 1 from a ring),
# far less than a missing part a few metres away (0.5 m at 5 m: 5.7 degrees).
COVERAGE_ANGLE_DEG = 2.0
FALLBACK_METHOD = "fallback_fpfh_ransac_icp"
RANSAC_CONFIDENCE = 0.999
# `Registration.fallback`: the fallback was off, not needed (the network fit well), ran and lost
# to the network, ran and won.
FALLBACK_STATES = ("off", "not_needed", "lost", "won")


@dataclass(frozen=True)
class Registration:
    """T maps source points into the reference frame: p_ref = R p_src + t."""

    transform: np.ndarray  # (4, 4)
    fitness: float  # fraction of aligned source points within inlier_threshold of the reference
    inlier_rmse: float
    chamfer: float  # symmetric, unsquared (metres)
    inlier_threshold: float
    seconds: float
    method: str  # the winning path: "deepgmr", "deepgmr+icp_<mode>" or FALLBACK_METHOD
    reference_name: str = ""
    fallback: str = "off"  # one of FALLBACK_STATES
    # "registered" (the global estimate) or "tracked" (ICP from the object's previous pose,
    # pipeline.track), and the seconds since the track's first global registration.
    mode: str = "registered"
    track_age: float = 0.0
    # Share of the model surface facing the sensor that the object's points show (nan: no
    # viewpoint was given), and the fit the hypotheses were ranked by (module docstring).
    coverage: float = float("nan")

    @property
    def agreement(self) -> float:
        return agreement(self.fitness, self.coverage)

    @property
    def rank(self) -> tuple[float, float]:
        return rank_fit((self.agreement, self.inlier_rmse))

    @property
    def fallback_ran(self) -> bool:
        return self.fallback in ("lost", "won")

    @property
    def fallback_won(self) -> bool:
        return self.fallback == "won"

    @property
    def T_cloud_object(self) -> np.ndarray:
        """The pose of the reference model's frame in the source cloud's frame (what TF and
        the evaluators report): the inverse of `transform`."""
        return invert_transform(self.transform)


class Fit(NamedTuple):
    """A hypothesis's score: ranked by agreement, then lower inlier RMSE (`rank_fit`)."""

    agreement: float
    inlier_rmse: float
    distances: np.ndarray  # each source point's nearest reference distance
    fitness: float
    coverage: float


@dataclass(frozen=True)
class Reference:
    name: str
    points: np.ndarray  # (M, 3) float64, metres, the model's own frame
    centre: np.ndarray
    scale: float  # radius about the centre: training shapes fill the unit sphere
    tree: cKDTree
    gmm: IsotropicGmm  # batch of one, in normalised coordinates
    cloud: "o3d.geometry.PointCloud"  # with normals, for ICP (built once)
    features: "FpfhFeatures | None" = None  # for the fallback (built once when it is on)
    # COVERAGE_POINTS of the model, for hidden-point removal (built once).
    coverage_cloud: "o3d.geometry.PointCloud | None" = None


@dataclass(frozen=True)
class View:
    """Where the sensor was, in the source's frame, and every observed point (not only the
    subset ICP uses) in a tree."""

    viewpoint: np.ndarray  # (3,)
    tree: cKDTree
    up: np.ndarray | None = None  # the upright axis, and the lowest observed height along it
    floor: float = -np.inf

    @classmethod
    def of(cls, source: np.ndarray, viewpoint: np.ndarray | None,
           up: np.ndarray | None = None) -> "View | None":
        if viewpoint is None:
            return None
        viewpoint = np.asarray(viewpoint, dtype=np.float64).reshape(3)
        if not np.isfinite(viewpoint).all():
            return None
        floor = float((source @ up).min()) if up is not None else -np.inf
        return cls(viewpoint, cKDTree(source), up, floor)


@dataclass(frozen=True)
class FpfhFeatures:
    """A cloud voxel-downsampled at `voxel` metres, with normals and FPFH features."""

    voxel: float
    cloud: "o3d.geometry.PointCloud"
    fpfh: "o3d.pipelines.registration.Feature"


class DeepGmrRegistrar:
    """Registers clouds against a library of reference clouds with a trained DeepGMR."""

    def __init__(self, config: RegistrationConfig, model: torch.nn.Module,
                 device: torch.device):
        self.config = config
        self.model, self.device = model.eval(), device
        self.num_points = config.registration_points
        # Objects standing on a floor: the source's and the models' `up` agree, so only turns
        # about it are possible (None: unrestricted rotations, the DeepGMR setting).
        self.upright_axis = config.unit_upright_axis
        self._rng = np.random.default_rng(config.seed)
        self.references: list[Reference] = []
        # Frames on which the fallback ran, and on which its fit beat the network's.
        self.fallback_runs = 0
        self.fallback_wins = 0

    def with_config(self, config: RegistrationConfig) -> "DeepGmrRegistrar":
        """A new registrar of `config` around the same model and references (the references'
        mixtures stay valid: the network's point count is read-only)."""
        if config.registration_points != self.num_points or config.checkpoint != \
                self.config.checkpoint:
            raise ValueError("registration_points and checkpoint need a new registrar")
        registrar = DeepGmrRegistrar(config, self.model, self.device)
        registrar.references = [registrar._with_features(ref) for ref in self.references]
        registrar.fallback_runs, registrar.fallback_wins = self.fallback_runs, self.fallback_wins
        return registrar

    @property
    def reference(self) -> np.ndarray | None:
        """The points of the only (or first) reference; None before one is set."""
        return self.references[0].points if self.references else None

    def set_reference(self, points: np.ndarray, name: str = "reference") -> None:
        """Replace the library with one reference (the old library stays if this one fails)."""
        self.references = [self._reference(points, name)]

    def add_reference(self, points: np.ndarray, name: str) -> None:
        self.references.append(self._reference(points, name))

    @torch.no_grad()
    def _reference(self, points: np.ndarray, name: str) -> Reference:
        """A reference with its mixture (one network pass) and its normals, for ICP."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 3:
            raise ValueError(f"reference '{name}' needs at least 3 points (N, 3), "
                             f"got shape {points.shape}")
        centre = points.mean(axis=0)
        scale = float(np.linalg.norm(points - centre, axis=1).max()) or 1.0
        sample = _normalise(resample(points, self.num_points, self._rng), centre, scale)
        gmm = self.model.mixture(torch.from_numpy(sample[None]).to(self.device))
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(20))
        subset = points if len(points) <= COVERAGE_POINTS else points[
            np.random.default_rng(0).choice(len(points), COVERAGE_POINTS, replace=False)]
        coverage_cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(subset))
        return self._with_features(Reference(name, points, centre, scale, cKDTree(points), gmm,
                                             cloud, coverage_cloud=coverage_cloud))

    def _with_features(self, ref: Reference) -> Reference:
        """`ref` with FPFH features at this config's voxel when the fallback is on (kept when
        they already are at that voxel)."""
        if not self.config.fallback:
            return ref
        voxel = self.config.fallback_voxel * ref.scale
        if ref.features is not None and ref.features.voxel == voxel:
            return ref
        return replace(ref, features=_fpfh_features(ref.points, voxel))

    @torch.no_grad()
    def register(self, source: np.ndarray, viewpoint: np.ndarray | None = None
                 ) -> Registration:
        """The best registration of `source` over the library (by fitness, or with the sensor's
        `viewpoint` in the source's frame by agreement; then inlier RMSE)."""
        if not self.references:
            raise RuntimeError("no reference set")
        started = time.perf_counter()
        source = np.asarray(source, dtype=np.float64)
        view = View.of(source, viewpoint, self.upright_axis)
        rng = self._rng_for(source)
        centre = source.mean(axis=0)
        radius = float(np.linalg.norm(source - centre, axis=1).max())
        candidates = [ref for ref in self.references if radius <= MAX_SIZE_RATIO * ref.scale]
        if not candidates:  # larger than every model: still report the least bad one
            candidates = [max(self.references, key=lambda ref: ref.scale)]
        sample = resample(source, self.num_points, rng)
        batch = np.stack([_normalise(sample, centre, ref.scale) for ref in candidates])
        source_gmm = self.model.mixture(torch.from_numpy(batch).to(self.device))
        reference_gmm = IsotropicGmm(*(torch.cat([getattr(ref.gmm, field) for ref in candidates])
                                       for field in ("weights", "means", "variances")))
        # Two hypotheses per reference: T (source -> reference) and the inverse of T_hat
        # (reference -> source), which DeepGMR estimates independently; near-symmetric shapes
        # often get one of them right.
        forward = align_mixtures(source_gmm, reference_gmm)
        backward = torch.linalg.inv(align_mixtures(reference_gmm, source_gmm))
        T_unit = torch.stack([forward, backward], dim=1).double().cpu().numpy()  # (R, 2, 4, 4)
        if len(source) > MAX_REFINE_POINTS:
            source = source[rng.choice(len(source), MAX_REFINE_POINTS, replace=False)]
        hypotheses = [(ref, _metric_transform(T, ref, centre))
                      for ref, pair in zip(candidates, T_unit)
                      for T in pair[:self.config.hypotheses]]
        if self.upright_axis is not None:
            hypotheses = [(ref, U) for ref, T in hypotheses
                          for U in _upright_variants(T, self.upright_axis, centre)]
        unrefined = hypotheses
        if self.config.icp != "none":
            # ICP is the expensive part: refine only the hypotheses that already fit best.
            unrefined = sorted(hypotheses, key=lambda h: -self._fitness(
                source, h[0], h[1], self.config.icp_max_distance))
            picked = self._distinct(unrefined)[:REFINED_HYPOTHESES]
            if view is not None:
                picked += _best_per_reference(unrefined, picked, REFINED_REFERENCES)
            hypotheses = [(ref, self._refine(source, ref.cloud, T)) for ref, T in picked]
        scores = [self._fit(source, ref, T, view) for ref, T in hypotheses]
        best = max(range(len(scores)), key=lambda i: rank_fit(scores[i]))
        method = "deepgmr" if self.config.icp == "none" else f"deepgmr+icp_{self.config.icp}"
        fallback = "off"
        if self.config.fallback:
            fallback = "not_needed"
            if scores[best].fitness < self.config.fallback_fitness:
                # References by fit: the scored (refined) hypotheses best first, then the
                # rest in their pre-ICP order; the fallback tries the first few.
                order = sorted(range(len(scores)), key=lambda i: rank_fit(scores[i]), reverse=True)
                ranked = [hypotheses[i][0] for i in order] + [ref for ref, _ in unrefined]
                tried = list({id(ref): ref for ref in ranked}.values())
                tried = tried[:self.config.fallback_references]
                self.fallback_runs += 1
                fallback = "lost"
                scans: dict[float, FpfhFeatures] = {}  # the source's features per voxel
                for ref in tried:
                    transform = self._fallback(source, ref, scans, rng)
                    score = self._fit(source, ref, transform, view)
                    if rank_fit(score) > rank_fit(scores[best]):
                        hypotheses.append((ref, transform))
                        scores.append(score)
                        best, fallback, method = len(scores) - 1, "won", FALLBACK_METHOD
                if fallback == "won":
                    self.fallback_wins += 1
        (ref, transform), score = hypotheses[best], scores[best]
        return self._result(source, ref, transform, score, started, method, fallback)

    def refine(self, source: np.ndarray, reference_name: str, initial: np.ndarray,
               max_points: int, viewpoint: np.ndarray | None = None) -> Registration:
        """ICP from `initial` (source -> reference) on at most `max_points` source points, against
        the reference named `reference_name`, scored like `register`: what tracking costs."""
        started = time.perf_counter()
        ref = next((ref for ref in self.references if ref.name == reference_name), None)
        if ref is None:
            raise KeyError(f"no reference named '{reference_name}'")
        source = np.asarray(source, dtype=np.float64)
        view = View.of(source, viewpoint, self.upright_axis)
        if len(source) > max_points:
            source = source[self._rng_for(source).choice(len(source), max_points, replace=False)]
        icp = self.config.icp if self.config.icp != "none" else "point_to_point"
        transform = self._refine(source, ref.cloud, initial, icp=icp)
        return self._result(source, ref, transform, self._fit(source, ref, transform, view),
                            started, f"track+icp_{icp}", "not_needed" if self.config.fallback else "off")

    def _result(self, source: np.ndarray, ref: Reference, transform: np.ndarray, score: Fit,
                started: float, method: str, fallback: str) -> Registration:
        # Chamfer as in metrics.chamfer (sum of the two mean nearest distances), for the winner
        # only, reusing its aligned-to-reference half and the reference's tree.
        aligned = source @ transform[:3, :3].T + transform[:3, 3]
        reverse, _ = cKDTree(aligned).query(ref.points)
        return Registration(
            transform=transform, fitness=score.fitness, inlier_rmse=score.inlier_rmse,
            chamfer=float(score.distances.mean() + reverse.mean()),
            inlier_threshold=self.config.inlier_threshold,
            seconds=time.perf_counter() - started, method=method, reference_name=ref.name,
            fallback=fallback, coverage=score.coverage)

    def _rng_for(self, source: np.ndarray) -> np.random.Generator:
        """The random draws of one object's registration, from the seed and the cloud itself:
        the same cloud gets the same answer whatever was registered before it (a node and the
        offline evaluator see other objects, or other fragments, in between)."""
        return np.random.default_rng([self.config.seed, zlib.crc32(source.tobytes())])

    def _fallback(self, source: np.ndarray, ref: Reference, scans: dict[float, FpfhFeatures],
                  rng: np.random.Generator) -> np.ndarray:
        """FPFH + RANSAC (as bench/registration.py's ransac_icp, at the reference's voxel), then
        this stage's ICP (point-to-point when the stage's ICP is off)."""
        pipelines = o3d.pipelines.registration
        features = ref.features if ref.features is not None else self._with_features(ref).features
        voxel = features.voxel
        scan = scans.get(voxel) or scans.setdefault(voxel, _fpfh_features(source, voxel))
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            # Open3D's RANSAC draws from its own generator: seed it for repeatable frames.
            o3d.utility.random.seed(int(rng.integers(2**31 - 1)))
            result = pipelines.registration_ransac_based_on_feature_matching(
                scan.cloud, features.cloud, scan.fpfh, features.fpfh, True, 1.5 * voxel,
                pipelines.TransformationEstimationPointToPoint(False), 3,
                [pipelines.CorrespondenceCheckerBasedOnEdgeLength(0.9),
                 pipelines.CorrespondenceCheckerBasedOnDistance(1.5 * voxel)],
                pipelines.RANSACConvergenceCriteria(self.config.fallback_iterations,
                                                    RANSAC_CONFIDENCE))
        return self._refine(source, ref.cloud, np.asarray(result.transformation),
                            icp=self.config.icp if self.config.icp != "none" else
                            "point_to_point")

    def _distinct(self, hypotheses: list) -> list:
        """Hypotheses in order, without near-duplicates of earlier ones (same reference, within
        DUPLICATE_DEG and icp_max_distance): ICP would refine both to the same pose."""
        kept = []
        for ref, T in hypotheses:
            if not any(ref is other and _close(T, U, DUPLICATE_DEG, self.config.icp_max_distance)
                       for other, U in kept):
                kept.append((ref, T))
        return kept

    @staticmethod
    def _fitness(source: np.ndarray, ref: Reference, transform: np.ndarray,
                 threshold: float) -> float:
        aligned = source @ transform[:3, :3].T + transform[:3, 3]
        return float((ref.tree.query(aligned, distance_upper_bound=threshold)[0] < threshold)
                     .mean())

    def _fit(self, source: np.ndarray, ref: Reference, transform: np.ndarray,
             view: View | None = None) -> "Fit":
        """How the source aligned by `transform` fits `ref` (rank_fit orders by the first two
        fields). Without a view the coverage is nan and the agreement is the fitness."""
        aligned = source @ transform[:3, :3].T + transform[:3, 3]
        distances, _ = ref.tree.query(aligned)
        inliers = distances < self.config.inlier_threshold
        rmse = float(np.sqrt(np.mean(distances[inliers] ** 2))) if inliers.any() else 0.0
        fitness = float(inliers.mean())
        coverage = float("nan") if view is None else self._coverage(view, ref, transform)
        return Fit(agreement(fitness, coverage), rmse, distances, fitness, coverage)

    def _coverage(self, view: View, ref: Reference, transform: np.ndarray) -> float:
        """Share of the model points facing the sensor (hidden-point removal from the viewpoint,
        in the model's frame) with an observed point near them (COVERAGE_ANGLE_DEG)."""
        R, t = transform[:3, :3], transform[:3, 3]
        eye = R @ view.viewpoint + t
        cloud = ref.coverage_cloud
        model = np.asarray(cloud.points)
        reach = float(np.linalg.norm(model - eye, axis=1).max())
        if reach <= 0:
            return float("nan")
        _, visible = cloud.hidden_point_removal(eye, 100.0 * reach)
        if len(visible) == 0:
            return float("nan")
        seen = (model[np.asarray(visible)] - t) @ R  # back into the source frame
        if view.up is not None:
            seen = seen[seen @ view.up >= view.floor]
            if len(seen) == 0:
                return float("nan")
        reach = np.maximum(self.config.inlier_threshold, np.linalg.norm(
            seen - view.viewpoint, axis=1) * np.tan(np.radians(COVERAGE_ANGLE_DEG)))
        near, _ = view.tree.query(seen, distance_upper_bound=float(reach.max()))
        return float((near < reach).mean())

    def _refine(self, source: np.ndarray, reference: "o3d.geometry.PointCloud",
                initial: np.ndarray, icp: str | None = None) -> np.ndarray:
        pipelines = o3d.pipelines.registration
        src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(source))
        estimation = (pipelines.TransformationEstimationPointToPlane()
                      if (icp or self.config.icp) == "point_to_plane"
                      else pipelines.TransformationEstimationPointToPoint())
        # Coarse to fine: a wide correspondence radius first pulls in a global estimate that is
        # tens of degrees off (common on partial views), the fine one then polishes.
        transform = initial
        fine = self.config.icp_max_distance
        for radius in (ICP_COARSE_FACTOR * fine, fine):
            transform = pipelines.registration_icp(
                src, reference, radius, transform, estimation,
                pipelines.ICPConvergenceCriteria(max_iteration=30)).transformation
        return np.asarray(transform)


def agreement(fitness: float, coverage: float) -> float:
    """Harmonic mean of fitness and coverage (the fitness alone when coverage is unknown)."""
    if not np.isfinite(coverage):
        return fitness
    total = fitness + coverage
    return 0.0 if total <= 0 else 2.0 * fitness * coverage / total


def _best_per_reference(ranked: list, picked: list, references: int) -> list:
    """The best of `ranked` (best first) for each reference not yet in `picked`, until
    `references` references are covered."""
    covered = {id(ref) for ref, _ in picked}
    extra = []
    for ref, T in ranked:
        if len(covered) >= references:
            break
        if id(ref) not in covered:
            covered.add(id(ref))
            extra.append((ref, T))
    return extra


def rank_fit(score: tuple) -> tuple[float, float]:
    """Fits compare by fitness (agreement, with a viewpoint), then by lower inlier RMSE."""
    return score[0], -score[1]


def _fpfh_features(points: np.ndarray, voxel: float) -> FpfhFeatures:
    """Voxel-downsampled at `voxel` (so a dense model and a sparse scan match in density), normals
    within 2 voxels and FPFH within 5, as in Open3D's global registration tutorial."""
    search = o3d.geometry.KDTreeSearchParamHybrid
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points)).voxel_down_sample(voxel)
    cloud.estimate_normals(search(radius=2 * voxel, max_nn=30))
    fpfh = o3d.pipelines.registration.compute_fpfh_feature(cloud, search(radius=5 * voxel,
                                                                         max_nn=100))
    return FpfhFeatures(voxel, cloud, fpfh)


def _metric_transform(T_unit: np.ndarray, ref: Reference, source_centre: np.ndarray) -> np.ndarray:
    """Undo the normalisation: p_ref = R (p_src - c_src) + s t_unit + c_ref."""
    R = T_unit[:3, :3]
    return make_transform(R, ref.scale * T_unit[:3, 3] + ref.centre - R @ source_centre)


def _close(A: np.ndarray, B: np.ndarray, degrees: float, distance: float) -> bool:
    cos = np.clip((np.trace(A[:3, :3].T @ B[:3, :3]) - 1) / 2, -1.0, 1.0)
    return bool(np.degrees(np.arccos(cos)) < degrees
                and np.linalg.norm(A[:3, 3] - B[:3, 3]) < distance)


def _upright_variants(T: np.ndarray, axis: np.ndarray, source_centre: np.ndarray
                      ) -> list[np.ndarray]:
    """T's rotation projected onto the nearest turn about `axis` (the source centroid keeps its
    image), and that turn plus 90, 180 and 270 degrees: the front/back and side confusions of a
    global estimate on a partial view are cheap to test by fit before ICP."""
    R = T[:3, :3]
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    along = axis @ R @ axis
    angle = np.arctan2(axis @ w, np.trace(R) - along)
    target = R @ source_centre + T[:3, 3]
    variants = []
    for offset in (0.0, 0.5 * np.pi, np.pi, 1.5 * np.pi):
        turn = _rotation_about(axis, angle + offset)
        variants.append(make_transform(turn, target - turn @ source_centre))
    return variants


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: the rotation by `angle` about the unit vector `axis`."""
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * np.outer(axis,
                                                                                             axis)


def _normalise(points: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    return ((points - centre) / scale).astype(np.float32)


def load_library(directory: str | Path, num_points: int = 4096) -> dict[str, np.ndarray]:
    """Every model file of `directory` (meshes are sampled, point files resampled to
    `num_points`), keyed by file stem, in name order."""
    directory = Path(directory)
    extensions = MESH_EXTENSIONS + POINT_EXTENSIONS
    files = sorted(path for path in directory.glob("*") if path.suffix.lower() in extensions) \
        if directory.is_dir() else []
    if not files:
        raise FileNotFoundError(f"library '{directory}' holds no model files "
                                f"({', '.join(extensions)})")
    return {path.stem: load_cloud(path, num_points=num_points) for path in files}


def configured_references(config: RegistrationConfig) -> dict[str, np.ndarray]:
    """The references a 'file' or 'library' config names (name -> points); {} for the modes
    whose references arrive with the data ('topic', 'previous'). Raises ConfigError for an
    unset path and FileNotFoundError/ValueError for files that cannot be read."""
    if config.reference_mode == "file":
        if not config.reference_file:
            raise ConfigError("reference_file is unset: reference_mode 'file' needs a model file")
        name = config.reference_name or Path(config.reference_file).stem
        return {name: load_cloud(config.reference_file, num_points=4096)}
    if config.reference_mode == "library":
        if not config.library_dir:
            raise ConfigError("library_dir is unset: reference_mode 'library' needs a directory")
        return load_library(config.library_dir)
    return {}
