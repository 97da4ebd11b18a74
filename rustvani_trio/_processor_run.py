"""One run of one processor: how it takes frames in, its two loops, and its lifecycle.

A :class:`ProcessorRun` is created when a task attaches the processor (so every run starts from
a clean state) and holds everything that lives for that run: the lanes, the lifecycle
:class:`~rustvani_trio._lifecycle.Phase`, the StartFrame, the cancel scopes around ``on_start``
and the process loop, and the interruption hold.

* **Taking frames in** happens in the *sender's* task: a system frame goes to the system lane
  (an InterruptionFrame or CancelFrame cancels in-flight work and drains the process lane right
  there, so frames the sender pushes after it are not drained); a control or data frame goes to
  the process lane if the phase takes it, after waiting for room if it travels downstream, or
  is refused and reported. Taking a frame in is synchronous (:meth:`ProcessorRun.put`); only
  waiting for room suspends the sender.
* **The system loop** handles system frames in arrival order: the lifecycle frames with their
  hooks, the others with ``process_frame``.
* **The process loop** handles control and data frames one at a time, in a cancel scope per
  interruption, each only once the system frames that arrived before it have been handled
  (so an EndFrame never overtakes input audio, nor a transcript the "started speaking" signal
  ahead of it). After an interruption it waits until the interruption has been forwarded, so
  that new output cannot overtake it downstream.

Both loops take what is already queued without a schedule point and wait only when their lane
is empty: a burst of frames costs one task switch, not one per frame.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import attrs
import trio
from trio.lowlevel import (
    ParkingLot,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._lanes import Lanes, LaneStatistics
from ._lifecycle import Phase
from ._run_base import RunBase
from .frames import (
    CancelFrame,
    ControlFrame,
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

__all__ = ["KEPT", "YIELD_EVERY", "Arrived", "ProcessorRun"]

logger = logging.getLogger("rustvani_trio")

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
_ENDS = (EndFrame, StopFrame)
KEPT = (UninterruptibleFrame, TranscriptionFrame)
"""Frames an interruption neither drains nor cuts short (user transcripts are user input)."""
_IDLE, _RUNNING, _ENDING, _ENDED = Phase.IDLE, Phase.RUNNING, Phase.ENDING, Phase.ENDED
_CANCELLING, _CANCELLED = Phase.CANCELLING, Phase.CANCELLED

YIELD_EVERY = 16
"""A push that did not have to wait is not a schedule point, except every this many pushes:
a burst costs a task switch per 16 frames, not per frame, and a task that pushes in a loop
still lets others run. The first push after a processor was idle (its process task woke up,
or an LLM response's first delta) is a schedule point too, so the first frame of a burst goes
on through a chain of processors at once (first-token latency)."""


@attrs.frozen(kw_only=True)
class Arrived(ControlFrame, UninterruptibleFrame):
    """Private: put in the process lane when a system frame of one of the types a processor
    lists in ``_arrival_marks`` arrives, so the processor can do the part of its handling that
    must be ordered with the data (handled after the system frame itself; never drained)."""

    frame: SystemFrame


class ProcessorRun(RunBase):
    """The state and the loops of one processor for one run."""

    def __init__(self, proc: FrameProcessor, nursery: trio.Nursery | None) -> None:
        super().__init__(proc, nursery)
        self.lanes = Lanes(proc.name, proc.max_buffer)
        self.start_scope: trio.CancelScope | None = None  # around on_start
        self.process_scope: trio.CancelScope | None = None  # around the process loop
        # Whether process_scope was cancelled: what ``scope.cancel_called`` says, read per
        # frame without trio's property (which reads the clock for a deadline it never has).
        self.process_cut = False
        self.process_done: trio.Event | None = None  # set when the process task has returned
        self.in_kept = False  # handling a frame an interruption must not cut short
        self.interruptions = 0  # interruptions taken in and not yet forwarded
        self.resume = ParkingLot()  # where the process loop waits until they are
        self.system_in = 0  # system frames taken in
        self.system_done = 0  # system frames handled
        self.system_handled = ParkingLot()  # where the process loop waits for them
        self.waiting_for = 0  # the mark the process loop waits for (0: it does not wait)
        self.taken = ParkingLot()  # where the system loop waits until it has taken its frame
        self.marks: tuple[type[SystemFrame], ...] = proc._arrival_marks
        self.queued = self.lanes.process.items  # the process lane's frames, for a quick look
        self.busy = False  # the process loop holds a frame (handles it, or waits for it)
        self.took = ParkingLot()  # where the system loop waits until it takes the next one
        self.took_waits = False  # whether it waits there (read per frame: no call)
        from .processor import FrameProcessor  # (the module that imports this one)

        # The base class's hooks (an interruption reaching a processor that keeps them, on
        # the instance too, only goes on: see _forwards_at_once).
        self._base_on_interruption = FrameProcessor.on_interruption
        self._base_push_frame = FrameProcessor.push_frame

    def statistics(self) -> LaneStatistics:
        return self.lanes.statistics()

    def idle(self) -> bool:
        """Whether the processor runs with nothing queued, nothing in hand and every system
        frame that arrived handled: a frame taken past it now overtakes nothing."""
        return (
            not self.queued
            and not self.busy
            and self.phase is _RUNNING
            and self.system_done == self.system_in
        )

    def start(self) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self.system_loop, name=f"{self.proc.name}.system")

    # ------------------------------------------------------------------ taking frames in

    def put(self, frame: Frame, direction: FrameDirection, chain: bool = False) -> bool:
        """Take ``frame`` in now (the caller waited for room if it had to).

        With ``chain`` (a push), an interruption the processor would only forward may be
        left to the caller to push on at once (see :meth:`_forwards_at_once`): then it
        returns ``True`` and the frame was not queued here."""
        if isinstance(frame, SystemFrame):
            return self._enqueue_system(frame, direction, chain)
        if direction is _DOWN and self.phase is _RUNNING and not isinstance(frame, _ENDS):
            # The common case (a data frame going down), as _enqueue_process and Lane.put
            # would do it, without their calls: a push per token comes here.
            lanes = self.lanes
            lanes.down_pending += 1
            lane = lanes.process
            lane.items.append((frame, direction, self.system_in))
            waiter = lane.waiter
            if waiter is not None:
                lane.waiter = None
                reschedule(waiter)
        else:
            self._enqueue_process(frame, direction)
        return False

    def needs_room(self, frame: Frame, direction: FrameDirection) -> bool:
        """Whether a sender of ``frame`` must wait for room first."""
        lanes = self.lanes
        return (
            direction is _DOWN
            and lanes.down_pending >= lanes.max_buffer
            and self.phase is _RUNNING
            and not isinstance(frame, SystemFrame)
        )

    async def wait_for_room(self) -> None:
        """Wait until the process lane has room for one more downstream frame (or takes no
        more frames); raises ``trio.Cancelled`` if the sender is cancelled meanwhile."""
        lanes = self.lanes
        while lanes.down_pending >= lanes.max_buffer and self.phase is _RUNNING:
            await lanes.wait_for_room()

    async def enqueue(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in, waiting for room if it is a downstream control or data frame
        (a checkpoint: for the task's own input)."""
        await checkpoint_if_cancelled()
        if self.needs_room(frame, direction):
            await self.wait_for_room()
        self.put(frame, direction)
        await cancel_shielded_checkpoint()

    def enqueue_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        """Take ``frame`` in without waiting (ignoring backpressure)."""
        self.put(frame, direction)

    async def take(self, frame: Frame, direction: FrameDirection) -> None:
        if self.needs_room(frame, direction):
            await self.wait_for_room()
        self.put(frame, direction)

    take_nowait = enqueue_nowait

    def _enqueue_process(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _DOWN:
            if self.phase is not _RUNNING:
                return self._refuse(frame)
            self.lanes.down_pending += 1
            if isinstance(frame, _ENDS):
                self.phase = _ENDING
        elif not self.phase.takes_upstream:
            return self._refuse(frame)
        self.lanes.process.put((frame, direction, self.system_in))

    def _enqueue_system(self, frame: Frame, direction: FrameDirection, chain: bool) -> bool:
        if isinstance(frame, StartFrame):
            if self.phase is _IDLE:
                self.phase = _RUNNING
        elif isinstance(frame, InterruptionFrame):
            # Cancel and drain as the interruption arrives, in the sender's task, so that the
            # frames the sender pushes right after it are not drained.
            scope = self.process_scope
            if scope is not None and not self.in_kept and self.lanes.process.waiter is None:
                # (A process loop waiting on its empty lane has nothing in flight: it is not
                # woken for nothing; it checks for interruptions when a frame arrives.)
                self.process_cut = True
                scope.cancel()
            self.lanes.drain(KEPT)
            if chain and self._forwards_at_once(frame, direction):
                return True
            self.interruptions += 1
        elif isinstance(frame, CancelFrame):
            if not self.phase.cancelling:
                self.phase = _CANCELLING
            if self.process_scope is not None:
                self.process_cut = True
            for scope in (self.start_scope, self.process_scope):
                if scope is not None:
                    scope.cancel()
            self.lanes.drain(None)
            self.resume.unpark_all()
        self._put_system(frame, direction)
        marks = self.marks
        if marks and direction is _DOWN and self.phase is _RUNNING and isinstance(frame, marks):
            assert isinstance(frame, SystemFrame)
            self.lanes.down_pending += 1
            self.lanes.process.put((Arrived(frame=frame), _DOWN, self.system_in))
        return False

    def _forwards_at_once(self, frame: InterruptionFrame, direction: FrameDirection) -> bool:
        """Whether an interruption goes on at once, in the sender's task, instead of through
        the system loop: when the processor does nothing with it (the base class's
        ``on_interruption`` and ``push_frame``, on the instance) and the system loop is idle
        (no earlier system frame to wait behind), the loop would only forward it, one
        scheduling round later. So the work it
        interrupts further on (an LLM's request) is cancelled in the same step, as a direct
        cancel would. (Its in-flight work here was cancelled and its lane drained already.)"""
        system = self.lanes.system
        marks = self.marks
        proc = self.proc
        return (
            getattr(proc.on_interruption, "__func__", None) is self._base_on_interruption
            and getattr(proc.push_frame, "__func__", None) is self._base_push_frame
            and self.phase is _RUNNING
            and system.waiter is not None  # the system loop waits on an empty lane
            and not (marks and isinstance(frame, marks))
            and (proc._next if direction is _DOWN else proc._prev) is not None
        )

    def _put_system(self, frame: Frame, direction: FrameDirection) -> None:
        self.system_in += 1
        self.lanes.system.put((frame, direction))

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
        self._put_system(ErrorFrame(error=message, processor=name), _UP)

    # ------------------------------------------------------------------ the system loop

    async def system_loop(self) -> None:
        """Handles system frames at once, in arrival order."""
        proc = self.proc
        lane = self.lanes.system
        handled = self.system_handled
        queued = self.queued
        while True:
            frame, direction = await lane.get()
            if (
                queued
                and queued[0][2] <= self.system_done  # arrived before this frame
                and not self.busy
                and not self.interruptions
                and not self.phase.cancelling
                and not isinstance(frame, InterruptionFrame | CancelFrame)
            ):
                # The process loop is free and about to take a frame that arrived before this
                # one: it goes first. (A frame stuck behind one being handled is overtaken.)
                self.took_waits = True
                try:
                    await self.took.park()
                finally:
                    self.took_waits = False
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
                proc._super_forwarded = None
            self.system_done += 1
            if handled and self.system_done >= self.waiting_for:
                # The process loop waited for this one: it goes first with the frame it holds
                # (which arrived before the system frames still queued here).
                handled.unpark_all()
                await self.taken.park()

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
        """The process task (one function: a wrapper would be one more level in each of
        its resumptions)."""
        proc = self.proc
        lanes = self.lanes
        lane = lanes.process
        items = lane.items
        abort = lane.abort
        if items:
            # A first frame queued before this task first ran starts a burst, as one taken
            # after an idle wait does (an empty lane arms the push when a frame wakes it).
            proc._unyielded = YIELD_EVERY - 1
        try:
            while not self.phase.cancelling:
                handling: Frame | None = None  # being handled, or waiting for system frames
                with trio.CancelScope() as scope:
                    self.process_scope = scope
                    self.process_cut = False
                    # An interruption that arrived while an uninterruptible frame was handled
                    # (the scope was not cancelled) is forwarded before the next frame is taken,
                    # so that no new output overtakes it.
                    while not self.interruptions:
                        if not items:
                            # Idle: whatever wakes this task starts a burst, whose first frame
                            # should go on downstream at once. (Lane.get, without its two calls
                            # in every resumption of this task.)
                            while not items:
                                lane.waiter = current_task()
                                await wait_task_rescheduled(abort)
                            if self.interruptions:
                                # One arrived while this loop waited (which it did not cancel:
                                # nothing was in flight): it goes on downstream first (the
                                # frame's arrival mark would hold it back too).
                                break
                            proc._unyielded = YIELD_EVERY - 1  # (yield_on_next_push)
                        item = items.popleft()
                        if self.process_cut:
                            # The lane was drained as the interruption arrived, so this frame
                            # came after it (or is one it keeps): it goes back, to be taken in a
                            # fresh scope once the interruption has gone on (a later one may
                            # still drain it). After a cancel, nothing is taken any more.
                            if not self.phase.cancelling:
                                lane.items.appendleft(item)
                            break
                        frame, direction, mark = item
                        if direction is _DOWN:
                            lanes.down_pending -= 1
                            if lanes.blocked:
                                lanes.space.unpark()
                        self.busy = True
                        if self.took_waits:
                            self.took.unpark_all()
                        if isinstance(frame, KEPT):
                            await self._handle_kept(frame, direction, mark)
                            self.busy = False
                            continue
                        handling = frame
                        if mark > self.system_done:
                            await self._wait_for_system_frames(mark)
                        try:
                            await proc.process_frame(frame, direction)
                        except Exception as exc:
                            await self.report_exception(exc, frame)
                        proc._super_forwarded = None
                        handling = None
                        self.busy = False
                self.process_scope = None
                self.busy = False
                if handling is not None and not self.phase.cancelling:
                    lanes.count_drop(handling, "its handling was cut short")
                while self.interruptions and not self.phase.cancelling:
                    # Interrupted: wait until the interruption has gone on downstream.
                    await self.resume.park()
        finally:
            if self.process_done is not None:
                self.process_done.set()

    async def _wait_for_system_frames(self, mark: int) -> None:
        """Wait until the first ``mark`` system frames of the run have been handled; the
        system loop then waits until this task has taken its frame on (so system frames that
        arrived after the frame do not overtake it for nothing)."""
        self.waiting_for = mark
        try:
            while self.system_done < mark:
                await self.system_handled.park()
        finally:
            self.waiting_for = 0
            self.taken.unpark_all()

    async def _handle_kept(self, frame: Frame, direction: FrameDirection, mark: int) -> None:
        """A frame an interruption must not lose: handled without being cut short."""
        self.in_kept = True
        try:
            if isinstance(frame, _ENDS):
                if direction is _DOWN and isinstance(frame, EndFrame):
                    await self._run_on_stop(frame, mark)
                elif mark > self.system_done:
                    # Also upstream: the run's end (a StopFrame going up) must not overtake a
                    # system frame (an error) that reached this processor before it.
                    await self._wait_for_system_frames(mark)
                if direction is _DOWN and self.phase is _ENDING:
                    self.phase = _ENDED
                await self.proc.push_frame(frame, direction)
            else:
                if mark > self.system_done:
                    await self._wait_for_system_frames(mark)
                try:
                    await self.proc.process_frame(frame, direction)
                except Exception as exc:
                    await self.report_exception(exc, frame)
                self.proc._super_forwarded = None
        finally:
            self.in_kept = False

    # ------------------------------------------------------------------ hooks

    async def _run_on_stop(self, frame: EndFrame, mark: int) -> None:
        """``on_stop``, once the system frames that arrived before the EndFrame (input audio,
        say) have been handled; both within ``stop_timeout``."""
        proc = self.proc

        async def stop(frame: EndFrame) -> None:
            if mark > self.system_done:
                await self._wait_for_system_frames(mark)
            await proc.on_stop(frame)

        limit = math.inf if proc.stop_timeout is None else proc.stop_timeout
        if await self._run_hook(stop, frame, trio.current_time() + limit):
            await proc.push_error(
                f"{proc.name}: on_stop did not finish within stop_timeout={proc.stop_timeout}s; "
                "it was abandoned"
            )
