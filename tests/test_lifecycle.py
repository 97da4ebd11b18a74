"""Regression tests for the review fixes of commit 437f211 (and ae51b70): turn ordering in the
aggregators, tool lifecycles, bounded ``on_stop`` / ``on_cancel``, a run cancelled from
outside, undelivered frames, a shared HTTP client, ``serve --help`` and invalid base URLs.

Each test names the fix it guards; it fails when that fix is reverted.

Clocks: most tests run under pytest-trio's ``autojump_clock``, so hanging hooks, timeouts and
backoffs pass in virtual time and elapsed times can be asserted exactly. The in-process
scripted server works under it on Linux (loopback bytes are readable as soon as they are sent,
see :func:`~rustvani_trio.testing.open_scripted_server`). Tests that interrupt a stream use a
scripted stall, so they need no clock at all.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from conftest import live, watch

from rustvani_trio.aggregators import LLMAssistantAggregator, LLMUserAggregator
from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
    FunctionCallInfo,
    FunctionCallStart,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.services.llm.openai import (
    OpenAILLMConfig,
    OpenAILLMHandler,
    OpenAILLMProcessor,
    RetryPolicy,
)
from rustvani_trio.task import PipelineParams, PipelineTask
from rustvani_trio.testing import (
    RunResult,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    numbered_tokens,
    open_scripted_server,
    run_test,
)
from rustvani_trio.tools.base import BuiltinTool

SYSTEM = {"role": "system", "content": "You are terse."}
LLM = "llm"
NO_RETRY = RetryPolicy(max_attempts=1)
# Nothing listens there, and no test that uses it makes a request.
NOWHERE = "http://127.0.0.1:9/v1"


# --------------------------------------------------------------------------- helpers


def make_handler(base_url: str, **config: Any) -> OpenAILLMHandler:
    values: dict[str, Any] = {
        "api_key": "sk-test",
        "model": "gpt-test",  # not in the context-window table: no trimming
        "base_url": base_url,
        "retry": NO_RETRY,
    }
    values.update(config)
    if "http_client" in values:
        client = values.pop("http_client")
        return OpenAILLMHandler(OpenAILLMConfig(**values), http_client=client)
    return OpenAILLMHandler(OpenAILLMConfig(**values))


def user_context(text: str = "Weather in Paris?") -> LLMContext:
    return LLMContext([SYSTEM, {"role": "user", "content": text}])


def final(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text=text, user_id="u1", finalized=True)


def errors_of(frames: Sequence[Frame], processor: str | None = None) -> list[ErrorFrame]:
    return [
        f
        for f in frames
        if isinstance(f, ErrorFrame) and (processor is None or f.processor == processor)
    ]


def joined(frames: Sequence[Frame]) -> str:
    return "".join(f.text for f in frames if type(f) is LLMText)


async def idle() -> None:
    await trio.testing.wait_all_tasks_blocked()


class ContextSnapshots(FrameProcessor):
    """Records the context's messages as each LLMContextFrame passes (the context is shared
    and keeps changing)."""

    def __init__(self) -> None:
        super().__init__(name="snapshots")
        self.snapshots: list[list[dict[str, Any]]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self.snapshots.append(frame.context.messages)
        await self.push_frame(frame, direction)


class Recorder(FrameProcessor):
    """Forwards everything; records the lifecycle hooks that ran."""

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name=name, **kw)
        self.hooks: list[str] = []

    async def on_start(self, frame: StartFrame) -> None:
        self.hooks.append("start")

    async def on_stop(self, frame: EndFrame) -> None:
        self.hooks.append("stop")

    async def on_cancel(self, frame: CancelFrame) -> None:
        self.hooks.append("cancel")


@attrs.define(eq=False)
class RecordingTool(BuiltinTool):
    """A built-in tool offering ``<name>_run``; records its lifecycle with virtual times.

    ``stop`` / ``cancel``: "ok", "hang" (sleep forever) or "raise".
    """

    name: str
    log: list[tuple[str, float]] = attrs.Factory(list)
    is_cacheable: bool = True
    start_seconds: float = 0.0
    stop: str = "ok"
    cancel: str = "ok"

    def events(self) -> list[str]:
        return [what for what, _ in self.log]

    def at(self, what: str) -> float:
        return next(t for w, t in self.log if w == what)

    def _add(self, what: str) -> None:
        self.log.append((what, trio.current_time()))

    def tool_schemas(self) -> Sequence[FunctionSchema]:
        return [FunctionSchema(name=f"{self.name}_run")]

    def register_all(self, registry: FunctionRegistry) -> None:
        registry.register(f"{self.name}_run", self._run)

    async def _run(self, _args: str) -> str:
        self._add("call")
        return f"{self.name} done"

    async def on_start(self) -> None:
        self._add("start")
        await trio.sleep(self.start_seconds)
        self._add("started")

    async def _act(self, what: str, mode: str) -> None:
        self._add(what)
        if mode == "hang":
            await trio.sleep_forever()
        if mode == "raise":
            raise OSError(f"{self.name}: {what} failed")

    async def on_stop(self) -> None:
        await self._act("stop", self.stop)

    async def on_cancel(self) -> None:
        await self._act("cancel", self.cancel)


def client_on_start(task: PipelineTask, llm: OpenAILLMProcessor) -> list[httpx.AsyncClient]:
    """The processor's HTTP client, captured once the pipeline has started."""
    seen: list[httpx.AsyncClient] = []

    def started(_task: PipelineTask) -> None:
        assert llm._client is not None
        seen.append(llm._client)

    task.add_event_handler("on_pipeline_started", started)
    return seen


# =========================================================================== 3. voice ordering


class GatedUser(LLMUserAggregator):
    """A user aggregator that is busy: each transcript waits for ``gate``."""

    def __init__(self, context: LLMContext, gate: trio.Event) -> None:
        super().__init__(context, name="user")
        self.gate = gate

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptionFrame):
            await self.gate.wait()
        await super().process_frame(frame, direction)


async def test_transcripts_queued_behind_a_busy_user_aggregator_make_one_turn() -> None:
    """Fix: the stop signal (system lane) no longer overtakes the transcripts queued before
    it; it used to start the turn with the first transcript only."""
    context = LLMContext([SYSTEM])
    gate = trio.Event()
    user, snaps = GatedUser(context, gate), ContextSnapshots()
    async with live([user, snaps]) as lv:
        await lv.send(UserStartedSpeakingFrame())
        await idle()
        await lv.send(final("one"), final("two"), final("three"))
        await idle()
        # "one" is being handled, "two" and "three" wait in the lane.
        assert user.statistics().process == 2
        await lv.send(UserStoppedSpeakingFrame())
        await idle()
        # The speaking signal itself is not held back...
        assert len(lv.downstream_of(UserStoppedSpeakingFrame)) == 1
        assert lv.downstream_of(LLMContextFrame) == []
        gate.set()  # ...but the turn waits for the transcripts queued before it
        await lv.wait_down(LLMContextFrame)
        await idle()
    assert snaps.snapshots == [[SYSTEM, {"role": "user", "content": "one two three"}]]
    assert len(lv.downstream_of(LLMContextFrame)) == 1
    assert context.messages == [SYSTEM, {"role": "user", "content": "one two three"}]
    assert errors_of(lv.upstream) == []


async def test_pending_transcripts_at_end_frame_are_kept_as_a_user_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fix: words the user said in a turn that never ended stay in the context."""
    caplog.set_level(logging.INFO, logger="rustvani_trio")
    context = LLMContext([SYSTEM])
    gate = trio.Event()
    gate.set()
    async with live([GatedUser(context, gate)]) as lv:
        await lv.send(UserStartedSpeakingFrame(), final("left"), final("over"))
        await idle()
    assert context.messages == [SYSTEM, {"role": "user", "content": "left over"}]
    assert lv.downstream_of(LLMContextFrame) == []  # kept, but no turn is run at the end
    assert errors_of(lv.upstream) == []
    assert any("unfinished user turn" in r.getMessage() for r in caplog.records)


async def test_a_stop_signal_after_the_end_frame_is_not_an_error() -> None:
    context = LLMContext([SYSTEM])
    gate = trio.Event()
    async with live([GatedUser(context, gate)], end=False) as lv:
        await lv.send(UserStartedSpeakingFrame())
        await idle()
        await lv.send(final("bye"), EndFrame())  # "bye" is being handled, the end waits
        await idle()
        await lv.send(UserStoppedSpeakingFrame())  # the transport's last signal
        await idle()
        gate.set()
    assert context.messages == [SYSTEM, {"role": "user", "content": "bye"}]
    assert errors_of(lv.upstream) == []


# =========================================================================== 4. pre-call text


async def test_pre_call_text_is_committed_on_an_interruption_but_only_before_the_round_ends() -> (
    None
):
    """Fix: text streamed before FunctionCallStart used to be dropped when the round was then
    interrupted (the handler rolls the round back, so nobody kept it). Once FunctionCallEnd
    was seen, the handler committed it with the round: the aggregator must not add it again.
    """
    context = LLMContext([SYSTEM, {"role": "user", "content": "weather?"}])
    call = FunctionCallInfo(tool_call_id="c1", function_name="get_weather", arguments="{}")
    assistant = LLMAssistantAggregator(context)
    async with live([assistant]) as lv:
        # Turn 1: interrupted inside the tool round (before FunctionCallEnd).
        for frame in (
            LLMFullResponseStart(),
            LLMText(text="Let me "),
            LLMText(text="look."),
            FunctionCallStart(calls=(call,)),
        ):
            await lv.send(frame)
            await idle()
        await lv.send(InterruptionFrame())
        await idle()
        assert context.messages[2:] == [{"role": "assistant", "content": "Let me look."}]
        assert context.is_interrupted(2)
        # Turn 2: the round completed (a handler would have committed "Checking." with its
        # tool calls; there is none here), then the answer was interrupted.
        for frame in (
            LLMFullResponseStart(),
            LLMText(text="Checking."),
            FunctionCallStart(calls=(call,)),
            FunctionCallEnd(),
            LLMText(text="It is "),
        ):
            await lv.send(frame)
            await idle()
        await lv.send(InterruptionFrame())
        await idle()
    assert [m["content"] for m in context.messages[2:]] == ["Let me look.", "It is "]
    assert context.interrupted_indices() == [2, 3]
    assert errors_of(lv.upstream) == []


async def test_pre_call_text_is_in_the_context_once_when_the_answer_after_the_round_is_cut() -> (
    None
):
    """End to end: the handler commits "Let me look." with the tool round; an interruption
    during the re-invocation commits only the answer's part. (This guards the FunctionCallEnd
    half of the fix: the code before the fix passes it, a fix that always committed the
    pre-call text would not.)"""
    async with open_scripted_server() as server:
        server.add_replies(
            [
                ToolCallReply(
                    [ScriptedToolCall("get_weather", '{"city": "Paris"}', "c1")],
                    text_tokens=["Let me ", "look."],
                ),
                TextReply(numbered_tokens(5), stall_after=2),  # open until we interrupt
            ]
        )
        handler = make_handler(server.base_url)
        handler.registry.register("get_weather", lambda _args: "sunny")
        context = user_context()
        assistant = LLMAssistantAggregator(context)
        async with live([handler.into_processor(name=LLM), assistant]) as lv:
            await lv.send(LLMContextFrame(context=context))
            await lv.wait_until(lambda: joined(lv.downstream).endswith("tok1 "))
            await lv.send(InterruptionFrame())
            await lv.wait_down(InterruptionFrame)
            await idle()
    messages = context.messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["content"] == "Let me look." and messages[2]["tool_calls"]
    assert messages[3]["content"] == "sunny"
    assert messages[4] == {"role": "assistant", "content": "tok0 tok1 "}
    assert context.interrupted_indices() == [4]
    assert sum("Let me look." in str(m.get("content")) for m in messages) == 1
    assert errors_of(lv.upstream) == []


# =========================================================================== 5. tools added late


async def test_a_cacheable_tool_added_after_start_is_started_before_its_first_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fix: a cacheable tool added after StartFrame was never started nor stopped."""
    late = RecordingTool("late", start_seconds=1.0)
    async with open_scripted_server() as server:
        server.add_replies(
            [
                # two parallel calls: the tool is still started once
                ToolCallReply(
                    [
                        ScriptedToolCall("late_run", "{}", "c1"),
                        ScriptedToolCall("late_run", "{}", "c2"),
                    ]
                ),
                TextReply(["done"]),
            ]
        )
        handler = make_handler(server.base_url)
        async with live([handler.into_processor(name=LLM)]) as lv:
            handler.add_tool(late)  # after the pipeline started
            await idle()
            assert late.events() == []  # nothing happens until the model calls it
            await lv.send(LLMContextFrame(context=user_context()))
            await lv.wait_down(LLMFullResponseEnd)
            assert late.events() == ["start", "started", "call", "call"]
    assert late.events() == ["start", "started", "call", "call", "stop"]
    assert late.at("started") - late.at("start") == pytest.approx(1.0)
    assert joined(lv.downstream) == "done"
    assert errors_of(lv.upstream) == []
    assert len(server.requests) == 2


# =========================================================================== 6. tool names


def test_builtin_tool_subclasses_without_a_name_get_their_class_name() -> None:
    class Orders(BuiltinTool):
        pass

    class Refunds(Orders):
        pass

    class Named(BuiltinTool):
        name = "custom"

    assert Orders.name == Orders().name == "Orders"
    assert Refunds().name == "Refunds"
    assert Named().name == "custom"
    # Distinct default names: both can be added to one handler.
    handler = make_handler(NOWHERE)
    handler.add_tool(Orders()).add_tool(Refunds())
    assert [t.name for t in handler.tools] == ["Orders", "Refunds"]


def test_an_attrs_tool_with_a_name_field_still_works() -> None:
    """Fix (ae51b70): the class-name default no longer becomes the default of an attrs
    ``name`` field (a mandatory field after it was then an error at class creation)."""

    @attrs.define
    class PgTool(BuiltinTool):
        name: str
        dsn: str

    @attrs.define
    class Defaulted(BuiltinTool):
        dsn: str
        name: str = "pg"

    tool = PgTool("orders_db", "postgres://x")
    assert (tool.name, tool.dsn) == ("orders_db", "postgres://x")
    with pytest.raises(TypeError):
        PgTool(dsn="postgres://x")  # type: ignore[call-arg]  # name stays mandatory
    assert Defaulted("postgres://y").name == "pg"
    assert Defaulted("postgres://y", name="other").name == "other"


# =========================================================================== 7. the decorator


def test_registry_function_decorator_without_parentheses() -> None:
    registry = FunctionRegistry()

    @registry.function
    async def get_time(args: str) -> str:
        return "noon"

    @registry.function("weather", timeout=5.0)
    async def whatever(args: str) -> str:
        return "sunny"

    @registry.function()
    def plain(args: str) -> str:
        return "plain"

    assert registry.names() == ["get_time", "weather", "plain"]
    # The decorator returns the function itself, still callable by the application.
    assert get_time.__name__ == "get_time" and callable(get_time)
    entry = registry.get("get_time")
    assert entry is not None and entry.handler is get_time and entry.timeout is None
    weather = registry.get("weather")
    assert weather is not None and weather.handler is whatever and weather.timeout == 5.0
    assert plain("x") == "plain"


# =========================================================================== 8. on_cancel bounds


async def test_a_hanging_tool_on_cancel_does_not_keep_the_client_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fix: on_cancel was abandoned at cancel_timeout before it reached the client's close."""
    hang, ok = RecordingTool("hang", cancel="hang"), RecordingTool("ok")
    handler = make_handler(NOWHERE)
    handler.add_tool(hang).add_tool(ok)
    llm = handler.into_processor(name=LLM)
    params = PipelineParams(cancel_timeout=5.0)
    task = PipelineTask(Pipeline([llm]), params=params)
    lv = watch(task)
    clients = client_on_start(task, llm)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            await lv.wait_down(StartFrame)
            t0 = trio.current_time()
            await task.cancel("hang up")
        elapsed = trio.current_time() - t0
    assert elapsed < params.cancel_timeout
    assert elapsed <= llm.cancel_timeout
    (client,) = clients
    assert client.is_closed
    assert llm._client is None
    assert hang.events() == ["start", "started", "cancel"]
    assert ok.events() == ["start", "started", "cancel"]
    assert task.finish_reason == "cancel: hang up"


async def test_a_tool_on_cancel_that_raises_is_reported_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fix: the failure was only logged; now it is an ErrorFrame naming the tool."""
    bad, ok = RecordingTool("bad", cancel="raise"), RecordingTool("ok")
    handler = make_handler(NOWHERE)
    handler.add_tool(bad).add_tool(ok)
    llm = handler.into_processor(name=LLM)
    task = PipelineTask(Pipeline([llm]))
    reported: list[ErrorFrame] = []
    task.add_event_handler("on_error", lambda _t, frame: reported.append(frame))
    lv = watch(task)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            await lv.wait_down(StartFrame)
            await task.cancel("bye")
    (error,) = reported
    assert error.processor == LLM
    assert "'bad'" in error.error and "on_cancel failed" in error.error
    assert isinstance(error.exception, OSError)
    assert errors_of(lv.upstream) == [error]
    assert ok.events()[-1] == "cancel"
    assert llm._client is None


# =========================================================================== 9. stop_timeout


class HangingStop(Recorder):
    async def on_stop(self, frame: EndFrame) -> None:
        await super().on_stop(frame)
        await trio.sleep_forever()


async def test_a_hanging_on_stop_is_abandoned_at_stop_timeout_and_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stuck, tail = HangingStop("stuck", stop_timeout=1), Recorder("tail")
    t0 = trio.current_time()
    result = await run_test([stuck, tail], [TextFrame(text="a")], time_limit=20)
    assert trio.current_time() - t0 == pytest.approx(1.0)
    (error,) = errors_of(result.upstream)
    assert error.processor == "stuck"
    assert "stop_timeout=1" in error.error and "on_stop" in error.error
    # The EndFrame went on: the next processor stopped and the run ended normally.
    assert tail.hooks == ["start", "stop"]
    assert isinstance(result.downstream[-1], EndFrame)
    assert result.finish_reason == "end"


@pytest.mark.parametrize(("stop_timeout", "error"), [(None, False), (30.0, True)])
async def test_stop_timeout_none_means_no_limit(
    autojump_clock: trio.testing.MockClock, stop_timeout: float | None, error: bool
) -> None:
    class SlowStop(FrameProcessor):
        async def on_stop(self, frame: EndFrame) -> None:
            await trio.sleep(40)

    t0 = trio.current_time()
    result = await run_test(SlowStop(stop_timeout=stop_timeout), time_limit=100)
    assert trio.current_time() - t0 == pytest.approx(30.0 if error else 40.0)
    assert bool(errors_of(result.upstream)) is error


def test_stop_timeout_must_be_positive_or_none() -> None:
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="stop_timeout"):
            FrameProcessor(stop_timeout=bad)
    assert FrameProcessor().stop_timeout == 30.0


async def test_a_hanging_tool_on_stop_is_bounded_by_tool_stop_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hang, ok = RecordingTool("hang", stop="hang"), RecordingTool("ok")
    handler = make_handler(NOWHERE, tool_stop_timeout=2.0)
    handler.add_tool(hang).add_tool(ok)
    llm = handler.into_processor(name=LLM)
    t0 = trio.current_time()
    result = await run_test([llm], time_limit=20)
    assert trio.current_time() - t0 == pytest.approx(2.0)
    (error,) = errors_of(result.upstream)
    assert error.processor == LLM and "'hang'" in error.error and "2s" in error.error
    # Tools stop concurrently: the other one was not held up, and the client was closed.
    assert ok.at("stop") == pytest.approx(t0)
    assert llm._client is None
    assert result.finish_reason == "end"


# ========================================================================= 10. cancel from outside


class Stuck(Recorder):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            await trio.sleep_forever()
        await super().process_frame(frame, direction)


async def test_cancelling_run_from_outside_runs_the_cancel_hooks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fix: a run cancelled by its caller (``move_on_after`` around ``run()``) ran no
    ``on_cancel`` at all, so the LLM's HTTP client and the tools were never released."""
    first, stuck = Recorder("first"), Stuck("stuck")
    tool = RecordingTool("db")
    handler = make_handler(NOWHERE)
    handler.add_tool(tool)
    llm = handler.into_processor(name=LLM)
    task = PipelineTask(Pipeline([first, stuck, llm]))
    clients = client_on_start(task, llm)
    await task.queue_frame(TextFrame(text="stuck here"))
    t0 = trio.current_time()
    with trio.move_on_after(1) as scope:
        await task.run()
    assert scope.cancelled_caught  # the Cancelled propagated out of run()
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert task.has_finished
    assert first.hooks == ["start", "cancel"]
    assert stuck.hooks == ["start", "cancel"]
    assert tool.events() == ["start", "started", "cancel"]
    (client,) = clients
    assert client.is_closed and llm._client is None


async def test_hooks_run_after_an_outside_cancel_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class HangingCancel(Recorder):
        async def on_cancel(self, frame: CancelFrame) -> None:
            await super().on_cancel(frame)
            await trio.sleep_forever()

    hanging, other = HangingCancel("hanging", cancel_timeout=0.5), Recorder("other")
    task = PipelineTask(Pipeline([hanging, other]), params=PipelineParams(cancel_timeout=3))
    t0 = trio.current_time()
    with trio.move_on_after(1) as scope:
        await task.run()
    assert scope.cancelled_caught
    assert trio.current_time() - t0 == pytest.approx(1.5)  # its own cancel_timeout
    assert hanging.hooks == other.hooks == ["start", "cancel"]


async def test_a_run_cancelled_from_outside_still_reports_that_it_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    task = PipelineTask(Pipeline([Stuck("stuck")]))
    finished: list[str | None] = []
    task.add_event_handler("on_pipeline_finished", lambda _t, reason: finished.append(reason))
    await task.queue_frame(TextFrame(text="stuck here"))
    with trio.move_on_after(1):
        await task.run()
    assert task.has_finished
    assert task.finish_reason is not None and task.finish_reason.startswith("cancel")
    assert finished == [task.finish_reason]


# =========================================================================== 11. undelivered


class SlowStart(Recorder):
    async def on_start(self, frame: StartFrame) -> None:
        await super().on_start(frame)
        await trio.sleep(3600)


def undelivered_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "never delivered" in r.getMessage()
    ]


@pytest.mark.parametrize("count", [2, 12])
async def test_frames_queued_but_never_delivered_are_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    """Fix: frames still waiting for the pipeline to start when the run ended vanished
    silently. Here the run is cancelled from outside while a processor is still starting."""
    task = PipelineTask(Pipeline([SlowStart("slow")]), name="T")
    await task.queue_frames([TextFrame(text=str(i)) for i in range(count)])
    await task.queue_frame(EndFrame())
    with trio.move_on_after(1):
        await task.run()
    (message,) = undelivered_warnings(caplog)
    assert message.startswith(f"T: the run ended with {count + 1} queued frames never delivered")
    if count + 1 <= 10:
        assert message.endswith(": " + ", ".join(["TextFrame"] * count + ["EndFrame"]))
    else:
        assert message.endswith(", ".join(["TextFrame"] * 10) + " ...")


async def test_frames_waiting_when_a_cancel_ends_a_run_that_never_started_are_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # task.cancel() while a processor's on_start hangs: the CancelFrame cuts it short, the
    # StartFrame goes no further (the frames queued to the task never go in), the run ends,
    # and the queued frames are reported.
    task = PipelineTask(
        Pipeline([SlowStart("slow")]), params=PipelineParams(cancel_timeout=2), name="T"
    )
    await task.queue_frames([TextFrame(text="a"), LLMFullResponseStart()])
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        await trio.sleep(1)
        await task.cancel("give up")
    assert task.finish_reason == "cancel: give up"
    assert undelivered_warnings(caplog) == [
        "T: the run ended with 2 queued frames never delivered: TextFrame, LLMFullResponseStart"
    ]


async def test_a_run_that_ends_normally_reports_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await run_test([Recorder("r")], [TextFrame(text="a")])
    assert undelivered_warnings(caplog) == []


async def test_frames_queued_after_cancel_are_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class SlowCancel(Recorder):
        async def on_cancel(self, frame: CancelFrame) -> None:
            await trio.sleep(1)

    task = PipelineTask(Pipeline([SlowCancel("slow")]), name="T")
    lv = watch(task)
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        await lv.wait_down(StartFrame)
        await task.cancel("bye")
        await task.queue_frames([TextFrame(text="late 1"), TextFrame(text="late 2")])
    assert task.finish_reason == "cancel: bye"
    assert undelivered_warnings(caplog) == [
        "T: the run ended with 2 queued frames never delivered: TextFrame, TextFrame"
    ]


# =========================================================================== 12. shared client


async def test_processors_sharing_one_http_client_work_and_never_close_it() -> None:
    async with open_scripted_server(default_reply=TextReply(["shared", " ok"])) as server:
        shared = httpx.AsyncClient()
        try:
            first = make_handler(server.base_url, http_client=shared).into_processor(name="a")
            second = make_handler(server.base_url, http_client=shared).into_processor(name="b")
            # One after the other: the second reuses the first's pooled connection.
            for llm in (first, second):
                result = await run_test([llm], [LLMContextFrame(context=user_context())])
                assert joined(result.downstream) == "shared ok"
                assert errors_of(result.upstream) == []
                assert not shared.is_closed  # EndFrame did not close it
            assert server.requests[0].connection == server.requests[1].connection
            # At the same time, through the same pool.
            results: list[RunResult] = []

            async def turn(llm: FrameProcessor) -> None:
                results.append(await run_test([llm], [LLMContextFrame(context=user_context())]))

            async with trio.open_nursery() as nursery:
                for name in ("c", "d"):
                    handler = make_handler(server.base_url, http_client=shared)
                    nursery.start_soon(turn, handler.into_processor(name=name))
            assert [joined(r.downstream) for r in results] == ["shared ok"] * 2
            # A cancelled run does not close it either.
            cancelled = make_handler(server.base_url, http_client=shared).into_processor()
            await run_test([cancelled], send_end_frame=False)
            assert not shared.is_closed
            # Still usable by the application.
            response = await shared.get(server.base_url + "/models")
            assert response.status_code == 200
            assert len(server.requests) == 5
        finally:
            await shared.aclose()
    assert shared.is_closed


async def test_a_shared_clients_own_read_timeout_does_not_apply_to_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each request carries the processor's timeouts (reads unlimited; silence is
    chunk_timeout's job), so a shared client built with a short read timeout neither cuts a
    slow stream short nor hides a stall behind a ReadTimeout.

    Under the jumping clock an httpx read timeout of 0.1 s would fire at the first 3 s gap.
    """
    async with open_scripted_server() as server:
        server.add_reply(TextReply(numbered_tokens(5), token_delay=3.0, stall_after=2))
        async with httpx.AsyncClient(timeout=httpx.Timeout(0.1)) as shared:
            handler = make_handler(
                server.base_url, http_client=shared, chunk_timeout=10.0, first_token_timeout=20.0
            )
            t0 = trio.current_time()
            result = await run_test(
                [handler.into_processor(name=LLM)],
                [LLMContextFrame(context=user_context())],
                time_limit=60,
            )
            elapsed = trio.current_time() - t0
            assert not shared.is_closed
    assert joined(result.downstream) == "tok0 tok1 "
    (error,) = errors_of(result.upstream, LLM)
    assert "stall" in error.error and "chunk_timeout" in error.error and "10.0" in error.error
    assert "ReadTimeout" not in error.error
    assert elapsed == pytest.approx(13.0)  # tok1 after 3 s, then 10 s of silence


# =========================================================================== 13. serve --help


def test_serve_help_lists_the_server_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rustvani_trio", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--tokens", "--port", "--host"):
        assert option in done.stdout, done.stdout


# =========================================================================== 14. invalid base_url


@pytest.mark.parametrize(
    "base_url",
    ["127.0.0.1:9/v1", "localhost:8080/v1", "ftp://example.com/v1", "http://[::1/v1"],
)
async def test_an_invalid_base_url_is_named_and_not_retried(
    autojump_clock: trio.testing.MockClock, base_url: str
) -> None:
    handler = make_handler(base_url, retry=RetryPolicy(max_attempts=3, initial_delay=1.0))
    t0 = trio.current_time()
    result = await run_test(
        [handler.into_processor(name=LLM)], [LLMContextFrame(context=user_context())]
    )
    assert trio.current_time() - t0 == 0  # no backoff: a single attempt
    (error,) = errors_of(result.upstream, LLM)
    assert f"invalid base_url {base_url!r}" in error.error
    assert "https://api.openai.com/v1" in error.error  # says what it should look like
    assert "after" not in error.error and "attempts" not in error.error
    bounds = (LLMFullResponseStart, LLMFullResponseEnd)
    assert [type(f) for f in result.downstream if isinstance(f, bounds)] == list(bounds)


# =========================================================================== 14. cancel order


async def test_on_cancel_runs_after_the_cancelled_work_has_unwound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """on_cancel releases what the in-flight work uses, so it must run after that work's
    cleanup; the base class waits (bounded) for the process task to return first."""
    log: list[str] = []

    class Busy(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(0.2)  # cleanup that takes a while
                    log.append("work unwound")
            else:
                await self.push_frame(frame, direction)

        async def on_cancel(self, frame: CancelFrame) -> None:
            log.append("on_cancel")

    task = PipelineTask(Pipeline([Busy(cancel_timeout=2.0)]))
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        await task.queue_frame(TextFrame(text="x"))
        await trio.sleep(1)
        await task.cancel()
    assert log == ["work unwound", "on_cancel"]


async def test_work_that_never_unwinds_still_leaves_on_cancel_half_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[float] = []

    class Stuck(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                with trio.CancelScope(shield=True):
                    await trio.sleep(100)  # ignores the cancel
            await self.push_frame(frame, direction)

        async def on_cancel(self, frame: CancelFrame) -> None:
            log.append(trio.current_time())

    stuck = Stuck(cancel_timeout=2.0)
    task = PipelineTask(Pipeline([stuck]), params=PipelineParams(cancel_timeout=3.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        await task.queue_frame(TextFrame(text="x"))
        await trio.sleep(1)
        cancelled_at = trio.current_time()
        await task.cancel()
    assert len(log) == 1 and log[0] - cancelled_at == pytest.approx(1.0)
