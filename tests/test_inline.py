"""Inline processors: synchronous transforms, filters and taps run in their upstream
neighbour's task, with the ordering, lifecycle, interruption and error semantics of any
processor. (Random pipelines mixing both kinds: tests/test_runtime_properties.py.)"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing
from conftest import live

from rustvani_trio.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
)
from rustvani_trio.observer import BaseObserver, FramePushed
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor, InlineOutput, InlineProcessor
from rustvani_trio.task import PipelineFatalError, PipelineTask
from rustvani_trio.testing import run_test

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


def texts(frames: Sequence[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TextFrame)]


class Upper(InlineProcessor):
    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        if isinstance(frame, TextFrame) and direction is DOWN:
            return attrs.evolve(frame, text=frame.text.upper())
        return frame


class DropX(InlineProcessor):
    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        if isinstance(frame, TextFrame) and "x" in frame.text.lower():
            return None
        return frame


class Split(InlineProcessor):
    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        if isinstance(frame, TextFrame) and direction is DOWN:
            return [TextFrame(text=part) for part in frame.text.split()]
        return frame


class Tap(InlineProcessor):
    """Records what passes, and the hooks, in order."""

    def __init__(self, name: str = "tap") -> None:
        super().__init__(name=name)
        self.seen: list[Frame] = []
        self.events: list[str] = []

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        self.seen.append(frame)
        return frame

    def started(self, frame: StartFrame) -> None:
        self.events.append("started")

    def ending(self, frame: EndFrame) -> InlineOutput:
        self.events.append("ending")
        return TextFrame(text="flushed")

    def interrupted(self, frame: InterruptionFrame) -> None:
        self.events.append("interrupted")

    def cancelled(self, frame: CancelFrame) -> None:
        self.events.append("cancelled")


class Regular(FrameProcessor):
    """A processor with lanes that appends its name to text frames going downstream."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and direction is DOWN:
            frame = attrs.evolve(frame, text=f"{frame.text}.{self.name}")
        await self.push_frame(frame, direction)


async def test_inline_and_regular_processors_compose_in_order() -> None:
    tap = Tap()
    frames = [TextFrame(text=t) for t in ("a b", "x y", "c")]
    result = await run_test(
        [Split(), Regular(name="r1"), DropX(), Upper(), tap, Regular(name="r2")], frames
    )
    assert texts(result.downstream) == ["A.R1.r2", "B.R1.r2", "Y.R1.r2", "C.R1.r2", "flushed.r2"]
    assert tap.events == ["started", "ending"]
    assert result.upstream_of(ErrorFrame) == []
    assert result.finish_reason == "end"
    # Lifecycle frames reach the end; the tap saw no lifecycle frame.
    assert isinstance(result.downstream[0], StartFrame)
    assert isinstance(result.downstream[-1], EndFrame)
    assert not any(isinstance(f, StartFrame | EndFrame) for f in tap.seen)


async def test_a_pipeline_of_inline_processors_only() -> None:
    result = await run_test([Upper(), Split(), Upper()], [TextFrame(text="hi there")])
    assert texts(result.downstream) == ["HI", "THERE"]
    assert result.finish_reason == "end"


async def test_an_exception_becomes_an_error_upstream_and_the_processor_goes_on() -> None:
    class Picky(InlineProcessor):
        def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
            if isinstance(frame, TextFrame) and frame.text.startswith("bad"):
                raise ValueError("no thanks")
            return frame

    picky = Picky(name="picky")
    frames = [TextFrame(text="a"), TextFrame(text="bad"), TextFrame(text="b")]
    result = await run_test([Regular(name="r"), picky, Regular(name="s")], frames)
    assert texts(result.downstream) == ["a.r.s", "b.r.s"]
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == "picky" and not error.fatal
    assert "ValueError: no thanks" in error.error and "TextFrame" in error.error


async def test_returning_something_that_is_not_frames_is_reported() -> None:
    class Wrong(InlineProcessor):
        def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
            if isinstance(frame, TextFrame):
                return frame.text  # type: ignore[return-value]
            return frame

    result = await run_test([Wrong(name="wrong")], [TextFrame(text="a")])
    assert texts(result.downstream) == []
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == "wrong" and "returns a Frame" in error.error


async def test_a_failing_start_hook_is_fatal() -> None:
    class Broken(InlineProcessor):
        def started(self, frame: StartFrame) -> None:
            raise RuntimeError("cannot start")

    with pytest.raises(PipelineFatalError, match="cannot start"):
        await run_test([Broken(name="broken")], [TextFrame(text="a")])


async def test_interruption_runs_the_hook_and_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tap = Tap()
    async with live([Regular(name="r"), tap, Regular(name="s")], settle=True) as run:
        await run.send(TextFrame(text="a"), InterruptionFrame(), TextFrame(text="b"))
    assert tap.events == ["started", "interrupted", "ending"]
    assert texts(run.downstream) == ["a.r.s", "b.r.s", "flushed.s"]
    assert (
        run.kinds().index(InterruptionFrame)
        < [i for i, f in enumerate(run.downstream) if isinstance(f, TextFrame)][1]
    )


async def test_a_cancel_runs_the_hook_once(autojump_clock: trio.testing.MockClock) -> None:
    tap = Tap()
    async with live([Regular(name="r"), tap], end=False) as run:
        await run.send(TextFrame(text="a"))
        await run.task.cancel("enough")
    assert tap.events == ["started", "cancelled"]
    assert run.task.finish_reason == "cancel: enough"


async def test_a_run_cancelled_from_outside_still_runs_the_cancel_hook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tap = Tap()
    task = PipelineTask(Pipeline([Regular(name="r"), tap]))
    with trio.move_on_after(5):
        await task.run()
    assert tap.events == ["started", "cancelled"]


async def test_frames_after_the_end_are_refused_and_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class PushesAfterEnd(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await self.push_frame(frame, direction)
            if isinstance(frame, TextFrame) and frame.text == "go":
                await self.push_frame(EndFrame())
                await self.push_frame(TextFrame(text="too late"))

    class SlowStop(FrameProcessor):
        async def on_stop(self, frame: EndFrame) -> None:
            await trio.sleep(1)  # the run outlives the late push (else its report is moot)

    tap = Tap(name="tap")
    async with live([PushesAfterEnd(name="p"), tap, SlowStop()], end=False) as run:
        await run.send(TextFrame(text="go"))
        await run.wait_down(EndFrame)
        await run.wait_until(lambda: bool(run.errors))
    assert texts(run.downstream) == ["go", "flushed"]
    [error] = run.errors
    assert error.processor == "tap" and "after EndFrame" in error.error


async def test_system_frames_and_upstream_frames_pass_through() -> None:
    @attrs.frozen(kw_only=True)
    class Ping(SystemFrame):
        n: int

    tap = Tap()
    result = await run_test(
        [tap, Regular(name="r")],
        [Ping(n=1)],
        upstream_frames=[TextFrame(text="up")],
    )
    assert [f.n for f in result.downstream if isinstance(f, Ping)] == [1]
    assert texts(result.upstream) == ["up"]
    assert [f.n for f in tap.seen if isinstance(f, Ping)] == [1]
    assert texts([f for f in tap.seen if isinstance(f, TextFrame)]) == ["up"]


async def test_backpressure_reaches_through_an_inline_chain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A slow processor with a lane of 2 behind two inline processors: the pusher in front
    waits, so at most a lane's worth of frames is ever buffered."""

    class Slow(FrameProcessor):
        def __init__(self) -> None:
            super().__init__(name="slow", max_buffer=2)

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await trio.sleep(1)
            await self.push_frame(frame, direction)

    class Source(FrameProcessor):
        def __init__(self) -> None:
            super().__init__(name="source")
            self.pushed = 0
            self.most_ahead = 0

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                for i in range(20):
                    await self.push_frame(TextFrame(text=str(i)))
                    self.pushed += 1
                    done = len([f for f in run.downstream if isinstance(f, TextFrame)])
                    self.most_ahead = max(self.most_ahead, self.pushed - done)
                return
            await self.push_frame(frame, direction)

    source, slow = Source(), Slow()
    async with live([source, Upper(), Tap(), slow]) as run:
        await run.send(TextFrame(text="go"))
        await run.wait_until(lambda: len(texts(run.downstream)) == 20)
    assert source.pushed == 20
    # Two in the lane, one being handled, one being pushed (plus the "go" marker's text).
    assert source.most_ahead <= 5


async def test_observers_see_every_hop_in_causal_order() -> None:
    class Recorder(BaseObserver):
        def __init__(self) -> None:
            self.hops: list[tuple[str, str, str]] = []

        def on_push_frame(self, event: FramePushed) -> None:
            if isinstance(event.frame, TextFrame):
                self.hops.append((event.source.name, event.destination.name, event.frame.text))

    observer = Recorder()
    pipeline = Pipeline([Regular(name="r"), Upper(name="u"), Tap(name="t"), Regular(name="s")])
    task = PipelineTask(pipeline, observers=[observer])
    async with live(task) as run:
        await run.send(TextFrame(text="a"))
        await run.wait_until(lambda: len(texts(run.downstream)) == 1)
    hops = [h for h in observer.hops if h[2].lower().startswith("a")]
    assert [(src, dst) for src, dst, _ in hops[:4]] == [
        (f"{task.name}.source", "r"),
        ("r", "u"),
        ("u", "t"),
        ("t", "s"),
    ]


async def test_statistics_of_an_inline_processor_are_zeros() -> None:
    tap = Tap()
    stats = tap.statistics()
    assert (stats.system, stats.process, stats.dropped, stats.blocked_senders) == (0, 0, 0, 0)


def test_an_inline_processor_cannot_await() -> None:
    with pytest.raises(TypeError, match="cannot await"):

        class Bad(InlineProcessor):
            async def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:  # type: ignore[override]
                return frame


def test_an_inline_processor_cannot_override_the_async_hooks() -> None:
    with pytest.raises(TypeError, match="never calls"):

        class Bad(InlineProcessor):
            async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
                pass

    with pytest.raises(TypeError, match="interrupted"):

        class AlsoBad(InlineProcessor):
            async def on_interruption(self, frame: InterruptionFrame) -> None:
                pass


async def test_downstream_room_counts_the_lane_past_inline_processors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Blocked(FrameProcessor):
        def __init__(self) -> None:
            super().__init__(name="blocked", max_buffer=3)
            self.release = trio.Event()

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await self.release.wait()
            await self.push_frame(frame, direction)

    class Probe(FrameProcessor):
        def __init__(self) -> None:
            super().__init__(name="probe")
            self.room: list[float] = []

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                for i in range(3):  # pushes that do not wait are not schedule points
                    self.room.append(self.downstream_room())
                    await self.push_frame(TextFrame(text=str(i)))
                self.room.append(self.downstream_room())
                return
            await self.push_frame(frame, direction)

    probe, blocked = Probe(), Blocked()
    async with live([probe, Tap(), Upper(), blocked]) as run:
        # "hold" keeps the blocked processor busy first, so the frames pushed next all wait
        # in its lane (the probe's first push after being idle is a schedule point: without
        # it, the blocked processor might take "0" from its lane there).
        await run.send(TextFrame(text="hold"))
        await trio.sleep(1)
        await run.send(TextFrame(text="go"))
        await trio.sleep(1)
        assert probe.room == [3, 2, 1, 0]
        blocked.release.set()
    # (Tap flushes, Upper shouts)
    assert texts(run.downstream) == ["HOLD", "0", "1", "2", "FLUSHED"]
    assert probe.downstream_room() == float("inf")  # the run has ended


class Doubler(InlineProcessor):
    """Returns the frame it was given twice (meaning: send it twice)."""

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        return [frame, frame] if isinstance(frame, TextFrame) else frame


async def test_an_inline_processor_returning_the_same_frame_twice_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The second copy is dropped (a frame goes out once, as for any push) and the warning
    names the inline processor, not whoever delivers what leaves its chain."""
    import logging

    with caplog.at_level(logging.DEBUG, logger="rustvani_trio"):
        result = await run_test([Doubler(name="doubler")], [TextFrame(text="a")])
    assert [f.text for f in result.downstream_of(TextFrame)] == ["a"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("doubler returned the same TextFrame twice")
