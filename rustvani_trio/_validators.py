"""attrs validators shared by the package's configuration classes.

Each one checks the type as well as the value, so ``timeout="5"`` or ``max_rounds=True`` fail
where the object is built, with a message naming the field and what it expects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "at_least",
    "in_range",
    "mapping_of_str",
    "non_empty_str",
    "non_negative",
    "optional",
    "positive",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_number(attr: attrs.Attribute[Any], value: object, wanted: str) -> None:
    if not _is_number(value) or (isinstance(value, float) and math.isnan(value)):
        raise TypeError(f"{attr.name} must be {wanted}, got {value!r}")


def positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A number greater than zero."""
    _check_number(attr, value, "a positive number")
    if not value > 0:
        raise ValueError(f"{attr.name} must be positive, got {value!r}")


def non_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A number greater than or equal to zero."""
    _check_number(attr, value, "a number >= 0")
    if not value >= 0:
        raise ValueError(f"{attr.name} must not be negative, got {value!r}")


def in_range(lo: float, hi: float) -> Validator:
    """A number between ``lo`` and ``hi``, both included."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        _check_number(attr, value, f"a number between {lo} and {hi}")
        if not lo <= value <= hi:
            raise ValueError(f"{attr.name} must be between {lo} and {hi}, got {value!r}")

    return check


def at_least(minimum: int) -> Validator:
    """A whole number (``int``, not ``bool``) of at least ``minimum``."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{attr.name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{attr.name} must be at least {minimum}, got {value!r}")

    return check


def non_empty_str(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A string with something other than white space in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attr.name} must be a non-empty string, got {value!r}")


def mapping_of_str(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A mapping whose keys and values are strings (HTTP headers, query parameters)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{attr.name} must be a mapping of str to str, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(
                f"{attr.name} must map str to str; {key!r} maps to {type(item).__name__}"
            )


def optional(validator: Validator) -> Validator:
    """``None``, or a value ``validator`` accepts."""

    def check(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validator(inst, attr, value)

    return check
