"""Parameters declared with descriptors (description, range, read-only) and validated on change."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its default, what it means, and the values it accepts."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    min_value: float | int | None = None
    max_value: float | int | None = None
    choices: Sequence[str] = ()
    length: int | None = None  # exact length for array parameters

    def __post_init__(self):
        if (self.min_value is None) != (self.max_value is None):
            raise TypeError(f"{self.name}: give both min_value and max_value, or neither")

    def descriptor(self) -> ParameterDescriptor:
        constraints = []
        if self.choices:
            constraints.append("one of: " + ", ".join(self.choices))
        if self.length is not None:
            constraints.append(f"exactly {self.length} values")
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                         additional_constraints="; ".join(constraints))
        if self.min_value is not None and self.max_value is not None:
            if isinstance(self.default, bool):
                raise TypeError(f"{self.name}: ranges do not apply to booleans")
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(self.min_value),
                                                         to_value=int(self.max_value), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(self.min_value), to_value=float(self.max_value), step=0.0)]
        return descriptor

    def check(self, value: Any) -> str:
        """Why `value` is not acceptable, or '' when it is (rclpy checks ranges and read-only)."""
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if self.length is not None and len(value) != self.length:
            return f"{self.name} needs exactly {self.length} values, got {len(value)}"
        return ""


def declare_parameters(node, specs: Sequence[ParameterSpec]) -> dict[str, ParameterSpec]:
    """Declare every spec on `node` and install one validating set-parameters callback."""
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())
        problem = spec.check(node.get_parameter(spec.name).value)
        if problem:  # a bad value from a YAML file or the command line
            raise ValueError(f"invalid parameter: {problem}")

    def validate(parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            problem = spec.check(parameter.value) if spec else ""
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    return by_name
