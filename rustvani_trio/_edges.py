"""The two ends of a task's pipeline, and the frame that flushes the upstream lanes at the end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from .frames import Frame, FrameDirection, StopFrame
from .processor import FrameProcessor

__all__ = ["TaskEdge", "UpstreamFlush"]


class TaskEdge(FrameProcessor):
    """The task's source or sink: a processor whose frames leaving the pipeline (upstream at
    the source, downstream at the sink) are handed to ``exit``."""

    def __init__(self, name: str, exit: Callable[[Frame], Awaitable[None]]) -> None:
        super().__init__(name=name)
        self._exit = exit

    async def _push_past_edge(self, frame: Frame, direction: FrameDirection) -> None:
        await self._exit(frame)


@attrs.frozen(kw_only=True)
class UpstreamFlush(StopFrame):
    """Sent upstream from the sink once the EndFrame (or StopFrame) has reached it; the run ends
    when it reaches the source. Upstream frames pushed before a processor forwarded the EndFrame
    are ahead of it in its lane (FIFO per lane), and system frames (an error) that reached a
    processor before it are handled there first (the lanes' arrival marks), so they reach the
    source before the run ends.
    Being a StopFrame travelling upstream, processors forward it without showing it to
    ``process_frame``; the task does not report it."""
