"""Behaviour of the runtime core: lanes, lifecycle, cancellation, interruptions, errors,
backpressure, idle timeout, heartbeats, observers, metrics.

Timing tests use the ``autojump_clock`` fixture: ``trio.sleep`` is virtual and costs nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import trio
import trio.testing
from conftest import live, watch
from trio.testing import wait_all_tasks_blocked

from rustvani_trio import (
    BaseObserver,
    CancelFrame,
    CancelTaskFrame,
    EndFrame,
    EndTaskFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FrameProcessor,
    FramePushed,
    HeartbeatFrame,
    InterruptionFrame,
    InterruptionTaskFrame,
    LLMText,
    LLMTokenUsage,
    MetricsCollector,
    MetricsFrame,
    Pipeline,
    PipelineFatalError,
    PipelineParams,
    PipelineTask,
    StartFrame,
    StopFrame,
    SystemFrame,
    TextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from rustvani_trio.frames import (
    LLMUsageMetricsData,
    MetricsData,
    ProcessingMetricsData,
    TTFBMetricsData,
)
from rustvani_trio.processor import DEFAULT_MAX_BUFFER
from rustvani_trio.testing import run_test

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


def texts(frames: list[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TextFrame)]


def names(frames: list[Frame]) -> list[str]:
    return [f.name for f in frames]


class Recorder(FrameProcessor):
    """Forwards everything; records what it saw and which hooks ran."""

    def __init__(
        self,
        *,
        name: str | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        cancel_timeout: float = 2.0,
    ) -> None:
        super().__init__(name=name, max_buffer=max_buffer, cancel_timeout=cancel_timeout)
        self.seen: list[tuple[Frame, FrameDirection]] = []
        self.hooks: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.seen.append((frame, direction))
        await self.push_frame(frame, direction)

    async def on_start(self, frame: StartFrame) -> None:
        self.hooks.append("start")

    async def on_stop(self, frame: EndFrame) -> None:
        self.hooks.append("stop")

    async def on_cancel(self, frame: CancelFrame) -> None:
        self.hooks.append("cancel")

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.hooks.append("interruption")


class Sleeper(Recorder):
    """Takes ``delay`` seconds per downstream text frame; records started / done / cancelled."""

    def __init__(self, delay: float, *, name: str | None = None, max_buffer: int = 64) -> None:
        super().__init__(name=name, max_buffer=max_buffer)
        self.delay = delay
        self.started: list[str] = []
        self.done: list[str] = []
        self.cancelled: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and direction is DOWN:
            self.started.append(frame.text)
            try:
                await trio.sleep(self.delay)
            except trio.Cancelled:
                self.cancelled.append(frame.text)
                raise
            self.done.append(frame.text)
        await super().process_frame(frame, direction)


# =========================================================================== lifecycle basics


async def test_frames_pass_through_in_order_between_start_and_end() -> None:
    frames = [TextFrame(text=str(i)) for i in range(20)]
    result = await run_test([FrameProcessor(), Recorder(), FrameProcessor()], frames)
    assert result.finish_reason == "end"
    assert isinstance(result.downstream[0], StartFrame)
    assert isinstance(result.downstream[-1], EndFrame)
    assert result.downstream[1:-1] == frames
    assert result.upstream == []


async def test_hooks_run_once_each_in_order() -> None:
    rec = Recorder()
    await run_test([rec], [TextFrame(text="a")])
    assert rec.hooks == ["start", "stop"]
    assert [f for f, _ in rec.seen] == [TextFrame(text="a")]  # lifecycle frames not shown


async def test_queue_frames_before_run_and_nursery_start() -> None:
    rec = Recorder()
    task = PipelineTask(Pipeline([rec]))
    cap = watch(task)
    started: list[bool] = []
    finished: list[str | None] = []

    async def on_started(t: PipelineTask) -> None:
        await trio.lowlevel.checkpoint()
        started.append(True)

    task.add_event_handler("on_pipeline_started", on_started)
    task.add_event_handler("on_pipeline_finished", lambda _t, reason: finished.append(reason))
    await task.queue_frames([TextFrame(text="x"), TextFrame(text="y"), EndFrame()])
    assert not task.has_finished and task.finish_reason is None
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        # ``started`` means the StartFrame is on its way: the processors are attached.
        assert rec._processor_run.nursery is not None  # (FrameProcessor.task is gone)
    assert task.has_finished
    assert started == [True]
    assert finished == ["end"]
    assert texts(cap.downstream) == ["x", "y"]


async def test_a_task_runs_only_once_and_refuses_frames_when_finished() -> None:
    task = PipelineTask(FrameProcessor())
    await task.queue_frame(EndFrame())
    await task.run()
    with pytest.raises(RuntimeError, match="only once"):
        await task.run()
    with pytest.raises(RuntimeError, match="finished"):
        await task.queue_frame(TextFrame(text="late"))
    with pytest.raises(RuntimeError):
        task.add_observer(BaseObserver())


async def test_stop_frame_ends_the_run_without_stop_hooks() -> None:
    rec = Recorder()
    result = await run_test([rec], [TextFrame(text="a"), StopFrame()], send_end_frame=False)
    assert result.finish_reason == "stop"
    assert texts(result.downstream) == ["a"]
    assert rec.hooks == ["start"]


async def test_cancel_before_run_cancels_at_start() -> None:
    task = PipelineTask(Recorder())
    await task.cancel("changed my mind")
    await task.run()
    assert task.finish_reason == "cancel: changed my mind"


async def test_end_task_frame_and_cancel_task_frame_from_a_processor() -> None:
    class Asker(FrameProcessor):
        def __init__(self, ask: Frame) -> None:
            super().__init__()
            self.ask = ask

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await self.push_frame(frame, direction)
            if isinstance(frame, TextFrame):
                await self.push_frame(self.ask, UP)

    result = await run_test(
        [Asker(EndTaskFrame(reason="done"))], [TextFrame(text="a")], send_end_frame=False
    )
    assert result.finish_reason == "end"
    assert result.downstream_of(EndFrame)[0].reason == "done"

    rec = Recorder()
    result = await run_test(
        [Asker(CancelTaskFrame(reason="bye")), rec], [TextFrame(text="a")], send_end_frame=False
    )
    assert result.finish_reason == "cancel: bye"
    assert "cancel" in rec.hooks


async def test_nested_pipelines_pass_frames_both_ways() -> None:
    a, b, c, d = Recorder(name="a"), Recorder(name="b"), Recorder(name="c"), Recorder(name="d")

    class Replier(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and direction is DOWN:
                await self.push_frame(TextFrame(text=f"re:{frame.text}"), UP)
            await self.push_frame(frame, direction)

    replier = Replier(name="replier")
    empty = Pipeline([])
    outer = Pipeline([a, Pipeline([b, Pipeline([c, Pipeline([replier])])]), empty, d])
    result = await run_test(
        outer,
        [TextFrame(text="1"), TextFrame(text="2")],
        upstream_frames=[TextFrame(text="from-tail")],
    )
    assert texts(result.downstream) == ["1", "2"]
    assert sorted(texts(result.upstream)) == ["from-tail", "re:1", "re:2"]
    for p in (a, b, c, d):
        ups = [f.text for f, dir_ in p.seen if dir_ is UP and isinstance(f, TextFrame)]
        if p is d:
            assert ups == ["from-tail"]
            continue
        assert sorted(ups) == ["from-tail", "re:1", "re:2"], p
        assert ups.index("re:1") < ups.index("re:2"), p  # FIFO per origin
    # Flattening: the pipeline objects add no hop of their own (an empty one passes through).
    assert [p.name for p in outer._leaves()] == [
        "a",
        "b",
        "c",
        "replier",
        f"{empty.name}.passthrough",
        "d",
    ]


def test_pipeline_and_processor_validation() -> None:
    p = FrameProcessor()
    with pytest.raises(ValueError, match="only once"):
        Pipeline([p, p])
    with pytest.raises(TypeError):
        Pipeline([p, "not a processor"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_buffer"):
        FrameProcessor(max_buffer=0)
    with pytest.raises(ValueError, match="cancel_timeout"):
        FrameProcessor(cancel_timeout=-1)
    task = PipelineTask(FrameProcessor())
    with pytest.raises(ValueError, match="unknown event"):
        task.add_event_handler("on_nothing", lambda _t: None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle_timeout": 0},
        {"idle_timeout": -1.0},
        {"idle_timeout": float("nan")},
        {"heartbeats_period": 0},
        {"heartbeats_monitor_timeout": -2},
        {"cancel_timeout": 0},
    ],
)
def test_pipeline_params_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PipelineParams(**kwargs)  # type: ignore[arg-type]


def test_pipeline_params_defaults_are_valid() -> None:
    params = PipelineParams(idle_timeout=None, heartbeats_period=0.5)
    assert params.allow_interruptions and not params.enable_metrics
    assert params.idle_timeout is None


# =========================================================================== lanes


async def test_system_frame_overtakes_data_queued_behind_a_busy_processor() -> None:
    gates = [trio.Event() for _ in range(3)]

    class Busy(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.started: list[int] = []

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and direction is DOWN:
                i = int(frame.text)
                self.started.append(i)
                await gates[i].wait()
            await super().process_frame(frame, direction)

    busy, after = Busy(), Recorder()
    task = PipelineTask(Pipeline([busy, after]))
    cap = watch(task)
    await task.queue_frames([TextFrame(text=str(i)) for i in range(3)])
    async with live(task, end=False, started=False):
        await wait_all_tasks_blocked()
        assert busy.started == [0]
        assert busy.statistics().process == 2  # 1 and 2 wait behind 0
        await task.queue_frame(UserStartedSpeakingFrame())
        await wait_all_tasks_blocked()
        # The system frame went through the busy processor and reached the sink ...
        assert names(cap.downstream) == ["StartFrame", "UserStartedSpeakingFrame"]
        # ... while the data it overtook is still queued.
        assert busy.statistics().process == 2
        for gate in gates:
            gate.set()
        await task.queue_frame(EndFrame())
    assert names(cap.downstream) == [
        "StartFrame",
        "UserStartedSpeakingFrame",
        "TextFrame",
        "TextFrame",
        "TextFrame",
        "EndFrame",
    ]


# =========================================================================== cancellation


async def test_cancel_ends_promptly_with_stuck_processors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = threading.Event()
    in_thread = trio.Event()

    class Threaded(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TextFrame):
                in_thread.set()
                await trio.to_thread.run_sync(release.wait, abandon_on_cancel=True)

    class Stuck(Recorder):
        reached = False

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                self.reached = True
                await trio.sleep_forever()
            await super().process_frame(frame, direction)

    threaded, stuck, tail = Threaded(), Stuck(), Recorder()
    task = PipelineTask(Pipeline([threaded, stuck, tail]), params=PipelineParams(cancel_timeout=5))
    cap = watch(task)
    await task.queue_frames([TextFrame(text="a"), TextFrame(text="b")])
    try:
        with trio.fail_after(30):
            async with live(task, end=False, started=False):
                await in_thread.wait()
                await wait_all_tasks_blocked()
                assert stuck.reached
                t0 = trio.current_time()
                await task.cancel("user hung up")
            elapsed = trio.current_time() - t0
    finally:
        release.set()
    # Ended by the CancelFrame reaching the sink, not by the task's watchdog.
    assert elapsed < 0.1
    assert task.finish_reason == "cancel: user hung up"
    assert isinstance(cap.downstream[-1], CancelFrame)
    for p in (threaded, stuck, tail):
        assert p.hooks == ["start", "cancel"], p
    assert cap.errors == []


async def test_hanging_on_cancel_is_bounded_by_cancel_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Hangs(Recorder):
        async def on_cancel(self, frame: CancelFrame) -> None:
            await super().on_cancel(frame)
            await trio.sleep_forever()

    hangs, tail = Hangs(cancel_timeout=0.5), Recorder()
    task = PipelineTask(Pipeline([hangs, tail]))
    async with live(task, end=False, started=False):
        await wait_all_tasks_blocked()
        t0 = trio.current_time()
        await task.cancel()
    assert trio.current_time() - t0 == pytest.approx(0.5)
    assert task.finish_reason == "cancel"
    assert hangs.hooks == tail.hooks == ["start", "cancel"]
    assert "on_cancel took longer" in caplog.text


async def test_cancel_watchdog_ends_the_run_when_a_system_lane_is_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class StuckOnSystemFrame(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, UserStartedSpeakingFrame):
                await trio.sleep_forever()
            await super().process_frame(frame, direction)

    task = PipelineTask(StuckOnSystemFrame(), params=PipelineParams(cancel_timeout=3))
    async with live(task, end=False, started=False):
        await task.queue_frame(UserStartedSpeakingFrame())
        await wait_all_tasks_blocked()
        t0 = trio.current_time()
        await task.cancel("stuck")
    assert trio.current_time() - t0 == pytest.approx(3)
    assert task.finish_reason == "cancel: stuck"


async def test_cancel_stops_a_blocked_producer_and_drops_its_backlog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Producer(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                for i in range(1000):
                    await self.push_frame(TextFrame(text=str(i)))
            else:
                await self.push_frame(frame, direction)

    slow = Sleeper(1.0, max_buffer=4)
    task = PipelineTask(Pipeline([Producer(), slow]))
    cap = watch(task)
    await task.queue_frame(TextFrame(text="go"))
    async with live(task, end=False, started=False):
        await trio.sleep(10.5)
        await task.cancel()
    assert task.finish_reason == "cancel"
    assert slow.cancelled == ["10"]
    assert texts(cap.downstream) == [str(i) for i in range(10)]
    assert cap.errors == []


# =========================================================================== interruptions


class Injector(Recorder):
    """Forwards everything; on UserStartedSpeakingFrame (or the text frame "go", which it
    consumes) pushes an InterruptionFrame downstream, then the ``after`` frames."""

    def __init__(self, after: tuple[Frame, ...] = (), *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.after = after

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        go = isinstance(frame, TextFrame) and frame.text == "go"
        if not go:
            await super().process_frame(frame, direction)
        if go or isinstance(frame, UserStartedSpeakingFrame):
            await self.push_frame(InterruptionFrame())
            for f in self.after:
                await self.push_frame(f)


async def test_interruption_cancels_exactly_the_processors_it_reaches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = Sleeper(1.0, name="upstream")
    injector = Injector(name="injector")
    slow = Sleeper(10.0, name="slow")
    tail = Recorder(name="tail")
    task = PipelineTask(Pipeline([upstream, injector, slow, tail]))
    cap = watch(task)
    await task.queue_frames([TextFrame(text=str(i)) for i in range(1, 7)])
    async with live(task, end=False, started=False):
        # t=3.5: upstream is handling "4"; slow is handling "1" with "2" and "3" queued.
        await trio.sleep(3.5)
        assert upstream.started[-1] == "4" and upstream.done == ["1", "2", "3"]
        assert slow.started == ["1"]
        assert slow.statistics().process == 2
        await task.queue_frame(UserStartedSpeakingFrame())
        await wait_all_tasks_blocked()
        assert slow.cancelled == ["1"]
        assert slow.statistics().process == 0
        await task.queue_frame(EndFrame())
    # Upstream of the injection: untouched (its in-flight "4" completed, no hook ran).
    assert upstream.cancelled == []
    assert upstream.done == ["1", "2", "3", "4", "5", "6"]
    assert "interruption" not in upstream.hooks and "interruption" not in injector.hooks
    # Where it was injected and below: in-flight work cancelled, queue drained, hook ran.
    assert slow.hooks == tail.hooks == ["start", "interruption", "stop"]
    assert slow.done == ["4", "5", "6"]
    assert slow.started == ["1", "4", "5", "6"]  # "2" and "3" were drained, never started
    assert names(cap.downstream)[:3] == [
        "StartFrame",
        "UserStartedSpeakingFrame",
        "InterruptionFrame",
    ]
    assert texts(cap.downstream) == ["4", "5", "6"]
    assert task.finish_reason == "end"
    assert cap.errors == []


async def test_interruption_keeps_a_queued_end_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    injector, slow, tail = Injector(), Sleeper(10.0), Recorder()
    task = PipelineTask(Pipeline([injector, slow, tail]))
    cap = watch(task)
    await task.queue_frames([TextFrame(text="1"), TextFrame(text="2"), EndFrame()])
    async with live(task, end=False, started=False):
        await trio.sleep(5)
        assert slow.statistics().process == 2  # "2" and the EndFrame
        t0 = trio.current_time()
        await task.queue_frame(UserStartedSpeakingFrame())
    assert trio.current_time() - t0 < 0.1  # "1" was cut short; "2" never ran
    assert slow.cancelled == ["1"] and slow.done == []
    assert names(cap.downstream)[-2:] == ["InterruptionFrame", "EndFrame"]
    assert task.finish_reason == "end"
    assert slow.hooks == ["start", "interruption", "stop"]


async def test_interruption_does_not_cut_short_an_end_frame_being_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowStop(Recorder):
        async def on_stop(self, frame: EndFrame) -> None:
            await trio.sleep(2)
            await super().on_stop(frame)

    injector, slow = Injector(), SlowStop()
    task = PipelineTask(Pipeline([injector, slow]))
    cap = watch(task)
    await task.queue_frame(EndFrame())
    async with live(task, end=False, started=False):
        await trio.sleep(1)
        await task.queue_frame(UserStartedSpeakingFrame())
    assert slow.hooks == ["start", "interruption", "stop"]
    assert task.finish_reason == "end"
    assert cap.downstream[-1].name == "EndFrame"


@pytest.mark.parametrize("trigger", [TextFrame(text="go"), UserStartedSpeakingFrame()])
async def test_frames_pushed_right_after_an_interruption_are_never_lost(trigger: Frame) -> None:
    """The injector pushes InterruptionFrame then data at once: the data belongs to the new
    turn and must reach the sink, whatever order the scheduler runs the receiving tasks in.

    (trio shuffles each scheduling batch; 100 runs make a lost frame all but certain to show.
    The two extreme orders are forced in the ``_deterministic`` variant below; this one keeps
    exploring the orders in between.)
    """
    for round_ in range(100):
        after = (TextFrame(text=f"new turn {round_}"), EndFrame())
        result = await run_test(
            [Injector(after=after), Recorder(), Recorder()], [trigger], send_end_frame=False
        )
        got = [f.name for f in result.downstream if not isinstance(f, UserStartedSpeakingFrame)]
        assert got == ["StartFrame", "InterruptionFrame", "TextFrame", "EndFrame"], round_
        assert result.upstream == []


async def test_a_sender_woken_from_backpressure_after_an_interruption_does_not_emit() -> None:
    """A splitter parked on a full lane is woken just as an interruption reaches it: it must
    not emit its stale frame, which would arrive behind the InterruptionFrame and pass for new.

    (The window is a single scheduling step; the rounds below hit it often. The
    ``_deterministic`` variant below constructs that step; this one covers the real,
    unconstructed pipelines.)
    """

    class Splitter(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                for part in "abc":
                    await self.push_frame(TextFrame(text=frame.text + part))
            else:
                await self.push_frame(frame, direction)

    for _ in range(2):
        for m in range(1, 40):
            frames = [TextFrame(text=str(i)) for i in range(m)] + [TextFrame(text="go")]
            procs = [Injector(), Splitter(), FrameProcessor(max_buffer=1)]
            result = await run_test([*procs, FrameProcessor(max_buffer=1)], frames)
            cut = names(result.downstream).index("InterruptionFrame")
            assert texts(result.downstream[cut:]) == [], m


class NowaitInjector(Recorder):
    """On the text frame "go" (consumed): pushes an InterruptionFrame, then ``after``, all
    with ``push_frame_nowait``. With ``settle``, it waits between the two until every other
    task is blocked (the receiver has handled the interruption); without, there is no
    checkpoint between them (the frames are queued before the receiver has run at all)."""

    def __init__(self, after: tuple[Frame, ...], *, settle: bool) -> None:
        super().__init__(name="injector")
        self.after = after
        self.settle = settle

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "go":
            self.push_frame_nowait(InterruptionFrame())
            if self.settle:
                await wait_all_tasks_blocked()
            for f in self.after:
                self.push_frame_nowait(f)
            return
        await super().process_frame(frame, direction)


@pytest.mark.parametrize("settle", [False, True], ids=["no-checkpoint", "receiver-settled"])
async def test_frames_pushed_right_after_an_interruption_are_never_lost_deterministic(
    settle: bool,
) -> None:
    """The two extreme orders of the test above, forced instead of hoped for: the frames of
    the new turn are either already queued behind the interruption before the receiving
    processor has run (an interruption drained by the receiver's system task would take them
    with it), or pushed after the receiver has fully handled the interruption."""
    after = (TextFrame(text="new turn"), EndFrame())
    receiver, tail = Recorder(name="receiver"), Recorder(name="tail")
    task = PipelineTask(Pipeline([NowaitInjector(after, settle=settle), receiver, tail]))
    cap = watch(task)
    await task.queue_frame(TextFrame(text="go"))
    with trio.fail_after(5):
        await task.run()
    assert names(cap.downstream) == ["StartFrame", "InterruptionFrame", "TextFrame", "EndFrame"]
    assert texts(cap.downstream) == ["new turn"]
    assert receiver.hooks == tail.hooks == ["start", "interruption", "stop"]
    assert [f.name for f, _ in receiver.seen] == ["TextFrame"]
    assert task.finish_reason == "end"
    assert cap.errors == []


async def test_a_woken_sender_after_an_interruption_does_not_emit_deterministic() -> None:
    """The race of the test above, constructed: the splitter is parked on the gate's full lane
    (max_buffer=1); in ONE scheduling step the gate takes a frame (which wakes the splitter)
    and an interruption reaches the splitter. The splitter's wake-up can no longer be
    aborted, so only the re-check after the wake-up keeps its stale frame in.

    The splitter forwards the interruption only when the test says so, so a stale frame
    would not be drained by it on the way: it would reach the sink.
    """
    release_hold = trio.Event()
    release_interruption = trio.Event()

    class Splitter(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                for part in "abc":
                    await self.push_frame(TextFrame(text=f"go-{part}"))
            else:
                await super().process_frame(frame, direction)

        async def on_interruption(self, frame: InterruptionFrame) -> None:
            await super().on_interruption(frame)
            await release_interruption.wait()

    head = FrameProcessor(name="head")

    class Gate(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "hold":
                await release_hold.wait()
            elif isinstance(frame, TextFrame) and frame.text == "go-a":
                # Same step as the wake-up of the parked splitter (the process loop unparks
                # it just before dispatching this frame): interrupt the splitter now.
                head.push_frame_nowait(InterruptionFrame())
            await super().process_frame(frame, direction)

    splitter, gate = Splitter(name="splitter"), Gate(name="gate", max_buffer=1)
    task = PipelineTask(Pipeline([head, splitter, gate]))
    cap = watch(task)
    with trio.fail_after(5):
        async with live(task, end=False, started=False):
            await task.queue_frames([TextFrame(text="hold"), TextFrame(text="go")])
            await wait_all_tasks_blocked()
            # "go-a" fills the gate's lane; the splitter waits to push "go-b".
            assert gate.statistics().process == 1
            assert gate.statistics().blocked_senders == 1
            release_hold.set()
            await wait_all_tasks_blocked()
            assert splitter.hooks == ["start", "interruption"]
            release_interruption.set()
            await wait_all_tasks_blocked()
            await task.queue_frames([TextFrame(text="after"), EndFrame()])
    assert texts(cap.downstream) == ["hold", "go-a", "after"]  # never "go-b"
    assert [f.text for f, _ in gate.seen if isinstance(f, TextFrame)] == ["hold", "go-a", "after"]
    assert names(cap.downstream).count("InterruptionFrame") == 1
    assert task.finish_reason == "end"
    assert cap.errors == []


async def test_interruption_task_frame_interrupts_from_the_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class AskInterrupt(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, UserStartedSpeakingFrame):
                await self.push_frame(InterruptionTaskFrame(), UP)

    first, asker, slow = Recorder(), AskInterrupt(), Sleeper(10.0)
    task = PipelineTask(Pipeline([first, asker, slow]))
    cap = watch(task)
    await task.queue_frames([TextFrame(text="1"), TextFrame(text="2")])
    async with live(task, end=False, started=False):
        await trio.sleep(1)
        await task.queue_frame(UserStartedSpeakingFrame())
        await wait_all_tasks_blocked()
        await task.queue_frame(EndFrame())
    for p in (first, asker, slow):
        assert p.hooks == ["start", "interruption", "stop"]
    assert slow.cancelled == ["1"] and slow.done == []
    assert "InterruptionFrame" in names(cap.downstream)
    assert texts(cap.downstream) == []


async def test_exception_in_on_interruption_is_reported_and_the_frame_goes_on() -> None:
    class BadHook(Recorder):
        async def on_interruption(self, frame: InterruptionFrame) -> None:
            raise RuntimeError("hook broke")

    bad = BadHook()
    result = await run_test(
        [Injector(after=(TextFrame(text="x"), EndFrame())), bad],
        [UserStartedSpeakingFrame()],
        send_end_frame=False,
    )
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == bad.name and "hook broke" in error.error
    assert "InterruptionFrame" in names(result.downstream)
    assert texts(result.downstream) == ["x"]


# =========================================================================== errors


class Flaky(Recorder):
    """Raises on text frames whose text is "boom"; forwards the rest."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "boom":
            raise ValueError("bad input")
        await super().process_frame(frame, direction)


async def test_exception_becomes_error_frame_and_processor_keeps_working() -> None:
    flaky = Flaky(name="flaky")
    frames = [TextFrame(text="a"), TextFrame(text="boom"), TextFrame(text="b")]
    result = await run_test([Recorder(), flaky, Recorder()], frames)
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == "flaky"
    assert not error.fatal
    assert isinstance(error.exception, ValueError)
    assert "bad input" in error.error and "TextFrame" in error.error
    assert texts(result.downstream) == ["a", "b"]
    assert result.finish_reason == "end"


async def test_exception_on_the_system_lane_becomes_error_frame() -> None:
    class BadOnSystem(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, UserStoppedSpeakingFrame):
                raise KeyError("sys")
            await super().process_frame(frame, direction)

    bad = BadOnSystem()
    result = await run_test([bad], [UserStoppedSpeakingFrame(), TextFrame(text="a")])
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == bad.name
    assert texts(result.downstream) == ["a"]


async def test_on_error_handler_receives_errors_and_exceptions_in_hooks_are_reported() -> None:
    class BadStop(Recorder):
        async def on_stop(self, frame: EndFrame) -> None:
            raise RuntimeError("stop failed")

    bad = BadStop()
    task = PipelineTask(Pipeline([Flaky(), bad]))
    seen: list[ErrorFrame] = []

    async def on_error(_task: PipelineTask, frame: ErrorFrame) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(frame)

    task.add_event_handler("on_error", on_error)
    await task.queue_frames([TextFrame(text="boom"), EndFrame()])
    await task.run()
    assert task.finish_reason == "end"
    assert len(seen) == 2
    assert {e.processor for e in seen} == {task.processors()[1].name, bad.name}


async def test_errors_raised_while_the_run_ends_still_reach_the_source() -> None:
    """The last processor's on_stop fails just before the EndFrame reaches the sink: the run
    must not end before the ErrorFrame (travelling the other way) was reported."""

    class BadStop(Recorder):
        async def on_stop(self, frame: EndFrame) -> None:
            raise RuntimeError("could not close the client")

    bad = BadStop(name="bad-stop")
    for _ in range(20):
        procs: list[FrameProcessor] = [Recorder() for _ in range(6)]
        result = await run_test([*procs, bad], [TextFrame(text="a")])
        [error] = result.upstream_of(ErrorFrame)
        assert error.processor == "bad-stop"
        bad = BadStop(name="bad-stop")


async def test_an_error_still_being_handled_upstream_is_not_overtaken_by_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The end of a run travels upstream as a private StopFrame in the process lanes; an
    ErrorFrame travels in the system lanes. A processor still handling the error (here for 1 s)
    must forward it before the end, else the run ended without it (about one run in 700 of
    the test above lost its error this way)."""

    class SlowWithErrors(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, ErrorFrame):
                await trio.sleep(1)
            await self.push_frame(frame, direction)

    class BadStop(FrameProcessor):
        async def on_stop(self, frame: EndFrame) -> None:
            raise RuntimeError("could not close the client")

    result = await run_test([SlowWithErrors(), BadStop(name="bad-stop")], [TextFrame(text="a")])
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == "bad-stop"
    assert result.finish_reason == "end"


async def test_upstream_data_pushed_before_the_end_reaches_the_source() -> None:
    class Acker(FrameProcessor):
        async def on_stop(self, frame: EndFrame) -> None:
            await self.push_frame(TextFrame(text=f"ack from {self.name}"), UP)

    for _ in range(20):
        procs = [Acker(name=f"a{i}") for i in range(5)]
        result = await run_test(procs, [])
        assert sorted(texts(result.upstream)) == [f"ack from a{i}" for i in range(5)]
        assert result.finish_reason == "end"


async def test_a_stuck_upstream_lane_delays_the_end_by_at_most_cancel_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class StuckOnUpstream(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if direction is UP and isinstance(frame, TextFrame):
                await trio.sleep_forever()
            await super().process_frame(frame, direction)

    class Acker(FrameProcessor):
        async def on_stop(self, frame: EndFrame) -> None:
            await self.push_frame(TextFrame(text="ack"), UP)

    params = PipelineParams(cancel_timeout=1.5)
    t0 = trio.current_time()
    result = await run_test([StuckOnUpstream(), Acker()], [], params=params)
    assert trio.current_time() - t0 == pytest.approx(1.5)
    assert result.finish_reason == "end"
    assert "upstream frames still in flight" in caplog.text


async def test_non_fatal_errors_without_handler_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="rustvani_trio"):
        await run_test([Flaky(name="flaky")], [TextFrame(text="boom")])
    assert "error from flaky" in caplog.text


async def test_fatal_error_ends_run_with_pipeline_fatal_error() -> None:
    class Fatal(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "fatal":
                await self.push_error("cannot go on", fatal=True)
                return
            await super().process_frame(frame, direction)

    fatal, tail = Fatal(name="fatal"), Recorder()
    task = PipelineTask(Pipeline([fatal, tail]))
    finished: list[str | None] = []
    task.add_event_handler("on_pipeline_finished", lambda _t, r: finished.append(r))
    await task.queue_frames([TextFrame(text="fatal"), TextFrame(text="more")])
    with pytest.raises(PipelineFatalError) as info:
        await task.run()
    assert info.value.frame.processor == "fatal"
    assert info.value.frame.fatal and info.value.frame.error == "cannot go on"
    assert "fatal" in str(info.value)
    assert finished == ["error"]
    assert "cancel" in tail.hooks


async def test_exception_in_on_start_is_fatal() -> None:
    class BadStart(FrameProcessor):
        async def on_start(self, frame: StartFrame) -> None:
            raise OSError("no network")

    task = PipelineTask(Pipeline([Recorder(), BadStart(name="bad-start")]))
    await task.queue_frame(TextFrame(text="a"))
    with pytest.raises(PipelineFatalError) as info:
        await task.run()
    assert info.value.frame.processor == "bad-start"
    assert isinstance(info.value.__cause__, OSError)
    assert task.finish_reason == "error"


async def test_run_test_raises_pipeline_fatal_error_as_documented() -> None:
    """``run_test``'s docstring: fatal errors raise PipelineFatalError, as from task.run."""

    class BadStart(FrameProcessor):
        async def on_start(self, frame: StartFrame) -> None:
            raise OSError("no network")

    with pytest.raises(PipelineFatalError):
        await run_test([BadStart()])


async def test_frame_pushed_before_start_is_reported_by_the_refusing_processor() -> None:
    class Eager(FrameProcessor):
        async def on_start(self, frame: StartFrame) -> None:
            await self.push_frame(TextFrame(text="too early"))

    eager, refuser = Eager(), Recorder(name="refuser")
    result = await run_test([eager, refuser], [TextFrame(text="fine")])
    [error] = result.upstream_of(ErrorFrame)
    assert error.processor == "refuser"
    assert "before StartFrame" in error.error and "TextFrame" in error.error
    assert texts(result.downstream) == ["fine"]
    assert result.finish_reason == "end"


async def test_frame_pushed_after_end_is_reported_by_the_refusing_processor() -> None:
    release = trio.Event()

    class Late(Recorder):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, UserStoppedSpeakingFrame):
                await self.push_frame(TextFrame(text="too late"))

    class WaitsInStop(Recorder):
        async def on_stop(self, frame: EndFrame) -> None:
            await release.wait()
            await super().on_stop(frame)

    late, waiter = Late(), WaitsInStop(name="waiter")
    task = PipelineTask(Pipeline([late, waiter]))
    cap = watch(task)
    await task.queue_frame(EndFrame())
    async with live(task, end=False, started=False):
        await wait_all_tasks_blocked()  # the EndFrame is in waiter's on_stop
        await task.queue_frame(UserStoppedSpeakingFrame())
        await wait_all_tasks_blocked()
        release.set()
    [error] = cap.errors
    assert error.processor == "waiter"
    assert "after EndFrame" in error.error
    assert texts(cap.downstream) == []
    assert task.finish_reason == "end"


async def test_second_start_frame_is_reported() -> None:
    result = await run_test([Recorder(name="r")], [StartFrame()])
    errors = result.upstream_of(ErrorFrame)
    assert errors and all("second StartFrame" in e.error for e in errors)


async def test_exception_in_an_event_handler_is_not_swallowed() -> None:
    task = PipelineTask(FrameProcessor())

    def broken(_task: PipelineTask) -> None:
        raise ZeroDivisionError

    task.add_event_handler("on_pipeline_started", broken)
    await task.queue_frame(EndFrame())
    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        await task.run()


async def test_an_event_handler_removed_before_the_run_is_not_called() -> None:
    task = PipelineTask(FrameProcessor())
    calls: list[str] = []

    def started(_task: PipelineTask) -> None:
        calls.append("started")

    task.add_event_handler("on_pipeline_started", started)
    task.remove_event_handler("on_pipeline_started", started)
    await task.queue_frame(EndFrame())
    await task.run()
    assert calls == []


async def test_a_one_shot_handler_removes_itself_mid_run() -> None:
    task = PipelineTask(FrameProcessor())
    run = watch(task)
    seen: list[str] = []

    def first_text(task_: PipelineTask, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            seen.append(frame.text)
            task_.remove_event_handler("on_frame_reached_downstream", first_text)

    task.add_event_handler("on_frame_reached_downstream", first_text)
    async with live(task) as lv:
        await lv.send(TextFrame(text="a"), TextFrame(text="b"), TextFrame(text="c"))
        await lv.wait_until(lambda: len(run.downstream_of(TextFrame)) == 3)
    assert seen == ["a"]
    # the other handler (the recorder) still sees every frame, in order
    assert [f.text for f in run.downstream_of(TextFrame)] == ["a", "b", "c"]


async def test_a_removed_watcher_sees_no_more_frames() -> None:
    task = PipelineTask(FrameProcessor())
    seen: list[Frame] = []

    def watcher(_task: PipelineTask, frame: Frame) -> None:
        seen.append(frame)

    task.add_event_handler("on_frame_reached_downstream", watcher)
    async with live(task, started=True) as lv:
        await lv.send(TextFrame(text="watched"))
        await lv.wait_until(lambda: any(isinstance(f, TextFrame) for f in seen), limit=5)
        task.remove_event_handler("on_frame_reached_downstream", watcher)
        await lv.send(TextFrame(text="unwatched"), settle=True)
    assert [f.text for f in seen if isinstance(f, TextFrame)] == ["watched"]


async def test_a_handler_removed_by_another_during_an_event_still_gets_that_event() -> None:
    task = PipelineTask(FrameProcessor())
    calls: list[str] = []

    def second(_task: PipelineTask, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            calls.append(f"second:{frame.text}")

    def first(task_: PipelineTask, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            calls.append(f"first:{frame.text}")
            if frame.text == "a":
                task_.remove_event_handler("on_frame_reached_downstream", second)

    task.add_event_handler("on_frame_reached_downstream", first)
    task.add_event_handler("on_frame_reached_downstream", second)
    run = watch(task)
    async with live(task) as lv:
        await lv.send(TextFrame(text="a"), TextFrame(text="b"))
        await lv.wait_until(lambda: len(run.downstream_of(TextFrame)) == 2)
    assert calls == ["first:a", "second:a", "first:b"]


def test_removing_a_handler_checks_the_event_and_the_handler() -> None:
    task = PipelineTask(FrameProcessor())

    def handler(_task: PipelineTask) -> None: ...

    with pytest.raises(ValueError, match="unknown event 'on_started'"):
        task.remove_event_handler("on_started", handler)
    with pytest.raises(ValueError, match="is not a handler of 'on_pipeline_started'"):
        task.remove_event_handler("on_pipeline_started", handler)
    # added twice, removed once: registered once more
    task.add_event_handler("on_pipeline_started", handler)
    task.add_event_handler("on_pipeline_started", handler)
    task.remove_event_handler("on_pipeline_started", handler)
    task.remove_event_handler("on_pipeline_started", handler)
    with pytest.raises(ValueError):
        task.remove_event_handler("on_pipeline_started", handler)


async def test_remove_event_handler_takes_that_handler_before_an_equal_one() -> None:
    calls: list[str] = []

    class Handler:
        def __init__(self, name: str) -> None:
            self.name = name

        def __eq__(self, other: object) -> bool:  # every Handler equals every other
            return isinstance(other, Handler)

        __hash__ = object.__hash__

        def __call__(self, _task: PipelineTask) -> None:
            calls.append(self.name)

    first, second = Handler("first"), Handler("second")
    task = PipelineTask(FrameProcessor())
    task.add_event_handler("on_pipeline_started", first)
    task.add_event_handler("on_pipeline_started", second)
    task.remove_event_handler("on_pipeline_started", first)
    await task.queue_frame(EndFrame())
    await task.run()
    assert calls == ["second"]


class _Gate(FrameProcessor):
    """Holds every TextFrame "hold" until ``release`` is set (max_buffer=1)."""

    def __init__(self) -> None:
        super().__init__(max_buffer=1)
        self.release = trio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "hold":
            await self.release.wait()
        await self.push_frame(frame, direction)


async def _queue_cancelled(task: PipelineTask, frame: Frame) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await task.queue_frame(frame)
        raise AssertionError("queue_frame did not raise Cancelled")  # pragma: no cover
    assert scope.cancelled_caught


@pytest.mark.parametrize("state", ["before the run", "idle", "behind a full lane", "system"])
async def test_queue_frame_from_a_cancelled_caller_queues_nothing(state: str) -> None:
    # trio's rule, whatever way the frame would have gone in (past the idle source, through
    # the task's input queue, before the run): an operation that raised Cancelled did not
    # happen.
    gate = _Gate()
    task = PipelineTask(Pipeline([gate]))
    run = watch(task)
    ghost: Frame = (
        UserStartedSpeakingFrame() if state == "system" else TextFrame(text="from cancelled code")
    )
    if state == "before the run":
        await _queue_cancelled(task, ghost)
    async with live(task) as lv:
        if state == "behind a full lane":
            await lv.send(TextFrame(text="hold"), TextFrame(text="queued"), settle=True)
        if state != "before the run":
            await _queue_cancelled(task, ghost)
        gate.release.set()
        await lv.send(TextFrame(text="after"))
        await lv.wait_until(lambda: "after" in texts(run.downstream))
    assert ghost not in run.downstream
    assert ghost.id not in run.arrived


# =========================================================================== backpressure


class Sampler(BaseObserver):
    """On every push, samples the lane statistics of every processor of the task."""

    def __init__(self) -> None:
        self.task: PipelineTask | None = None
        self.max_waiting: dict[str, int] = {}
        self.max_blocked: dict[str, int] = {}
        self.samples = 0

    def on_push_frame(self, event: FramePushed) -> None:
        assert self.task is not None
        self.samples += 1
        for p in self.task.processors():
            stats = p.statistics()
            self.max_waiting[p.name] = max(
                self.max_waiting.get(p.name, 0), stats.downstream_waiting
            )
            self.max_blocked[p.name] = max(self.max_blocked.get(p.name, 0), stats.blocked_senders)


async def test_backpressure_bounds_every_lane(autojump_clock: trio.testing.MockClock) -> None:
    n = 2000

    class Producer(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                for i in range(n):
                    await self.push_frame(TextFrame(text=str(i)))
            else:
                await self.push_frame(frame, direction)

    class SlowSink(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await trio.sleep(0.005)
            await self.push_frame(frame, direction)

    producer = Producer(name="producer", max_buffer=4)
    middle = FrameProcessor(name="middle", max_buffer=3)
    slow = SlowSink(name="slow", max_buffer=8)
    sampler = Sampler()
    task = PipelineTask(Pipeline([producer, middle, slow]), observers=[sampler])
    sampler.task = task
    cap = watch(task)
    await task.queue_frames([TextFrame(text="go"), EndFrame()])
    t0 = trio.current_time()
    await task.run()
    assert texts(cap.downstream) == [str(i) for i in range(n)]
    assert sampler.samples > 3 * n
    for p in task.processors():
        assert sampler.max_waiting[p.name] <= p.max_buffer, p.name
    assert sampler.max_waiting["slow"] == slow.max_buffer  # the slow lane did fill up
    assert sampler.max_blocked["slow"] >= 1  # and its sender was made to wait,
    assert sampler.max_blocked["middle"] >= 1  # and so was the producer
    assert trio.current_time() - t0 == pytest.approx(n * 0.005, rel=0.01)


async def test_bidirectional_traffic_with_full_lanes_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Echo(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if direction is DOWN and isinstance(frame, TextFrame):
                await self.push_frame(TextFrame(text=f"echo|{self.name}|{frame.text}"), UP)
            await self.push_frame(frame, direction)

    class Slow(Echo):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await trio.sleep(0.001)
            await super().process_frame(frame, direction)

    procs: list[FrameProcessor] = [Echo(name=f"e{i}", max_buffer=2) for i in range(4)]
    procs.append(Slow(name="slow", max_buffer=2))
    frames = [TextFrame(text=str(i)) for i in range(300)]
    with trio.fail_after(60):
        result = await run_test(procs, frames)
    assert texts(result.downstream) == [f.text for f in frames]
    assert len(result.upstream_of(TextFrame)) == len(procs) * len(frames)


# =========================================================================== idle timeout


async def test_idle_timeout_cancels_the_run(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[float] = []
    task = PipelineTask(Recorder(), params=PipelineParams(idle_timeout=2.0))
    task.add_event_handler("on_idle_timeout", lambda _t: fired.append(trio.current_time()))
    t0 = trio.current_time()
    await task.run()
    assert fired == [pytest.approx(t0 + 2.0)]
    assert task.finish_reason == "cancel: idle timeout"


async def test_activity_resets_the_idle_timeout(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[float] = []
    task = PipelineTask(Recorder(), params=PipelineParams(idle_timeout=2.0))
    task.add_event_handler("on_idle_timeout", lambda _t: fired.append(trio.current_time()))
    t0 = trio.current_time()
    async with live(task, end=False, started=False):
        for i in range(3):
            await trio.sleep(1.5)
            await task.queue_frame(TextFrame(text=str(i)))
    assert fired == [pytest.approx(t0 + 4.5 + 2.0)]
    assert task.finish_reason == "cancel: idle timeout"


async def test_frames_reaching_the_ends_count_as_activity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Talker(FrameProcessor):
        """Answers a text frame with an LLMText every second for 5 seconds."""

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                for i in range(5):
                    await trio.sleep(1)
                    await self.push_frame(LLMText(text=str(i)))
            else:
                await self.push_frame(frame, direction)

    fired: list[float] = []
    task = PipelineTask(Talker(), params=PipelineParams(idle_timeout=2.0))
    task.add_event_handler("on_idle_timeout", lambda _t: fired.append(trio.current_time()))
    t0 = trio.current_time()
    await task.queue_frame(TextFrame(text="talk"))
    await task.run()
    assert fired == [pytest.approx(t0 + 5 + 2.0)]


async def test_idle_timeout_without_cancel_fires_and_the_run_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[float] = []
    params = PipelineParams(idle_timeout=2.0, cancel_on_idle_timeout=False)
    task = PipelineTask(Recorder(), params=params)
    task.add_event_handler("on_idle_timeout", lambda _t: fired.append(trio.current_time()))
    t0 = trio.current_time()
    async with live(task, end=False, started=False):
        await trio.sleep(5)
        await task.queue_frame(EndFrame())
    assert fired == [pytest.approx(t0 + 2.0), pytest.approx(t0 + 4.0)]
    assert task.finish_reason == "end"


# =========================================================================== heartbeats


async def test_heartbeats_reach_the_sink_with_latencies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Lagging(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, HeartbeatFrame):
                await trio.sleep(0.25)
            await self.push_frame(frame, direction)

    latencies: list[float] = []
    params = PipelineParams(enable_heartbeats=True, heartbeats_period=1.0)
    task = PipelineTask(Pipeline([Recorder(), Lagging()]), params=params)
    cap = watch(task)
    task.add_event_handler("on_heartbeat", lambda _t, latency: latencies.append(latency))
    async with live(task, end=False, started=False):
        await trio.sleep(3.5)
        await task.queue_frame(EndFrame())
    heartbeats = [f for f in cap.downstream if isinstance(f, HeartbeatFrame)]
    assert len(heartbeats) == 3
    assert latencies == [pytest.approx(0.25)] * 3
    assert list(task.heartbeat_latencies) == latencies
    assert cap.errors == []


async def test_heartbeats_while_an_end_frame_drains_are_not_errors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowStop(Recorder):
        async def on_stop(self, frame: EndFrame) -> None:
            await trio.sleep(3.5)

    params = PipelineParams(enable_heartbeats=True, heartbeats_period=1.0)
    task = PipelineTask(Pipeline([SlowStop()]), params=params)
    cap = watch(task)
    await task.queue_frame(EndFrame())
    await task.run()
    assert task.finish_reason == "end"
    assert cap.errors == []


async def test_heartbeat_monitor_warns_when_heartbeats_stop_arriving(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Stuck(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, HeartbeatFrame):
                await trio.sleep_forever()
            await self.push_frame(frame, direction)

    params = PipelineParams(
        enable_heartbeats=True, heartbeats_period=1.0, heartbeats_monitor_timeout=3.0
    )
    task = PipelineTask(Stuck(), params=params)
    async with live(task, end=False, started=False):
        await trio.sleep(5.5)
        await task.cancel()
    assert "no heartbeat reached the sink" in caplog.text


# =========================================================================== observers and metrics


class Log(BaseObserver):
    def __init__(self) -> None:
        self.events: list[FramePushed] = []

    def on_push_frame(self, event: FramePushed) -> None:
        self.events.append(event)


async def test_observers_see_every_push() -> None:
    a, b = Recorder(name="a"), Recorder(name="b")

    class Answer(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await self.push_frame(frame, direction)
            if isinstance(frame, TextFrame) and direction is DOWN:
                await self.push_frame(TextFrame(text="answer"), UP)

    ans = Answer(name="ans")
    log = Log()
    task = PipelineTask(Pipeline([a, Pipeline([b]), ans]), observers=[log])
    src, *_, sink = task.processors()
    await task.queue_frames([TextFrame(text="q"), EndFrame()])
    await task.run()
    hops = [(e.source.name, e.destination.name, e.frame.name, e.direction) for e in log.events]
    for kind in ("StartFrame", "TextFrame", "EndFrame"):
        path = [(s, d) for s, d, k, dir_ in hops if k == kind and dir_ is DOWN]
        assert path == [(src.name, "a"), ("a", "b"), ("b", "ans"), ("ans", sink.name)], kind
    up = [(s, d) for s, d, k, dir_ in hops if dir_ is UP and k == "TextFrame"]
    assert up == [("ans", "b"), ("b", "a"), ("a", src.name)]
    # The end-of-run flush the task sends back upstream is a push like any other.
    flush = [(s, d) for s, d, k, dir_ in hops if dir_ is UP and k != "TextFrame"]
    assert flush == [(sink.name, "ans"), ("ans", "b"), ("b", "a"), ("a", src.name)]
    assert all(e.timestamp >= 0 for e in log.events)
    text_events = [e for e in log.events if isinstance(e.frame, TextFrame) and e.direction is DOWN]
    assert len({e.frame.id for e in text_events}) == 1  # the same frame object all the way


M = TypeVar("M", bound=MetricsData)


class Measured(FrameProcessor):
    """Per text frame: a TTFB of 0.5 s, processing of 0.75 s in all, and token usage."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and direction is DOWN:
            self.start_ttfb_metrics()
            self.start_processing_metrics()
            await trio.sleep(0.5)
            await self.stop_ttfb_metrics()
            await trio.sleep(0.25)
            await self.stop_processing_metrics()
            self.push_usage_metrics_nowait(LLMTokenUsage(prompt_tokens=3, total_tokens=3))
        await self.push_frame(frame, direction)


def metrics_of(collector: MetricsCollector, kind: type[M]) -> list[M]:
    return [d for f in collector.frames for d in f.data if isinstance(d, kind)]


@pytest.mark.parametrize("only_initial", [False, True])
async def test_metrics_collector_and_report_only_initial_ttfb(
    autojump_clock: trio.testing.MockClock, only_initial: bool
) -> None:
    collector = MetricsCollector()
    measured = Measured(name="m")
    params = PipelineParams(
        enable_metrics=True, enable_usage_metrics=True, report_only_initial_ttfb=only_initial
    )
    task = PipelineTask(Pipeline([measured, Recorder()]), params=params, observers=[collector])
    cap = watch(task)
    await task.queue_frames([TextFrame(text="1"), TextFrame(text="2"), EndFrame()])
    await task.run()
    ttfb = metrics_of(collector, TTFBMetricsData)
    assert [d.value for d in ttfb] == pytest.approx([0.5] if only_initial else [0.5, 0.5])
    assert all(d.processor == "m" for d in ttfb)
    processing = metrics_of(collector, ProcessingMetricsData)
    assert [d.value for d in processing] == pytest.approx([0.75, 0.75])
    usage = metrics_of(collector, LLMUsageMetricsData)
    assert [d.value.prompt_tokens for d in usage] == [3, 3]
    # Each metrics frame recorded once although the observer saw it at every hop.
    assert len({f.id for f in collector.frames}) == len(collector.frames)
    assert len([f for f in cap.downstream if isinstance(f, MetricsFrame)]) == len(collector.frames)


async def test_metrics_are_off_by_default(autojump_clock: trio.testing.MockClock) -> None:
    collector = MetricsCollector()
    task = PipelineTask(Measured(), observers=[collector])
    await task.queue_frames([TextFrame(text="1"), EndFrame()])
    await task.run()
    assert collector.frames == []


# =========================================================================== teardown hygiene


def _task_names() -> Iterator[str]:
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        yield task.name
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)


async def test_no_task_outlives_its_run(autojump_clock: trio.testing.MockClock) -> None:
    procs = [Sleeper(0.1, name=f"hygiene{i}") for i in range(3)]
    during: list[int] = []

    class Counter(BaseObserver):
        def on_push_frame(self, event: FramePushed) -> None:
            during.append(sum("hygiene" in n for n in _task_names()))

    task = PipelineTask(Pipeline(procs), observers=[Counter()])
    await task.queue_frames([TextFrame(text="a"), EndFrame()])
    await task.run()
    assert max(during) == 6  # a system and a process task per processor while running
    assert sum("hygiene" in n for n in _task_names()) == 0


def test_system_frame_classification() -> None:
    for cls in (UserStartedSpeakingFrame, MetricsFrame, InterruptionFrame, ErrorFrame):
        assert issubclass(cls, SystemFrame)
    assert not issubclass(EndFrame, SystemFrame)


# =========================================================================== the task's sink


class _SinkSteps(trio.abc.Instrument):
    """Counts the steps of the task sink's process and system tasks."""

    def __init__(self) -> None:
        self.steps = 0
        self.system_steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(".sink.process"):
            self.steps += 1
        elif task.name.endswith(".sink.system"):
            self.system_steps += 1


@asynccontextmanager
async def _running(task: PipelineTask, instrument: trio.abc.Instrument) -> AsyncIterator[None]:
    """Run ``task`` with ``instrument`` on; the block starts once the StartFrame reached the sink
    and every task settled, and must end the run (the run is waited for after it)."""
    started = trio.Event()
    task.add_event_handler("on_pipeline_started", lambda _t: started.set())
    trio.lowlevel.add_instrument(instrument)
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(task.run)
                await started.wait()
                await wait_all_tasks_blocked()
                yield
    finally:
        trio.lowlevel.remove_instrument(instrument)


class _Burst(FrameProcessor):
    """Answers ``go`` with ``count`` LLMTexts, pushed as fast as they are taken."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text.startswith("go"):
            for i in range(self.count):
                await self.push_frame(LLMText(text=f"{frame.text}-{i}"))
            return
        await self.push_frame(frame, direction)


class _SinkObserver(BaseObserver):
    def __init__(self) -> None:
        self.into_sink: list[str] = []

    def on_push_frame(self, event: FramePushed) -> None:
        if event.destination.name.endswith(".sink") and isinstance(event.frame, LLMText):
            self.into_sink.append(event.frame.text)


async def test_an_unwatched_sink_takes_frames_in_the_senders_task() -> None:
    # No handler watches the frames reaching the sink: a frame reaching it while it is idle
    # leaves the pipeline at once, in the sender's task, instead of waking the sink's task
    # once per burst. Observers still see every push into the sink, in order; the run ends
    # as usual, and a handler added later sees the frames from then on, in order.
    steps = _SinkSteps()
    observer = _SinkObserver()
    task = PipelineTask(Pipeline([_Burst(200)]), observers=[observer])
    reached: list[str] = []
    async with _running(task, steps):
        base = steps.steps
        await task.queue_frame(TextFrame(text="go"))
        await wait_all_tasks_blocked()
        assert steps.steps == base  # 200 frames; the sink's task never ran
        assert observer.into_sink == [f"go-{i}" for i in range(200)]
        task.add_event_handler(
            "on_frame_reached_downstream",
            lambda _t, f: reached.append(f.text) if isinstance(f, LLMText) else None,
        )
        await task.queue_frames([TextFrame(text="go2"), EndFrame()])
    assert reached == [f"go2-{i}" for i in range(200)]  # watched: through the sink's task
    assert steps.steps > base
    assert task.finish_reason == "end"


async def test_frames_reaching_a_sink_that_is_not_idle_wait_their_turn() -> None:
    # While the sink still handles an earlier frame (here the StartFrame, whose
    # on_pipeline_started handler waits), frames reaching it queue behind that frame even
    # when nobody watches them, and leave in order once it is done.
    release = trio.Event()

    async def held(_task: PipelineTask) -> None:
        await release.wait()

    task = PipelineTask(Pipeline([_Burst(50)]))
    task.add_event_handler("on_pipeline_started", held)
    reached: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task.run)
            await task.queue_frame(TextFrame(text="go"))
            await wait_all_tasks_blocked()
            assert task._sink.statistics().process >= 49  # queued (one held by its task)
            task.add_event_handler(
                "on_frame_reached_downstream",
                lambda _t, f: reached.append(f.text) if isinstance(f, LLMText) else None,
            )
            release.set()
            await task.queue_frame(EndFrame())
    assert reached == [f"go-{i}" for i in range(50)]
    assert task.finish_reason == "end"


# =========================================================================== plain interruptions


class _Plain(FrameProcessor):
    """Forwards everything, with the base class's hooks: an interruption goes on at once."""


@pytest.mark.parametrize("trigger", [TextFrame(text="go"), UserStartedSpeakingFrame()])
async def test_frames_pushed_right_after_an_interruption_past_plain_processors_are_never_lost(
    trigger: Frame,
) -> None:
    # As the test with Recorders above, through processors that do nothing on an
    # interruption (it passes them in the sender's task, not through their system loops).
    for round_ in range(100):
        after = (TextFrame(text=f"new turn {round_}"), EndFrame())
        result = await run_test(
            [Injector(after=after), _Plain(), _Plain()], [trigger], send_end_frame=False
        )
        got = [f.name for f in result.downstream if not isinstance(f, UserStartedSpeakingFrame)]
        assert got == ["StartFrame", "InterruptionFrame", "TextFrame", "EndFrame"], round_
        assert result.upstream == []


async def test_an_interruption_cancels_work_past_plain_processors_in_the_senders_step() -> None:
    # The worker's request is cancelled before the sender's next checkpoint: the plain
    # processor between them forwards the interruption as it arrives, in the sender's task,
    # as a direct cancel would (no scheduling round per processor on the way). A processor
    # with its own on_interruption still runs it in its system loop, and the frame reaches the
    # sink once, after the hook.
    worker_cancelled: list[bool] = []

    class Worker(FrameProcessor):
        def __init__(self) -> None:
            super().__init__(name="worker")
            self.working = trio.Event()

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "work":
                self.working.set()
                await trio.sleep_forever()
            await self.push_frame(frame, direction)

    worker = Worker()

    class Sender(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "interrupt":
                self.push_frame_nowait(InterruptionFrame())
                worker_cancelled.append(worker._processor_run.process_cut)  # no await between
                return
            await self.push_frame(frame, direction)

    tail = Recorder(name="tail")
    task = PipelineTask(Pipeline([Sender(), _Plain(), worker, tail]))
    cap = watch(task)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task.run)
            await task.queue_frame(TextFrame(text="work"))
            await worker.working.wait()
            await task.queue_frames([TextFrame(text="interrupt"), TextFrame(text="after")])
            await task.queue_frame(EndFrame())
    assert worker_cancelled == [True]
    assert tail.hooks == ["start", "interruption", "stop"]
    assert names(cap.downstream) == ["StartFrame", "InterruptionFrame", "TextFrame", "EndFrame"]
    assert texts(cap.downstream) == ["after"]
    assert worker.statistics().dropped == 1  # "work", cut short
    assert task.finish_reason == "end"


async def test_an_idle_processor_takes_no_frame_before_its_interruption_went_on() -> None:
    # The processor was idle when the interruption came (nothing to cancel: its process loop
    # is not woken for it), and its on_interruption takes a while: a frame arriving meanwhile
    # waits until the interruption has gone on downstream, so no new output overtakes it.
    release = trio.Event()

    class SlowHook(Recorder):
        async def on_interruption(self, frame: InterruptionFrame) -> None:
            await super().on_interruption(frame)
            await release.wait()

    class Sender(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and frame.text == "go":
                self.push_frame_nowait(InterruptionFrame())
                await self.push_frame(TextFrame(text="new"))
                return
            await self.push_frame(frame, direction)

    slow = SlowHook(name="slow")
    task = PipelineTask(Pipeline([Sender(), slow, Recorder(name="tail")]))
    cap = watch(task)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task.run)
            await task.queue_frame(TextFrame(text="go"))
            await wait_all_tasks_blocked()
            assert slow.seen == []  # "new" waits behind the interruption
            release.set()
            await task.queue_frame(EndFrame())
    assert names(cap.downstream) == ["StartFrame", "InterruptionFrame", "TextFrame", "EndFrame"]
    assert texts(cap.downstream) == ["new"]
    assert slow.statistics().dropped == 0


async def test_an_interruption_reaching_an_unwatched_idle_sink_does_not_wake_it() -> None:
    steps = _SinkSteps()

    class Interrupter(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await self.push_frame(InterruptionFrame())
            else:
                await self.push_frame(frame, direction)

    task = PipelineTask(Pipeline([Interrupter(), _Plain()]))
    async with _running(task, steps):
        base = steps.system_steps
        await task.queue_frame(TextFrame(text="interrupt"))
        await wait_all_tasks_blocked()
        assert steps.system_steps == base
        await task.queue_frame(EndFrame())
    assert task.finish_reason == "end"


# =========================================================================== queue_frame


class _TaskSteps(trio.abc.Instrument):
    """Counts the steps of the task's feed and source tasks."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith((".feed", ".source.process")):
            self.steps += 1


async def test_a_frame_queued_to_an_idle_pipeline_goes_in_at_once() -> None:
    # Nothing queued before it is on its way in and the source is idle: the frame is pushed
    # past the source in the caller's task (the feed and the source are not woken for it).
    steps = _TaskSteps()
    recorder = Recorder(name="first")
    task = PipelineTask(Pipeline([recorder]))
    async with _running(task, steps):
        base = steps.steps
        await task.queue_frame(TextFrame(text="hello"))
        await wait_all_tasks_blocked()
        assert steps.steps == base
        assert [f.text for f, _ in recorder.seen if isinstance(f, TextFrame)] == ["hello"]
        await task.queue_frame(EndFrame())
    assert task.finish_reason == "end"


@pytest.mark.parametrize("max_buffer", [1, 4, 64])
async def test_frames_queued_in_a_burst_keep_their_order(max_buffer: int) -> None:
    # Some go in at once, some through the feed when the first processor's lane is full or
    # the feed still holds earlier ones: the order is the order they were queued in.
    first = Sleeper(0.001, name="first", max_buffer=max_buffer)
    tail = Recorder(name="tail")
    task = PipelineTask(Pipeline([first, tail]))
    cap = watch(task)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task.run)
            await cap.wait_down(StartFrame)
            for i in range(100):
                await task.queue_frame(TextFrame(text=str(i)))
                if i % 7 == 0:
                    await trio.sleep(0.002)  # let the pipeline drain now and then
            await task.queue_frame(EndFrame())
    assert texts(cap.downstream) == [str(i) for i in range(100)]
    assert task.finish_reason == "end"
