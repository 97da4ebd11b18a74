"""The context's exceptions (public in :mod:`rustvani_trio.context`)."""

from __future__ import annotations

from collections.abc import Iterable

from ..exceptions import RustvaniError
from .values import short

__all__ = [
    "ContextInvariantError",
    "InvalidMessageError",
    "InvalidToolError",
    "RoundStateError",
    "describe_ids",
]


class ContextInvariantError(RustvaniError, ValueError):
    """The context (or a value offered to it) breaks an invariant of the OpenAI chat format.

    Raised by :meth:`LLMContext.validate` for sequence problems (unanswered tool calls,
    results for unknown or already answered calls, an open round) and by
    :class:`ContextRound` for results that do not match the round's calls.  The more specific
    :class:`InvalidMessageError` and :class:`InvalidToolError` derive from it.
    """


class InvalidMessageError(ContextInvariantError):
    """A single message is malformed (unknown role, bad content, missing id, ...)."""


class InvalidToolError(ContextInvariantError):
    """A tool definition or a ``tool_choice`` is malformed."""


class RoundStateError(RustvaniError, RuntimeError):
    """A tool round was used in the wrong state (already open, already closed, ...)."""


_MAX_IDS = 8


def describe_ids(ids: Iterable[str]) -> str:
    """``'a', 'b'`` (or ``(none)``), for error messages: at most a few, each cut short."""
    listed = list(ids)
    shown = ", ".join(short(i) for i in listed[:_MAX_IDS])
    if len(listed) > _MAX_IDS:
        shown += f" and {len(listed) - _MAX_IDS:,} more"
    return shown or "(none)"
