"""The shared test harness: a running pipeline that records the frames leaving either end.

```python
from conftest import live

async with live([user, llm, assistant]) as run:       # started, StartFrame at the sink
    await run.send(TextFrame(text="hi"))
    await run.wait_down(LLMFullResponseEnd)
assert run.task.finish_reason == "end"                # an EndFrame was queued on leaving
```

* :func:`live` runs processors (or a Pipeline, or a PipelineTask built by the test) for the
  body of an ``async with``; on leaving it queues an EndFrame (unless ``end=False`` or the run
  is already ending) and waits for the run to finish.
* :func:`watch` records a task the test runs itself (``await task.run()``).
* :class:`Live` is what both give: ``downstream`` / ``upstream`` in arrival order, ``errors``,
  waiting helpers, and ``send``.

Tests import these names (``from conftest import live``): pytest puts this directory on
``sys.path`` (the tests are a rootdir without ``__init__.py``), and imports this module once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
import trio.testing

from rustvani_trio import (
    EndFrame,
    ErrorFrame,
    Frame,
    FrameProcessor,
    Pipeline,
    PipelineParams,
    PipelineTask,
    StartFrame,
)

__all__ = ["Live", "live", "watch"]

F = TypeVar("F", bound=Frame)


@attrs.define(eq=False)
class Live:
    """A PipelineTask whose frames leaving either end are recorded as they arrive.

    Attributes:
        task: the task.
        downstream: frames that reached the sink (lifecycle frames included).
        upstream: frames that reached the source.
        arrived: ``frame.id`` -> ``trio.current_time()`` when it reached either end.
        settle: the default of :meth:`send`'s ``settle``.
    """

    task: PipelineTask
    downstream: list[Frame] = attrs.Factory(list)
    upstream: list[Frame] = attrs.Factory(list)
    arrived: dict[int, float] = attrs.Factory(dict)
    settle: bool = False
    _lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)

    def record(self, into: list[Frame], frame: Frame) -> None:
        into.append(frame)
        self.arrived[frame.id] = trio.current_time()
        self._lot.unpark_all()

    @property
    def errors(self) -> list[ErrorFrame]:
        """The ErrorFrames that reached the source."""
        return self.upstream_of(ErrorFrame)

    def downstream_of(self, kind: type[F]) -> list[F]:
        """The frames of type ``kind`` that reached the sink."""
        return [f for f in self.downstream if isinstance(f, kind)]

    def upstream_of(self, kind: type[F]) -> list[F]:
        """The frames of type ``kind`` that reached the source."""
        return [f for f in self.upstream if isinstance(f, kind)]

    def kinds(self) -> list[type[Frame]]:
        """The types of the frames that reached the sink, in order."""
        return [type(f) for f in self.downstream]

    async def wait_until(
        self, predicate: Callable[[], bool], *, limit: float | None = None
    ) -> None:
        """Wait until ``predicate()`` holds (checked whenever a frame arrives at either end);
        ``limit`` seconds at most when given."""
        with trio.fail_after(limit) if limit is not None else trio.CancelScope():
            while not predicate():
                await self._lot.park()

    async def wait_down(self, kind: type[F], count: int = 1) -> F:
        """Wait until ``count`` frames of type ``kind`` reached the sink; returns the last."""
        await self.wait_until(lambda: len(self.downstream_of(kind)) >= count)
        return self.downstream_of(kind)[count - 1]

    async def send(self, *frames: Frame, settle: bool | None = None) -> None:
        """Queue ``frames`` downstream, in order; with ``settle``, wait after each until every
        task is blocked (the pipeline is idle), so that system frames and data frames arrive
        in the order the test means."""
        for frame in frames:
            await self.task.queue_frame(frame)
            if self.settle if settle is None else settle:
                await trio.testing.wait_all_tasks_blocked()


def watch(task: PipelineTask, *, settle: bool = False) -> Live:
    """Record the frames leaving either end of ``task`` (register before it runs)."""
    run = Live(task, settle=settle)
    task.add_event_handler(
        "on_frame_reached_downstream", lambda _t, f: run.record(run.downstream, f)
    )
    task.add_event_handler("on_frame_reached_upstream", lambda _t, f: run.record(run.upstream, f))
    return run


@asynccontextmanager
async def live(
    pipeline: PipelineTask | FrameProcessor | Pipeline | Sequence[Any],
    *,
    params: PipelineParams | None = None,
    end: bool = True,
    started: bool = True,
    settle: bool = False,
    limit: float | None = 60.0,
) -> AsyncIterator[Live]:
    """Run a pipeline for the body of the ``async with``.

    Args:
        pipeline: a PipelineTask (built by the test, e.g. with observers), a processor or
            Pipeline, or a list of them (run as a Pipeline).
        params: the run's PipelineParams (not with a task).
        end: on leaving the body, queue an EndFrame unless the run has finished (pass
            ``end=False`` when the body cancels the run); the block then waits for the run
            to end either way.
        started: wait until the StartFrame reached the sink before the body runs.
        settle: the default of :meth:`Live.send`'s ``settle``.
        limit: seconds (of the current clock: virtual under ``autojump_clock``) the whole
            block may take; ``None``: no limit.
    """
    if isinstance(pipeline, PipelineTask):
        if params is not None:
            raise TypeError("give params to the PipelineTask, not to live()")
        task = pipeline
    else:
        if isinstance(pipeline, Sequence):
            pipeline = Pipeline(list(pipeline))
        task = PipelineTask(pipeline, params=params)
    run = watch(task, settle=settle)
    with trio.fail_after(limit) if limit is not None else trio.CancelScope():
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            if started:
                await run.wait_down(StartFrame)
            yield run
            if end and not task.has_finished:
                await task.queue_frame(EndFrame())
