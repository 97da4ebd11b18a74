"""Dhara's frames: the public node-change announcement and private markers.

``DharaNodeChanged`` lives here, not in :mod:`rustvani_trio.frames`, until the frame contract
test there lists it; :mod:`rustvani_trio.dhara` re-exports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ..frames import ControlFrame, TextFrame, UninterruptibleFrame

if TYPE_CHECKING:
    from .node import NodeAction

__all__ = ["DharaNodeChanged"]


@attrs.frozen(kw_only=True)
class DharaNodeChanged(ControlFrame, UninterruptibleFrame):
    """The conversation flow entered a node.

    ``previous`` is ``None`` for the initial node (and for a restored conversation's first
    announcement); ``reason`` says why (``"initial"``, ``"restored"``, ``"function
    browse_menu"``, ...). It travels downstream in order with the model's output and is never
    dropped by an interruption, so observers, transports and tests see every change.
    """

    previous: str | None
    current: str
    reason: str


@attrs.frozen(kw_only=True)
class _AfterAnswer(ControlFrame, UninterruptibleFrame):
    """Private: queued behind a node's answer; when it leaves the pipeline, that node's post
    actions run."""

    node: str
    actions: Sequence[NodeAction] = attrs.field(eq=False)
    said: tuple[str, ...] = ()
    #: Save the session after the actions (they were queued during the turn, behind its
    #: ``_TurnDone``, whose save was left to this marker).
    save: bool = False


@attrs.frozen(kw_only=True)
class _TurnDone(ControlFrame, UninterruptibleFrame):
    """Private: queued behind each turn the Dhara processor lets through. When it leaves the
    pipeline the turn is over, answered or interrupted (an interruption never drops it), and
    the session is saved."""


@attrs.frozen(kw_only=True)
class _SaidLine(TextFrame, UninterruptibleFrame):
    """Private: a post action's line, queued behind the node's answer. Like the marker that
    records it, an interruption never drops it: what is recorded is what went out."""
