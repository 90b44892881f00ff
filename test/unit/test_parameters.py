"""A node's ROS parameters derived from the core's configs (ros/parameters.py) on real rclpy
nodes: every config field declared once with its descriptor, overrides its field refuses
reported instead of raised, and PerceptionNode's whole-config check of a run-time change."""
from __future__ import annotations

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter

from gmm_perception.config import ConfigError
from gmm_perception.node_registry import NODES
from gmm_perception.pipeline.configs import NODE_CONFIGS, PreprocessConfig, \
    declared_settings, node_configs
from gmm_perception.ros.parameters import declare_parameters, parameter_values, \
    undeclared_overrides
from gmm_perception.ros.runner import node_class

from test_config import Example  # noqa: E402  (test/unit is on the path)


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


def test_every_field_becomes_one_declaration_with_its_descriptor(make_node):
    node = make_node()
    assert declare_parameters(node, (Example,)) == {}
    assert parameter_values(node, (Example,)) == {
        "mode": "fast", "size": 0.5, "count": 4, "corner": [0.0, 0.0, 0.0], "flag": False,
        "name": ""}
    count = node.describe_parameter("count")
    assert count.read_only and count.description == "A count."
    assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (1, 10)
    size = node.describe_parameter("size")
    assert (size.floating_point_range[0].from_value, size.floating_point_range[0].to_value) \
        == (0.0, 1.0)
    assert node.describe_parameter("mode").additional_constraints == "one of: fast, accurate"
    assert node.describe_parameter("corner").additional_constraints == "exactly 3 values"


def test_good_overrides_are_taken(make_node):
    node = make_node(Parameter("mode", value="accurate"), Parameter("size", value=0.25))
    assert declare_parameters(node, (Example,)) == {}
    assert node.get_parameter("mode").value == "accurate"
    assert node.get_parameter("size").value == 0.25


@pytest.mark.parametrize("override, words", [
    (Parameter("mode", value="turbo"), "mode must be one of ['fast', 'accurate'], got 'turbo'"),
    (Parameter("size", value=2.0), "size must be in [0.0, 1.0], got 2.0"),
    (Parameter("corner", value=[0.0, 1.0]), "corner needs exactly 3 values, got 2"),
    (Parameter("size", value="big"), "size must be a floating-point number (1.0, not 1), "
                                     "got 'big'"),
    (Parameter("size", value=1), "size must be a floating-point number (1.0, not 1), got 1"),
    (Parameter("count", value=float("inf")), "count must be an integer, got inf"),
])
def test_a_refused_override_is_reported_and_the_default_kept(make_node, override, words):
    """The words are the core's (config.field_problem): the offline evaluator says the same."""
    node = make_node(override)
    refused = declare_parameters(node, (Example,))
    assert refused == {override.name: words}
    default = {f.name: f.default for f in declared_settings((Example,)).values()}[override.name]
    value = node.get_parameter(override.name).value
    assert (list(default) if isinstance(default, tuple) else default) == value


def test_undeclared_overrides_are_named(make_node):
    node = make_node(Parameter("voxel", value=0.1))
    declare_parameters(node, (Example,))
    assert undeclared_overrides(node) == ["voxel"]


@pytest.mark.parametrize("executable", sorted(NODES))
def test_each_node_declares_exactly_its_configs_fields(executable, ros_context):
    """The one place: a node's parameters are the fields of its configs, nothing hand-written."""
    node = node_class(executable)(f"declared_{executable}", context=ros_context,
                                  parameter_overrides=[Parameter("autostart", value=False)])
    try:
        declared = set(node._parameters) - {"use_sim_time", "start_type_description_service"}
        assert declared == set(declared_settings(NODE_CONFIGS[executable]))
        for name, field in declared_settings(NODE_CONFIGS[executable]).items():
            descriptor = node.describe_parameter(name)
            assert descriptor.description == field.metadata["description"]
            assert descriptor.read_only == field.metadata["read_only"]
    finally:
        node.destroy_node()


@pytest.fixture
def preprocess_node(ros_context):
    node = node_class("preprocess_node")("whole_config", context=ros_context,
                                         parameter_overrides=[Parameter("autostart",
                                                                        value=False)])
    yield node
    node.destroy_node()


def test_a_change_that_breaks_a_rule_between_fields_is_refused_with_the_cores_words(
        preprocess_node):
    (result,) = preprocess_node.set_parameters([Parameter("min_range", value=5.0)])
    assert result.successful  # 5 <= max_range (no limit)
    (result,) = preprocess_node.set_parameters([Parameter("max_range", value=1.0)])
    assert not result.successful
    with pytest.raises(ConfigError) as core:
        node_configs("preprocess_node", {"min_range": 5.0, "max_range": 1.0})
    assert result.reason == str(core.value)
    assert preprocess_node.get_parameter("max_range").value == pytest.approx(1.0e6)


def test_an_accepted_change_is_handed_to_the_worker_as_whole_configs(preprocess_node):
    (result,) = preprocess_node.set_parameters([Parameter("voxel_size", value=0.2)])
    assert result.successful
    pending = preprocess_node._take_pending_configs()
    assert pending[PreprocessConfig].voxel_size == 0.2
    preprocess_node.configure_node = lambda: None  # no outputs needed for this check
    preprocess_node.stage = None
    preprocess_node._pending_configs = pending
    preprocess_node._reconfigure()
    assert preprocess_node.stage.config.voxel_size == 0.2
    assert preprocess_node.configs[PreprocessConfig].voxel_size == 0.2
