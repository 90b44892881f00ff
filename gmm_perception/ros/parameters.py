"""A node's ROS parameters, derived from the configs of the core (pipeline/configs.py).

Nothing here lists a parameter: each config field becomes one declaration with its description,
range or choices and read-only flag. A value is checked by the same function the core's configs
use (config.py), so a node and the offline evaluator refuse the same values with the same words.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from gmm_perception.config import field_problem, type_problem
from gmm_perception.pipeline.configs import declared_settings


def descriptor(field: dataclasses.Field) -> ParameterDescriptor:
    """The ROS descriptor of one config field (rclpy enforces its range and read-only flag)."""
    meta, default = field.metadata, field.default
    constraints = []
    if meta["choices"]:
        constraints.append("one of: " + ", ".join(meta["choices"]))
    if meta["length"] is not None:
        constraints.append(f"exactly {meta['length']} values")
    result = ParameterDescriptor(description=meta["description"], read_only=meta["read_only"],
                                 additional_constraints="; ".join(constraints))
    if meta["low"] is not None and not isinstance(default, tuple):  # rclpy ranges are scalar
        if isinstance(default, int) and not isinstance(default, bool):
            result.integer_range = [IntegerRange(from_value=int(meta["low"]),
                                                 to_value=int(meta["high"]), step=0)]
        else:
            result.floating_point_range = [FloatingPointRange(
                from_value=float(meta["low"]), to_value=float(meta["high"]), step=0.0)]
    return result


def _ros_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def declare_parameters(node, config_classes: tuple[type, ...]) -> dict[str, str]:
    """Declare every parameter of `config_classes` on `node`.

    A value from a parameter file or the command line that its field refuses is not applied:
    the parameter is declared with its default and the refusal is returned (name -> reason), so
    that the node can stay up and report it instead of dying in its constructor."""
    overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them here
    refused: dict[str, str] = {}
    for name, field in declared_settings(config_classes).items():
        override = overrides.get(name)
        problem = (type_problem(field, override.value) or field_problem(field, override.value)
                   if override is not None else "")
        if not problem:
            try:
                node.declare_parameter(name, _ros_default(field.default), descriptor(field))
                continue
            except Exception as exc:  # rclpy's own type/range check of the override
                problem = f"{name}: {exc}"
        refused[name] = problem
        node.declare_parameter(name, _ros_default(field.default), descriptor(field),
                               ignore_override=True)
    return refused


def undeclared_overrides(node) -> list[str]:
    """Names a parameter file or the command line set that the node does not declare (a typo
    would otherwise be ignored silently)."""
    overrides = getattr(node, "_parameter_overrides", {})
    return sorted(name for name in overrides
                  if not node.has_parameter(name) and "." not in name)


def parameter_values(node, config_classes: tuple[type, ...]) -> dict[str, Any]:
    """The node's current value of every parameter of `config_classes`."""
    return {name: node.get_parameter(name).value for name in declared_settings(config_classes)}
