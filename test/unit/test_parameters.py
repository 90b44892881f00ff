"""ParameterSpec descriptors and checks, and declare_parameters on a real rclpy node: bad
overrides refused at declaration, bad run-time changes (choice, range, read-only, length)
refused with reasons, good changes applied."""

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter

from gmm_perception.ros.parameters import ParameterSpec, declare_parameters

SPECS = [
    ParameterSpec("mode", "fast", "Speed/quality trade-off.", choices=("fast", "accurate")),
    ParameterSpec("voxel_size", 0.05, "Voxel edge in metres.", min_value=0.0, max_value=1.0),
    ParameterSpec("num_points", 1024, "Points per cloud.", min_value=16, max_value=4096),
    ParameterSpec("queue_size", 1, "Pending frames.", read_only=True, min_value=1, max_value=32),
    ParameterSpec("crop_min", [-1.0, -1.0, -1.0], "Box corner.", length=3),
]


@pytest.fixture
def make_node(ros_context):
    nodes = []

    def make(*overrides: Parameter, name: str = "param_test") -> Node:
        node = Node(name, context=ros_context, parameter_overrides=list(overrides))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()


@pytest.fixture
def node(make_node) -> Node:
    node = make_node()
    declare_parameters(node, SPECS)
    return node


def value(node: Node, name: str):
    return node.get_parameter(name).value


# ----------------------------------------------------------------------------- descriptor
def test_descriptor_carries_description_and_read_only():
    descriptor = ParameterSpec("q", 1, "Frames waiting.", read_only=True).descriptor()
    assert descriptor.description == "Frames waiting."
    assert descriptor.read_only is True
    assert ParameterSpec("q", 1, "d").descriptor().read_only is False


def test_integer_default_gets_an_integer_range():
    descriptor = ParameterSpec("n", 5, "d", min_value=1, max_value=32).descriptor()
    assert len(descriptor.integer_range) == 1 and len(descriptor.floating_point_range) == 0
    (bounds,) = descriptor.integer_range
    assert (bounds.from_value, bounds.to_value, bounds.step) == (1, 32, 0)


def test_float_default_gets_a_floating_point_range():
    descriptor = ParameterSpec("x", 0.5, "d", min_value=0, max_value=2).descriptor()
    assert len(descriptor.floating_point_range) == 1 and len(descriptor.integer_range) == 0
    (bounds,) = descriptor.floating_point_range
    assert (bounds.from_value, bounds.to_value, bounds.step) == (0.0, 2.0, 0.0)


def test_no_range_without_bounds():
    descriptor = ParameterSpec("x", 0.5, "d").descriptor()
    assert len(descriptor.floating_point_range) == 0 and len(descriptor.integer_range) == 0


def test_boolean_with_range_is_a_type_error():
    with pytest.raises(TypeError):
        ParameterSpec("flag", True, "d", min_value=0, max_value=1).descriptor()


def test_choices_and_length_appear_in_additional_constraints():
    assert ParameterSpec("m", "a", "d", choices=("a", "b", "c")).descriptor() \
        .additional_constraints == "one of: a, b, c"
    assert ParameterSpec("v", [0.0] * 3, "d", length=3).descriptor() \
        .additional_constraints == "exactly 3 values"
    assert ParameterSpec("x", 1.0, "d").descriptor().additional_constraints == ""


# ----------------------------------------------------------------------------- check
def test_check_accepts_a_listed_choice_and_refuses_others():
    spec = ParameterSpec("mode", "fast", "d", choices=("fast", "accurate"))
    assert spec.check("accurate") == ""
    problem = spec.check("turbo")
    assert "mode" in problem and "turbo" in problem and "fast" in problem


def test_check_length():
    spec = ParameterSpec("corner", [0.0, 0.0, 0.0], "d", length=3)
    assert spec.check([1.0, 2.0, 3.0]) == ""
    assert "3" in spec.check([1.0, 2.0]) and "corner" in spec.check([1.0, 2.0])
    assert spec.check([1.0] * 4) != ""


def test_check_without_constraints_accepts_anything():
    assert ParameterSpec("x", 1.0, "d").check(123.0) == ""


# ----------------------------------------------------------------------------- declaration
def test_declare_parameters_declares_defaults_and_descriptors(make_node):
    node = make_node()
    by_name = declare_parameters(node, SPECS)
    assert set(by_name) == {spec.name for spec in SPECS}
    assert by_name["mode"] is SPECS[0]
    for spec in SPECS:
        assert value(node, spec.name) == spec.default
    described = node.describe_parameter("queue_size")
    assert described.read_only is True
    assert described.description == "Pending frames."
    assert described.integer_range[0].to_value == 32


def test_good_overrides_are_taken(make_node):
    node = make_node(Parameter("mode", value="accurate"), Parameter("voxel_size", value=0.2))
    declare_parameters(node, SPECS)
    assert value(node, "mode") == "accurate"
    assert value(node, "voxel_size") == pytest.approx(0.2)


def test_override_outside_choices_is_refused_at_declaration(make_node):
    node = make_node(Parameter("mode", value="turbo"))
    with pytest.raises(ValueError, match="turbo"):
        declare_parameters(node, SPECS)


def test_override_of_wrong_length_is_refused_at_declaration(make_node):
    node = make_node(Parameter("crop_min", value=[0.0, 0.0]))
    with pytest.raises(ValueError, match="crop_min"):
        declare_parameters(node, SPECS)


# ----------------------------------------------------------------------------- run-time changes
def assert_refused(node: Node, parameter: Parameter, *reason_parts: str) -> None:
    before = value(node, parameter.name)
    (result,) = node.set_parameters([parameter])
    assert result.successful is False
    for part in reason_parts:
        assert part in result.reason
    assert value(node, parameter.name) == before


def test_bad_choice_is_refused_with_reason(node):
    assert_refused(node, Parameter("mode", value="turbo"), "mode", "turbo")


def test_out_of_range_float_is_refused_with_reason(node):
    assert_refused(node, Parameter("voxel_size", value=1.5), "voxel_size", "range")


def test_out_of_range_integer_is_refused_with_reason(node):
    assert_refused(node, Parameter("num_points", value=8), "num_points", "range")


def test_read_only_parameter_is_refused_with_reason(node):
    assert_refused(node, Parameter("queue_size", value=4), "queue_size", "read-only")


def test_wrong_length_is_refused_with_reason(node):
    assert_refused(node, Parameter("crop_min", value=[0.0]), "crop_min", "3")


def test_good_values_are_applied(node):
    results = node.set_parameters([Parameter("mode", value="accurate"),
                                   Parameter("voxel_size", value=1.0),
                                   Parameter("num_points", value=16),
                                   Parameter("crop_min", value=[0.0, 1.0, 2.0])])
    assert all(r.successful for r in results)
    assert value(node, "mode") == "accurate"
    assert value(node, "voxel_size") == 1.0
    assert value(node, "num_points") == 16
    assert list(value(node, "crop_min")) == [0.0, 1.0, 2.0]


def test_parameters_without_a_spec_are_not_blocked(node):
    node.declare_parameter("unrelated", "x")
    (result,) = node.set_parameters([Parameter("unrelated", value="anything")])
    assert result.successful
    assert value(node, "unrelated") == "anything"


def test_atomic_change_with_one_bad_value_applies_nothing(node):
    result = node.set_parameters_atomically([Parameter("voxel_size", value=0.5),
                                             Parameter("mode", value="turbo")])
    assert result.successful is False
    assert value(node, "voxel_size") == pytest.approx(0.05)
    assert value(node, "mode") == "fast"
