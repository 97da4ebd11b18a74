"""FrameProcessor: the unit of work, its two lanes, pushing frames, errors and metrics.

Every processor has two inbound lanes:

* the **system lane** (an unbounded trio memory channel) carries :class:`SystemFrame` s. It never
  blocks the sender; its frames are handled at once, in arrival order, by the processor's
  *system task*;
* the **process lane** carries control and data frames, handled one at a time, FIFO per
  direction, by the processor's *process task*. Frames travelling downstream meet
  backpressure: at most ``max_buffer`` of them wait in a processor's lane, and a sender beyond
  that waits. Frames travelling upstream never block their sender. With no cycle of blocking
  sends, the graph cannot deadlock.

The process task handles frames inside a cancel scope. An :class:`InterruptionFrame` (or a
:class:`CancelFrame`) arriving in the system lane cancels that scope, which stops exactly the
in-flight work (an HTTP stream, tool calls, a query), and drains the process lane, keeping only
uninterruptible frames (:class:`EndFrame`, :class:`StopFrame`). After an interruption the loop
goes on in a fresh scope; a cancel ends it. A scope is paid per interruption, not per frame.

Lifecycle frames (Start, End, Stop, Cancel, Interruption) are handled by the framework, which
calls the hooks :meth:`FrameProcessor.on_start`, :meth:`~FrameProcessor.on_stop`,
:meth:`~FrameProcessor.on_cancel` and :meth:`~FrameProcessor.on_interruption` and then forwards
the frame; :meth:`FrameProcessor.process_frame` sees every other frame.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint_if_cancelled

from .exceptions import RustvaniError
from .frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    MetricsFrame,
    ProcessingMetricsData,
    StartFrame,
    StopFrame,
    SystemFrame,
    TTFBMetricsData,
    UninterruptibleFrame,
)
from .observer import BaseObserver, FramePushed

if TYPE_CHECKING:
    from .task import PipelineTask

__all__ = ["DEFAULT_MAX_BUFFER", "FrameProcessor", "ProcessorNotLinkedError"]

logger = logging.getLogger("rustvani_trio")

DEFAULT_MAX_BUFFER = 64
"""How many downstream frames may wait in one processor's process lane before senders wait."""

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
_Item = tuple[Frame, FrameDirection]
_ENDS = (EndFrame, StopFrame)
_names = itertools.count(1)


class ProcessorNotLinkedError(RustvaniError, RuntimeError):
    """A frame was pushed towards a neighbour that does not exist."""


class FrameProcessor:
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

    def __init__(
        self,
        *,
        name: str | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        cancel_timeout: float = 2.0,
        stop_timeout: float | None = 30.0,
    ) -> None:
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer}")
        if cancel_timeout < 0:
            raise ValueError(f"cancel_timeout must not be negative, got {cancel_timeout}")
        if stop_timeout is not None and stop_timeout <= 0:
            raise ValueError(f"stop_timeout must be positive or None, got {stop_timeout}")
        self.name: str = name or f"{type(self).__name__}#{next(_names)}"
        self.max_buffer = max_buffer
        self.cancel_timeout = cancel_timeout
        self.stop_timeout = stop_timeout
        self._next: FrameProcessor | None = None
        self._prev: FrameProcessor | None = None
        self._observers: tuple[BaseObserver, ...] = ()
        self._task: PipelineTask | None = None
        self._nursery: trio.Nursery | None = None
        self._reset()

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        """Fresh lanes and state, so a processor can serve one run after another."""
        self._system_send, self._system_recv = trio.open_memory_channel[_Item](math.inf)
        self._process_send, self._process_recv = trio.open_memory_channel[_Item](math.inf)
        self._down_pending = 0
        self._space = ParkingLot()
        self._accept_down = False  # set when StartFrame arrives; cleared by End/Stop/Cancel
        self._accept_up = False
        self._start_frame: StartFrame | None = None
        self._cancel_received = False
        self._cancelled = False
        self._ended = False
        self._process_scope: trio.CancelScope | None = None
        self._process_done: trio.Event | None = None  # set when the process task has returned
        self._in_uninterruptible = False
        self._pending_interruptions = 0
        self._resume: trio.Event | None = None
        self._ttfb_start: float | None = None
        self._ttfb_reported = False
        self._processing_start: float | None = None

    @property
    def start_frame(self) -> StartFrame | None:
        """The StartFrame of the current run (its settings), or ``None`` before it arrives."""
        return self._start_frame

    @property
    def interruptions_allowed(self) -> bool:
        """Whether the run allows interruptions (from the StartFrame)."""
        return self._start_frame is not None and self._start_frame.allow_interruptions

    @property
    def metrics_enabled(self) -> bool:
        """Whether the run asked for TTFB and processing metrics."""
        return self._start_frame is not None and self._start_frame.enable_metrics

    @property
    def usage_metrics_enabled(self) -> bool:
        """Whether the run asked for token usage metrics."""
        return self._start_frame is not None and self._start_frame.enable_usage_metrics

    @property
    def task(self) -> PipelineTask | None:
        """The pipeline task this processor runs in, if any."""
        return self._task

    def lane_statistics(self) -> dict[str, int]:
        """Backlog of the lanes: ``system``, ``process`` and ``downstream_waiting`` frames,
        plus ``blocked_senders`` waiting for room."""
        return {
            "system": self._system_recv.statistics().current_buffer_used,
            "process": self._process_recv.statistics().current_buffer_used,
            "downstream_waiting": self._down_pending,
            "blocked_senders": len(self._space),
        }

    # ------------------------------------------------------------------ linking

    def link(self, other: FrameProcessor) -> FrameProcessor:
        """Make ``other`` the downstream neighbour of this processor; returns ``other``."""
        last = self._last_leaf()
        first = other._first_leaf()
        last._next = first
        first._prev = last
        return other

    def _first_leaf(self) -> FrameProcessor:
        return self

    def _last_leaf(self) -> FrameProcessor:
        return self

    def _leaves(self) -> Iterator[FrameProcessor]:
        yield self

    def _attach(
        self, task: PipelineTask, nursery: trio.Nursery, observers: tuple[BaseObserver, ...]
    ) -> None:
        self._reset()
        self._task = task
        self._nursery = nursery
        self._observers = observers

    # ------------------------------------------------------------------ overridables

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Handle one frame. The default forwards it in the direction it was travelling."""
        await self.push_frame(frame, direction)

    async def on_start(self, frame: StartFrame) -> None:
        """Called when the StartFrame arrives, before it is forwarded (open clients here)."""

    async def on_stop(self, frame: EndFrame) -> None:
        """Called when the EndFrame arrives, after every frame queued before it was handled,
        and before it is forwarded."""

    async def on_cancel(self, frame: CancelFrame) -> None:
        """Called when a CancelFrame arrives, after in-flight work was cancelled and has
        unwound (its ``finally`` blocks have run; waited for at most half of
        ``cancel_timeout``). The whole cancel runs under a deadline of ``cancel_timeout``
        seconds; it should release resources and return."""

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        """Called when an InterruptionFrame arrives, after in-flight work was cancelled and
        the process lane drained, before the frame is forwarded."""

    # ------------------------------------------------------------------ pushing

    async def push_frame(self, frame: Frame, direction: FrameDirection = _DOWN) -> None:
        """Send ``frame`` to the neighbour in ``direction``.

        Downstream control and data frames may wait for room in the neighbour's lane
        (backpressure); system frames and upstream frames never wait. If the calling code has
        been cancelled (an interruption), this raises ``trio.Cancelled`` before sending, so
        nothing from interrupted work leaks out.
        """
        dest = self._next if direction is _DOWN else self._prev
        if dest is None:
            await checkpoint_if_cancelled()
            await self._push_past_edge(frame, direction)
            return
        if self._observers:
            self._notify_observers(frame, direction, dest)
        await dest._enqueue(frame, direction)

    def push_frame_nowait(self, frame: Frame, direction: FrameDirection = _DOWN) -> None:
        """Send ``frame`` without waiting, even from cancelled code.

        For the few frames that must still go out after a cancellation (usage of an
        interrupted request, an error): it ignores backpressure, so do not use it for a stream.
        """
        dest = self._next if direction is _DOWN else self._prev
        if dest is None:
            raise ProcessorNotLinkedError(
                f"{self.name} has no {direction.value} neighbour for {frame.name}"
            )
        if self._observers:
            self._notify_observers(frame, direction, dest)
        dest._enqueue_nowait(frame, direction)

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

    # ------------------------------------------------------------------ receiving

    async def _enqueue(self, frame: Frame, direction: FrameDirection) -> None:
        await checkpoint_if_cancelled()
        if isinstance(frame, SystemFrame):
            self._enqueue_system(frame, direction)
        elif direction is _DOWN:
            if not self._accept_down:
                self._refuse(frame, direction)
            else:
                while self._down_pending >= self.max_buffer:
                    await self._space.park()
                    try:
                        # Woken, but an interruption may have cancelled the sender since: a
                        # cancelled sender must not emit (the interruption may already have
                        # gone on downstream, so the frame would pass for a new one).
                        await checkpoint_if_cancelled()
                    except trio.Cancelled:
                        self._space.unpark()  # hand the wake-up on to the next sender
                        raise
                    if not self._accept_down:
                        self._refuse(frame, direction)
                        return
                self._down_pending += 1
                if isinstance(frame, _ENDS):
                    self._accept_down = False
                self._process_send.send_nowait((frame, direction))
        elif self._accept_up:
            self._process_send.send_nowait((frame, direction))
        else:
            self._refuse(frame, direction)
        await cancel_shielded_checkpoint()

    def _enqueue_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, SystemFrame):
            self._enqueue_system(frame, direction)
        elif not (self._accept_down if direction is _DOWN else self._accept_up):
            self._refuse(frame, direction)
        else:
            if direction is _DOWN:
                self._down_pending += 1
                if isinstance(frame, _ENDS):
                    self._accept_down = False
            self._process_send.send_nowait((frame, direction))

    def _enqueue_system(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, StartFrame):
            self._accept_down = self._accept_up = True
        elif isinstance(frame, InterruptionFrame):
            self._interrupt_now()
        elif isinstance(frame, CancelFrame):
            self._accept_down = self._accept_up = False
            self._cancel_received = True
            if self._process_scope is not None:
                self._process_scope.cancel()
            self._drain(keep_uninterruptible=False)
        self._system_send.send_nowait((frame, direction))

    def _interrupt_now(self) -> None:
        """Cancel in-flight work and drain the lane *as the interruption arrives*, so that
        frames the sender pushes after it are not drained, and hold the process loop until the
        interruption has been forwarded, so that new output cannot overtake it."""
        scope = self._process_scope
        if scope is not None and not self._in_uninterruptible:
            scope.cancel()
        self._drain(keep_uninterruptible=True)
        self._pending_interruptions += 1
        if self._resume is None:
            self._resume = trio.Event()

    def _refuse(self, frame: Frame, direction: FrameDirection) -> None:
        """A frame arrived when this processor cannot take it: say so, never drop silently."""
        if self._cancel_received:
            # The run is being cancelled: dropping in-flight frames is what a cancel means.
            logger.debug("%s: dropped %s after CancelFrame", self.name, frame.name)
            return
        if self._start_frame is None and not self._accept_up:
            why = "before StartFrame (did an upstream processor forget to forward it?)"
        else:
            why = "after EndFrame (it was pushed after the end of the stream)"
        message = f"{self.name} received {frame.name} {why}; the frame was dropped"
        logger.error(message)
        error = ErrorFrame(error=message, processor=self.name)
        self._system_send.send_nowait((error, _UP))

    # ------------------------------------------------------------------ the two loops

    async def _system_loop(self) -> None:
        """Handles system frames at once, in arrival order."""
        recv = self._system_recv
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
                    await self.process_frame(frame, direction)
                except Exception as exc:
                    await self._report_exception(exc, frame)

    async def _handle_start(self, frame: StartFrame, direction: FrameDirection) -> None:
        if self._start_frame is not None:
            await self.push_error(f"{self.name} received a second StartFrame; ignored")
            return
        self._start_frame = frame
        try:
            await self.on_start(frame)
        except Exception as exc:
            await self._report_exception(exc, frame, fatal=True)
        assert self._nursery is not None, "processor started outside a PipelineTask"
        self._process_done = trio.Event()
        self._nursery.start_soon(self._process_loop, name=f"{self.name}.process")
        await self.push_frame(frame, direction)

    async def _handle_cancel(self, frame: CancelFrame, direction: FrameDirection) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self._release_process_loop()
        deadline = trio.current_time() + self.cancel_timeout
        done = self._process_done
        if done is not None:
            # The in-flight work was cancelled as the frame arrived; let it unwind (its own
            # cleanup runs first) before on_cancel releases what it used. Bounded by half the
            # cancel budget, so on_cancel always gets the other half.
            with trio.move_on_at(deadline - self.cancel_timeout / 2):
                await done.wait()
        with trio.move_on_at(deadline) as scope:
            try:
                await self.on_cancel(frame)
            except Exception as exc:
                await self._report_exception(exc, frame)
        if scope.cancelled_caught:
            logger.warning("%s: on_cancel took longer than %ss", self.name, self.cancel_timeout)
        await self.push_frame(frame, direction)

    async def _handle_interruption(
        self, frame: InterruptionFrame, direction: FrameDirection
    ) -> None:
        try:
            try:
                await self.on_interruption(frame)
            except Exception as exc:
                await self._report_exception(exc, frame)
            await self.push_frame(frame, direction)
        finally:
            self._pending_interruptions -= 1
            if self._pending_interruptions == 0:
                self._release_process_loop()

    def _release_process_loop(self) -> None:
        resume, self._resume = self._resume, None
        if resume is not None:
            resume.set()

    def _drain(self, *, keep_uninterruptible: bool) -> None:
        """Empty the process lane, keeping uninterruptible frames in order."""
        kept: list[_Item] = []
        while True:
            try:
                item = self._process_recv.receive_nowait()
            except trio.WouldBlock:
                break
            if keep_uninterruptible and isinstance(item[0], UninterruptibleFrame):
                kept.append(item)
        self._down_pending = 0
        for item in kept:
            if item[1] is _DOWN:
                self._down_pending += 1
            self._process_send.send_nowait(item)
        self._space.unpark_all()

    async def _process_loop(self) -> None:
        """Handles control and data frames one at a time, in a scope per interruption."""
        try:
            await self._process_frames()
        finally:
            if self._process_done is not None:
                self._process_done.set()

    async def _process_frames(self) -> None:
        recv = self._process_recv
        carried: _Item | None = None
        while not self._cancel_received:
            with trio.CancelScope() as scope:
                self._process_scope = scope
                if carried is not None:
                    frame, direction = carried
                    carried = None
                    await self._dispatch(frame, direction)
                while True:
                    frame, direction = await recv.receive()
                    if direction is _DOWN:
                        self._down_pending -= 1
                        if self._space:
                            self._space.unpark()
                    if scope.cancel_called:
                        # Taken just before an interruption: stale, unless uninterruptible.
                        if isinstance(frame, UninterruptibleFrame) and not self._cancel_received:
                            carried = (frame, direction)
                        break
                    await self._dispatch(frame, direction)
            self._process_scope = None
            if self._resume is not None:
                # Interrupted: wait until the interruption has gone on downstream.
                await self._resume.wait()

    async def _dispatch(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, UninterruptibleFrame):
            await self._handle_uninterruptible(frame, direction)
            return
        try:
            await self.process_frame(frame, direction)
        except Exception as exc:
            await self._report_exception(exc, frame)

    async def _handle_uninterruptible(self, frame: Frame, direction: FrameDirection) -> None:
        self._in_uninterruptible = True
        try:
            if isinstance(frame, _ENDS):
                if isinstance(frame, EndFrame) and direction is _DOWN:
                    await self._run_on_stop(frame)
                if direction is _DOWN:
                    self._ended = True
                await self.push_frame(frame, direction)
            else:
                try:
                    await self.process_frame(frame, direction)
                except Exception as exc:
                    await self._report_exception(exc, frame)
        finally:
            self._in_uninterruptible = False

    async def _run_on_stop(self, frame: EndFrame) -> None:
        limit = math.inf if self.stop_timeout is None else self.stop_timeout
        with trio.move_on_after(limit) as scope:
            try:
                await self.on_stop(frame)
            except Exception as exc:
                await self._report_exception(exc, frame)
        if scope.cancelled_caught:
            await self.push_error(
                f"{self.name}: on_stop did not finish within stop_timeout={self.stop_timeout}s; "
                "it was abandoned"
            )

    async def _run_cancel_hook_from_outside(self, reason: str) -> None:
        """Run ``on_cancel`` for a run that was cancelled from outside (the frames could not
        flow): bounded by ``cancel_timeout``, errors logged."""
        if self._start_frame is None or self._cancelled or self._ended:
            return
        self._cancelled = True
        with trio.move_on_after(self.cancel_timeout):
            try:
                await self.on_cancel(CancelFrame(reason=reason))
            except Exception as exc:
                logger.warning("%s: on_cancel failed: %s", self.name, exc, exc_info=exc)

    async def _report_exception(self, exc: Exception, frame: Frame, *, fatal: bool = False) -> None:
        logger.debug("%s failed handling %s", self.name, frame.name, exc_info=exc)
        message = f"{self.name}: {type(exc).__name__}: {exc} (while handling {frame.name})"
        error = ErrorFrame(error=message, fatal=fatal, processor=self.name, exception=exc)
        if self._prev is not None:
            # Without waiting, so the error is reported even from code being cancelled.
            self.push_frame_nowait(error, _UP)
        else:
            await self.push_frame(error, _UP)

    # ------------------------------------------------------------------ metrics

    def start_ttfb_metrics(self) -> None:
        """Start timing a time-to-first-byte measurement (no-op when metrics are off)."""
        if self.metrics_enabled and not (
            self._ttfb_reported
            and self._start_frame is not None
            and self._start_frame.report_only_initial_ttfb
        ):
            self._ttfb_start = trio.current_time()

    async def stop_ttfb_metrics(self) -> float | None:
        """Stop the TTFB timer and push a MetricsFrame; returns the value (or ``None``)."""
        if self._ttfb_start is None:
            return None
        value = trio.current_time() - self._ttfb_start
        self._ttfb_start = None
        self._ttfb_reported = True
        await self._push_metrics(TTFBMetricsData(processor=self.name, value=value))
        return value

    def start_processing_metrics(self) -> None:
        """Start timing one unit of processing (no-op when metrics are off)."""
        if self.metrics_enabled:
            self._processing_start = trio.current_time()

    async def stop_processing_metrics(self) -> float | None:
        """Stop the processing timer and push a MetricsFrame; returns the value (or ``None``)."""
        if self._processing_start is None:
            return None
        value = trio.current_time() - self._processing_start
        self._processing_start = None
        await self._push_metrics(ProcessingMetricsData(processor=self.name, value=value))
        return value

    def push_usage_metrics_nowait(
        self, usage: LLMTokenUsage, *, model: str | None = None, interrupted: bool = False
    ) -> None:
        """Report token usage (works from cancelled code, e.g. an interrupted request)."""
        if self.usage_metrics_enabled:
            data = LLMUsageMetricsData(
                processor=self.name, value=usage, model=model, interrupted=interrupted
            )
            self.push_frame_nowait(MetricsFrame(data=(data,)))

    async def _push_metrics(self, data: MetricsData) -> None:
        await self.push_frame(MetricsFrame(data=(data,)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
