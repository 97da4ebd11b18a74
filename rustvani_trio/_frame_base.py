"""The frame root: Frame, FrameDirection, the system / control / data categories, the
uninterruptible marker, and TextFrame (the base of every text frame). Public through
:mod:`rustvani_trio.frames`."""

from __future__ import annotations

import enum
import itertools

import attrs
import trio

__all__ = [
    "ControlFrame",
    "DataFrame",
    "Frame",
    "FrameDirection",
    "SystemFrame",
    "TextFrame",
    "UninterruptibleFrame",
]


class FrameDirection(enum.Enum):
    """Which way a frame travels: towards the sink (downstream) or the source (upstream)."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"


_ids = itertools.count(1)


def _next_id() -> int:
    return next(_ids)


def _now() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:  # no trio run active (a frame built at import time or in sync code)
        return None


@attrs.frozen(kw_only=True)
class Frame:
    """The base of every frame.

    Attributes:
        id: process-unique, strictly increasing in creation order.
        created: ``trio.current_time()`` at creation, or ``None`` outside a trio run.
    """

    id: int = attrs.field(factory=_next_id, init=False, eq=False)
    created: float | None = attrs.field(factory=_now, init=False, eq=False, repr=False)

    @property
    def name(self) -> str:
        """The frame's class name, e.g. ``"LLMText"``."""
        return type(self).__name__


class UninterruptibleFrame:
    """Marker mixin: the frame is kept when an interruption drains a process lane."""

    __slots__ = ()


@attrs.frozen(kw_only=True)
class SystemFrame(Frame):
    """Handled at once in the system lane, overtaking queued control and data frames."""


@attrs.frozen(kw_only=True)
class ControlFrame(Frame):
    """In-band control, ordered with the data in the process lane."""


@attrs.frozen(kw_only=True)
class DataFrame(Frame):
    """Content, ordered in the process lane."""


@attrs.frozen(kw_only=True)
class TextFrame(DataFrame):
    """A piece of text."""

    text: str
