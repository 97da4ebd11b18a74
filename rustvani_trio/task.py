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
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import trio

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
    LLMFullResponseEnd,
    LLMFullResponseStart,
    StartFrame,
    StopFrame,
    SystemFrame,
    TextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from .observer import BaseObserver
from .processor import FrameProcessor

__all__ = ["PipelineFatalError", "PipelineParams", "PipelineTask"]

logger = logging.getLogger("rustvani_trio")

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM

EVENTS = (
    "on_pipeline_started",
    "on_pipeline_finished",
    "on_error",
    "on_frame_reached_upstream",
    "on_frame_reached_downstream",
    "on_idle_timeout",
    "on_heartbeat",
)

Handler = Callable[..., Awaitable[None] | None]


def _positive_or_none(name: str) -> Callable[[Any, Any, float | None], None]:
    def check(_inst: Any, _attr: Any, value: float | None) -> None:
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be a positive number of seconds or None, got {value}")

    return check


def _positive(_inst: Any, attr: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attr.name} must be positive, got {value}")


@attrs.frozen(kw_only=True)
class PipelineParams:
    """Settings of one run; the interruption and metrics flags reach every processor in the
    StartFrame.

    Attributes:
        allow_interruptions: whether user speech may interrupt the bot.
        enable_metrics: TTFB and processing-time MetricsFrames.
        enable_usage_metrics: token usage MetricsFrames.
        report_only_initial_ttfb: report only the first TTFB of each processor.
        idle_timeout: seconds without activity (a frame of ``idle_timeout_frames`` reaching
            either end, or a frame queued to the task) after which ``on_idle_timeout`` fires.
        cancel_on_idle_timeout: cancel the run when the idle timeout fires.
        idle_timeout_frames: the frame types that count as activity.
        enable_heartbeats: send a HeartbeatFrame every ``heartbeats_period`` seconds.
        heartbeats_period: seconds between heartbeats.
        heartbeats_monitor_timeout: warn when no heartbeat reached the sink for this long.
        cancel_timeout: after a cancel, the longest the run waits for the CancelFrame to reach
            the sink before it cancels every processor's tasks outright.
    """

    allow_interruptions: bool = True
    enable_metrics: bool = False
    enable_usage_metrics: bool = False
    report_only_initial_ttfb: bool = False
    idle_timeout: float | None = attrs.field(
        default=None, validator=_positive_or_none("idle_timeout")
    )
    cancel_on_idle_timeout: bool = True
    idle_timeout_frames: tuple[type[Frame], ...] = (
        TextFrame,
        LLMFullResponseStart,
        LLMFullResponseEnd,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
    )
    enable_heartbeats: bool = False
    heartbeats_period: float = attrs.field(default=1.0, validator=_positive)
    heartbeats_monitor_timeout: float = attrs.field(default=10.0, validator=_positive)
    cancel_timeout: float = attrs.field(default=5.0, validator=_positive)


class PipelineFatalError(RustvaniError):
    """The run ended because of a fatal :class:`ErrorFrame`, available as :attr:`frame`."""

    def __init__(self, frame: ErrorFrame) -> None:
        where = f" in {frame.processor}" if frame.processor else ""
        super().__init__(f"fatal error{where}: {frame.error}")
        self.frame = frame


class _UpstreamFlush(StopFrame):
    """Sent upstream from the sink once the EndFrame (or StopFrame) has reached it; the run ends
    when it reaches the source. Upstream frames pushed before a processor forwarded the EndFrame
    are ahead of it in every lane (FIFO per lane), so they reach the source before the run ends.
    Being a StopFrame travelling upstream, processors forward it without showing it to
    ``process_frame``; the task does not report it."""


class _TaskSource(FrameProcessor):
    """The task's head: upstream frames leaving the pipeline end here."""

    def __init__(self, task: PipelineTask) -> None:
        super().__init__(name=f"{task.name}.source")
        self._owner = task

    async def _push_past_edge(self, frame: Frame, direction: FrameDirection) -> None:
        await self._owner._reached_upstream(frame)


class _TaskSink(FrameProcessor):
    """The task's tail: downstream frames leaving the pipeline end here."""

    def __init__(self, task: PipelineTask) -> None:
        super().__init__(name=f"{task.name}.sink")
        self._owner = task

    async def _push_past_edge(self, frame: Frame, direction: FrameDirection) -> None:
        await self._owner._reached_downstream(frame)


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
    """

    def __init__(
        self,
        pipeline: FrameProcessor,
        *,
        params: PipelineParams | None = None,
        observers: Iterable[BaseObserver] = (),
        name: str | None = None,
    ) -> None:
        self.name = name or f"PipelineTask({pipeline.name})"
        self.pipeline = pipeline
        self.params = params or PipelineParams()
        self._observers = tuple(observers)
        self._source = _TaskSource(self)
        self._sink = _TaskSink(self)
        self._source.link(pipeline)
        pipeline.link(self._sink)
        self._handlers: dict[str, list[Handler]] = {name: [] for name in EVENTS}
        self._input_send, self._input_recv = trio.open_memory_channel[tuple[Frame, FrameDirection]](
            math.inf
        )
        self._state = "new"  # new -> running -> finished
        self._nursery: trio.Nursery | None = None
        self._started = trio.Event()
        self._finished = trio.Event()
        self._finish_reason: str | None = None
        self._fatal: ErrorFrame | None = None
        self._cancel_requested: str | None = None
        self._cancelling = False
        self._end_reason: str | None = None
        self._undelivered: list[Frame] = []
        self._last_activity = 0.0
        self._last_heartbeat = 0.0
        self.heartbeat_latencies: collections.deque[float] = collections.deque(maxlen=1000)

    # ------------------------------------------------------------------ public API

    @property
    def has_finished(self) -> bool:
        """Whether the run has ended."""
        return self._state == "finished"

    @property
    def finish_reason(self) -> str | None:
        """Why the run ended (see ``on_pipeline_finished``), ``None`` while it runs."""
        return self._finish_reason

    def processors(self) -> list[FrameProcessor]:
        """Every processor of the run, source and sink included, in pipeline order."""
        return [self._source, *self.pipeline._leaves(), self._sink]

    def add_observer(self, observer: BaseObserver) -> None:
        """Attach an observer; only before :meth:`run`."""
        if self._state != "new":
            raise RuntimeError("observers must be added before the task runs")
        self._observers = (*self._observers, observer)

    def add_event_handler(self, event: str, handler: Handler) -> None:
        """Register ``handler`` for ``event`` (one of the names in the class docstring)."""
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(EVENTS)}")
        self._handlers[event].append(handler)

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
        queued while the pipeline runs go in at once, overtaking queued data.
        """
        if self._state == "finished":
            raise RuntimeError(f"{self.name} has finished; it cannot take {frame.name}")
        if self.params.idle_timeout is not None:
            self._last_activity = trio.current_time()
        if isinstance(frame, SystemFrame) and self._started.is_set():
            await self._deliver(frame, direction)
            return
        self._input_send.send_nowait((frame, direction))
        await trio.lowlevel.checkpoint()

    async def queue_frames(self, frames: Iterable[Frame]) -> None:
        """Queue several frames downstream, in order."""
        for frame in frames:
            await self.queue_frame(frame)

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the run: a CancelFrame jumps every queue and stops in-flight work.

        Returns once the cancel has begun; :meth:`run` returns within
        ``params.cancel_timeout`` seconds at most.
        """
        if self._state == "finished":
            await trio.lowlevel.checkpoint()
            return
        if self._state == "new":
            self._cancel_requested = reason or "cancelled before start"
            await trio.lowlevel.checkpoint()
            return
        await self._begin_cancel(reason)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pipeline until it ends. Works with ``nursery.start(task.run)``: it reports
        started once the StartFrame is on its way.

        Raises:
            PipelineFatalError: a fatal ErrorFrame ended the run.
            RuntimeError: the task was run before.
        """
        if self._state != "new":
            raise RuntimeError(f"{self.name} can run only once")
        self._state = "running"
        params = self.params
        clean = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for p in self.processors():
                    p._attach(self, nursery, self._observers)
                    nursery.start_soon(p._system_loop, name=f"{p.name}.system")
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
                    self._last_activity = trio.current_time()
                    nursery.start_soon(self._idle_monitor, params.idle_timeout)
                if params.enable_heartbeats:
                    nursery.start_soon(self._heartbeats, params)
                if self._cancel_requested is not None:
                    await self._begin_cancel(self._cancel_requested)
                await self._finished.wait()
                nursery.cancel_scope.cancel()
            clean = True
        finally:
            self._state = "finished"
            self._input_send.close()
            if not clean:
                if self._finish_reason is None:
                    self._finish_reason = "cancel: run cancelled"
                # Cancelled from outside (or a framework error): the frames could not flow, so
                # run the cancel hooks directly, shielded and bounded, to release resources.
                limit = trio.current_time() + params.cancel_timeout
                with trio.CancelScope(shield=True, deadline=limit):
                    async with trio.open_nursery() as cleanup:
                        for p in self.processors():
                            cleanup.start_soon(p._run_cancel_hook_from_outside, "run cancelled")
                    try:
                        await self._emit("on_pipeline_finished", self._finish_reason)
                    except Exception:
                        # Never mask the cancellation (or error) that is propagating.
                        logger.exception("%s: an on_pipeline_finished handler failed", self.name)
            self._report_undelivered()
        await self._emit("on_pipeline_finished", self._finish_reason)
        if self._fatal is not None:
            raise PipelineFatalError(self._fatal) from self._fatal.exception

    # ------------------------------------------------------------------ internals

    def _report_undelivered(self) -> None:
        left = [frame.name for frame in self._undelivered]
        while True:
            try:
                frame, _direction = self._input_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            left.append(frame.name)
        self._input_recv.close()
        if left:
            logger.warning(
                "%s: the run ended with %d queued frames never delivered: %s",
                self.name,
                len(left),
                ", ".join(left[:10]) + (" ..." if len(left) > 10 else ""),
            )

    def _entry(self, direction: FrameDirection) -> FrameProcessor:
        return self._source if direction is _DOWN else self._sink

    async def _emit(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            result = handler(self, *args)
            if inspect.isawaitable(result):
                await result

    def _finish(self, reason: str) -> None:
        if self._finish_reason is None:
            self._finish_reason = reason
        self._finished.set()

    async def _feed(self) -> None:
        """Moves queued frames into the pipeline once every processor has started."""
        await self._started.wait()
        async for frame, direction in self._input_recv:
            if self._cancelling:
                # Never delivered: reported when the run ends, not dropped silently.
                self._undelivered.append(frame)
                continue
            await self._deliver(frame, direction)

    async def _deliver(self, frame: Frame, direction: FrameDirection) -> None:
        """Put a frame queued to the task into the pipeline; one that could not go in (the
        caller was cancelled first) is remembered and reported when the run ends."""
        try:
            await self._entry(direction)._enqueue(frame, direction)
        except trio.Cancelled:  # raised only before the frame was sent
            self._undelivered.append(frame)
            raise

    async def _begin_cancel(self, reason: str | None) -> None:
        if self._cancelling:
            return
        self._cancelling = True
        self._cancel_reason = reason
        self._source._enqueue_nowait(CancelFrame(reason=reason), _DOWN)
        assert self._nursery is not None
        self._nursery.start_soon(
            self._watchdog,
            "CancelFrame did not reach the sink within %ss; cancelling all tasks",
            self._cancel_finish_reason,
        )
        await trio.lowlevel.checkpoint()

    async def _watchdog(self, warning: str, reason: Callable[[], str]) -> None:
        """Ends the run after ``cancel_timeout`` if it has not ended by itself by then."""
        await trio.sleep(self.params.cancel_timeout)
        if not self._finished.is_set():
            logger.warning("%s: " + warning, self.name, self.params.cancel_timeout)
            self._finish(reason())

    def _cancel_finish_reason(self) -> str:
        if self._fatal is not None:
            return "error"
        reason = getattr(self, "_cancel_reason", None)
        return f"cancel: {reason}" if reason else "cancel"

    async def _reached_downstream(self, frame: Frame) -> None:
        params = self.params
        if params.idle_timeout is not None and isinstance(frame, params.idle_timeout_frames):
            self._last_activity = trio.current_time()
        if isinstance(frame, HeartbeatFrame):
            latency = trio.current_time() - frame.timestamp
            self._last_heartbeat = trio.current_time()
            self.heartbeat_latencies.append(latency)
            await self._emit("on_heartbeat", latency)
        await self._emit("on_frame_reached_downstream", frame)
        if isinstance(frame, StartFrame):
            self._started.set()
            await self._emit("on_pipeline_started")
        elif isinstance(frame, EndFrame | StopFrame):
            self._begin_flush("end" if isinstance(frame, EndFrame) else "stop")
        elif isinstance(frame, CancelFrame):
            self._finish(self._cancel_finish_reason())

    def _begin_flush(self, reason: str) -> None:
        if self._end_reason is not None:
            return
        self._end_reason = reason
        self._sink.push_frame_nowait(_UpstreamFlush(), _UP)
        assert self._nursery is not None
        self._nursery.start_soon(
            self._watchdog,
            "upstream frames still in flight %ss after the end; ending anyway",
            lambda: self._end_reason or "end",
        )

    async def _reached_upstream(self, frame: Frame) -> None:
        if isinstance(frame, _UpstreamFlush):
            self._finish(self._end_reason or "end")
            return
        params = self.params
        if params.idle_timeout is not None and isinstance(frame, params.idle_timeout_frames):
            self._last_activity = trio.current_time()
        await self._emit("on_frame_reached_upstream", frame)
        if isinstance(frame, ErrorFrame):
            if self._handlers["on_error"]:
                await self._emit("on_error", frame)
            elif not frame.fatal:
                logger.warning("%s: error from %s: %s", self.name, frame.processor, frame.error)
            if frame.fatal:
                logger.error("%s: fatal error from %s: %s", self.name, frame.processor, frame.error)
                if self._fatal is None:
                    self._fatal = frame
                await self._begin_cancel(f"fatal error: {frame.error}")
        elif isinstance(frame, EndTaskFrame):
            await self.queue_frame(EndFrame(reason=frame.reason))
        elif isinstance(frame, CancelTaskFrame):
            await self._begin_cancel(frame.reason)
        elif isinstance(frame, InterruptionTaskFrame):
            self._source._enqueue_nowait(InterruptionFrame(), _DOWN)

    async def _idle_monitor(self, limit: float) -> None:
        while True:
            deadline = self._last_activity + limit
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue
            logger.info("%s: idle for %ss", self.name, limit)
            await self._emit("on_idle_timeout")
            if self.params.cancel_on_idle_timeout:
                await self._begin_cancel("idle timeout")
                return
            self._last_activity = trio.current_time()

    async def _heartbeats(self, params: PipelineParams) -> None:
        await self._started.wait()
        self._last_heartbeat = trio.current_time()
        warned = False
        while True:
            await trio.sleep(params.heartbeats_period)
            now = trio.current_time()
            if not self._source._accept_down:
                return  # an EndFrame or StopFrame went in: no frame may follow it
            self._source._enqueue_nowait(HeartbeatFrame(timestamp=now), _DOWN)
            stale = now - self._last_heartbeat > params.heartbeats_monitor_timeout
            if stale and not warned:
                logger.warning(
                    "%s: no heartbeat reached the sink for %.1fs; is a processor stuck?",
                    self.name,
                    now - self._last_heartbeat,
                )
            warned = stale
