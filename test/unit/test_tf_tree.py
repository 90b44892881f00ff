"""TransformCache: tree walks, interpolation, history bounds and error reporting."""

import numpy as np
import pytest

from gmm_perception.geometry.tf_tree import (
    ConnectivityError,
    ExtrapolationError,
    TransformCache,
    TransformError,
    UnknownFrameError,
)
from gmm_perception.geometry.transforms import (
    compose,
    euler_to_matrix,
    invert_transform,
    make_transform,
    random_rotation,
    transform_points,
)

SECOND = 1_000_000_000


def transform(yaw: float = 0.0, t=(0.0, 0.0, 0.0), roll: float = 0.0) -> np.ndarray:
    return make_transform(euler_to_matrix(roll, 0.0, yaw), t)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def robot(rng):
    """map -> odom -> base -> sensor with odom->base dynamic at 1 s and 2 s, plus base -> wheel."""
    cache = TransformCache()
    T = {
        "map_odom": make_transform(random_rotation(rng), rng.uniform(-3, 3, 3)),
        "odom_base_1": transform(yaw=0.0, t=(1.0, 0.0, 0.0)),
        "odom_base_2": transform(yaw=np.pi / 2, t=(3.0, 2.0, 0.0)),
        "base_sensor": make_transform(random_rotation(rng), [0.2, 0.0, 0.5]),
        "base_wheel": transform(t=(0.0, 0.3, -0.1)),
    }
    cache.set_transform("map", "odom", T["map_odom"], 0)
    cache.set_transform("map", "odom", T["map_odom"], 3 * SECOND)
    cache.set_transform("odom", "base", T["odom_base_1"], 1 * SECOND)
    cache.set_transform("odom", "base", T["odom_base_2"], 2 * SECOND)
    cache.set_static_transform("base", "sensor", T["base_sensor"])
    cache.set_static_transform("base", "wheel", T["base_wheel"])
    return cache, T


def test_chain_lookup_matches_composition(robot):
    cache, T = robot
    expected = compose(T["map_odom"], T["odom_base_1"], T["base_sensor"])
    np.testing.assert_allclose(cache.lookup("map", "sensor", 1 * SECOND), expected, atol=1e-12)
    expected = compose(T["map_odom"], T["odom_base_2"], T["base_sensor"])
    np.testing.assert_allclose(cache.lookup("map", "sensor", 2 * SECOND), expected, atol=1e-12)


def test_lookup_maps_source_points_into_target(robot):
    cache, T = robot
    point_in_sensor = np.array([[1.0, 2.0, 3.0]])
    in_map = transform_points(cache.lookup("map", "sensor", 2 * SECOND), point_in_sensor)
    by_hand = (
        T["map_odom"] @ T["odom_base_2"] @ T["base_sensor"] @ np.append(point_in_sensor[0], 1.0)
    )
    np.testing.assert_allclose(in_map[0], by_hand[:3], atol=1e-12)


def test_inverse_direction(robot):
    cache, _ = robot
    forward = cache.lookup("map", "sensor", 2 * SECOND)
    np.testing.assert_allclose(
        cache.lookup("sensor", "map", 2 * SECOND), invert_transform(forward), atol=1e-12
    )
    np.testing.assert_allclose(cache.lookup("odom", "odom", 2 * SECOND), np.eye(4))


def test_siblings_through_common_ancestor(robot):
    cache, T = robot
    expected = invert_transform(T["base_wheel"]) @ T["base_sensor"]
    # Both are static children of base: any time works, and the links above base don't matter.
    np.testing.assert_allclose(cache.lookup("wheel", "sensor"), expected, atol=1e-12)
    np.testing.assert_allclose(cache.lookup("wheel", "sensor", 100 * SECOND), expected, atol=1e-12)


def test_interpolation_at_midpoint(robot):
    cache, _ = robot
    mid = cache.lookup("odom", "base", 1_500_000_000)
    np.testing.assert_allclose(mid[:3, 3], [2.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3], euler_to_matrix(0.0, 0.0, np.pi / 4), atol=1e-12)
    quarter = cache.lookup("odom", "base", 1_250_000_000)
    np.testing.assert_allclose(quarter[:3, :3], euler_to_matrix(0.0, 0.0, np.pi / 8), atol=1e-12)


def test_latest_common_time_is_oldest_newest_stamp(robot):
    cache, T = robot
    # map->odom reaches 3 s but odom->base only 2 s, so "latest" means 2 s.
    np.testing.assert_allclose(
        cache.lookup("map", "base"), compose(T["map_odom"], T["odom_base_2"]), atol=1e-12
    )
    # Same when the dynamic links lie on the target's side of the common ancestor.
    np.testing.assert_allclose(
        cache.lookup("base", "map"),
        invert_transform(compose(T["map_odom"], T["odom_base_2"])),
        atol=1e-12,
    )
    assert cache.can_transform("map", "sensor")


def test_extrapolation_into_future_and_past(robot):
    cache, _ = robot
    with pytest.raises(ExtrapolationError, match="future") as future:
        cache.lookup("odom", "base", 5 * SECOND)
    assert "'odom' -> 'base'" in str(future.value)
    assert "5.000000000 s" in str(future.value)
    assert "[1.000000000 s, 2.000000000 s]" in str(future.value)
    with pytest.raises(ExtrapolationError, match="past") as past:
        cache.lookup("map", "sensor", SECOND // 2)
    assert "0.500000000 s" in str(past.value)
    assert not cache.can_transform("odom", "base", 5 * SECOND)
    assert isinstance(future.value, TransformError) and isinstance(future.value, LookupError)


def test_small_overshoot_within_tolerance_holds_boundary_sample(robot):
    cache, T = robot
    just_after = 2 * SECOND + 5_000_000  # default tolerance is 10 ms
    np.testing.assert_allclose(
        cache.lookup("odom", "base", just_after), T["odom_base_2"], atol=1e-12
    )
    strict = TransformCache(extrapolation_tolerance_ns=0)
    strict.set_transform("odom", "base", T["odom_base_2"], 2 * SECOND)
    with pytest.raises(ExtrapolationError):
        strict.lookup("odom", "base", just_after)
    np.testing.assert_allclose(strict.lookup("odom", "base", 2 * SECOND), T["odom_base_2"])


def test_unknown_frame_names_frame_and_known_frames(robot):
    cache, _ = robot
    with pytest.raises(UnknownFrameError) as error:
        cache.lookup("map", "camera_link")
    message = str(error.value)
    assert "'camera_link'" in message
    for frame in ["base", "map", "odom", "sensor", "wheel"]:
        assert frame in message
    assert cache.frames == ["base", "map", "odom", "sensor", "wheel"]
    with pytest.raises(UnknownFrameError, match=r"\(none\)"):
        TransformCache().lookup("a", "b")


def test_disconnected_trees(robot):
    cache, _ = robot
    cache.set_static_transform("world", "table", transform(t=(1.0, 0.0, 0.0)))
    with pytest.raises(ConnectivityError) as error:
        cache.lookup("table", "sensor")
    assert "'map'" in str(error.value) and "'world'" in str(error.value)
    assert not cache.can_transform("table", "sensor")
    # Connecting the trees fixes it.
    cache.set_static_transform("world", "map", np.eye(4))
    assert cache.can_transform("table", "sensor")


def test_static_and_dynamic_mixing(robot):
    cache, T = robot
    # Static links answer at any time; only the dynamic odom->base bounds the valid times.
    assert cache.can_transform("base", "sensor", 1000 * SECOND)
    assert not cache.can_transform("odom", "sensor", 1000 * SECOND)
    # A static frame republished as dynamic (and back) takes the newest kind.
    cache.set_transform("base", "sensor", np.eye(4), 10 * SECOND)
    assert not cache.can_transform("base", "sensor", 1000 * SECOND)
    cache.set_static_transform("base", "sensor", T["base_sensor"])
    np.testing.assert_allclose(cache.lookup("base", "sensor", 1000 * SECOND), T["base_sensor"])


def test_history_is_bounded_by_cache_duration():
    cache = TransformCache(cache_duration_ns=2 * SECOND)
    for second in range(10):
        cache.set_transform("odom", "base", transform(t=(second, 0.0, 0.0)), second * SECOND)
    # Samples older than newest - duration (9 s - 2 s) are pruned.
    with pytest.raises(ExtrapolationError, match=r"\[7\.000000000 s, 9\.000000000 s\]"):
        cache.lookup("odom", "base", 6 * SECOND)
    np.testing.assert_allclose(cache.lookup("odom", "base", 7 * SECOND)[0, 3], 7.0)
    # A sample older than the window is dropped, one inside it is inserted in order.
    assert cache.set_transform("odom", "base", transform(t=(5.0, 0.0, 0.0)), 5 * SECOND) is False
    assert (
        cache.set_transform("odom", "base", transform(t=(100.0, 0.0, 0.0)), 7_500_000_000) is True
    )
    np.testing.assert_allclose(cache.lookup("odom", "base", 7_250_000_000)[0, 3], 53.5)


def test_default_cache_duration_is_ten_seconds():
    cache = TransformCache(extrapolation_tolerance_ns=0)
    cache.set_transform("odom", "base", np.eye(4), 1 * SECOND)
    cache.set_transform("odom", "base", np.eye(4), 11 * SECOND)
    assert cache.can_transform("odom", "base", 1 * SECOND)
    cache.set_transform("odom", "base", np.eye(4), 11 * SECOND + 1)
    assert not cache.can_transform("odom", "base", 1 * SECOND)


def test_out_of_order_and_duplicate_stamps():
    cache = TransformCache()
    cache.set_transform("odom", "base", transform(t=(2.0, 0.0, 0.0)), 2 * SECOND)
    cache.set_transform("odom", "base", transform(t=(0.0, 0.0, 0.0)), 0)
    cache.set_transform("odom", "base", transform(t=(4.0, 0.0, 0.0)), 2 * SECOND)  # replaces
    np.testing.assert_allclose(cache.lookup("odom", "base", SECOND)[0, 3], 2.0)


def test_reparenting_latest_parent_wins_without_interpolating_across():
    cache = TransformCache()
    cache.set_static_transform("world", "odom_a", transform(t=(10.0, 0.0, 0.0)))
    cache.set_static_transform("world", "odom_b", transform(t=(0.0, 10.0, 0.0)))
    cache.set_transform("odom_a", "base", transform(t=(1.0, 0.0, 0.0)), 1 * SECOND)
    cache.set_transform("odom_b", "base", transform(t=(2.0, 0.0, 0.0)), 2 * SECOND)
    np.testing.assert_allclose(cache.lookup("world", "base", 1 * SECOND)[:3, 3], [11.0, 0.0, 0.0])
    # Between the samples the old parent's sample holds: no blend of two different links.
    np.testing.assert_allclose(
        cache.lookup("world", "base", 1_500_000_000)[:3, 3], [11.0, 0.0, 0.0]
    )
    np.testing.assert_allclose(cache.lookup("world", "base", 2 * SECOND)[:3, 3], [2.0, 10.0, 0.0])
    np.testing.assert_allclose(cache.lookup("world", "base")[:3, 3], [2.0, 10.0, 0.0])
    # Same stamp, different parent: the later message wins.
    cache.set_transform("odom_a", "base", transform(t=(3.0, 0.0, 0.0)), 2 * SECOND)
    np.testing.assert_allclose(cache.lookup("world", "base", 2 * SECOND)[:3, 3], [13.0, 0.0, 0.0])
    assert "odom_b" in cache.frames


def test_reparenting_into_a_loop_is_reported():
    cache = TransformCache()
    cache.set_static_transform("a", "b", np.eye(4))
    cache.set_static_transform("b", "a", np.eye(4))
    cache.set_static_transform("c", "d", np.eye(4))
    with pytest.raises(TransformError, match="loop"):
        cache.lookup("a", "d")


@pytest.mark.parametrize(
    "parent, child, T, message",
    [
        ("", "base", np.eye(4), "non-empty"),
        ("base", "base", np.eye(4), "own parent"),
        ("odom", "base", np.eye(3), "shape"),
        ("odom", "base", np.full((4, 4), np.nan), "non-finite"),
    ],
)
def test_invalid_input_rejected(parent, child, T, message):
    with pytest.raises(ValueError, match=message):
        TransformCache().set_transform(parent, child, T, 0)


def test_stored_transform_is_copied():
    cache = TransformCache()
    T = transform(t=(1.0, 0.0, 0.0))
    cache.set_static_transform("a", "b", T)
    T[0, 3] = 99.0
    assert cache.lookup("a", "b")[0, 3] == 1.0
