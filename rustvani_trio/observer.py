"""Observers: told of every frame pushed between processors.

An observer is attached to a :class:`~rustvani_trio.task.PipelineTask`; it is called
synchronously for every push, so it must be cheap and must never block. An observer that needs
to do I/O should hand the event to a task of its own (for example over a trio memory channel
created with ``send_nowait``). When no observer is attached, pushing a frame costs one
attribute test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .frames import Frame, FrameDirection, MetricsFrame

if TYPE_CHECKING:
    from .processor import FrameProcessor

__all__ = ["BaseObserver", "FramePushed", "MetricsCollector"]


@attrs.frozen(kw_only=True)
class FramePushed:
    """One push: ``source`` pushed ``frame`` to ``destination`` at ``timestamp``."""

    source: FrameProcessor
    destination: FrameProcessor
    frame: Frame
    direction: FrameDirection
    timestamp: float


class BaseObserver:
    """Subclass and override :meth:`on_push_frame`."""

    def on_push_frame(self, event: FramePushed) -> None:
        """Called for every frame pushed from one processor to the next. Must not block."""


class MetricsCollector(BaseObserver):
    """An observer that keeps every :class:`~rustvani_trio.frames.MetricsFrame` it sees.

    Each metrics frame is recorded once, when it first leaves the processor that produced it.
    """

    def __init__(self) -> None:
        self.frames: list[MetricsFrame] = []
        self._seen: set[int] = set()

    def on_push_frame(self, event: FramePushed) -> None:
        frame = event.frame
        if isinstance(frame, MetricsFrame) and frame.id not in self._seen:
            self._seen.add(frame.id)
            self.frames.append(frame)
