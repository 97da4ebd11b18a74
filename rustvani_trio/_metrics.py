"""What a processor's run asked for (its StartFrame's settings), the tasks it starts in the
run's nursery, and its TTFB, processing and usage metrics (a mixin of
:class:`~rustvani_trio.processor.FrameProcessor`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._stopwatch import Stopwatch
from .frames import (
    Frame,
    FrameDirection,
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsData,
    MetricsFrame,
    ProcessingMetricsData,
    StartFrame,
    TTFBMetricsData,
)

if TYPE_CHECKING:
    from ._run_base import RunBase

__all__ = ["ProcessorMetrics"]


class ProcessorMetrics:
    """Timers and usage reports; each pushes a :class:`MetricsFrame` when the run asked for
    metrics (see :class:`~rustvani_trio.task.PipelineParams`)."""

    if TYPE_CHECKING:
        name: str
        _processor_run: RunBase
        _ttfb_watch: Stopwatch
        _ttfb_reported: bool
        _processing_watch: Stopwatch

        async def push_frame(
            self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
        ) -> None: ...

        def push_frame_nowait(
            self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
        ) -> None: ...

    def start_task_soon(
        self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> None:
        """Start ``async_fn(*args)`` in the nursery of the run this processor is in, for
        long-lived work of its own (a provider's connection, a timer), like
        ``nursery.start_soon``. The task ends with the run; cancel it sooner with a cancel scope
        of its own.

        Raises:
            RuntimeError: the processor is not running (use it from ``on_start`` on).
        """
        self._run_nursery().start_soon(async_fn, *args, name=name or self._task_name(async_fn))

    async def start_task(
        self, async_fn: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> object:
        """Like :meth:`start_task_soon`, but as ``nursery.start``: waits until the task calls
        ``task_status.started(value)`` and returns ``value``."""
        nursery = self._run_nursery()
        return await nursery.start(async_fn, *args, name=name or self._task_name(async_fn))

    def _run_nursery(self) -> trio.Nursery:
        nursery = self._processor_run.nursery
        if nursery is None or self.start_frame is None:
            raise RuntimeError(
                f"{self.name} is not running in a PipelineTask; start tasks from on_start on"
            )
        return nursery

    def _task_name(self, async_fn: Callable[..., object]) -> str:
        return f"{self.name}.{getattr(async_fn, '__name__', 'task')}"

    @property
    def start_frame(self) -> StartFrame | None:
        """The StartFrame of the current run (its settings), or ``None`` before it arrives."""
        return self._processor_run.start_frame

    @property
    def interruptions_allowed(self) -> bool:
        """Whether the run allows interruptions (from the StartFrame)."""
        return (start := self._processor_run.start_frame) is not None and start.allow_interruptions

    @property
    def metrics_enabled(self) -> bool:
        """Whether the run asked for TTFB and processing metrics."""
        return (start := self._processor_run.start_frame) is not None and start.enable_metrics

    @property
    def usage_metrics_enabled(self) -> bool:
        """Whether the run asked for token usage metrics."""
        return (start := self._processor_run.start_frame) is not None and start.enable_usage_metrics

    # ------------------------------------------------------------------ metrics

    def start_ttfb_metrics(self) -> None:
        """Start timing a time-to-first-byte measurement (no-op when metrics are off)."""
        start = self._processor_run.start_frame
        if self.metrics_enabled and not (
            self._ttfb_reported and start is not None and start.report_only_initial_ttfb
        ):
            self._ttfb_watch.start()

    async def stop_ttfb_metrics(self) -> float | None:
        """Stop the TTFB timer and push a MetricsFrame; returns the value (or ``None``)."""
        value = self._ttfb_watch.stop()
        if value is not None:
            self._ttfb_reported = True
            await self._push_metrics(TTFBMetricsData(processor=self.name, value=value))
        return value

    def start_processing_metrics(self) -> None:
        """Start timing one unit of processing (no-op when metrics are off)."""
        if self.metrics_enabled:
            self._processing_watch.start()

    async def stop_processing_metrics(self) -> float | None:
        """Stop the processing timer and push a MetricsFrame; returns the value (or ``None``)."""
        value = self._processing_watch.stop()
        if value is not None:
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
