"""GaussianMixture messages <-> arrays, and rviz ellipsoids of a mixture (one place for both)."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from visualization_msgs.msg import Marker, MarkerArray

from gmm_perception.geometry.transforms import matrix_to_quat
from gmm_perception_msgs.msg import GaussianMixture

# An ellipsoid marker spans +-this many standard deviations along each axis.
ELLIPSOID_SIGMAS = 2.0


def mixture_to_msg(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, header, *,
                   model_name: str, level: int = 0,
                   parent_indices: np.ndarray | None = None) -> GaussianMixture:
    """(K,), (K, d), (K, d, d) arrays -> a GaussianMixture (flat, row-major)."""
    weights, means = np.asarray(weights, np.float64), np.asarray(means, np.float64)
    covariances = np.asarray(covariances, np.float64)
    count, dimension = means.shape
    if weights.shape != (count,) or covariances.shape != (count, dimension, dimension):
        raise ValueError(f"inconsistent mixture: weights {weights.shape}, means {means.shape}, "
                         f"covariances {covariances.shape}")
    msg = GaussianMixture(dimension=dimension, level=level, model_name=model_name)
    msg.header = header
    msg.weights = weights.tolist()
    msg.means = means.reshape(-1).tolist()
    msg.covariances = covariances.reshape(-1).tolist()
    if parent_indices is not None:
        msg.parent_indices = np.asarray(parent_indices, np.int32).tolist()
    return msg


def msg_to_mixture(msg: GaussianMixture) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = int(msg.dimension)
    weights = np.asarray(msg.weights, np.float64)
    means = np.asarray(msg.means, np.float64).reshape(-1, d)
    covariances = np.asarray(msg.covariances, np.float64).reshape(-1, d, d)
    if not len(weights) == len(means) == len(covariances):
        raise ValueError(f"GaussianMixture with {len(weights)} weights, {len(means)} means and "
                         f"{len(covariances)} covariances")
    return weights, means, covariances


def ellipsoid_markers(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, header,
                      namespace: str = "gmm") -> MarkerArray:
    """One SPHERE marker per 3-D component, scaled and turned to its covariance's axes
    (ELLIPSOID_SIGMAS standard deviations), opacity by weight; DELETEALL first."""
    markers = [Marker(action=Marker.DELETEALL)]
    markers[0].header = header
    values, vectors = np.linalg.eigh(np.asarray(covariances, np.float64))
    # eigh's columns are orthonormal; make each frame right-handed so it is a rotation.
    vectors[np.linalg.det(vectors) < 0, :, 0] *= -1
    # Every number is computed for all components at once and handed over as Python floats:
    # per-component numpy calls made 512 ellipsoids cost 0.23 s of interpreter time.
    quats = matrix_to_quat(vectors).reshape(-1, 4).tolist() if len(weights) else []
    extents = (2 * ELLIPSOID_SIGMAS * np.sqrt(np.clip(values, 1e-12, None))).tolist()
    top = float(np.max(weights)) if len(weights) else 1.0
    alphas = (0.2 + 0.7 * np.asarray(weights, np.float64) / top).tolist()
    positions = np.asarray(means, np.float64).tolist()
    for k, ((x, y, z), (qx, qy, qz, qw), (sx, sy, sz), alpha) in enumerate(
            zip(positions, quats, extents, alphas)):
        marker = Marker(ns=namespace, id=k, type=Marker.SPHERE, action=Marker.ADD)
        marker.header = header
        marker.pose.position = Point(x=x, y=y, z=z)
        marker.pose.orientation.x, marker.pose.orientation.y = qx, qy
        marker.pose.orientation.z, marker.pose.orientation.w = qz, qw
        marker.scale.x, marker.scale.y, marker.scale.z = sx, sy, sz
        marker.color.r, marker.color.g, marker.color.b = 0.2, 0.6, 1.0
        marker.color.a = alpha
        markers.append(marker)
    return MarkerArray(markers=markers)
