"""The demo bag's presets: `robot` (a robot's 10 Hz LiDAR driving past 5 objects, one carried in
and one out, a sixth 10-15 m away, visibility in the truth) and `orbit` (the first demo's bag,
unchanged)."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from gmm_perception.cli import build_parser, main
from gmm_perception.data.procedural import procedural_meshes
from gmm_perception.evaluation.bag import DEMO_PRESETS, NS_PER_S, VISIBLE_MIN_POINTS, \
    demo_sensor, make_demo, read_bag, write_demo_bag
from gmm_perception.evaluation.offline import truth_objects
from gmm_perception.evaluation.scene import Orbit, build_demo_scene, scan_frames, sensor_poses


@pytest.fixture(scope="module")
def meshes():
    return procedural_meshes(5, seed=0)


@pytest.fixture(scope="module")
def robot(meshes, tmp_path_factory):
    """The robot preset at its defaults (100 OS1-64 frames, a few seconds)."""
    demo = make_demo(tmp_path_factory.mktemp("robot"), meshes)
    return demo, read_bag(demo.bag.path)


def test_robot_preset_is_five_objects_and_a_far_one_at_10_hz_played_at_1x(robot):
    demo, contents = robot
    assert demo.preset == "robot" and DEMO_PRESETS["robot"].playback_rate == 1.0
    assert contents.warnings == []
    assert len(demo.scene.objects) == 6 and len(contents.truth_poses()) == 6
    stamps = np.array([cloud.stamp_ns for cloud in contents.clouds])
    assert len(stamps) == 100
    assert np.all(np.diff(stamps) == NS_PER_S // 10)  # 0.1 s apart
    assert contents.scene["rate_hz"] == 10.0


def test_robot_sensor_drives_past_changing_its_distance(robot):
    _, contents = robot
    eyes = np.array([t.T_parent_child[:3, 3] for t in contents.transforms])
    assert len(eyes) == 100
    distance = np.linalg.norm(eyes[:, :2], axis=1)  # the objects stand round the origin
    assert distance.max() - distance.min() > 1.5  # 6 m -> 4 m -> 6 m, not one radius
    assert contents.scene["path"]["kind"] == "drive"
    # Level LiDAR facing the way it drives.
    z_axes = np.array([t.T_parent_child[:3, 2] for t in contents.transforms])
    np.testing.assert_allclose(z_axes, np.tile([0.0, 0.0, 1.0], (100, 1)), atol=1e-9)


def test_robot_truth_records_objects_entering_and_leaving_view(robot):
    demo, contents = robot
    visibility = contents.scene["visibility"]
    assert visibility["min_points"] == VISIBLE_MIN_POINTS
    assert visibility["stamps_ns"] == [cloud.stamp_ns for cloud in contents.clouds]
    visible = {name: np.array(points) >= VISIBLE_MIN_POINTS
               for name, points in visibility["points"].items()}
    assert set(visible) == {obj.name for obj in demo.scene.objects}
    steps = {name: np.diff(v.astype(int)) for name, v in visible.items()}
    assert any((s == 1).any() for s in steps.values())  # someone enters the view ...
    assert any((s == -1).any() for s in steps.values())  # ... and someone leaves it
    # One object carried in, one out: not a single return while away, seen while there.
    carried = {obj.name: obj.present for obj in demo.scene.objects if obj.present is not None}
    assert sorted(carried.values()) == [(0, 70), (30, 100)]
    for name, (first, end) in carried.items():
        points = np.array(visibility["points"][name])
        away = np.ones(100, dtype=bool)
        away[first:end] = False
        assert np.all(points[away] == 0) and visible[name][~away].any(), name
    # The evaluator's truth carries the same visibility, by stamp.
    library = {obj.name: np.asarray(obj.mesh.vertices) for obj in demo.scene.objects}
    warnings: list[str] = []
    truth = {t.name: t for t in truth_objects(contents, "world", library, warnings)}
    assert warnings == []
    stamps = np.array(visibility["stamps_ns"])
    for name, v in visible.items():
        assert truth[name].visible_ns == frozenset(stamps[v].tolist())


def test_the_far_object_stays_10_to_15_m_from_the_robot_and_is_seen_sparsely(robot):
    demo, contents = robot
    far = demo.scene.objects[-1]
    assert far.present is None  # never carried
    eyes = np.array([t.T_parent_child[:3, 3] for t in contents.transforms])
    distance = np.linalg.norm(eyes[:, :2] - far.T_world_object[:2, 3], axis=1)
    assert 9.9 <= distance.min() and distance.max() <= 15.3
    # The LiDAR sees it: a few rings, far fewer returns than an arena object gets.
    returns = np.array(contents.scene["visibility"]["points"][far.name])
    near = max(np.median(contents.scene["visibility"]["points"][obj.name])
               for obj in demo.scene.objects[:-1])
    assert (returns > 0).mean() > 0.9 and 0 < np.median(returns) < near


def test_a_malformed_visibility_record_is_a_warning(robot):
    _, contents = robot
    good = contents.scene["visibility"]
    try:
        contents.scene["visibility"] = {**good, "stamps_ns": good["stamps_ns"][:-1]}
        warnings: list[str] = []
        assert contents.truth_visibility(warnings) is None
        assert "malformed" in warnings[0]
    finally:
        contents.scene["visibility"] = good


def test_orbit_preset_is_the_first_demo(meshes, tmp_path):
    preset = DEMO_PRESETS["orbit"]
    assert (preset.frames, preset.objects, preset.rate_hz, preset.playback_rate,
            preset.arena_radius, preset.trajectory, preset.carry, preset.visibility) == \
        (30, 3, 5.0, 0.25, 2.5, "orbit", False, False)
    demo = make_demo(tmp_path / "preset", meshes, preset="orbit", frames=3, seed=4)
    # The first demo's road, written out: scene, orbit, scans, bag without visibility.
    lidar, frame_id, model = demo_sensor("lidar")
    scene = build_demo_scene(meshes, np.random.default_rng(4), num_objects=3)
    assert scene.orbit.radius == Orbit().radius and scene.arena_radius == 2.5
    write_demo_bag(tmp_path / "old", scene, scan_frames(
        scene, lidar, sensor_poses(3, lidar, scene.orbit), np.random.default_rng([4, 1])),
        sensor_frame=frame_id, rate_hz=5.0,
        sensor_info={"kind": "lidar", "model": model, **asdict(lidar)}, visibility=False)

    def messages(path):
        with Reader(path) as reader:
            return [(c.topic, t, bytes(d)) for c, t, d in reader.messages()]

    assert messages(demo.bag.path) == messages(tmp_path / "old")
    new, old = read_bag(demo.bag.path), read_bag(tmp_path / "old")
    assert new.custom_data == old.custom_data and "visibility" not in new.scene
    assert "orbit" in new.scene and "path" not in new.scene


def test_make_bag_and_demo_take_a_preset(meshes, tmp_path, capsys):
    parser = build_parser()
    made = parser.parse_args(["make-bag"])
    assert (made.preset, made.frames, made.objects, made.rate) == ("robot", None, None, None)
    demo = parser.parse_args(["demo", "--preset", "orbit"])
    assert (demo.preset, demo.rate, demo.frames) == ("orbit", None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["make-bag", "--preset", "nope"])
    path = meshes.save(tmp_path / "meshes.npz")
    assert main(["make-bag", "--output", str(tmp_path / "out"), "--meshes", str(path),
                 "--frames", "4"]) == 0
    printed = capsys.readouterr().out
    assert "preset robot, 4 frames at 10 Hz" in printed and "present in frames" in printed
