"""The two ends of a task's pipeline, and the frame that flushes the upstream lanes at the end."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from ._processor_run import ProcessorRun
from ._run_base import RunBase
from .frames import Frame, FrameDirection, StopFrame, SystemFrame
from .processor import FrameProcessor

__all__ = ["TaskEdge", "UpstreamFlush"]

_DOWN = FrameDirection.DOWNSTREAM


class TaskEdge(FrameProcessor):
    """The task's source or sink: a processor whose frames leaving the pipeline (upstream at
    the source, downstream at the sink) are handed to ``exit``.

    With ``take_at_once`` (the sink), a frame that reaches the edge while it is idle (nothing
    queued, nothing being handled, every system frame that arrived handled; for a system
    frame, its system loop waiting) is first offered to ``take_at_once`` in the sender's task:
    when it returns ``True`` the frame has left the pipeline there (the task has nothing to
    await for it: no handler watches frames reaching the sink, and it is no lifecycle frame),
    without waking the edge's task for it. Otherwise it is queued and handed to ``exit`` as
    usual.
    """

    def __init__(
        self,
        name: str,
        exit: Callable[[Frame], Awaitable[None]],
        *,
        take_at_once: Callable[[Frame], bool] | None = None,
    ) -> None:
        self._take_at_once = take_at_once  # (before the base class makes the first run)
        super().__init__(name=name)
        self._exit = exit

    def _new_run(self, nursery: trio.Nursery | None) -> RunBase:
        take = self._take_at_once
        return ProcessorRun(self, nursery) if take is None else _SinkRun(self, nursery, take)

    async def _push_past_edge(self, frame: Frame, direction: FrameDirection) -> None:
        await self._exit(frame)

    def _takes_past_at_once(self, direction: FrameDirection) -> bool:
        """Whether a frame given to the task may be pushed on past this edge at once: the
        edge has nothing queued or in hand (so it overtakes nothing), runs, the processor
        next to it has lanes, and the frame would not wait for room (downstream)."""
        run = self._processor_run
        nxt = self._next if direction is _DOWN else self._prev
        return (
            isinstance(run, ProcessorRun)
            and nxt is not None
            # (past an inline processor, which may turn the frame into several, the feed's
            # way keeps queue_frame from waiting and the outputs of two frames apart)
            and isinstance(nxt._processor_run, ProcessorRun)
            and run.idle()
            and (direction is not _DOWN or self.downstream_room() >= 1)
        )


class _SinkRun(ProcessorRun):
    """The run of a sink edge with ``take_at_once`` (see :class:`TaskEdge`)."""

    def __init__(
        self, proc: TaskEdge, nursery: trio.Nursery | None, take: Callable[[Frame], bool]
    ) -> None:
        super().__init__(proc, nursery)
        self._take = take

    def put(self, frame: Frame, direction: FrameDirection, chain: bool = False) -> bool:
        if (
            direction is _DOWN
            and self.idle()
            and (self.lanes.system.waiter is not None or not isinstance(frame, SystemFrame))
            and self._take(frame)
        ):
            # (A system frame only while the system loop waits on its empty lane. With
            # nothing queued or in hand here, an interruption has nothing to cancel or drain.)
            return False
        return super().put(frame, direction, chain)


@attrs.frozen(kw_only=True)
class UpstreamFlush(StopFrame):
    """Sent upstream from the sink once the EndFrame (or StopFrame) has reached it; the run ends
    when it reaches the source. Upstream frames pushed before a processor forwarded the EndFrame
    are ahead of it in its lane (FIFO per lane), and system frames (an error) that reached a
    processor before it are handled there first (the lanes' arrival marks), so they reach the
    source before the run ends.
    Being a StopFrame travelling upstream, processors forward it without showing it to
    ``process_frame``; the task does not report it."""
