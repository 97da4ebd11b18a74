"""Shared helpers of the Dhara tests (no tests here): a live pipeline around a DharaManager,
talking real HTTP to the scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.dhara import DharaManager, DharaNodeChanged, NodeConfig
from rustvani_trio.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMFullResponseEnd,
    TranscriptionFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler, RetryPolicy
from rustvani_trio.task import PipelineTask
from rustvani_trio.testing import (
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
)
from rustvani_trio.tools.base import BuiltinTool


async def poll(predicate: Callable[[], bool], step: float = 0.01) -> None:
    """Wait (in virtual time) until ``predicate()`` holds."""
    while not predicate():  # noqa: ASYNC110 - the context has no event to wait on
        await trio.sleep(step)


def config(server: ScriptedServer, **overrides: Any) -> OpenAILLMConfig:
    values: dict[str, Any] = {
        "api_key": "sk-test",
        "model": "gpt-test",
        "base_url": server.base_url,
        "retry": RetryPolicy(max_attempts=1),
        "max_tool_rounds": 8,
    }
    values.update(overrides)
    return OpenAILLMConfig(**values)


@attrs.define(eq=False)
class Conversation:
    """A running pipeline ``user -> dhara -> llm -> assistant`` and what left its ends."""

    task: PipelineTask
    dhara: DharaManager
    context: LLMContext
    down: list[Frame] = attrs.Factory(list)
    up: list[Frame] = attrs.Factory(list)
    _lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)

    def record(self, frames: list[Frame], frame: Frame) -> None:
        frames.append(frame)
        self._lot.unpark_all()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._lot.park()

    def count(self, kind: type[Frame]) -> int:
        return sum(isinstance(f, kind) for f in self.down)

    def of(self, kind: type[Any]) -> list[Any]:
        return [f for f in self.down if isinstance(f, kind)]

    def errors(self) -> list[str]:
        return [f.error for f in self.up if isinstance(f, ErrorFrame)]

    def nodes(self) -> list[str]:
        return [f.current for f in self.of(DharaNodeChanged)]

    async def turns(self, count: int) -> None:
        """Wait until ``count`` turns have ended in all."""
        await self.wait_until(lambda: self.count(LLMFullResponseEnd) >= count)

    async def say(self, text: str) -> None:
        """One user message; waits for the turn it starts to end."""
        before = self.count(LLMFullResponseEnd)
        await self.task.queue_frame(TranscriptionFrame(text=text))
        await self.turns(before + 1)

    async def interrupt(self) -> None:
        await self.task.queue_frame(InterruptionFrame())


@asynccontextmanager
async def conversation(
    server: ScriptedServer,
    build: Callable[[LLMContext, FunctionRegistry], DharaManager],
    *,
    processor: bool = True,
    wait_first_turn: bool = True,
    expect_end: bool = False,
    after_llm: Sequence[FrameProcessor] = (),
    builtin_tools: Sequence[BuiltinTool] = (),
    queued: Sequence[Frame] = (),
    llm_config: Mapping[str, Any] | None = None,
    **processor_kw: Any,
) -> AsyncIterator[Conversation]:
    """Run the flow; the block's end sends an EndFrame (unless the flow ends the run:
    ``expect_end``). ``queued`` frames are queued before the run starts."""
    context = LLMContext()
    registry = FunctionRegistry()
    dhara = build(context, registry)
    llm = OpenAILLMHandler.with_registry(config(server, **(llm_config or {})), registry)
    for tool in builtin_tools:
        llm.add_tool(tool)
    llm.set_transition_hook(dhara.create_transition_hook())
    user, assistant = create_context_aggregators(context, text_mode=True)
    middle = [dhara.processor(**processor_kw)] if processor else []
    task = PipelineTask(
        Pipeline([user, *middle, llm.into_processor(name="llm"), *after_llm, assistant])
    )
    conv = Conversation(task, dhara, context)
    task.add_event_handler("on_frame_reached_downstream", lambda _t, f: conv.record(conv.down, f))
    task.add_event_handler("on_frame_reached_upstream", lambda _t, f: conv.record(conv.up, f))
    for frame in queued:
        await task.queue_frame(frame)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            if (
                processor
                and wait_first_turn
                and dhara.node(dhara.current_node or "").respond_immediately
            ):
                await conv.turns(1)
            yield conv
            if expect_end:  # the flow ends the run itself
                await conv.wait_until(lambda: any(isinstance(f, EndFrame) for f in conv.down))
            elif not task.has_finished:
                await task.queue_frame(EndFrame())


def fs(name: str) -> FunctionSchema:
    return FunctionSchema(name=name, description=f"the {name} function")


def calls(*specs: tuple[str, str]) -> ToolCallReply:
    """A tool-call reply: (function name, call id) pairs."""
    return ToolCallReply([ScriptedToolCall(name=n, arguments="{}", id=i) for n, i in specs])


def node(name: str, tools: Sequence[str] = (), **kw: Any) -> NodeConfig:
    kw.setdefault("respond_immediately", False)
    kw.setdefault("task_messages", [f"Task of {name}."])
    return NodeConfig(
        name, system_prompt=f"You are node {name}.", tools=[fs(t) for t in tools], **kw
    )


@asynccontextmanager
async def fine_server() -> AsyncIterator[ScriptedServer]:
    """The scripted model answering "fine" unless a test queues other replies (the
    ``server`` fixture of the Dhara tests)."""
    async with open_scripted_server(default_reply=TextReply(["fine"])) as srv:
        yield srv


class Stall(FrameProcessor):
    """After the LLM, a slow consumer with one frame of room, asleep on ``on`` frames: the
    LLM's next pushes wait (e.g. on FunctionCallInProgress, the FunctionCallEnd waits for room
    after the round was committed, before the transition hook)."""

    def __init__(self, on: type[Frame]) -> None:
        super().__init__(name="stall", max_buffer=1)
        self.on = on

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, self.on):
            await trio.sleep(100.0)
        await self.push_frame(frame, direction)
