"""``run_test``: run processors inside a real PipelineTask and capture what leaves each end."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import attrs
import trio

from ..frames import EndFrame, Frame, FrameDirection
from ..pipeline import Pipeline
from ..processor import PipelineElement
from ..task import PipelineFatalError, PipelineParams, PipelineTask

__all__ = ["RunResult", "run_test"]

F = TypeVar("F", bound=Frame)


@attrs.define
class RunResult:
    """What left the pipeline: ``downstream`` (at the sink) and ``upstream`` (at the source),
    in arrival order, lifecycle frames included; ``finish_reason`` as the task reported it."""

    downstream: list[Frame] = attrs.Factory(list)
    upstream: list[Frame] = attrs.Factory(list)
    finish_reason: str | None = None
    task: PipelineTask | None = None

    def downstream_of(self, kind: type[F]) -> list[F]:
        """The downstream frames that are instances of ``kind``."""
        return [f for f in self.downstream if isinstance(f, kind)]

    def upstream_of(self, kind: type[F]) -> list[F]:
        """The upstream frames that are instances of ``kind``."""
        return [f for f in self.upstream if isinstance(f, kind)]


async def run_test(
    processors: PipelineElement | Sequence[PipelineElement],
    frames: Iterable[Frame] = (),
    *,
    send_end_frame: bool = True,
    params: PipelineParams | None = None,
    upstream_frames: Iterable[Frame] = (),
    time_limit: float = 60.0,
) -> RunResult:
    """Run ``processors`` (a processor or Pipeline, or a list run as a Pipeline) in a PipelineTask.

    ``frames`` are queued downstream (``upstream_frames`` upstream from the tail), then an
    EndFrame when ``send_end_frame`` is true. Without an EndFrame, the run is cancelled once
    every task is blocked (nothing more can happen). Fatal errors raise
    :class:`~rustvani_trio.task.PipelineFatalError`, as from ``PipelineTask.run``.

    ``time_limit`` (seconds, of the current clock: virtual under ``autojump_clock``) bounds the run.
    """
    pipeline = processors if isinstance(processors, PipelineElement) else Pipeline(processors)
    task = PipelineTask(pipeline, params=params)
    result = RunResult(task=task)

    def down(_task: PipelineTask, frame: Frame) -> None:
        result.downstream.append(frame)

    def up(_task: PipelineTask, frame: Frame) -> None:
        result.upstream.append(frame)

    task.add_event_handler("on_frame_reached_downstream", down)
    task.add_event_handler("on_frame_reached_upstream", up)
    for frame in frames:
        await task.queue_frame(frame)
    for frame in upstream_frames:
        await task.queue_frame(frame, FrameDirection.UPSTREAM)
    if send_end_frame:
        await task.queue_frame(EndFrame())
    fatal: list[PipelineFatalError] = []

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await task.run(task_status=task_status)
        except PipelineFatalError as exc:
            fatal.append(exc)

    with trio.fail_after(time_limit):
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            if not send_end_frame:
                await trio.testing.wait_all_tasks_blocked()
                await task.cancel("run_test: no EndFrame")
    result.finish_reason = task.finish_reason
    if fatal:
        raise fatal[0]
    return result
