"""Strict JSON checks for flow definitions and state values.

``json.dumps`` is lenient where Dhara must not be: it writes ``NaN`` and ``Infinity`` (which
PostgreSQL's ``jsonb`` and every other JSON parser refuse), turns integer keys into strings
(so a snapshot would not restore what was saved) and recurses without a bound (a deeply
nested or cyclic value raises ``RecursionError``). :func:`json_problems` walks a value
without recursion and says what is wrong, where.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "json_problems"]

#: How deep a flow document or a state value may nest (a cycle exceeds it too).
MAX_DEPTH = 64

Path = tuple[str | int, ...]


def json_problems(
    value: Any, *, max_depth: int = MAX_DEPTH, limit: int = 100
) -> list[tuple[Path, str]]:
    """What makes ``value`` not strict JSON, as ``(path, message)`` pairs (at most
    ``limit``): keys that are not strings, values that are not JSON (sets, bytes, objects),
    non-finite numbers, and nesting deeper than ``max_depth`` (cycles included)."""
    problems: list[tuple[Path, str]] = []
    stack: list[tuple[Any, Path]] = [(value, ())]
    while stack and len(problems) < limit:
        item, path = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                problems.append((path, f"{item!r} is not a JSON number"))
            continue
        if not isinstance(item, Mapping | list | tuple):
            problems.append((path, f"a value of type {type(item).__name__} is not JSON"))
            continue
        if len(path) >= max_depth:
            problems.append((path, f"nested deeper than {max_depth} levels (or a cycle)"))
            continue
        if isinstance(item, Mapping):
            children: list[tuple[Any, Path]] = []
            for key, child in item.items():
                if not isinstance(key, str):
                    problems.append((path, f"the key {key!r} is not a string"))
                    continue
                children.append((child, (*path, key)))
        else:
            children = [(child, (*path, i)) for i, child in enumerate(item)]
        stack.extend(reversed(children))
    return problems
