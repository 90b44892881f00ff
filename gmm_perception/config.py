"""Stage configs: frozen dataclasses whose fields carry their description, range or choices and
read-only flag, validated whole whenever one is built.

Every stage of the core has one such config and is built only from a validated instance
(a stage's constructor takes its config). The ROS layer derives each node's parameter declarations from these
fields (ros/parameters.py) and the offline evaluator builds the same configs from the same
values, so a value refused by one is refused by the other with the same words:

    @dataclass(frozen=True)
    class VoxelConfig:
        voxel_size: float = setting(0.05, "Voxel edge, metres.", low=0.0, high=10.0)

        def __post_init__(self):
            validate(self)

A config may define `check(self)` for rules between fields (min_range <= max_range); `validate`
runs it after the per-field checks.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A value (or a combination of values) a config does not accept; the message names it."""


def setting(default: Any, description: str, *, low: float | None = None,
            high: float | None = None, choices: Sequence[str] = (), read_only: bool = False,
            length: int | None = None) -> Any:
    """A dataclass field with its metadata. `low`/`high` bound numbers (and every element of a
    sequence); `length` fixes a sequence's length; read-only fields change only on restart."""
    if (low is None) != (high is None):
        raise TypeError(f"{description!r}: give both low and high, or neither")
    if isinstance(default, list):
        default = tuple(default)  # dataclass defaults must be immutable
    return dataclasses.field(default=default, metadata={
        "description": description, "low": low, "high": high, "choices": tuple(choices),
        "read_only": read_only, "length": length})


def settings(config_class: type) -> list[dataclasses.Field]:
    """The fields of a config class that carry metadata (every field, in a well-formed one)."""
    return [f for f in dataclasses.fields(config_class) if "description" in f.metadata]


def field_problem(field: dataclasses.Field, value: Any) -> str:
    """Why `value` is not acceptable for `field` (its type, range, choices, length), or ""."""
    meta = field.metadata
    name, default = field.name, field.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            return f"{name} must be true or false, got {value!r}"
        return ""
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)):
            return f"{name} must be a list, got {value!r}"
        if meta["length"] is not None and len(value) != meta["length"]:
            return f"{name} needs exactly {meta['length']} values, got {len(value)}"
        items = value
    else:
        items = (value,)
    for item in items:
        if isinstance(default, str) or meta["choices"]:
            if not isinstance(item, str):
                return f"{name} must be a string, got {item!r}"
            if meta["choices"] and item not in meta["choices"]:
                return f"{name} must be one of {list(meta['choices'])}, got {item!r}"
            continue
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return f"{name} must be a number, got {item!r}"
        if not math.isfinite(item) and (meta["low"] is not None or isinstance(default, int)):
            return f"{name} must be finite, got {item!r}"
        if isinstance(default, int) and not isinstance(default, bool) and int(item) != item:
            return f"{name} must be an integer, got {item!r}"
        if meta["low"] is not None and not meta["low"] <= item <= meta["high"]:
            return f"{name} must be in [{meta['low']}, {meta['high']}], got {item!r}"
    return ""


def validate(config: Any) -> None:
    """Raise ConfigError naming the first field out of its range or choices, then the first
    broken rule between fields (the config's own `check`)."""
    for field in settings(type(config)):
        problem = field_problem(field, getattr(config, field.name))
        if problem:
            raise ConfigError(problem)
    check = getattr(config, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def type_problem(field: dataclasses.Field, value: Any) -> str:
    """Why `value` has not the field's parameter type ('' when it has): a parameter's type is
    its default's, strictly, as ROS 2 types it (1 is not a double, 1.0 not an integer)."""
    default = field.default
    kind = type(default[0]) if isinstance(default, tuple) and default else type(default)
    names = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
             float: ("a floating-point number (1.0, not 1)", "floating-point numbers (1.0, not 1)"),
             str: ("a string", "strings")}
    items = value if isinstance(default, tuple) and isinstance(value, (list, tuple)) \
        else (value,)
    if isinstance(default, tuple) and not isinstance(value, (list, tuple)):
        return f"{field.name} must be a list, got {value!r}"
    if any(type(item) is not kind for item in items):  # bool is an int to isinstance
        what = f"a list of {names[kind][1]}" if isinstance(default, tuple) else names[kind][0]
        return f"{field.name} must be {what}, got {value!r}"
    return ""


def from_values(config_class: type[C], values: Mapping[str, Any]) -> C:
    """A validated config from a mapping of parameter values, as a node's parameters hold them
    (other keys are ignored; missing ones keep their defaults). Values are typed strictly, as
    ROS 2 types parameters (type_problem); lists become tuples."""
    kwargs = {}
    for field in settings(config_class):
        if field.name not in values:
            continue
        value = values[field.name]
        problem = type_problem(field, value)
        if problem:
            raise ConfigError(problem)
        if isinstance(value, list):
            value = tuple(value)
        kwargs[field.name] = value
    try:
        return config_class(**kwargs)
    except TypeError as exc:  # a wrong type the dataclass itself trips over
        raise ConfigError(f"{config_class.__name__}: {exc}") from exc

