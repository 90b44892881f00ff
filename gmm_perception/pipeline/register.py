"""Registration stage: DeepGMR's global estimate from any starting pose, optional ICP refinement.

Clouds are centred and scaled as in training (reference radius -> 1) before the network and the
transform is mapped back to metres afterwards, so callers work in their own units and frames.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from gmm_perception.geometry.transforms import make_transform
from gmm_perception.pipeline.preprocess import resample

ICP_MODES = ("none", "point_to_point", "point_to_plane")


@dataclass(frozen=True)
class Registration:
    """T maps source points into the reference frame: p_ref = R p_src + t."""

    transform: np.ndarray  # (4, 4)
    fitness: float  # fraction of aligned source points within inlier_threshold of the reference
    inlier_rmse: float
    chamfer: float  # symmetric, unsquared (metres)
    inlier_threshold: float
    seconds: float
    method: str


class DeepGmrRegistrar:
    """Registers clouds against one reference cloud (set_reference) with a trained DeepGMR."""

    def __init__(self, model: torch.nn.Module, device: torch.device, num_points: int = 1024,
                 icp: str = "none", icp_max_distance: float = 0.05,
                 inlier_threshold: float = 0.05, seed: int = 0):
        if icp not in ICP_MODES:
            raise ValueError(f"icp must be one of {ICP_MODES}, got '{icp}'")
        self.model, self.device = model.eval(), device
        self.num_points, self.icp = num_points, icp
        self.icp_max_distance, self.inlier_threshold = icp_max_distance, inlier_threshold
        self._rng = np.random.default_rng(seed)
        self.reference: np.ndarray | None = None

    def set_reference(self, points: np.ndarray) -> None:
        points = np.asarray(points, dtype=np.float64)
        if len(points) < 3:
            raise ValueError(f"a reference needs at least 3 points, got {len(points)}")
        self.reference = points
        self._reference_centre = points.mean(axis=0)
        # Training shapes fill the unit sphere: the reference's radius sets the scale of both.
        self._scale = float(np.linalg.norm(points - self._reference_centre, axis=1).max()) or 1.0
        self._reference_tree = cKDTree(points)
        self._reference_sample = self._normalise(resample(points, self.num_points, self._rng),
                                                 self._reference_centre)

    def _normalise(self, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
        return ((points - centre) / self._scale).astype(np.float32)

    @torch.no_grad()
    def register(self, source: np.ndarray) -> Registration:
        if self.reference is None:
            raise RuntimeError("no reference set")
        started = time.perf_counter()
        source = np.asarray(source, dtype=np.float64)
        source_centre = source.mean(axis=0)
        sample = self._normalise(resample(source, self.num_points, self._rng), source_centre)
        batch = torch.from_numpy(np.stack([sample, self._reference_sample])).to(self.device)
        T_unit = self.model(batch[:1], batch[1:]).transform[0].double().cpu().numpy()
        # Undo the normalisation: p_ref = R (p_src - c_src) + s t_unit + c_ref.
        R = T_unit[:3, :3]
        transform = make_transform(R, self._scale * T_unit[:3, 3] + self._reference_centre
                                   - R @ source_centre)
        method = "deepgmr"
        if self.icp != "none":
            transform = self._refine(source, transform)
            method += f"+icp_{self.icp}"
        aligned = source @ transform[:3, :3].T + transform[:3, 3]
        distances, _ = self._reference_tree.query(aligned, workers=-1)
        inliers = distances < self.inlier_threshold
        # Chamfer as in metrics.chamfer (sum of the two mean nearest distances), reusing the
        # aligned-to-reference half and the reference's tree instead of rebuilding both.
        reverse, _ = cKDTree(aligned).query(self.reference, workers=-1)
        return Registration(
            transform=transform, fitness=float(inliers.mean()),
            inlier_rmse=float(np.sqrt(np.mean(distances[inliers] ** 2))) if inliers.any() else 0.0,
            chamfer=float(distances.mean() + reverse.mean()),
            inlier_threshold=self.inlier_threshold, seconds=time.perf_counter() - started,
            method=method)

    def _refine(self, source: np.ndarray, initial: np.ndarray) -> np.ndarray:
        import open3d as o3d

        pipelines = o3d.pipelines.registration
        src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(source))
        ref = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.reference))
        if self.icp == "point_to_plane":
            ref.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(20))
            estimation = pipelines.TransformationEstimationPointToPlane()
        else:
            estimation = pipelines.TransformationEstimationPointToPoint()
        result = pipelines.registration_icp(src, ref, self.icp_max_distance, initial, estimation,
                                            pipelines.ICPConvergenceCriteria(max_iteration=50))
        return np.asarray(result.transformation)
