"""Run processors in a live pipeline and drive it from a test (frames in, waits on frames out)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ...frames import EndFrame, ErrorFrame, Frame, FrameDirection, InterruptionFrame
from ...pipeline import Pipeline
from ...processor import FrameProcessor
from ...task import PipelineParams, PipelineTask

__all__ = ["LivePipeline", "Recorder", "live_pipeline", "wait_until"]

F = TypeVar("F", bound=Frame)


async def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``condition`` (state of another object, e.g. a fake server) until it holds."""
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the state has no event to wait on
            await trio.sleep(0.005)


class Recorder(FrameProcessor):
    """The last processor: records what reaches it (with arrival times) and forwards it."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name or "Recorder")
        self.frames: list[Frame] = []
        self.times: list[float] = []
        self._changed = trio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            self.times.append(trio.current_time())
            self._changed.set()
            self._changed = trio.Event()
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.frames.append(frame)
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    def index(self, frame: Frame) -> int:
        """Position of ``frame`` itself (frames compare equal by value, so ``list.index``
        would find the first equal one)."""
        for i, f in enumerate(self.frames):
            if f is frame:
                return i
        raise ValueError(f"{frame!r} was not recorded")

    def of(self, kind: type[F]) -> list[F]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def wait_for(
        self, predicate: Callable[[list[Frame]], bool], within: float = 10.0
    ) -> None:
        """Wait until ``predicate(frames)`` holds (fails the test after ``within`` seconds)."""
        with trio.fail_after(within):
            while not predicate(self.frames):
                await self._changed.wait()

    async def wait_for_kind(self, kind: type[Frame], count: int = 1, within: float = 10.0) -> None:
        await self.wait_for(
            lambda frames: sum(isinstance(f, kind) for f in frames) >= count, within
        )


class LivePipeline:
    """A running pipeline: ``task``, ``recorder`` (downstream end), ``errors`` (upstream)."""

    def __init__(self, task: PipelineTask, recorder: Recorder) -> None:
        self.task = task
        self.recorder = recorder
        self.errors: list[ErrorFrame] = []
        self.upstream: list[Frame] = []
        self._error_seen = trio.Event()

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.task.queue_frame(frame)

    async def wait_for_error(self, within: float = 10.0, count: int = 1) -> ErrorFrame:
        """Wait for ``count`` ErrorFrames at the pipeline's source; returns the first."""
        with trio.fail_after(within):
            while len(self.errors) < count:
                self._error_seen = trio.Event()
                await self._error_seen.wait()
        return self.errors[0]

    async def end(self, within: float = 10.0) -> None:
        """Send EndFrame and wait for the run to finish."""
        await self.task.queue_frame(EndFrame())
        with trio.fail_after(within):
            await wait_until(lambda: self.task.has_finished)


@asynccontextmanager
async def live_pipeline(
    processors: Sequence[FrameProcessor], params: PipelineParams | None = None
) -> AsyncIterator[LivePipeline]:
    """Run ``processors`` + a :class:`Recorder`; on exit the run is cancelled if it is
    still going (call :meth:`LivePipeline.end` for a graceful end)."""
    recorder = Recorder()
    task = PipelineTask(Pipeline([*processors, recorder]), params=params)
    live = LivePipeline(task, recorder)

    def upstream(_task: PipelineTask, frame: Frame) -> None:
        live.upstream.append(frame)
        if isinstance(frame, ErrorFrame):
            live.errors.append(frame)
            live._error_seen.set()

    task.add_event_handler("on_frame_reached_upstream", upstream)
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        try:
            yield live
        finally:
            if not task.has_finished:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await task.cancel("test over")
