"""What every run of a processor has, lanes or not: its lifecycle phase and StartFrame, the
cancel hook still owed when a run ends without the CancelFrame, and error reporting.

:class:`~rustvani_trio._processor_run.ProcessorRun` (a processor with lanes and tasks) and
:class:`~rustvani_trio._inline.InlineRun` (an inline processor, run in its upstream
neighbour's task) both derive from :class:`RunBase`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from ._lanes import LaneStatistics
from ._lifecycle import Phase
from .frames import CancelFrame, ErrorFrame, Frame, FrameDirection, StartFrame

if TYPE_CHECKING:
    from .processor import FrameProcessor

__all__ = ["RunBase"]

logger = logging.getLogger("rustvani_trio")

_UP = FrameDirection.UPSTREAM
F = TypeVar("F", bound=Frame)


class RunBase:
    """The state of one processor for one run that does not depend on how it runs."""

    inline = False
    """Whether the processor runs in its neighbours' tasks (no lanes, no tasks of its own)."""

    def __init__(self, proc: FrameProcessor, nursery: trio.Nursery | None) -> None:
        self.proc = proc
        self.nursery = nursery
        self.phase = Phase.IDLE
        self.start_frame: StartFrame | None = None  # set once on_start is entered

    def start(self) -> None:
        """Start the processor's own tasks in the run's nursery (if it has any)."""

    async def enqueue(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in from the task's input (a checkpoint)."""
        raise NotImplementedError

    def enqueue_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in without waiting (ignoring backpressure)."""
        raise NotImplementedError

    async def take(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in from a neighbour that already checked for cancellation."""
        raise NotImplementedError

    def take_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        """:meth:`take` without waiting."""
        raise NotImplementedError

    # An inline processor's run: push_frame runs it in the pusher's task.

    def flow(self, frame: Frame, direction: FrameDirection) -> Frame | list[Frame] | None:
        """Handle ``frame`` here and in the inline processors after this one: what leaves
        the chain (one frame, several, or none)."""
        raise NotImplementedError

    def chain_exit(self, direction: FrameDirection) -> FrameProcessor:
        """The last inline processor of the chain that starts here: what leaves the chain
        is delivered from there."""
        raise NotImplementedError

    async def deliver_all(self, frames: list[Frame], direction: FrameDirection) -> None:
        """Deliver several frames that left the chain, in order."""
        raise NotImplementedError

    def statistics(self) -> LaneStatistics:
        """A snapshot of the lanes (none, for a processor without lanes)."""
        return LaneStatistics(
            system=0,
            process=0,
            downstream_waiting=0,
            max_buffer=self.proc.max_buffer,
            blocked_senders=0,
            dropped=0,
        )

    def owes_cancel_hook(self) -> bool:
        """Started, and neither ended nor cancelled through the frames."""
        return self.start_frame is not None and self.phase not in (Phase.ENDED, Phase.CANCELLED)

    async def cancel_hook_after_run(self, reason: str) -> None:
        """Run the cancel hook of a run that ended without the CancelFrame reaching this
        processor (cancelled from outside, or ended by the task's watchdog): bounded by
        ``cancel_timeout``, errors logged (nobody reads frames any more)."""
        if not self.owes_cancel_hook():
            return
        self.phase = Phase.CANCELLED
        proc = self.proc
        with trio.move_on_after(proc.cancel_timeout):
            try:
                await proc.on_cancel(CancelFrame(reason=reason))
            except Exception as exc:
                logger.warning("%s: on_cancel failed: %s", proc.name, exc, exc_info=exc)

    async def _run_hook(
        self, hook: Callable[[F], Awaitable[None]], frame: F, deadline: float
    ) -> bool:
        """Run a lifecycle hook until ``deadline``; an exception it raises is reported as an
        ErrorFrame. Returns whether the deadline cut it short."""
        with trio.move_on_at(deadline) as scope:
            try:
                await hook(frame)
            except Exception as exc:
                await self.report_exception(exc, frame)
        return scope.cancelled_caught

    def error_frame(self, exc: Exception, frame: Frame, *, fatal: bool = False) -> ErrorFrame:
        """The ErrorFrame reporting ``exc``, raised while handling ``frame``."""
        proc = self.proc
        logger.debug("%s failed handling %s", proc.name, frame.name, exc_info=exc)
        message = f"{proc.name}: {type(exc).__name__}: {exc} (while handling {frame.name})"
        return ErrorFrame(error=message, fatal=fatal, processor=proc.name, exception=exc)

    async def report_exception(self, exc: Exception, frame: Frame, *, fatal: bool = False) -> None:
        """Push an ErrorFrame upstream for an exception raised while handling ``frame``."""
        proc = self.proc
        error = self.error_frame(exc, frame, fatal=fatal)
        if proc._prev is not None:
            # Without waiting, so the error is reported even from code being cancelled.
            proc.push_frame_nowait(error, _UP)
        else:
            await proc.push_frame(error, _UP)
