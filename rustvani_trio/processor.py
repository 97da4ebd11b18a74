"""FrameProcessor: the unit of work: its hooks, pushing frames, errors and metrics.

How a processor runs (its lanes, its two loops, its lifecycle) lives beside this module, in
``_lanes.py`` and ``_processor_run.py``; this module is what a subclass sees and calls.

Every processor has two inbound lanes:

* the **system lane** carries :class:`SystemFrame` s. It never blocks the sender; its frames
  are handled at once, in arrival order, by the processor's *system task*;
* the **process lane** carries control and data frames, handled one at a time, FIFO per
  direction, by the processor's *process task*. Frames travelling downstream meet
  backpressure: at most ``max_buffer`` of them wait in a processor's lane, and a sender beyond
  that waits. Frames travelling upstream never block their sender. With no cycle of blocking
  sends, the graph cannot deadlock.

A control or data frame is handled only after the system frames that arrived before it at the
same processor (so a system frame's handling must not wait for a data frame that arrives after
it); a system frame overtakes the frames stuck behind one being handled, not those a free
process task was about to take.

The process task handles frames inside a cancel scope. An :class:`InterruptionFrame` (or a
:class:`CancelFrame`) arriving in the system lane cancels that scope, which stops exactly the
in-flight work (an HTTP stream, tool calls, a query), and drains the process lane, keeping only
the frames an interruption must not lose: uninterruptible ones (:class:`EndFrame`,
:class:`StopFrame`) and user transcripts (:class:`TranscriptionFrame`). Their handling is not
cut short either: an interruption arriving meanwhile is forwarded before the next frame is taken,
so no output overtakes it. After an interruption the loop goes on in a fresh scope; a cancel
ends it. A scope is paid per interruption, not per frame. Each frame an interruption drops is
logged at DEBUG and counted in :meth:`FrameProcessor.statistics`.

Lifecycle frames (Start, End, Stop, Cancel, Interruption) are handled by the framework, which
calls the hooks :meth:`FrameProcessor.on_start`, :meth:`~FrameProcessor.on_stop`,
:meth:`~FrameProcessor.on_cancel` and :meth:`~FrameProcessor.on_interruption` and then forwards
the frame; :meth:`FrameProcessor.process_frame` sees every other frame.

For synchronous transforms, filters and taps, :class:`InlineProcessor` (defined in
``_inline.py``, public here) has no lanes or tasks: it runs in the task of whoever pushes to
it, for a few function calls per frame instead of a hop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, NoReturn

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._element import PipelineElement
from ._lanes import LaneStatistics
from ._lifecycle import Phase
from ._metrics import ProcessorMetrics
from ._processor_run import YIELD_EVERY as YIELD_EVERY
from ._processor_run import ProcessorRun
from ._push_misuse import PushMisuse
from ._run_base import RunBase
from ._stopwatch import Stopwatch
from .exceptions import RustvaniError
from .frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    StartFrame,
    SystemFrame,
)
from .observer import BaseObserver, FramePushed

if TYPE_CHECKING:
    from .task import PipelineTask

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "FrameProcessor",
    "InlineOutput",
    "InlineProcessor",
    "LaneStatistics",
    "PipelineElement",
    "ProcessorNotLinkedError",
]

logger = logging.getLogger("rustvani_trio")

DEFAULT_MAX_BUFFER = 64
"""How many downstream frames may wait in one processor's process lane before senders wait."""

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM


class ProcessorNotLinkedError(RustvaniError, RuntimeError):
    """A frame was pushed towards a neighbour that does not exist."""


def _bad_direction(direction: object) -> NoReturn:
    raise TypeError(
        f"direction must be FrameDirection.DOWNSTREAM or FrameDirection.UPSTREAM, got {direction!r}"
    )


def _check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")


class FrameProcessor(PipelineElement, ProcessorMetrics, PushMisuse):
    """The unit of work of a pipeline.

    Subclass it and override :meth:`process_frame`; the default forwards every frame in the
    direction it was travelling. Push frames with :meth:`push_frame`, report errors with
    :meth:`push_error`. Override the lifecycle hooks (:meth:`on_start`, :meth:`on_stop`,
    :meth:`on_cancel`, :meth:`on_interruption`) for setup and teardown.

    ``process_frame`` is called from two tasks: system frames (errors, speaking signals, metrics)
    from the system task, at once; control and data frames from the process task, one at a time.
    Nothing is started in ``__init__``: a processor's tasks live in its pipeline task's nursery.

    Args:
        name: shown in errors and metrics; defaults to ``ClassName#n``.
        max_buffer: the downstream backlog of the process lane (backpressure bound).
        cancel_timeout: how long :meth:`on_cancel` may take before it is abandoned.
        stop_timeout: how long :meth:`on_stop` may take before it is abandoned and reported
            (``None``: no limit).
    """

    _arrival_marks: ClassVar[tuple[type[SystemFrame], ...]] = ()
    """System frame types whose arrival also puts a private marker in the process lane (for a
    processor whose handling of them must be ordered with its data; see aggregators.py)."""

    def __init__(
        self,
        *,
        name: str | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        cancel_timeout: float = 2.0,
        stop_timeout: float | None = 30.0,
    ) -> None:
        _check_seconds("cancel_timeout", cancel_timeout)
        _check_seconds("stop_timeout", stop_timeout, optional=True)
        if cancel_timeout < 0:
            raise ValueError(f"cancel_timeout must not be negative, got {cancel_timeout}")
        if stop_timeout is not None and stop_timeout <= 0:
            raise ValueError(f"stop_timeout must be positive or None, got {stop_timeout}")
        super().__init__(name=name)
        self.max_buffer = max_buffer
        self.cancel_timeout = cancel_timeout
        self.stop_timeout = stop_timeout
        self._next: FrameProcessor | None = None
        self._prev: FrameProcessor | None = None
        self._attach(None, ())

    def _attach(self, nursery: trio.Nursery | None, observers: tuple[BaseObserver, ...]) -> None:
        """Start a fresh run (a task attaches its processors; ``__init__`` with no nursery)."""
        self._processor_run = run = self._new_run(nursery)
        # Bound here for the task's own input (the hot path, a neighbour pushing, reads the
        # run directly).
        self._enqueue: Callable[[Frame, FrameDirection], Awaitable[None]] = run.enqueue
        self._enqueue_nowait: Callable[[Frame, FrameDirection], None] = run.enqueue_nowait
        self._observers = observers
        self._unyielded = 0  # pushes since the last one that was a schedule point
        # The last frame pushed each way: pushing it again at once is a mistake (see push_frame).
        self._last_pushed_down: Frame | None = None
        self._last_pushed_up: Frame | None = None
        self._warned_misuse = False
        # The frame the base process_frame forwarded when an override called it through
        # super(), until the override's next push or the end of that frame's handling.
        self._super_forwarded: Frame | None = None
        self._ttfb_watch = Stopwatch()
        self._ttfb_reported = False
        self._processing_watch = Stopwatch()

    def _new_run(self, nursery: trio.Nursery | None) -> RunBase:
        return ProcessorRun(self, nursery)

    # ------------------------------------------------------------------ state

    @property
    def max_buffer(self) -> int:
        """How many downstream frames may wait in the process lane before senders wait."""
        return self._max_buffer

    @max_buffer.setter
    def max_buffer(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"max_buffer must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"max_buffer must be at least 1, got {value}")
        self._max_buffer = value
        run = getattr(self, "_processor_run", None)
        if isinstance(run, ProcessorRun):
            run.lanes.max_buffer = value

    @property
    def pipeline_task(self) -> PipelineTask | None:
        """The PipelineTask this processor belongs to (directly, or through the pipelines
        around it), or ``None`` when it is not part of one."""
        from .task import PipelineTask

        owner = self._owner
        while isinstance(owner, PipelineElement):
            owner = owner._owner
        return owner if isinstance(owner, PipelineTask) else None

    def statistics(self) -> LaneStatistics:
        """A snapshot of this processor's lanes: backlog, blocked senders, interruption drops."""
        return self._processor_run.statistics()

    # ------------------------------------------------------------------ linking

    def _leaves(self) -> Iterator[FrameProcessor]:
        yield self

    # ------------------------------------------------------------------ overridables

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Handle one frame. The default forwards it in the direction it was travelling (so
        an override that calls ``super().process_frame()`` must not push the frame again)."""
        await self.push_frame(frame, direction)
        if type(self).process_frame is not FrameProcessor.process_frame:
            self._super_forwarded = frame  # an override called it: see _after_super

    async def on_start(self, frame: StartFrame) -> None:
        """Called when the StartFrame arrives, before it is forwarded (open clients here). A
        CancelFrame arriving meanwhile cancels it (and the StartFrame goes no further);
        :meth:`on_cancel` then follows."""

    async def on_stop(self, frame: EndFrame) -> None:
        """Called when the EndFrame arrives, after every frame queued before it was handled,
        and before it is forwarded."""

    async def on_cancel(self, frame: CancelFrame) -> None:
        """Called once when the run is cancelled, if this processor started (``on_start``
        was entered), after in-flight work was cancelled and has unwound (its ``finally``
        blocks have run; waited for at most half of ``cancel_timeout``). The whole cancel runs
        under a deadline of ``cancel_timeout`` seconds; it should release resources and
        return. Also called after a run that ended without the CancelFrame reaching this
        processor (cancelled from outside, or ended by the task's watchdog)."""

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        """Called when an InterruptionFrame arrives, after in-flight work was cancelled and
        the process lane drained, before the frame is forwarded."""

    # ------------------------------------------------------------------ pushing

    def yield_on_next_push(self) -> None:
        """Make this processor's next push a schedule point, so the frame it sends is handled
        downstream before this task goes on (for the first frame of a burst: a response's
        first token)."""
        self._unyielded = YIELD_EVERY - 1

    async def push_frame(self, frame: Frame, direction: FrameDirection = _DOWN) -> None:
        """Send ``frame`` to the neighbour in ``direction``.

        Downstream control and data frames may wait for room in the neighbour's lane
        (backpressure); system frames and upstream frames never wait. If the calling code has
        been cancelled (an interruption), this raises ``trio.Cancelled`` before sending, so
        nothing from interrupted work leaks out. Observers are told once the frame has been
        delivered.

        A push that does not wait for room is not a schedule point (except every 16th): the
        neighbour handles what was pushed when this task next waits, so a burst costs a task
        switch per 16 frames rather than one per frame.

        Pushing the frame just pushed the same way again is refused with a warning (once per
        processor): the usual cause is calling ``super().process_frame(frame, direction)``,
        which already forwards the frame, and then ``push_frame(frame, direction)``.
        """
        if direction is _DOWN and self._super_forwarded is None:
            # The common case first (a frame going down to a processor with lanes): what the
            # general path below does for it, without the checks for the other cases.
            dest = self._next
            run = None if dest is None else dest._processor_run
            if type(run) is ProcessorRun and frame is not self._last_pushed_down:
                await checkpoint_if_cancelled()
                lanes = run.lanes
                if lanes.down_pending >= lanes.max_buffer and run.needs_room(frame, _DOWN):
                    await run.wait_for_room()
                forward = run.put(frame, _DOWN, True)
                if self._observers:
                    self._notify_observers(frame, _DOWN, run.proc)
                if forward:
                    _push_on(run.proc, frame, _DOWN)
                self._unyielded += 1
                if self._unyielded >= YIELD_EVERY:
                    self._unyielded = 0
                    await cancel_shielded_checkpoint()
                self._last_pushed_down = frame
                return
        if self._super_forwarded is not None:
            self._after_super(frame)
        if direction is _DOWN:
            if frame is self._last_pushed_down:
                return await self._pushed_twice(frame, direction)
            dest = self._next
        elif direction is _UP:
            if frame is self._last_pushed_up:
                return await self._pushed_twice(frame, direction)
            dest = self._prev
        else:
            _bad_direction(direction)
        await checkpoint_if_cancelled()
        sender: FrameProcessor = self
        item = frame
        run = None if dest is None else dest._processor_run
        if run is not None and not isinstance(run, ProcessorRun):
            # An inline processor: it runs here, in this task. What leaves its chain is
            # delivered from the chain's last processor, as if that one had pushed it.
            if self._observers and dest is not None:
                self._notify_observers(frame, direction, dest)
            left = run.flow(frame, direction)
            sender = run.chain_exit(direction)
            if isinstance(left, list):
                await run.deliver_all(left, direction)
                left = None
            if left is None:
                run = None
            else:
                item = left
                dest = sender._next if direction is _DOWN else sender._prev
                run = None if dest is None else dest._processor_run
                if run is None:
                    await sender._push_past_edge(item, direction)
        elif run is None:
            await self._push_past_edge(frame, direction)
        if isinstance(run, ProcessorRun):
            if run.lanes.down_pending >= run.lanes.max_buffer and run.needs_room(item, direction):
                await run.wait_for_room()
            forward = run.put(item, direction, True)
            if sender._observers and dest is not None:
                sender._notify_observers(item, direction, dest)
            if forward:
                _push_on(run.proc, item, direction)
            self._unyielded += 1
            if self._unyielded >= YIELD_EVERY:
                self._unyielded = 0
                await cancel_shielded_checkpoint()
        if direction is _DOWN:
            self._last_pushed_down = frame
        else:
            self._last_pushed_up = frame

    def push_frame_nowait(self, frame: Frame, direction: FrameDirection = _DOWN) -> None:
        """Send ``frame`` without waiting, even from cancelled code.

        For the few frames that must still go out after a cancellation (usage of an
        interrupted request, an error): it ignores backpressure, so do not use it for a stream.
        """
        if direction is _DOWN:
            dest = self._next
        elif direction is _UP:
            dest = self._prev
        else:
            _bad_direction(direction)
        if dest is None:
            raise ProcessorNotLinkedError(
                f"{self.name} has no {direction.value} neighbour for {frame.name}"
            )
        _push_on(self, frame, direction)

    def downstream_room(self) -> float:
        """How many control or data frames :meth:`push_frame` can send downstream right now
        without waiting for room (``math.inf`` when none would wait: the neighbour takes no
        more, or the frames leave the pipeline). Past inline processors, the room is the one
        of the processor with lanes after them (which they may fill faster, if they turn one
        frame into several)."""
        dest = self._next
        run = None if dest is None else dest._processor_run
        if type(run) is ProcessorRun:  # (the common case first: once per read of a stream)
            if run.phase is not Phase.RUNNING:
                return math.inf
            room = run.lanes.max_buffer - run.lanes.down_pending
            return room if room > 0 else 0
        if run is not None and not isinstance(run, ProcessorRun):
            dest = run.chain_exit(_DOWN)._next
            run = None if dest is None else dest._processor_run
        if not isinstance(run, ProcessorRun) or run.phase is not Phase.RUNNING:
            return math.inf
        return max(0, run.lanes.max_buffer - run.lanes.down_pending)

    async def push_error(
        self, message: str, *, fatal: bool = False, exception: BaseException | None = None
    ) -> None:
        """Push an :class:`ErrorFrame` upstream naming this processor."""
        await self.push_frame(
            ErrorFrame(error=message, fatal=fatal, processor=self.name, exception=exception),
            _UP,
        )

    async def _push_past_edge(self, frame: Frame, direction: FrameDirection) -> None:
        raise ProcessorNotLinkedError(
            f"{self.name} has no {direction.value} neighbour for {frame.name}; "
            "is it inside a Pipeline run by a PipelineTask?"
        )

    def _notify_observers(
        self, frame: Frame, direction: FrameDirection, dest: FrameProcessor
    ) -> None:
        event = FramePushed(
            source=self,
            destination=dest,
            frame=frame,
            direction=direction,
            timestamp=trio.current_time(),
        )
        for observer in self._observers:
            observer.on_push_frame(event)


def _push_on(proc: FrameProcessor, frame: Frame, direction: FrameDirection) -> None:
    """Push ``frame`` from ``proc`` to its neighbour without waiting (``push_frame_nowait``),
    and on past every processor after it that takes it without queueing it, to be pushed on at
    once (an interruption: ``ProcessorRun._forwards_at_once``). A loop, so a chain of any
    length costs no stack, and observers hear of each push in path order."""
    while True:
        dest = proc._next if direction is _DOWN else proc._prev
        assert dest is not None  # (checked by the caller, or by _forwards_at_once)
        run = dest._processor_run
        if not isinstance(run, ProcessorRun):  # an inline processor: as push_frame_nowait
            if proc._observers:
                proc._notify_observers(frame, direction, dest)
            run.take_nowait(frame, direction)
            return
        forward = run.put(frame, direction, True)
        if proc._observers:
            proc._notify_observers(frame, direction, dest)
        if not forward:
            return
        proc = dest


# The inline kind of processor (defined beside this module, which it derives from).
from ._inline import InlineOutput as InlineOutput  # noqa: E402
from ._inline import InlineProcessor as InlineProcessor  # noqa: E402
