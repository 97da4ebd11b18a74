"""pipecat 1.14: ``OpenAILLMService -> [K pass-through] -> sink`` in a ``PipelineWorker``
(``enable_rtvi=False, enable_turn_tracking=False, idle_timeout_secs=None``) run by a
``WorkerRunner``, loguru at WARNING (its per-frame DEBUG logging would otherwise dominate).

The module is named ``pipecat_`` so it never shadows the ``pipecat`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pipecat  # noqa: F401  (first: without the bench extra, the error names pipecat)
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    TextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner

from .._common import (
    Samples,
    concurrency_samples,
    cpu_now,
    now,
    rss_probe_start,
    rss_probe_stop,
)

logger.remove()
logger.add(sys.stderr, level="WARNING")

_DOWN = FrameDirection.DOWNSTREAM
_ALL = ("burst", "paced", "hop", "interrupt", "tool", "concurrency", "slowsink", "voice")


def capabilities(name: str) -> dict[str, str | None]:
    return dict.fromkeys(_ALL)


def run(name: str, scenario: str, params: dict[str, Any]) -> Samples:
    if scenario == "voice":
        from ._pipecat_voice import voice

        return asyncio.run(voice(params))
    fn = {
        "hop": _hop,
        "burst": _stream,
        "paced": _stream,
        "interrupt": _interrupt,
        "tool": _tool,
        "concurrency": _concurrency,
        "slowsink": _slowsink,
    }[scenario]
    return asyncio.run(fn(params))


# --------------------------------------------------------------------------- processors


class PassThrough(FrameProcessor):
    """The canonical pipecat pass-through processor."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class Counter(PassThrough):
    """A pass-through right after the LLM that counts the text frames the LLM produced, as
    they are queued to it (its own task may be starved while the LLM reads a burst)."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink
        self.count = 0
        self.max_backlog = 0

    async def queue_frame(
        self, frame: Frame, direction: FrameDirection = _DOWN, callback: Any = None
    ) -> None:
        if direction == _DOWN and isinstance(frame, TextFrame):
            self.count += 1
            self.max_backlog = max(self.max_backlog, self.count - len(self.sink.stamps))
        await super().queue_frame(frame, direction, callback)


class Sink(FrameProcessor):
    """Timestamps text frames and swallows them; forwards everything else (see the
    rustvani-trio contestant's Sink: same rules)."""

    def __init__(self, *, delay: float = 0.0, forward_text: bool = False) -> None:
        super().__init__()
        self.delay = delay
        self.forward_text = forward_text
        self.arm()

    def arm(self, expected: int = 0) -> None:
        self.stamps: list[float] = []
        self.expected = expected
        self.done = asyncio.Event()
        self.interrupted_at: float | None = None
        self.leaked = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == _DOWN and isinstance(frame, TextFrame):
            self.stamps.append(now())
            if self.interrupted_at is not None:
                self.leaked += 1
            if self.expected and len(self.stamps) == self.expected:
                self.done.set()
            if self.forward_text:
                await self.push_frame(frame, direction)
            if self.delay:
                await asyncio.sleep(self.delay)
            return
        if isinstance(frame, InterruptionFrame) and self.interrupted_at is None:
            self.interrupted_at = now()
        if isinstance(frame, LLMFullResponseEndFrame) and self.stamps:
            self.done.set()
        await self.push_frame(frame, direction)


class Generator(FrameProcessor):
    """Hop cost: on a ``go`` TextFrame, pushes its prepared frames downstream."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.started_at = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame) and frame.text == "go":
            self.started_at = now()
            for f in self.frames:
                await self.push_frame(f)
            return
        await self.push_frame(frame, direction)


# --------------------------------------------------------------------------- plumbing


class _Run:
    """One PipelineWorker in its own WorkerRunner, as one pipecat session."""

    def __init__(self, processors: list[FrameProcessor]) -> None:
        self.worker = PipelineWorker(
            Pipeline(processors),
            params=PipelineParams(),
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
        )
        self.started = asyncio.Event()
        self.worker.add_event_handler("on_pipeline_started", self._on_started)

    async def _on_started(self, _worker: Any, _frame: Frame) -> None:
        self.started.set()

    async def drive(self, body: Callable[[PipelineWorker], Awaitable[None]]) -> None:
        """Run the worker; once it started, run ``body`` and then end the pipeline."""
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)

        async def session() -> None:
            await self.started.wait()
            try:
                await body(self.worker)
            finally:
                await self.worker.queue_frame(EndFrame())

        await asyncio.gather(runner.run(), session())


def _llm(params: dict[str, Any]) -> OpenAILLMService:
    script: dict[str, Any] = {"tokens": params["tokens"], "token_delay": params["token_delay"]}
    if params.get("tool_call"):  # the tool request streams only the call
        script.update(tokens=0, tool_call=params["tool_call"])
    return OpenAILLMService(
        api_key="bench",
        base_url=params["base_url"],
        settings=OpenAILLMService.Settings(
            model="bench", extra={"extra_body": {"x_script": script}}
        ),
    )


def _context(tools: ToolsSchema | None = None) -> LLMContext:
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    return LLMContext(messages=messages, tools=tools) if tools else LLMContext(messages=messages)


# --------------------------------------------------------------------------- scenarios


async def _stream(params: dict[str, Any]) -> Samples:
    out: Samples = {"ttft_ms": [], "total_ms": [], "cpu_ms": []}
    sink = Sink()
    run_ = _Run([_llm(params), *[PassThrough() for _ in range(params["k"])], sink])
    context = _context()

    async def body(worker: PipelineWorker) -> None:
        for turn in range(params["turns"] + 1):
            sink.arm()
            t0, c0 = now(), cpu_now()
            await worker.queue_frame(LLMContextFrame(context=context))
            await sink.done.wait()
            if turn:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["ttft_ms"].append((sink.stamps[0] - t0) * 1e3)
                out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)

    await run_.drive(body)
    return out


async def _warmup(params: dict[str, Any]) -> None:
    """A short turn through a throwaway pipeline first: imports and code paths are warm."""
    await _stream({**params, "tokens": 2, "token_delay": 0.0, "k": 0, "turns": 0})


async def _interrupt(params: dict[str, Any]) -> Samples:
    out: Samples = {
        "stop_ms": [],
        "_t_interrupt": [],
        "interrupt_at_sink_ms": [],
        "leaked_frames": [],
        "frames_before": [],
    }
    await _warmup(params)
    for _ in range(params["turns"]):
        sink = Sink()
        run_ = _Run([_llm(params), *[PassThrough() for _ in range(params["k"])], sink])
        context = _context()

        async def body(
            worker: PipelineWorker, sink: Sink = sink, ctx: LLMContext = context
        ) -> None:
            sink.arm()
            await worker.queue_frame(LLMContextFrame(context=ctx))
            await asyncio.sleep(params["interrupt_after"])
            t_int = now()
            await worker.queue_frame(InterruptionFrame())
            await asyncio.sleep(params["settle"])
            stamps = sink.stamps
            after = [t for t in stamps if t > t_int]
            out["stop_ms"].append(max(0.0, (max(stamps, default=t_int) - t_int) * 1e3))
            at_sink = sink.interrupted_at
            out["interrupt_at_sink_ms"].append(
                (at_sink - t_int) * 1e3 if at_sink is not None else float("nan")
            )
            out["_t_interrupt"].append(t_int)
            out["leaked_frames"].append(float(sink.leaked))
            out["frames_before"].append(float(len(stamps) - len(after)))

        await run_.drive(body)
    return out


async def _tool(params: dict[str, Any]) -> Samples:
    out: Samples = {"total_ms": [], "ttft_answer_ms": [], "cpu_ms": []}
    name = params["tool_call"]["name"]
    tools = ToolsSchema(
        standard_tools=[
            FunctionSchema(name=name, description="A trivial tool.", properties={}, required=[])
        ]
    )
    llm = _llm(params)
    settings: Any = llm._settings
    # The scripted server answers every request carrying x_script.tool_call with the tool
    # call: the tool switches the service's request extras to ask for the text answer (the
    # service reads them per request), and each turn switches them back.
    ask_tool = settings.extra
    ask_text = {
        "extra_body": {
            "x_script": {"tokens": params["tokens"], "token_delay": params["token_delay"]}
        }
    }

    async def get_time(call: FunctionCallParams) -> None:
        settings.extra = ask_text
        await call.result_callback({"ok": True})

    llm.register_function(name, get_time)
    context = _context(tools)
    pair = LLMContextAggregatorPair(context)
    sink = Sink(forward_text=True)  # the assistant aggregator needs the text
    run_ = _Run([llm, sink, pair.assistant()])

    async def body(worker: PipelineWorker) -> None:
        for turn in range(params["turns"] + 1):
            settings.extra = ask_tool
            sink.arm()
            context.set_messages([{"role": "user", "content": "call the tool"}])
            t0, c0 = now(), cpu_now()
            await worker.queue_frame(LLMContextFrame(context=context))
            await sink.done.wait()
            if turn:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)
                out["ttft_answer_ms"].append((sink.stamps[0] - t0) * 1e3)

    await run_.drive(body)
    return out


async def _concurrency(params: dict[str, Any]) -> Samples:
    n = params["conversations"]
    stamps: list[list[float]] = []
    await _warmup(params)
    baseline = rss_probe_start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = now()

    async def conversation() -> None:
        sink = Sink()
        stamps.append(sink.stamps)
        run_ = _Run([_llm(params), sink])
        context = _context()

        async def body(worker: PipelineWorker) -> None:
            await worker.queue_frame(LLMContextFrame(context=context))
            await sink.done.wait()

        await run_.drive(body)

    async with asyncio.TaskGroup() as group:
        for _ in range(n):
            group.create_task(conversation())
    return concurrency_samples(stamps, n, cpu0, t0, baseline)


async def _slowsink(params: dict[str, Any]) -> Samples:
    await _warmup(params)
    sink = Sink(delay=params["sink_delay"])
    counter = Counter(sink)
    run_ = _Run([_llm(params), counter, sink])
    context = _context()
    out: Samples = {}

    async def body(worker: PipelineWorker) -> None:
        rss0 = rss_probe_start()
        await worker.queue_frame(LLMContextFrame(context=context))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(params["window"]):
                await sink.done.wait()
        out.update(
            {
                "peak_rss_mb": [rss_probe_stop(rss0)],
                "max_backlog_frames": [float(counter.max_backlog)],
                "frames_at_sink": [float(len(sink.stamps))],
            }
        )
        await worker.cancel(reason="benchmark window over")

    await run_.drive(body)
    return out


async def _hop(params: dict[str, Any]) -> Samples:
    out: Samples = {"us_per_frame": [], "frames_per_s": []}
    gen = Generator()
    sink = Sink()
    run_ = _Run([gen, *[PassThrough() for _ in range(params["k"])], sink])

    async def body(worker: PipelineWorker) -> None:
        for n in (params["warmup_frames"], params["frames"]):
            gen.frames = [TextFrame(text="x") for _ in range(n)]
            sink.arm(expected=n)
            await worker.queue_frame(TextFrame(text="go"))
            await sink.done.wait()
            if n == params["frames"]:
                elapsed = sink.stamps[-1] - gen.started_at
                out["us_per_frame"].append(elapsed * 1e6 / n)
                out["frames_per_s"].append(n / elapsed)

    await run_.drive(body)
    return out
