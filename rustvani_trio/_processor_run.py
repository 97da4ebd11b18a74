"""One run of one processor: how it takes frames in, its two loops, and its lifecycle.

A :class:`ProcessorRun` is created when a task attaches the processor (so every run starts from
a clean state) and holds everything that lives for that run: the lanes, the lifecycle
:class:`~rustvani_trio._lifecycle.Phase`, the StartFrame, the cancel scopes around ``on_start``
and the process loop, and the interruption hold.

* **Taking frames in** happens in the *sender's* task: a system frame goes to the system lane
  (an InterruptionFrame or CancelFrame cancels in-flight work and drains the process lane right
  there, so frames the sender pushes after it are not drained); a control or data frame goes to
  the process lane if the phase takes it, after waiting for room if it travels downstream, or
  is refused and reported.
* **The system loop** handles system frames in arrival order: the lifecycle frames with their
  hooks, the others with ``process_frame``.
* **The process loop** handles control and data frames one at a time, in a cancel scope per
  interruption. After an interruption it waits until the interruption has been forwarded, so
  that new output cannot overtake it downstream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._lanes import Lanes
from ._lifecycle import Phase
from .frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    StartFrame,
    StopFrame,
    SystemFrame,
    TranscriptionFrame,
    UninterruptibleFrame,
)

if TYPE_CHECKING:
    from .processor import FrameProcessor

__all__ = ["KEPT", "ProcessorRun"]

logger = logging.getLogger("rustvani_trio")

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
_ENDS = (EndFrame, StopFrame)
KEPT = (UninterruptibleFrame, TranscriptionFrame)
"""Frames an interruption neither drains nor cuts short (user transcripts are user input)."""
_IDLE, _RUNNING, _ENDING, _ENDED = Phase.IDLE, Phase.RUNNING, Phase.ENDING, Phase.ENDED
_CANCELLING, _CANCELLED = Phase.CANCELLING, Phase.CANCELLED
F = TypeVar("F", bound=Frame)


class ProcessorRun:
    """The state and the loops of one processor for one run."""

    def __init__(self, proc: FrameProcessor, nursery: trio.Nursery | None) -> None:
        self.proc = proc
        self.nursery = nursery
        self.lanes = Lanes(proc.name, proc.max_buffer)
        self.phase = _IDLE
        self.start_frame: StartFrame | None = None  # set once on_start is entered
        self.start_scope: trio.CancelScope | None = None  # around on_start
        self.process_scope: trio.CancelScope | None = None  # around the process loop
        self.process_done: trio.Event | None = None  # set when the process task has returned
        self.in_kept = False  # handling a frame an interruption must not cut short
        self.interruptions = 0  # interruptions taken in and not yet forwarded
        self.resume = ParkingLot()  # where the process loop waits until they are

    # ------------------------------------------------------------------ taking frames in

    async def enqueue(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in, waiting for room if it is a downstream control or data frame."""
        await checkpoint_if_cancelled()
        if isinstance(frame, SystemFrame):
            self._enqueue_system(frame, direction)
        else:
            if direction is _DOWN:
                lanes = self.lanes
                while lanes.down_pending >= lanes.max_buffer and self.phase is _RUNNING:
                    await lanes.wait_for_room()
            self._enqueue_process(frame, direction)
        await cancel_shielded_checkpoint()

    def enqueue_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in without waiting (ignoring backpressure)."""
        if isinstance(frame, SystemFrame):
            self._enqueue_system(frame, direction)
        else:
            self._enqueue_process(frame, direction)

    def _enqueue_process(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _DOWN:
            if self.phase is not _RUNNING:
                return self._refuse(frame)
            self.lanes.down_pending += 1
            if isinstance(frame, _ENDS):
                self.phase = _ENDING
        elif not self.phase.takes_upstream:
            return self._refuse(frame)
        self.lanes.process_send.send_nowait((frame, direction))

    def _enqueue_system(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, StartFrame):
            if self.phase is _IDLE:
                self.phase = _RUNNING
        elif isinstance(frame, InterruptionFrame):
            # Cancel and drain as the interruption arrives, in the sender's task, so that the
            # frames the sender pushes right after it are not drained.
            scope = self.process_scope
            if scope is not None and not self.in_kept:
                scope.cancel()
            self.lanes.drain(KEPT)
            self.interruptions += 1
        elif isinstance(frame, CancelFrame):
            if not self.phase.cancelling:
                self.phase = _CANCELLING
            for scope in (self.start_scope, self.process_scope):
                if scope is not None:
                    scope.cancel()
            self.lanes.drain(None)
            self.resume.unpark_all()
        self.lanes.system_send.send_nowait((frame, direction))

    def _refuse(self, frame: Frame) -> None:
        """A frame arrived when the processor cannot take it: say so, never drop silently."""
        name = self.proc.name
        if self.phase.cancelling:
            # The run is being cancelled: dropping in-flight frames is what a cancel means.
            logger.debug("%s: dropped %s after CancelFrame", name, frame.name)
            return
        if self.phase is _IDLE:
            why = "before StartFrame (did an upstream processor forget to forward it?)"
        else:
            why = "after EndFrame (it was pushed after the end of the stream)"
        message = f"{name} received {frame.name} {why}; the frame was dropped"
        logger.error(message)
        error = ErrorFrame(error=message, processor=name)
        self.lanes.system_send.send_nowait((error, _UP))

    # ------------------------------------------------------------------ the system loop

    async def system_loop(self) -> None:
        """Handles system frames at once, in arrival order."""
        proc = self.proc
        recv = self.lanes.system_recv
        while True:
            frame, direction = await recv.receive()
            if isinstance(frame, StartFrame):
                await self._handle_start(frame, direction)
            elif isinstance(frame, CancelFrame):
                await self._handle_cancel(frame, direction)
            elif isinstance(frame, InterruptionFrame):
                await self._handle_interruption(frame, direction)
            else:
                try:
                    await proc.process_frame(frame, direction)
                except Exception as exc:
                    await self.report_exception(exc, frame)

    async def _handle_start(self, frame: StartFrame, direction: FrameDirection) -> None:
        proc = self.proc
        if self.start_frame is not None:
            await proc.push_error(f"{proc.name} received a second StartFrame; ignored")
            return
        if self.phase.cancelling:
            return  # cancelled before it could start: nothing to start, nothing to release
        self.start_frame = frame
        with trio.CancelScope() as self.start_scope:
            try:
                await proc.on_start(frame)
            except Exception as exc:
                await self.report_exception(exc, frame, fatal=True)
        self.start_scope = None
        if self.phase.cancelling:
            return  # the CancelFrame that cut on_start short follows; nothing downstream starts
        assert self.nursery is not None, "processor started outside a PipelineTask"
        self.process_done = trio.Event()
        self.nursery.start_soon(self._process_loop, name=f"{proc.name}.process")
        await proc.push_frame(frame, direction)

    async def _handle_cancel(self, frame: CancelFrame, direction: FrameDirection) -> None:
        if self.phase is _CANCELLED:
            return
        self.phase = _CANCELLED
        proc = self.proc
        if self.start_frame is not None:  # started: on_cancel releases what on_start took
            budget = proc.cancel_timeout
            deadline = trio.current_time() + budget
            done = self.process_done
            if done is not None:
                # The in-flight work was cancelled as the frame arrived; let it unwind (its own
                # cleanup runs first) before on_cancel releases what it used. Bounded by half
                # the cancel budget, so on_cancel always gets the other half.
                with trio.move_on_at(deadline - budget / 2):
                    await done.wait()
            if await self._run_hook(proc.on_cancel, frame, deadline):
                logger.warning("%s: on_cancel took longer than %ss", proc.name, budget)
        await proc.push_frame(frame, direction)

    async def _handle_interruption(
        self, frame: InterruptionFrame, direction: FrameDirection
    ) -> None:
        try:
            try:
                await self.proc.on_interruption(frame)
            except Exception as exc:
                await self.report_exception(exc, frame)
            await self.proc.push_frame(frame, direction)
        finally:
            self.interruptions -= 1
            if not self.interruptions:
                self.resume.unpark_all()

    # ------------------------------------------------------------------ the process loop

    async def _process_loop(self) -> None:
        try:
            await self._process_frames()
        finally:
            if self.process_done is not None:
                self.process_done.set()

    async def _process_frames(self) -> None:
        proc = self.proc
        lanes = self.lanes
        recv = lanes.process_recv
        carried: tuple[Frame, FrameDirection] | None = None
        while not self.phase.cancelling:
            handling: Frame | None = None
            with trio.CancelScope() as scope:
                self.process_scope = scope
                if carried is not None:
                    frame, direction = carried
                    carried = None
                    await self._handle_kept(frame, direction)
                # An interruption that arrived while an uninterruptible frame was handled
                # (the scope was not cancelled) is forwarded before the next frame is taken,
                # so that no new output overtakes it.
                while not self.interruptions:
                    frame, direction = await recv.receive()
                    if direction is _DOWN:
                        lanes.down_pending -= 1
                        if lanes.space:
                            lanes.space.unpark()
                    if scope.cancel_called:
                        # Taken just before an interruption (or a cancel) arrived.
                        if self.phase.cancelling:
                            pass
                        elif isinstance(frame, KEPT):
                            carried = (frame, direction)
                        else:
                            lanes.count_drop(frame, "taken just before it arrived")
                        break
                    if isinstance(frame, KEPT):
                        await self._handle_kept(frame, direction)
                        continue
                    handling = frame
                    try:
                        await proc.process_frame(frame, direction)
                    except Exception as exc:
                        await self.report_exception(exc, frame)
                    handling = None
            self.process_scope = None
            if handling is not None and not self.phase.cancelling:
                lanes.count_drop(handling, "its handling was cut short")
            while self.interruptions and not self.phase.cancelling:
                # Interrupted: wait until the interruption has gone on downstream.
                await self.resume.park()

    async def _handle_kept(self, frame: Frame, direction: FrameDirection) -> None:
        """A frame an interruption must not lose: handled without being cut short."""
        self.in_kept = True
        try:
            if isinstance(frame, _ENDS):
                if direction is _DOWN:
                    if isinstance(frame, EndFrame):
                        await self._run_on_stop(frame)
                    if self.phase is _ENDING:
                        self.phase = _ENDED
                await self.proc.push_frame(frame, direction)
            else:
                try:
                    await self.proc.process_frame(frame, direction)
                except Exception as exc:
                    await self.report_exception(exc, frame)
        finally:
            self.in_kept = False

    # ------------------------------------------------------------------ hooks, errors

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

    async def _run_on_stop(self, frame: EndFrame) -> None:
        proc = self.proc
        limit = math.inf if proc.stop_timeout is None else proc.stop_timeout
        if await self._run_hook(proc.on_stop, frame, trio.current_time() + limit):
            await proc.push_error(
                f"{proc.name}: on_stop did not finish within stop_timeout={proc.stop_timeout}s; "
                "it was abandoned"
            )

    def owes_cancel_hook(self) -> bool:
        """Started, and neither ended nor cancelled through the frames."""
        return self.start_frame is not None and self.phase not in (_ENDED, _CANCELLED)

    async def cancel_hook_after_run(self, reason: str) -> None:
        """Run the cancel hook of a run that ended without the CancelFrame reaching this
        processor (cancelled from outside, or ended by the task's watchdog): bounded by
        ``cancel_timeout``, errors logged (nobody reads frames any more)."""
        if not self.owes_cancel_hook():
            return
        self.phase = _CANCELLED
        proc = self.proc
        with trio.move_on_after(proc.cancel_timeout):
            try:
                await proc.on_cancel(CancelFrame(reason=reason))
            except Exception as exc:
                logger.warning("%s: on_cancel failed: %s", proc.name, exc, exc_info=exc)

    async def report_exception(self, exc: Exception, frame: Frame, *, fatal: bool = False) -> None:
        """Push an ErrorFrame upstream for an exception raised while handling ``frame``."""
        proc = self.proc
        logger.debug("%s failed handling %s", proc.name, frame.name, exc_info=exc)
        message = f"{proc.name}: {type(exc).__name__}: {exc} (while handling {frame.name})"
        error = ErrorFrame(error=message, fatal=fatal, processor=proc.name, exception=exc)
        if proc._prev is not None:
            # Without waiting, so the error is reported even from code being cancelled.
            proc.push_frame_nowait(error, _UP)
        else:
            await proc.push_frame(error, _UP)
