"""The ``dhara`` scene of ``demo``: the pizza-order flow (``rustvani_trio/dhara/examples/
pizza.json``) against a scripted model on loopback, showing every node change.

``LLMUserAggregator -> DharaProcessor -> OpenAILLMHandler -> printer -> LLMAssistantAggregator``
"""

from __future__ import annotations

import sys
from typing import Any

import trio

from ..aggregators import create_context_aggregators
from ..context import LLMContext
from ..frames import (
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgress,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    TranscriptionFrame,
)
from ..pipeline import Pipeline
from ..processor import FrameProcessor
from ..services.llm.function_registry import FunctionRegistry
from ..services.llm.openai import OpenAILLMHandler
from ..task import PipelineTask
from ..testing import RecordedRequest, Reply
from ._scripted import open_scripted_llm, print_errors

TITLE = "dhara: a pizza order moves through its conversation flow (greeting -> menu -> ...)"
REQUIRES: str | None = "dhara"

LINES = (
    "Yes, show me the menu please",
    "A large Pepperoni with mushrooms and olives",
    "Also a small Margherita",
    "That's all, confirm please",
    "Actually I want to change something",
    "Please remove item 2",
    "Now confirm",
    "Deliver to 12 MG Road, Pune",
)


def available() -> bool:
    """Dhara needs nothing beyond the core."""
    return True


class FlowPrinter(FrameProcessor):
    """Prints the assistant's answers, the calls and every node change."""

    def __init__(self, out: Any = None) -> None:
        super().__init__(name="terminal")
        self.out = out or sys.stdout
        self.turn_ended = trio.Event()
        self._prefix = True  # "assistant> " goes before the next text
        self._in_text = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _line(self, text: str) -> None:
        if self._in_text:
            self._write("\n")
            self._in_text = False
        self._write(text + "\n")
        self._prefix = True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        from ..dhara import DharaNodeChanged

        if isinstance(frame, DharaNodeChanged):
            came = f"{frame.previous} -> " if frame.previous else ""
            self._line(f"  [node: {came}{frame.current}  ({frame.reason})]")
        elif isinstance(frame, LLMFullResponseStart):
            self._prefix = True
        elif isinstance(frame, LLMText):
            if self._prefix:
                self._write("assistant> ")
                self._prefix = False
            self._write(frame.text)
            self._in_text = True
        elif isinstance(frame, FunctionCallInProgress):
            self._line(f"  [calls {frame.function_name}({frame.arguments})]")
        elif isinstance(frame, LLMFullResponseEnd):
            if self._in_text:
                self._write("\n")
                self._in_text = False
            self.turn_ended.set()
            self.turn_ended = trio.Event()
        await self.push_frame(frame, direction)


async def run() -> None:
    """The scene: the opening line, then the customer's lines, until the farewell node ends
    the conversation."""
    from ..dhara.examples import pizza

    def model(request: RecordedRequest) -> Reply:
        return pizza.scripted_model(request, delay=0.01)

    print(
        "The pizza flow from rustvani_trio/dhara/examples/pizza.json, scripted model on 127.0.0.1\n"
    )
    async with open_scripted_llm(model) as (server, config):
        context = LLMContext()
        registry = FunctionRegistry()
        dhara = pizza.build_from_file(context, registry)
        llm = OpenAILLMHandler.with_registry(config, registry)
        llm.set_transition_hook(dhara.create_transition_hook())
        user, assistant = create_context_aggregators(context, text_mode=True)
        printer = FlowPrinter()
        task = PipelineTask(
            # (the printer last: a turn it has shown the end of is committed; see scene_chat)
            Pipeline([user, dhara.processor(), llm.into_processor(), assistant, printer])
        )

        finished = trio.Event()
        task.add_event_handler("on_pipeline_finished", lambda _task, _reason: finished.set())

        print_errors(task, prefix="  ")
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            ended = printer.turn_ended
            await ended.wait()  # the greeting node speaks first
            for line in LINES:
                print(f"user> {line}")
                ended = printer.turn_ended
                await task.queue_frame(TranscriptionFrame(text=line))
                await ended.wait()
            with trio.move_on_after(5):
                await finished.wait()  # the farewell node's post action ends the run
            if not task.has_finished:
                await task.queue_frame(EndFrame())
    state = dhara.state
    print(
        f"\nFinal node: {dhara.current_node}; {state['item_count']} item(s), total "
        f"${state['total']:.2f}; {len(server.requests)} HTTP requests; the run ended "
        f"({task.finish_reason})."
    )
