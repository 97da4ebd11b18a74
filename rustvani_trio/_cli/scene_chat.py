"""The chat scene of ``demo`` and the interactive ``chat`` command.

* ``demo`` (scene ``chat``): a complete conversation (with a tool call) through
  ``LLMUserAggregator -> OpenAILLMHandler -> LLMAssistantAggregator`` against the scripted
  OpenAI-compatible server on loopback. No API key, no network.
* ``chat``: an interactive chat against ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``; without a
  key it says how to set one and chats with the scripted server instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ..aggregators import create_context_aggregators
from ..context import FunctionSchema, LLMContext
from ..frames import (
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgress,
    FunctionCallResult,
    FunctionCallStart,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    MetricsFrame,
    TranscriptionFrame,
    TTFBMetricsData,
)
from ..pipeline import Pipeline
from ..processor import FrameProcessor
from ..services.llm.function_registry import FunctionRegistry, ToolCallOutput
from ..services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from ..task import PipelineParams, PipelineTask
from ..testing.server import RecordedRequest, ScriptedToolCall, TextReply, ToolCallReply
from ._scripted import open_scripted_llm, print_errors

TITLE = "chat: a scripted model streams an answer and calls a tool"
REQUIRES: str | None = None

SYSTEM_PROMPT = "You are a concise, friendly assistant. Use tools when they help."

WEATHER_SCHEMA = FunctionSchema(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)

_FAKE_WEATHER = {"paris": (18, "light rain"), "pune": (31, "sunny"), "oslo": (4, "snow")}


async def get_weather(args: str) -> ToolCallOutput:
    """A demo tool: canned weather (the raw part is for UIs, the summary for the model).
    Empty arguments mean no city (the chat server's page uses this tool too)."""
    city = str(json.loads(args or "{}").get("city", "")).strip() or "somewhere"
    temp, sky = _FAKE_WEATHER.get(city.lower(), (21, "clear"))
    await trio.sleep(0.05)  # pretend to call a weather service
    return ToolCallOutput(
        summary=f"{city}: {temp} °C, {sky}",
        raw={"city": city, "temp_c": temp, "sky": sky},
    )


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def scripted_assistant(request: RecordedRequest) -> TextReply | ToolCallReply:
    """The demo's scripted model: a weather question gets a tool call, a tool result gets an
    answer built from it, anything else gets a short reply."""
    body: dict[str, Any] = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages", [])
    last = messages[-1] if messages else {}
    delay = 0.02
    if last.get("role") == "tool":
        answer = f"Here is the latest: {last.get('content')}. Anything else?"
        return TextReply(_tokens(answer), token_delay=delay)
    text = str(last.get("content", ""))
    if "weather" in text.lower():
        city = text.rstrip("?.!").split(" ")[-1]
        return ToolCallReply(
            [ScriptedToolCall(name="get_weather", arguments=json.dumps({"city": city}))],
            text_tokens=_tokens("Let me check that for you."),
            token_delay=delay,
        )
    if len(messages) <= 2:
        answer = (
            "Hello! I'm a scripted model streaming over real HTTP on loopback, token by token, "
            "through a trio pipeline."
        )
    else:
        answer = f"You said: {text!r}. I'm only a script, but every frame of this was real."
    return TextReply(_tokens(answer), token_delay=delay)


class TerminalPrinter(FrameProcessor):
    """Prints the assistant's stream and the tool-call lifecycle as they arrive."""

    def __init__(self, *, out: Any = None) -> None:
        super().__init__(name="terminal")
        self.out = out or sys.stdout
        self.turn_done = trio.Event()
        #: Whether a user line was sent and its answer has not ended yet.
        self.answering = False
        self._turn_start = 0.0
        self._tokens = 0
        self._ttfb: float | None = None

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMFullResponseStart):
            self._turn_start = trio.current_time()
            self._tokens = 0
            self._write("assistant> ")
        elif isinstance(frame, LLMText):
            self._tokens += 1
            self._write(frame.text)
        elif isinstance(frame, FunctionCallStart):
            names = ", ".join(f"{c.function_name}({c.arguments})" for c in frame.calls)
            self._write(f"\n  [tool round {frame.round}: {names}]\n")
        elif isinstance(frame, FunctionCallInProgress):
            self._write(f"  [{frame.tool_call_id}: {frame.function_name} running]\n")
        elif isinstance(frame, FunctionCallResult):
            self._write(f"  [{frame.tool_call_id}: result {frame.result!r}]\n  ")
        elif isinstance(frame, MetricsFrame):
            for data in frame.data:
                if isinstance(data, TTFBMetricsData) and self._ttfb is None:
                    self._ttfb = data.value
        elif isinstance(frame, LLMFullResponseEnd):
            elapsed = trio.current_time() - self._turn_start
            rate = self._tokens / elapsed if elapsed > 0 else 0.0
            ttfb = f"TTFB {self._ttfb * 1000:.1f} ms, " if self._ttfb is not None else ""
            self._write(f"\n  ({ttfb}{self._tokens} tokens in {elapsed:.2f} s, {rate:.0f} tok/s)\n")
            self._ttfb = None
            self._end_turn()
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        if self.answering:
            self._write("\n  [interrupted]\n")
            self._end_turn()

    def _end_turn(self) -> None:
        self.answering = False
        self.turn_done.set()
        self.turn_done = trio.Event()


QUIT_HINT = "/quit or Ctrl-D ends the chat; Ctrl-C interrupts an answer, or quits at the prompt"


async def _converse(
    config: OpenAILLMConfig,
    lines: Sequence[str] | None,
    *,
    tools: bool = True,
    input_fn: Callable[[str], str] = input,
) -> LLMContext:
    """A conversation through the chat pipeline: the given ``lines``, or (``None``) lines read
    with ``input_fn`` until /quit, Ctrl-D or Ctrl-C at the prompt."""
    context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
    registry = FunctionRegistry()
    if tools:
        registry.register("get_weather", get_weather, schema=WEATHER_SCHEMA)
    llm = OpenAILLMHandler.with_registry(config, registry).into_processor(name="llm")
    user, assistant = create_context_aggregators(context, text_mode=True)
    printer = TerminalPrinter()
    task = PipelineTask(
        # The printer after the assistant aggregator: when it has shown a turn's end, the
        # turn is committed, so the next line is a new turn, not an interruption of this one.
        Pipeline([user, llm, assistant, printer]),
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
    )

    print_errors(task)
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        if lines is not None:
            for line in lines:
                print(f"user> {line}")
                await _turn(task, printer, line)
        else:
            await _interactive(task, printer, input_fn)
        await task.queue_frame(EndFrame())
    return context


async def _turn(task: PipelineTask, printer: TerminalPrinter, line: str) -> None:
    """Send one user line and wait until its answer ends (or is interrupted)."""
    done = printer.turn_done
    printer.answering = True
    await task.queue_frame(TranscriptionFrame(text=line))
    await done.wait()


async def _interactive(
    task: PipelineTask, printer: TerminalPrinter, input_fn: Callable[[str], str]
) -> None:
    """Read lines until /quit, Ctrl-D, or Ctrl-C at the prompt; Ctrl-C during an answer
    interrupts it (the part already said stays in the context, marked interrupted)."""
    with trio.CancelScope() as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_ctrl_c, task, printer, session)
            while True:
                try:
                    line = await trio.to_thread.run_sync(input_fn, "user> ", abandon_on_cancel=True)
                except EOFError:
                    print()
                    break
                text = line.strip()
                if text in {"/quit", "/exit"}:
                    break
                if text:
                    await _turn(task, printer, text)
            nursery.cancel_scope.cancel()


async def _watch_ctrl_c(
    task: PipelineTask, printer: TerminalPrinter, session: trio.CancelScope
) -> None:
    """Ctrl-C (SIGINT) becomes an interruption while the bot answers, and a quiet exit at the
    prompt, instead of a KeyboardInterrupt tearing through the pipeline."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if printer.answering:
                await task.queue_frame(InterruptionFrame())
            else:
                print()
                session.cancel()
                return


DEMO_LINES = (
    "Hi there!",
    "What's the weather in Pune?",
    "Thanks, that's all.",
)


def available() -> bool:
    """Needs nothing beyond the core."""
    return True


async def run() -> None:
    """The scene: three turns, one with a tool call."""
    await demo()


async def demo() -> None:
    """A scripted conversation with a tool call."""
    print("rustvani-trio demo: a scripted OpenAI-compatible server on 127.0.0.1 (no key needed)\n")
    async with open_scripted_llm(scripted_assistant) as (server, config):
        context = await _converse(config, DEMO_LINES)
        print(
            f"\n{len(server.requests)} HTTP requests served; the context now holds "
            f"{len(context.messages)} messages (system, user, assistant tool call, tool result, "
            "assistant, ...)."
        )


async def chat() -> None:
    """Interactive chat with a real endpoint, or the scripted server without a key."""
    if os.environ.get("OPENAI_API_KEY"):
        config = OpenAILLMConfig.from_env()
        print(f"chatting with {config.model} at {config.base_url}\n({QUIT_HINT})")
        await _converse(config, None, tools=True)
        return
    print(
        "OPENAI_API_KEY is not set. To chat with a real model:\n"
        "  export OPENAI_API_KEY=sk-...            # required\n"
        "  export OPENAI_BASE_URL=https://...      # optional, any OpenAI-compatible endpoint\n"
        "  export OPENAI_MODEL=gpt-4.1             # optional\n"
        "Falling back to the scripted server on 127.0.0.1.\n"
        f"({QUIT_HINT})"
    )
    async with open_scripted_llm(scripted_assistant) as (_server, config):
        await _converse(config, None)
