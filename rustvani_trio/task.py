"""PipelineTask: runs a pipeline in one nursery, from StartFrame to End, Stop or Cancel.

```python
task = PipelineTask(Pipeline([a, b, c]), params=PipelineParams(enable_metrics=True))
await task.queue_frames([TextFrame(text="hi"), EndFrame()])
await task.run()                       # or: await nursery.start(task.run)
```

The task wraps the pipeline between a source and a sink of its own. It sends the StartFrame,
feeds the frames given to :meth:`PipelineTask.queue_frame` once every processor has started,
and the run ends when an EndFrame or StopFrame (after the data queued before it) or a CancelFrame
reaches the sink. A fatal :class:`ErrorFrame` reaching the source cancels the run and
:meth:`PipelineTask.run` raises :class:`PipelineFatalError`.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import trio

from ._edges import TaskEdge, UpstreamFlush
from ._element import PipelineElement, check_element
from ._lifecycle import RunEnd, TaskPhase
from ._monitors import Heartbeats, IdleMonitor
from ._params import PipelineParams
from ._task_io import EventHandlers, Handler, TaskInput
from ._text import excerpt
from .exceptions import RustvaniError
from .frames import (
    CancelFrame,
    CancelTaskFrame,
    EndFrame,
    EndTaskFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    HeartbeatFrame,
    InterruptionFrame,
    InterruptionTaskFrame,
    StartFrame,
    StopFrame,
    SystemFrame,
)
from .observer import BaseObserver
from .processor import FrameProcessor

__all__ = ["PipelineFatalError", "PipelineParams", "PipelineTask"]

logger = logging.getLogger("rustvani_trio")

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
_NEW, _RUNNING, _ENDING = TaskPhase.NEW, TaskPhase.RUNNING, TaskPhase.ENDING
_STOPPING, _CANCELLING, _FINISHED = TaskPhase.STOPPING, TaskPhase.CANCELLING, TaskPhase.FINISHED
_ENDS = (EndFrame, StopFrame)  # (queued: they go through the edge, which ends with them)
# The frames reaching the sink that the task does more with than report them.
_AWAITED = (HeartbeatFrame, StartFrame, EndFrame, StopFrame, CancelFrame)


def _check_observer(observer: object) -> None:
    if not isinstance(observer, BaseObserver):
        raise TypeError(f"an observer must be a BaseObserver, got {observer!r:.80}")


class PipelineFatalError(RustvaniError):
    """The run ended because of a fatal :class:`ErrorFrame`, available as :attr:`frame`."""

    def __init__(self, frame: ErrorFrame) -> None:
        where = f" in {frame.processor}" if frame.processor else ""
        super().__init__(f"fatal error{where}: {frame.error}")
        self.frame = frame


class PipelineTask:
    """Runs a pipeline (or a single processor) once.

    Event handlers (sync or async callables; the task is their first argument), registered with
    :meth:`add_event_handler` or the :meth:`event_handler` decorator:

    * ``on_pipeline_started(task)``: the StartFrame went through every processor;
    * ``on_pipeline_finished(task, reason)``: the run ended; ``reason`` is ``"end"``,
      ``"stop"``, ``"cancel"`` (with the cancel's reason after a colon), or ``"error"``;
    * ``on_error(task, frame)``: an ErrorFrame reached the source (fatal or not). Without a
      handler, non-fatal errors are logged at WARNING;
    * ``on_frame_reached_upstream(task, frame)`` / ``on_frame_reached_downstream(task, frame)``:
      every frame that leaves either end of the pipeline;
    * ``on_idle_timeout(task)``; ``on_heartbeat(task, latency)``.

    :meth:`remove_event_handler` unregisters one, at any time (a frame reaching the sink
    while nothing watches ``on_frame_reached_downstream`` leaves in the sender's task again).

    The pipeline belongs to this task until the run has finished: building a second task (or
    a Pipeline) around it meanwhile raises ``ValueError``.
    """

    def __init__(
        self,
        pipeline: PipelineElement,
        *,
        params: PipelineParams | None = None,
        observers: Iterable[BaseObserver] = (),
        name: str | None = None,
    ) -> None:
        check_element(pipeline, "PipelineTask")
        if params is not None and not isinstance(params, PipelineParams):
            raise TypeError(f"params must be a PipelineParams, got {params!r:.80}")
        self._observers = tuple(observers)
        for observer in self._observers:
            _check_observer(observer)
        self.name = name or f"PipelineTask({pipeline.name})"
        pipeline._claim_owner(self)
        self.pipeline = pipeline
        self.params = params or PipelineParams()
        self._source = TaskEdge(f"{self.name}.source", self._reached_upstream)
        self._sink = TaskEdge(
            f"{self.name}.sink", self._reached_downstream, take_at_once=self._leaves_at_once
        )
        self._source.link(pipeline)
        pipeline.link(self._sink)
        self._events = EventHandlers()
        self._input = TaskInput(self.name)
        self._phase = _NEW
        self._nursery: trio.Nursery | None = None
        self._started = trio.Event()  # the StartFrame reached the sink
        self._done = trio.Event()  # the run is over: run() closes its nursery
        self._cancel_reason: str | None = None  # a cancel asked for (before or during the run)
        self._fatal: ErrorFrame | None = None  # the first fatal error
        self._end: RunEnd | None = None  # how the run ended: written once
        self._idle: IdleMonitor | None = None  # made when the run starts, if asked for
        p = self.params
        self._heartbeats = Heartbeats(self.name, p.heartbeats_period, p.heartbeats_monitor_timeout)

    # ------------------------------------------------------------------ public API

    @property
    def has_finished(self) -> bool:
        """Whether the run has ended."""
        return self._phase is _FINISHED

    @property
    def heartbeat_latencies(self) -> collections.deque[float]:
        """Seconds each HeartbeatFrame took to reach the sink (the last 1000)."""
        return self._heartbeats.latencies

    @property
    def finish_reason(self) -> str | None:
        """Why the run ended (see ``on_pipeline_finished``), ``None`` while it runs."""
        return None if self._end is None else self._end.reason

    @property
    def _cancelling(self) -> bool:
        # Read by the harness in tests/test_tools.py until it uses tests/conftest.py's.
        return self._phase is _CANCELLING

    def processors(self) -> list[FrameProcessor]:
        """Every processor of the run, source and sink included, in pipeline order."""
        return [self._source, *self.pipeline._leaves(), self._sink]

    def add_observer(self, observer: BaseObserver) -> None:
        """Attach an observer; only before :meth:`run`."""
        if self._phase is not _NEW:
            raise RuntimeError("observers must be added before the task runs")
        _check_observer(observer)
        self._observers = (*self._observers, observer)

    def add_event_handler(self, event: str, handler: Handler) -> None:
        """Register ``handler`` for ``event`` (one of the names in the class docstring)."""
        self._events.add(event, handler)

    def remove_event_handler(self, event: str, handler: Handler) -> None:
        """Unregister ``handler`` from ``event``, before, during or after the run (a handler
        added twice is removed once). Raises ``ValueError`` for an unknown event or a
        handler that is not registered for it. An event being emitted as this is called
        still reaches the handlers it started with."""
        self._events.remove(event, handler)

    def event_handler(self, event: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_event_handler`."""

        def register(handler: Handler) -> Handler:
            self.add_event_handler(event, handler)
            return handler

        return register

    async def queue_frame(self, frame: Frame, direction: FrameDirection = _DOWN) -> None:
        """Queue a frame into the pipeline (downstream from the head, or upstream from the tail).

        Frames queued before :meth:`run` wait and enter the pipeline, in order, once it has
        started. This never blocks; backpressure applies inside the pipeline. System frames
        queued while the pipeline runs go in at once, overtaking queued data. A caller that
        is already cancelled gets ``trio.Cancelled`` and nothing is queued.
        """
        if not isinstance(frame, Frame):
            hint = "; wrap text in TextFrame(text=...)" if isinstance(frame, str) else ""
            raise TypeError(f"queue_frame takes a Frame, got {frame!r:.80}{hint}")
        if not isinstance(direction, FrameDirection):
            raise TypeError(
                "the direction must be FrameDirection.DOWNSTREAM or FrameDirection.UPSTREAM, "
                f"got {direction!r:.80}"
            )
        if self._phase is _FINISHED:
            raise RuntimeError(f"{self.name} has finished; it cannot take {frame.name}")
        # A caller already cancelled queues nothing (trio's rule: an operation that raised
        # Cancelled did not happen), whichever way the frame would have gone in.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._idle is not None:
            self._idle.touch()
        if isinstance(frame, SystemFrame) and self._started.is_set():
            # At once, and past the source's (sink's) own lanes: one hop less for an
            # interruption, which cancels the work it interrupts as it arrives.
            await self._input.deliver(self._entry(direction), frame, direction, past=True)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if (
            self._phase is _RUNNING
            and self._started.is_set()
            and self._input.idle
            and not isinstance(frame, _ENDS)
        ):
            entry = self._entry(direction)
            if entry._takes_past_at_once(direction):
                # Nothing queued before it is still on its way in, and the edge is idle: the
                # frame goes past the edge at once, as the feed would send it, without
                # waking the feed and the edge for it (two scheduling rounds before the
                # first processor sees a user's message).
                await self._input.deliver(entry, frame, direction, past=True)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
        self._input.put(frame, direction)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def queue_frames(self, frames: Iterable[Frame]) -> None:
        """Queue several frames downstream, in order."""
        if isinstance(frames, Frame | str):
            raise TypeError(f"queue_frames takes an iterable of frames, got {frames!r:.80}")
        for frame in frames:
            await self.queue_frame(frame)

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the run: a CancelFrame jumps every queue and stops in-flight work.

        Returns once the cancel has begun; :meth:`run` returns within
        ``params.cancel_timeout`` seconds at most.
        """
        if self._phase is _NEW:
            self._cancel_reason = reason or "cancelled before start"
        elif self._phase is not _FINISHED:
            await self._begin_cancel(reason)
            return
        await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline until it ends. Works with ``nursery.start(task.run)``: it reports
        started once the StartFrame is on its way.

        Raises:
            PipelineFatalError: a fatal ErrorFrame ended the run.
            RuntimeError: the task was run before.
        """
        if self._phase is not _NEW:
            raise RuntimeError(f"{self.name} can run only once")
        self._phase = _RUNNING
        params = self.params
        clean = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for p in self.processors():
                    p._attach(nursery, self._observers)
                    p._processor_run.start()
                start = StartFrame(
                    allow_interruptions=params.allow_interruptions,
                    enable_metrics=params.enable_metrics,
                    enable_usage_metrics=params.enable_usage_metrics,
                    report_only_initial_ttfb=params.report_only_initial_ttfb,
                )
                self._source._enqueue_nowait(start, _DOWN)
                task_status.started()
                nursery.start_soon(self._feed, name=f"{self.name}.feed")
                if params.idle_timeout is not None:
                    self._idle = IdleMonitor(self.name, params.idle_timeout)
                    nursery.start_soon(self._idle.run, self._on_idle)
                if params.enable_heartbeats:
                    nursery.start_soon(self._send_heartbeats)
                if self._cancel_reason is not None:
                    await self._begin_cancel(self._cancel_reason)
                await self._done.wait()
                nursery.cancel_scope.cancel()
            clean = True
        finally:
            await self._wind_up(clean)
        assert self._end is not None
        if self._end.fatal is not None:
            raise PipelineFatalError(self._end.fatal) from self._end.fatal.exception

    # ------------------------------------------------------------------ ending a run

    async def _wind_up(self, clean: bool) -> None:
        """What follows every run, however it ended: the cancel hooks still owed, the report
        of undelivered frames, and ``on_pipeline_finished``. After a run cancelled from outside
        (``clean`` false) it is shielded and bounded by ``params.cancel_timeout``, and a
        failing handler is logged rather than masking the cancellation."""
        self._phase = _FINISHED
        self._input.close()
        self.pipeline._release_owner(self)
        if self._end is None:  # cancelled from outside, or an error inside the framework
            self._end = RunEnd("cancel: run cancelled", self._fatal)
        # A processor that started, and neither ended nor saw the CancelFrame (the frames could
        # not flow, or the watchdog ended the run first), still gets its cancel hook.
        owed = [p for p in self.processors() if p._processor_run.owes_cancel_hook()]
        reason = "run cancelled" if self._cancel_reason is None else self._cancel_reason
        deadline = math.inf if clean else trio.current_time() + self.params.cancel_timeout
        with trio.CancelScope(shield=not clean, deadline=deadline):
            if owed:
                async with trio.open_nursery() as hooks:
                    for p in owed:
                        hooks.start_soon(p._processor_run.cancel_hook_after_run, reason)
            self._input.report_undelivered()
            try:
                await self._emit("on_pipeline_finished", self._end.reason)
            except Exception:
                if clean:
                    raise
                # Never mask the cancellation (or error) that is propagating.
                logger.exception("%s: an on_pipeline_finished handler failed", self.name)

    def _finish(self, reason: str) -> None:
        if self._end is None:
            self._end = RunEnd(reason, self._fatal)
        self._done.set()

    def _cancel_outcome(self) -> str:
        if self._fatal is not None:
            return "error"
        return f"cancel: {self._cancel_reason}" if self._cancel_reason else "cancel"

    def _outcome_now(self) -> str:
        """How the run ends if it ends now (the flush or a watchdog ends it)."""
        if self._phase is _ENDING:
            return "end"
        if self._phase is _STOPPING:
            return "stop"
        return self._cancel_outcome()

    async def _begin_cancel(self, reason: str | None) -> None:
        if self._phase is _CANCELLING:
            return
        self._phase = _CANCELLING
        self._cancel_reason = reason
        self._source._enqueue_nowait(CancelFrame(reason=reason), _DOWN)
        assert self._nursery is not None
        self._nursery.start_soon(
            self._watchdog, "CancelFrame did not reach the sink within %ss; cancelling all tasks"
        )
        await trio.lowlevel.checkpoint()

    def _begin_flush(self, phase: TaskPhase) -> None:
        if self._phase is not _RUNNING:
            return
        self._phase = phase
        self._sink.push_frame_nowait(UpstreamFlush(), _UP)
        assert self._nursery is not None
        self._nursery.start_soon(
            self._watchdog, "upstream frames still in flight %ss after the end; ending anyway"
        )

    async def _watchdog(self, warning: str) -> None:
        """Ends the run after ``cancel_timeout`` if it has not ended by itself by then."""
        await trio.sleep(self.params.cancel_timeout)
        if not self._done.is_set():
            logger.warning("%s: " + warning, self.name, self.params.cancel_timeout)
            self._finish(self._outcome_now())

    # ------------------------------------------------------------------ frames in and out

    async def _emit(self, event: str, *args: Any) -> None:
        await self._events.emit(event, self, *args)

    def _entry(self, direction: FrameDirection) -> TaskEdge:
        return self._source if direction is _DOWN else self._sink

    async def _feed(self) -> None:
        """Moves queued frames into the pipeline once every processor has started."""
        await self._started.wait()
        await self._input.feed(self._entry, lambda: self._phase is _CANCELLING)

    def _note_activity(self, frame: Frame) -> None:
        if self._idle is not None and isinstance(frame, self.params.idle_timeout_frames):
            self._idle.touch()

    async def _on_idle(self) -> bool:
        await self._emit("on_idle_timeout")
        if self.params.cancel_on_idle_timeout:
            await self._begin_cancel("idle timeout")
            return True
        return False

    async def _send_heartbeats(self) -> None:
        await self._started.wait()
        await self._heartbeats.run(self._source)

    def _leaves_at_once(self, frame: Frame) -> bool:
        """Whether a frame reaching the idle sink is done with in the sender's task: what
        :meth:`_reached_downstream` does for it needs no waiting (no handler watches the
        frames reaching the sink, and it is no lifecycle frame or heartbeat)."""
        if isinstance(frame, _AWAITED) or self._events.has("on_frame_reached_downstream"):
            return False
        self._note_activity(frame)
        return True

    async def _reached_downstream(self, frame: Frame) -> None:
        self._note_activity(frame)
        if isinstance(frame, HeartbeatFrame):
            await self._emit("on_heartbeat", self._heartbeats.arrived(frame))
        await self._emit("on_frame_reached_downstream", frame)
        if isinstance(frame, StartFrame):
            self._started.set()
            await self._emit("on_pipeline_started")
        elif isinstance(frame, EndFrame):
            self._begin_flush(_ENDING)
        elif isinstance(frame, StopFrame):
            self._begin_flush(_STOPPING)
        elif isinstance(frame, CancelFrame):
            self._finish(self._cancel_outcome())

    async def _reached_upstream(self, frame: Frame) -> None:
        if isinstance(frame, UpstreamFlush):
            self._finish(self._outcome_now())
            return
        self._note_activity(frame)
        await self._emit("on_frame_reached_upstream", frame)
        if isinstance(frame, ErrorFrame):
            if self._events.has("on_error"):
                await self._emit("on_error", frame)
            elif not frame.fatal:
                logger.warning(
                    "%s: error from %s: %s", self.name, frame.processor, excerpt(frame.error, 1000)
                )
            if frame.fatal:
                logger.error(
                    "%s: fatal error from %s: %s",
                    self.name,
                    frame.processor,
                    excerpt(frame.error, 1000),
                )
                if self._fatal is None:
                    self._fatal = frame
                await self._begin_cancel(f"fatal error: {frame.error}")
        elif isinstance(frame, EndTaskFrame):
            await self.queue_frame(EndFrame(reason=frame.reason))
        elif isinstance(frame, CancelTaskFrame):
            await self._begin_cancel(frame.reason)
        elif isinstance(frame, InterruptionTaskFrame):
            self._source.push_frame_nowait(InterruptionFrame(), _DOWN)
