"""GaussianMixture conversion round trips; ellipsoid markers follow the covariance axes."""
import numpy as np
import pytest
from std_msgs.msg import Header

from gmm_perception.geometry.transforms import quat_to_matrix, random_rotation
from gmm_perception.ros.mixture_msgs import (ELLIPSOID_SIGMAS, ellipsoid_markers, mixture_to_msg,
                                             msg_to_mixture)


def random_mixture(rng, k=5, d=3):
    A = rng.normal(size=(k, d, d))
    return rng.dirichlet(np.ones(k)), rng.normal(size=(k, d)), A @ A.transpose(0, 2, 1) + np.eye(d)


def test_round_trip_keeps_every_number():
    rng = np.random.default_rng(0)
    w, mu, cov = random_mixture(rng)
    msg = mixture_to_msg(w, mu, cov, Header(frame_id="map"), model_name="em", level=2,
                         parent_indices=np.arange(5) // 2)
    back = msg_to_mixture(msg)
    for a, b in zip(back, (w, mu, cov)):
        np.testing.assert_array_equal(a, b)
    assert msg.dimension == 3 and msg.level == 2 and list(msg.parent_indices) == [0, 0, 1, 1, 2]


def test_inconsistent_arrays_are_rejected():
    w, mu, cov = random_mixture(np.random.default_rng(1))
    with pytest.raises(ValueError, match="inconsistent"):
        mixture_to_msg(w[:3], mu, cov, Header(), model_name="x")


def test_ellipsoids_are_scaled_and_turned_to_the_covariance():
    rng = np.random.default_rng(2)
    R = random_rotation(rng)
    sigmas = np.array([0.5, 0.2, 0.1])
    cov = (R @ np.diag(sigmas ** 2) @ R.T)[None]
    markers = ellipsoid_markers(np.array([1.0]), np.array([[1.0, 2.0, 3.0]]), cov,
                                Header(frame_id="map")).markers
    assert markers[0].action == markers[0].DELETEALL and len(markers) == 2
    m = markers[1]
    q = m.pose.orientation
    axes = quat_to_matrix(np.array([q.x, q.y, q.z, q.w]))
    scale = np.array([m.scale.x, m.scale.y, m.scale.z]) / (2 * ELLIPSOID_SIGMAS)
    # The marker's box axes times its half extents reproduce the covariance.
    np.testing.assert_allclose(axes @ np.diag(scale ** 2) @ axes.T, cov[0], atol=1e-9)
    assert (m.pose.position.x, m.pose.position.y, m.pose.position.z) == (1.0, 2.0, 3.0)
