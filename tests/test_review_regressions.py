"""Regression tests for bugs found in review of the lifecycle and tool-round fixes."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from conftest import live

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallStart,
    InterruptionFrame,
    LLMContextFrame,
    TextFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from rustvani_trio.task import PipelineParams, PipelineTask
from rustvani_trio.testing import (
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
)
from rustvani_trio.tools.base import BuiltinTool


class HoldFunctionCallStart(FrameProcessor):
    """Holds the round's FunctionCallStart until released, with a lane of one frame."""

    def __init__(self) -> None:
        super().__init__(name="holder", max_buffer=1)
        self.release = trio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, FunctionCallStart):
            await self.release.wait()
        await self.push_frame(frame, direction)


async def test_interruption_after_a_committed_round_does_not_duplicate_the_pre_call_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_scripted_server(default_reply=TextReply(["done"])) as server:
        server.add_reply(
            ToolCallReply([ScriptedToolCall("f", "{}")], text_tokens=["Let me ", "check. "])
        )
        handler = OpenAILLMHandler(
            OpenAILLMConfig(base_url=server.base_url, api_key="k", model="gpt-4.1")
        )
        handler.registry.register("f", lambda _args: "ok")
        context = LLMContext([{"role": "user", "content": "hi"}])
        _user, assistant = create_context_aggregators(context)
        assistant.max_buffer = 1
        holder = HoldFunctionCallStart()
        task = PipelineTask(Pipeline([handler.into_processor(name="llm"), assistant, holder]))
        async with live(task, end=False, started=False):
            await task.queue_frame(LLMContextFrame(context=context))
            with trio.fail_after(5):
                # The round is committed and the LLM is blocked pushing FunctionCallEnd (polled:
                # the state spans several processors and the server, no single event marks it).
                while not (  # noqa: ASYNC110
                    any(m["role"] == "tool" for m in context.messages)
                    and assistant.statistics().blocked_senders
                ):
                    await trio.sleep(0.01)
            await task.queue_frame(InterruptionFrame())
            await trio.sleep(0.1)
            holder.release.set()
            await task.queue_frame(EndFrame())
    roles = [(m["role"], m.get("content")) for m in context.messages]
    assert roles == [("user", "hi"), ("assistant", "Let me check. "), ("tool", "ok")]
    assert context.interrupted_indices() == []
    context.validate()


async def test_a_failing_finished_handler_does_not_mask_an_outer_cancel(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    task = PipelineTask(Pipeline([FrameProcessor()]), params=PipelineParams(cancel_timeout=0.5))
    reasons: list[str | None] = []

    def finished(_task: PipelineTask, reason: str | None) -> None:
        reasons.append(reason)
        raise RuntimeError("handler boom")

    task.add_event_handler("on_pipeline_finished", finished)
    with trio.move_on_after(0.2) as outer:
        await task.run()
    assert outer.cancelled_caught  # the cancellation went through, not the handler's error
    assert reasons == ["cancel: run cancelled"]
    assert "on_pipeline_finished handler failed" in caplog.text


async def test_a_tool_on_cancel_failure_is_logged_after_an_outer_cancel(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenCancel(BuiltinTool):
        async def on_cancel(self) -> None:
            raise RuntimeError("resource leaked")

    handler = OpenAILLMHandler(OpenAILLMConfig(base_url="http://127.0.0.1:9/v1", api_key="k"))
    handler.add_tool(BrokenCancel())
    task = PipelineTask(Pipeline([handler.into_processor(name="llm")]))
    with caplog.at_level(logging.WARNING, logger="rustvani_trio"), trio.move_on_after(0.2):
        await task.run()
    assert "tool 'BrokenCancel' on_cancel failed: resource leaked" in caplog.text


async def test_the_frame_held_by_the_feeder_is_counted_as_undelivered(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Stuck(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TextFrame):
                await trio.sleep_forever()
            await self.push_frame(frame, direction)

    task = PipelineTask(Pipeline([Stuck(max_buffer=1)]), params=PipelineParams(cancel_timeout=0.3))
    with caplog.at_level(logging.WARNING, logger="rustvani_trio"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task.run)
            await task.queue_frames([TextFrame(text=str(i)) for i in range(100)])
            await trio.sleep(0.1)
            source_waiting = task.processors()[0].statistics().downstream_waiting
            nursery.cancel_scope.cancel()
    # Frames inside the pipeline are not counted; everything the task still held is, including
    # the one its feeder was blocked sending (the bug: that one was lost without a word).
    # Inside: one taken by Stuck, one in Stuck's lane, one held by the source's process task
    # (blocked on Stuck's full lane), and those waiting in the source's lane.
    inside = 1 + 1 + 1 + source_waiting
    expected = 100 - inside
    assert f"the run ended with {expected} queued frames never delivered" in caplog.text


async def test_stale_output_seen_before_the_interruption_arrives_is_not_collected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The user side commits the partial answer and adds the new message at once; output the
    assistant side still processes before the (slow) interruption reaches it is stale."""
    from rustvani_trio.aggregators import LLMAssistantAggregator
    from rustvani_trio.frames import LLMFullResponseStart, LLMText

    class SlowInterruption(FrameProcessor):
        async def on_interruption(self, frame: InterruptionFrame) -> None:
            await trio.sleep(1)

    gate = trio.Event()

    class GatedAssistant(LLMAssistantAggregator):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, LLMFullResponseStart):
                await gate.wait()
            await super().process_frame(frame, direction)

    context = LLMContext([{"role": "system", "content": "s"}])
    user, _ = create_context_aggregators(context, text_mode=True)
    assistant = GatedAssistant(context, state=user.state)
    user.state.assistant = assistant
    task = PipelineTask(Pipeline([user, SlowInterruption(), assistant]))
    async with live(task, end=False, started=False):
        await task.queue_frames(
            [TextFrame(text="first"), LLMFullResponseStart(), LLMText(text="stale")]
        )
        await trio.testing.wait_all_tasks_blocked()  # the assistant waits before the Start
        await task.queue_frame(TextFrame(text="second"))  # barge-in: interruption + new turn
        await trio.sleep(0.5)  # the interruption is still in SlowInterruption
        gate.set()  # the assistant now sees the stale Start and text
        await trio.sleep(1)
        await task.queue_frame(EndFrame())
    assert [(m["role"], m["content"]) for m in context.messages] == [
        ("system", "s"),
        ("user", "first"),
        ("user", "second"),
    ]
