"""Regression tests for the runtime items of issue 9 (hardening), one section per item.

Each test fails on the code before its fix. Clocks are virtual (``autojump_clock``).
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from conftest import live

from rustvani_trio import (
    CancelFrame,
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FrameProcessor,
    FunctionCallEnd,
    FunctionCallInfo,
    FunctionCallResult,
    FunctionCallStart,
    HeartbeatFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseStart,
    LLMMessagesAppendFrame,
    LLMText,
    LLMTokenUsage,
    MetricsFrame,
    Pipeline,
    PipelineParams,
    PipelineTask,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    UninterruptibleFrame,
    UserStartedSpeakingFrame,
)
from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import TTFBMetricsData
from rustvani_trio.testing import run_test

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


def names(frames: list[Frame]) -> list[str]:
    return [getattr(f, "text", None) or f.name for f in frames]


@attrs.frozen(kw_only=True)
class Slow(DataFrame, UninterruptibleFrame):
    """A frame whose handling takes a while and must not be cut short."""


class Injector(FrameProcessor):
    """On TextFrame "go": pushes an InterruptionFrame, then TextFrame "new", at once."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "go":
            await self.push_frame(InterruptionFrame())
            await self.push_frame(TextFrame(text="new"))
        else:
            await self.push_frame(frame, direction)


# =========================================================================== 12


class SlowWorker(FrameProcessor):
    """Takes 1 s over a Slow frame; forwarding an interruption takes it 2 s."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, Slow):
            await trio.sleep(1)
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        await trio.sleep(2)


async def test_no_output_overtakes_an_interruption_arriving_during_an_uninterruptible_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 9.12: the process loop used to go straight on to the next frame after the
    uninterruptible one, so "new" (pushed after the interruption) left before it."""
    head, worker = Injector(name="head"), SlowWorker(name="worker")
    async with live([head, worker]) as run:
        await run.send(Slow())
        await trio.sleep(0.2)  # the worker is inside the Slow frame
        await run.send(TextFrame(text="go"))
        await run.wait_down(TextFrame)
    got = names(run.downstream)
    assert got == ["StartFrame", "Slow", "InterruptionFrame", "new", "EndFrame"]
    assert run.errors == []


async def test_an_uninterruptible_frame_queued_behind_one_is_handled_after_the_interruption(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The interruption arrives while the worker handles a Slow frame with another queued
    behind it: the queued one survives the drain and is handled once the interruption has
    gone on, before the frame pushed after the interruption."""
    head, worker = Injector(name="head"), SlowWorker(name="worker")
    async with live([head, worker]) as run:
        await run.send(Slow(), Slow())  # the second waits in the worker's lane
        await trio.sleep(0.5)
        await run.send(TextFrame(text="go"))
        await run.wait_down(TextFrame)
    assert names(run.downstream) == [
        "StartFrame",
        "Slow",
        "InterruptionFrame",
        "Slow",
        "new",
        "EndFrame",
    ]


# =========================================================================== 13


class Hooks(FrameProcessor):
    """Records its hooks; ``start_takes`` seconds in on_start."""

    def __init__(self, name: str, *, start_takes: float = 0.0) -> None:
        super().__init__(name=name)
        self.start_takes = start_takes
        self.hooks: list[str] = []

    async def on_start(self, frame: StartFrame) -> None:
        self.hooks.append("start")
        await trio.sleep(self.start_takes)
        self.hooks.append("started")

    async def on_stop(self, frame: EndFrame) -> None:
        self.hooks.append("stop")

    async def on_cancel(self, frame: CancelFrame) -> None:
        self.hooks.append(f"cancel: {frame.reason}")


async def test_cancel_while_on_start_runs_cancels_it_and_runs_on_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 9.13: the CancelFrame waited behind the StartFrame, the watchdog ended the run
    after cancel_timeout, and the processor whose on_start was running (a tool starting, an
    HTTP client open) never got on_cancel."""
    first, opening, after = Hooks("first"), Hooks("opening", start_takes=60), Hooks("after")
    task = PipelineTask(Pipeline([first, opening, after]), params=PipelineParams(cancel_timeout=5))
    async with live(task, started=False, end=False):
        await trio.sleep(1)
        assert opening.hooks == ["start"]
        t0 = trio.current_time()
        await task.cancel("hang up")
    assert trio.current_time() - t0 < 0.1  # not the watchdog's 5 s
    assert task.finish_reason == "cancel: hang up"
    assert first.hooks == ["start", "started", "cancel: hang up"]
    assert opening.hooks == ["start", "cancel: hang up"]
    assert after.hooks == []  # never started: nothing to release


class StuckOnSpeech(Hooks):
    """Its system task hangs on a speaking signal, so a CancelFrame queued behind it never
    reaches its handler."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            await trio.sleep_forever()
        await self.push_frame(frame, direction)


async def test_a_run_ended_by_the_watchdog_still_runs_every_owed_cancel_hook(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    stuck, after = StuckOnSpeech("stuck"), Hooks("after")
    task = PipelineTask(Pipeline([stuck, after]), params=PipelineParams(cancel_timeout=2))
    async with live(task, end=False):
        await run_and_wait(task, UserStartedSpeakingFrame())
        await task.cancel("bye")
    assert "CancelFrame did not reach the sink" in caplog.text
    assert task.finish_reason == "cancel: bye"
    assert stuck.hooks == ["start", "started", "cancel: bye"]
    assert after.hooks == ["start", "started", "cancel: bye"]


async def run_and_wait(task: PipelineTask, frame: Frame) -> None:
    await task.queue_frame(frame)
    await trio.testing.wait_all_tasks_blocked()


# =========================================================================== 14


def test_a_processor_in_a_second_pipeline_is_refused_where_it_is_built() -> None:
    """Issue 9.14: the second pipeline silently relinked the processor, and the first run
    hung forever."""
    shared, other, spare = (FrameProcessor(name=n) for n in ("shared", "other", "spare"))
    first = Pipeline([shared, other], name="first")
    with pytest.raises(ValueError, match=r"shared is already part of Pipeline 'first'"):
        Pipeline([spare, shared], name="second")
    with pytest.raises(ValueError, match=r"shared is already part of Pipeline 'first'"):
        PipelineTask(shared)
    # A refused pipeline claimed nothing: the spare processor is still free.
    Pipeline([spare])
    # Nesting is one owner per element: the inner pipeline belongs to the outer one.
    Pipeline([first], name="outer")
    with pytest.raises(ValueError, match=r"first is already part of Pipeline 'outer'"):
        Pipeline([first])


async def test_a_pipeline_in_a_second_task_is_refused_until_the_first_run_has_finished() -> None:
    pipeline = Pipeline([FrameProcessor(name="p")], name="pipe")
    task = PipelineTask(pipeline, name="first")
    with pytest.raises(ValueError, match=r"pipe is already part of PipelineTask 'first'"):
        PipelineTask(pipeline, name="second")
    await task.queue_frame(EndFrame())
    await task.run()
    # Finished: the pipeline may serve another run.
    again = PipelineTask(pipeline, name="again")
    await again.queue_frames([TextFrame(text="x"), EndFrame()])
    with trio.fail_after(5):
        await again.run()
    assert again.finish_reason == "end"


# =========================================================================== 15


class Sleeper(FrameProcessor):
    """Takes 1 s over each downstream text frame."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and direction is DOWN:
            await trio.sleep(1)
        await self.push_frame(frame, direction)


async def test_frames_dropped_by_an_interruption_are_counted_and_logged_one_by_one(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9.15: drops were reported nowhere."""
    slow = Sleeper(name="slow")
    with caplog.at_level(logging.DEBUG, logger="rustvani_trio"):
        async with live([slow]) as run:
            await run.send(*(TextFrame(text=str(i)) for i in range(4)))
            await trio.sleep(0.5)  # "0" is being handled, "1".."3" wait
            await run.send(InterruptionFrame())
            await trio.testing.wait_all_tasks_blocked()
    assert [f.text for f in run.downstream_of(TextFrame)] == []
    stats = slow.statistics()
    assert stats.dropped == 4
    drops = [r.getMessage() for r in caplog.records if "an interruption dropped" in r.message]
    assert drops == [
        "slow: an interruption dropped TextFrame (drained from the process lane)",
        "slow: an interruption dropped TextFrame (drained from the process lane)",
        "slow: an interruption dropped TextFrame (drained from the process lane)",
        "slow: an interruption dropped TextFrame (its handling was cut short)",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "dropped" in r.message)


async def test_user_transcripts_are_never_dropped_by_an_interruption(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 9.15: transcripts queued before an interruption from the pipeline head were lost
    silently. They survive the drain and their handling is not cut short."""
    slow = Sleeper(name="slow")
    said = [TranscriptionFrame(text=f"said {i}", user_id="u") for i in range(3)]
    async with live([slow]) as run:
        await run.send(TextFrame(text="bot"), *said)
        await trio.sleep(1.5)  # "said 0" is being handled, the others wait
        await run.send(InterruptionFrame())
        await run.wait_down(TranscriptionFrame, 3)
    assert run.downstream_of(TranscriptionFrame) == said
    assert slow.statistics().dropped == 0


# =========================================================================== 17


class FakeHandler:
    """Looks like OpenAILLMHandler to the checks (they duck-type, never import the LLM module)."""

    def into_processor(self) -> FrameProcessor:
        return FrameProcessor()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TextFrame(text=123), r"TextFrame\.text must be a str, got 123"),
        (lambda: LLMText(text=None), r"LLMText\.text must be a str, got None"),
        (lambda: TranscriptionFrame(text="hi", finalized="yes"), r"finalized must be a bool"),
        (lambda: TranscriptionFrame(text="hi", user_id=7), r"user_id must be a str"),
        (lambda: ErrorFrame(error=RuntimeError("x")), r"ErrorFrame\.error must be a str"),
        (lambda: ErrorFrame(error="x", exception="boom"), r"exception must be an exception"),
        (lambda: CancelFrame(reason=1), r"CancelFrame\.reason must be a str or None"),
        (lambda: HeartbeatFrame(timestamp="now"), r"timestamp must be a number"),
        (lambda: FunctionCallStart(calls=("c",)), r"calls must be a tuple of FunctionCallInfo"),
        (lambda: FunctionCallEnd(round=1.5), r"FunctionCallEnd\.round must be an int"),
        (lambda: FunctionCallInfo(tool_call_id="1", function_name="f", arguments={}), r"a str"),
        (lambda: FunctionCallResult(tool_call_id="1", function_name="f", result=3), r"a str"),
        (lambda: LLMContextFrame(context=[]), r"context must be an LLMContext"),
        (lambda: LLMMessagesAppendFrame(messages=("hi",)), r"a tuple of Mapping"),
        (lambda: MetricsFrame(data=(1.0,)), r"data must be a tuple of MetricsData"),
        (lambda: TTFBMetricsData(processor="p", value="1"), r"value must be a number"),
        (lambda: LLMTokenUsage(prompt_tokens=1.0), r"prompt_tokens must be an int"),
        (lambda: StartFrame(allow_interruptions=None), r"allow_interruptions must be a bool"),
    ],
)
def test_frames_refuse_wrong_types_where_they_are_built(build: Any, message: str) -> None:
    """Issue 9.17: TextFrame(text=123) and the like were accepted and failed later."""
    with pytest.raises(TypeError, match=message):
        build()


def test_frames_take_lists_for_their_tuple_fields() -> None:
    messages = LLMMessagesAppendFrame(messages=[{"role": "user", "content": "hi"}])
    assert messages.messages == ({"role": "user", "content": "hi"},)
    info = FunctionCallInfo(tool_call_id="1", function_name="f", arguments="{}")
    assert FunctionCallStart(calls=[info]).calls == (info,)


async def test_the_task_refuses_what_is_not_a_frame_or_a_direction() -> None:
    task = PipelineTask(FrameProcessor())
    with pytest.raises(TypeError, match=r"takes a Frame, got 'hello'; wrap text in TextFrame"):
        await task.queue_frame("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"FrameDirection\.DOWNSTREAM or .*got 'down'"):
        await task.queue_frame(TextFrame(text="x"), "down")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"takes an iterable of frames"):
        await task.queue_frames(TextFrame(text="x"))  # type: ignore[arg-type]


async def test_push_frame_refuses_a_direction_that_is_not_a_frame_direction() -> None:
    """A string direction used to send the frame upstream, silently."""
    seen: list[str] = []

    class Pusher(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                try:
                    await self.push_frame(frame, "down")  # type: ignore[arg-type]
                except TypeError as exc:
                    seen.append(str(exc))
                return
            await self.push_frame(frame, direction)

    result = await run_test([Pusher()], [TextFrame(text="x")])
    assert result.upstream == []
    assert seen == [
        "direction must be FrameDirection.DOWNSTREAM or FrameDirection.UPSTREAM, got 'down'"
    ]


def test_pipelines_and_tasks_name_what_they_expected() -> None:
    processor = FrameProcessor(name="p")
    with pytest.raises(
        TypeError, match=r"PipelineTask takes a processor or a Pipeline, got a list"
    ):
        PipelineTask([processor])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"FakeHandler is a handler: pass handler.into_processor"):
        PipelineTask(FakeHandler())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"FakeHandler is a handler: pass handler.into_processor"):
        Pipeline([FakeHandler()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"Pipeline takes a list of processors"):
        Pipeline(processor)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"params must be a PipelineParams"):
        PipelineTask(processor, params={"allow_interruptions": False})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"allow_interruptions must be"):
        PipelineParams(allow_interruptions="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"handler must be callable"):
        PipelineTask(FrameProcessor()).add_event_handler("on_error", "print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"cancel_timeout must be a number"):
        FrameProcessor(cancel_timeout="2")  # type: ignore[arg-type]


# =========================================================================== 20


class PipecatStyle(FrameProcessor):
    """Written as for pipecat, whose base process_frame does not forward: here it does."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


async def test_a_frame_pushed_twice_the_same_way_goes_out_once_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 9.20: every frame went out twice."""
    down = [TextFrame(text="a"), TextFrame(text="b")]
    up = [TextFrame(text="from the tail")]
    with caplog.at_level(logging.DEBUG, logger="rustvani_trio"):
        result = await run_test(
            [PipecatStyle(name="pc"), FrameProcessor()], down, upstream_frames=up
        )
    assert result.downstream[1:-1] == down
    assert result.upstream == up
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert (
        warnings[0]
        .getMessage()
        .startswith(
            "pc pushed the same TextFrame downstream twice in a row; the second push was dropped"
        )
    )
    assert "super().process_frame()" in warnings[0].getMessage()
    repeats = [r for r in caplog.records if "twice in a row" in r.getMessage()]
    assert len(repeats) == 3  # a, b, and the upstream one


async def test_a_system_frame_pushed_twice_goes_out_once() -> None:
    signal = UserStartedSpeakingFrame()
    result = await run_test([PipecatStyle(), FrameProcessor()], [signal])
    assert result.downstream[1:-1] == [signal]


async def test_pushing_the_same_frame_both_ways_or_after_another_frame_is_fine() -> None:
    class Both(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame) and direction is DOWN:
                await self.push_frame(frame, UP)
            await self.push_frame(frame, direction)

    frames = [TextFrame(text="a"), TextFrame(text="b")]
    result = await run_test([Both()], frames)
    assert result.downstream[1:-1] == frames
    assert result.upstream == frames


# =========================================================================== 22


class StallingLLM(FrameProcessor):
    """Answers a turn with "Hello " and "wor", then stalls (the rest never comes)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStart())
            await self.push_frame(LLMText(text="Hello "))
            await self.push_frame(LLMText(text="wor"))
            await trio.sleep_forever()
        await self.push_frame(frame, direction)


@pytest.mark.parametrize("how", ["interruption", "cancel", "outer cancel"])
async def test_a_cancelled_answer_is_kept_like_an_interrupted_one(
    how: str, autojump_clock: trio.testing.MockClock
) -> None:
    """Issue 9.22: task.cancel() dropped the partial answer from the context, while an
    interruption kept it (marked interrupted). Both keep it now, as pipecat does."""
    context = LLMContext([{"role": "system", "content": "s"}])
    user, assistant = create_context_aggregators(context, text_mode=True)
    task = PipelineTask(Pipeline([user, StallingLLM(), assistant]))
    with trio.move_on_after(30) as outer:
        async with live(task, end=False) as run:
            await run.send(TextFrame(text="hi"))
            await run.wait_down(LLMText, 2)
            if how == "interruption":
                await run.send(InterruptionFrame())
                await run.wait_down(InterruptionFrame)
                await task.queue_frame(EndFrame())
            elif how == "cancel":
                await task.cancel("hang up")
            else:
                outer.cancel()
    assert context.messages == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello wor"},
    ]
    assert context.interrupted_indices() == [2]


# =========================================================================== schedule points


async def test_a_push_is_a_schedule_point_only_when_armed_or_every_16th() -> None:
    """Pushes that need not wait are not schedule points (a burst costs a task switch per 16
    frames), except the first one after yield_on_next_push(): the first frame of a burst goes
    on downstream at once (first-token latency). Every push is still a cancel point."""
    from rustvani_trio.processor import YIELD_EVERY

    producer, consumer = FrameProcessor(), FrameProcessor()
    task = trio.lowlevel.current_task()

    async def switched(frame: Frame) -> bool:
        before = task._schedule_points
        await producer.push_frame(frame)
        return task._schedule_points != before

    async with live([producer, consumer]):
        producer.yield_on_next_push()
        assert await switched(TextFrame(text="first"))
        burst = [await switched(TextFrame(text=f"burst {i}")) for i in range(YIELD_EVERY - 1)]
        assert burst == [False] * (YIELD_EVERY - 1)
        assert await switched(TextFrame(text="the 16th"))


async def test_a_processor_woken_from_idle_makes_its_first_push_a_schedule_point() -> None:
    pushes: list[bool] = []

    class Relay(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            armed = self._unyielded == YIELD_EVERY_MINUS_ONE
            pushes.append(armed)
            await self.push_frame(frame, direction)

    from rustvani_trio.processor import YIELD_EVERY

    YIELD_EVERY_MINUS_ONE = YIELD_EVERY - 1
    async with live([Relay()]) as run:
        await run.send(TextFrame(text="a"), settle=True)  # idle before it: armed
        await run.send(TextFrame(text="b"), settle=True)  # idle again: armed
    assert pushes[-2:] == [True, True]


class RaisesHostileText(FrameProcessor):
    """Raises an exception whose text carries a forged log line and a terminal escape."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            raise ValueError("bad\nCRITICAL root: forged line \x1b[2J" + "x" * 100_000)
        await self.push_frame(frame, direction)


async def test_the_task_logs_an_error_escaped_and_shortened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A processor's error text (often a server's) cannot forge a log line, clear a terminal
    or flood the log when the task logs it."""
    task = PipelineTask(Pipeline([RaisesHostileText(name="hostile")]))
    with caplog.at_level(logging.WARNING, logger="rustvani_trio"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task.run)
            await task.queue_frames([TextFrame(text="go"), EndFrame()])
    logged = [r.getMessage() for r in caplog.records if "error from hostile" in r.getMessage()]
    assert len(logged) == 1
    assert "\n" not in logged[0] and "\x1b" not in logged[0]
    assert "\\nCRITICAL root: forged line \\x1b[2J" in logged[0]
    assert len(logged[0]) < 5_000


class PipecatTransform(FrameProcessor):
    """Written as for pipecat, whose base process_frame does not forward: super() first, then
    push the transformed frame."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            await self.push_frame(TextFrame(text=frame.text.upper()), direction)


class SometimesSuper(FrameProcessor):
    """Forwards empty texts through super(), transforms the others: legitimate here."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text:
            await self.push_frame(TextFrame(text=frame.text.upper()), direction)
        else:
            await super().process_frame(frame, direction)


async def test_a_pipecat_style_transform_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The base class forwards the frame (pipecat's does not), so a transform written for
    pipecat sends both the original and the transformed frame: say so, once."""
    frames = [TextFrame(text="a"), TextFrame(text="b")]
    with caplog.at_level(logging.DEBUG, logger="rustvani_trio"):
        result = await run_test([PipecatTransform(name="pc")], frames)
    assert [f.text for f in result.downstream_of(TextFrame)] == ["a", "A", "b", "B"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("pc called super().process_frame(), which forwards the")
    assert "pipecat" in warnings[0]


async def test_forwarding_through_super_for_some_frames_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = [TextFrame(text=""), TextFrame(text="b"), TextFrame(text=""), TextFrame(text="c")]
    with caplog.at_level(logging.DEBUG, logger="rustvani_trio"):
        result = await run_test([SometimesSuper(name="some")], frames)
    assert [f.text for f in result.downstream_of(TextFrame)] == ["", "B", "", "C"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
