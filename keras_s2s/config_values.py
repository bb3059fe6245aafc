"""Typed values from YAML and JSON: a mapping becomes a dataclass with each value
coerced to its field's type, and a bad value raises `ValueError` naming its key."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def from_mapping(cls, values: Any, where: str, prefix: str = ""):
    """`cls(**values)`, nested dataclasses included; `where` and `prefix` name the bad key."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: {prefix or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"{where}: unknown key {prefix + '.' if prefix else ''}{unknown[0]}; known keys are {', '.join(known)}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_mapping(hint, value, where, key)
        else:
            kwargs[name] = coerce(key, value, hint)
    return cls(**kwargs)


def coerce(key: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected text, got {value!r}")
        return value
    return value


def one_of(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")


def positive(key: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{key}: must be positive, got {value!r}")


def at_least(key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ValueError(f"{key}: must be at least {minimum}, got {value!r}")
