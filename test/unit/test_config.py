"""Stage configs (config.py, pipeline/configs.py): per-field checks from the field metadata,
rules between fields, building from parameter values, and the node table every declaration
comes from. Pure Python: no ROS."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import yaml

from gmm_perception.config import ConfigError, from_values, setting, settings, validate
from gmm_perception.paths import SOURCE_ROOT
from gmm_perception.pipeline.configs import NODE_CONFIGS, NodeConfig, PreprocessConfig, \
    RegistrationConfig, SegmentConfig, declared_settings, default_values, node_configs
from gmm_perception.pipeline_config import load_pipeline, node_parameters


@dataclass(frozen=True)
class Example:
    mode: str = setting("fast", "Speed or quality.", choices=("fast", "accurate"))
    size: float = setting(0.5, "A length.", low=0.0, high=1.0)
    count: int = setting(4, "A count.", low=1, high=10, read_only=True)
    corner: tuple[float, float, float] = setting((0.0, 0.0, 0.0), "A point.", low=-5.0,
                                                 high=5.0, length=3)
    flag: bool = setting(False, "A switch.")
    name: str = setting("", "Free text.")

    def __post_init__(self):
        validate(self)

    def check(self) -> None:
        if self.mode == "accurate" and self.count < 2:
            raise ConfigError("accurate mode needs count >= 2")


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "turbo"}, ["mode must be one of", "'turbo'"]),
    ({"size": 1.5}, ["size must be in [0.0, 1.0]", "1.5"]),
    ({"size": math.nan}, ["size must be finite"]),
    ({"count": 2.5}, ["count must be an integer"]),
    ({"count": 0}, ["count must be in [1, 10]"]),
    ({"corner": (0.0, 0.0)}, ["corner needs exactly 3 values, got 2"]),
    ({"corner": (0.0, 9.0, 0.0)}, ["corner must be in [-5.0, 5.0], got 9.0"]),
    ({"flag": 1}, ["flag must be true or false"]),
    ({"size": "big"}, ["size must be a number"]),
    ({"name": 3}, ["name must be a string"]),
    ({"mode": "accurate", "count": 1}, ["accurate mode needs count >= 2"]),
])
def test_a_refused_value_names_the_field_and_the_value(kwargs, words):
    with pytest.raises(ConfigError) as refused:
        Example(**kwargs)
    for word in words:
        assert word in str(refused.value)


@pytest.mark.parametrize("values, words", [
    ({"size": 1}, "size must be a floating-point number (1.0, not 1), got 1"),
    ({"count": 4.0}, "count must be an integer, got 4.0"),
    ({"count": math.inf}, "count must be an integer, got inf"),
    ({"flag": 0}, "flag must be true or false, got 0"),
    ({"corner": [0, 0, 0]}, "corner must be a list of floating-point numbers (1.0, not 1)"),
    ({"corner": 1.0}, "corner must be a list, got 1.0"),
])
def test_parameter_values_are_typed_strictly_as_ros_types_them(values, words):
    """What a parameter file may hold: the node refuses these too (ros/parameters.py)."""
    with pytest.raises(ConfigError) as refused:
        from_values(Example, values)
    assert words in str(refused.value)


def test_an_infinite_count_is_refused_not_crashed_on():
    with pytest.raises(ConfigError, match="count must be finite"):
        Example(count=math.inf)


def test_defaults_and_good_values_are_accepted():
    assert Example() == Example(mode="fast", size=0.5, count=4)
    Example(mode="accurate", size=1.0, count=10, corner=(5.0, -5.0, 0.0), flag=True, name="x")


def test_from_values_ignores_other_keys_and_turns_lists_into_tuples():
    config = from_values(Example, {"corner": [1.0, 2.0, 3.0], "size": 0.25, "other": 7})
    assert config.corner == (1.0, 2.0, 3.0) and config.size == 0.25 and config.count == 4


def test_settings_carry_their_metadata():
    (count,) = [f for f in settings(Example) if f.name == "count"]
    assert count.metadata["read_only"] is True
    assert (count.metadata["low"], count.metadata["high"]) == (1, 10)


# ----------------------------------------------------------------------------- stage rules
@pytest.mark.parametrize("config_class, values, words", [
    (PreprocessConfig, {"min_range": 5.0, "max_range": 1.0}, "min_range 5.0 exceeds max_range"),
    (PreprocessConfig, {"crop_min": (0.0, 0.0, 2.0), "crop_max": (1.0, 1.0, 1.0)},
     "exceeds crop_max"),
    (SegmentConfig, {"up": (0.0, 0.0, 0.0)}, "up must be a non-zero 3-vector"),
    (RegistrationConfig, {"icp": "point2plane"}, "icp must be one of"),
])
def test_rules_between_fields_are_checked_when_a_config_is_built(config_class, values, words):
    with pytest.raises(ConfigError, match=words):
        from_values(config_class, values)


# ----------------------------------------------------------------------------- the node table
@pytest.mark.parametrize("executable", sorted(NODE_CONFIGS))
def test_every_node_has_valid_defaults_and_every_setting_is_described(executable):
    configs = node_configs(executable, {})
    assert set(configs) == set(NODE_CONFIGS[executable])
    for name, field in declared_settings(NODE_CONFIGS[executable]).items():
        assert field.metadata["description"].strip(), name
        assert (field.metadata["low"] is None) == (field.metadata["high"] is None), name
    assert configs[NodeConfig] == NodeConfig()


def test_every_node_is_in_the_table_and_shares_the_node_settings():
    from gmm_perception.node_registry import NODES

    assert set(NODE_CONFIGS) == set(NODES)
    assert all(classes[0] is NodeConfig for classes in NODE_CONFIGS.values())


def test_a_name_in_two_configs_of_a_node_is_one_parameter():
    """`seed` feeds the preprocessing and the segmenter: one value, the same in both."""
    configs = node_configs("segmentation_node", {"seed": 7})
    assert configs[PreprocessConfig].seed == configs[SegmentConfig].seed == 7


def test_unknown_keys_are_refused_with_their_names():
    with pytest.raises(ConfigError, match=r"declares no parameter\(s\) \['voxel'\]"):
        node_configs("preprocess_node", {"voxel": 0.1})


def _parameter_file_keys(path):
    data = yaml.safe_load(path.read_text()) or {}
    return {key for section in data.values() for key in (section.get("ros__parameters") or {})}


@pytest.mark.parametrize("pipeline", sorted((SOURCE_ROOT / "config").glob("*_pipeline.yaml")),
                         ids=lambda p: p.name)
def test_every_key_of_the_shipped_yaml_is_declared_and_differs_from_its_default(pipeline):
    """config/*.yaml and the pipelines' inline values hold only what differs from the declared
    defaults, and every key is a declared parameter of its node."""
    for entry in load_pipeline(pipeline):
        declared = declared_settings(NODE_CONFIGS[entry.executable])
        defaults = default_values(entry.executable)
        for path in entry.parameter_files:
            keys = _parameter_file_keys(path)
            assert keys <= set(declared), f"{path.name}: undeclared {sorted(keys - set(declared))}"
            values = node_parameters(entry.__class__(entry.executable, entry.name,
                                                     parameter_files=(path,)))
            for key in keys:
                default = defaults[key]
                default = list(default) if isinstance(default, tuple) else default
                assert values[key] != default, f"{path.name}: {key} restates its default"
        assert set(entry.parameters) <= set(declared), entry.parameters
        node_configs(entry.executable, node_parameters(entry))  # valid as a whole


def test_every_parameter_file_in_config_is_used_by_a_pipeline():
    used = {path for pipeline in (SOURCE_ROOT / "config").glob("*_pipeline.yaml")
            for entry in load_pipeline(pipeline) for path in entry.parameter_files}
    files = {path for path in (SOURCE_ROOT / "config").glob("*.yaml")
             if not path.name.endswith("_pipeline.yaml")}
    assert files <= used, sorted(p.name for p in files - used)
