"""How a Dhara handler is called: ``handler(args)`` or ``handler(args, ctx)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["handler_arity"]


def handler_arity(handler: Callable[..., Any]) -> int:
    """1 for ``handler(args)``, 2 for ``handler(args, ctx)``."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return 1
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 2:
        return 2
    if len(positional) == 1:
        return 1
    raise TypeError(
        f"a Dhara handler takes (args) or (args, ctx); {handler!r} takes no positional argument"
    )
