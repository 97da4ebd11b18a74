"""Copying the JSON-like values handed to the context and handed out by it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["clone", "clone_dict"]


def clone(value: Any) -> Any:
    """Copy a JSON-like value: mappings become dicts, lists/tuples become lists.

    Other values (strings, numbers, ``None``, opaque objects) are shared, which is safe for the
    immutable JSON scalars the context deals with.
    """
    if isinstance(value, Mapping):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clone(item) for item in value]
    return value


def clone_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a JSON-like mapping into a fresh dict (see :func:`clone`)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return {key: clone(item) for key, item in value.items()}
