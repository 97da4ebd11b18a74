"""rustvani-trio: ``LLMUserAggregator -> OpenAILLMHandler -> [K pass-through] -> sink``.

The hop-cost scenario needs only the runtime (``generator -> [K pass-through] -> sink``); the
LLM scenarios need ``rustvani_trio.services.llm.openai`` and ``rustvani_trio.aggregators``,
and are reported as skipped (with the import error) when those are missing. With ``inline``
in the parameters, the K pass-through processors are inline ones (``InlineTap``). The voice
scenario is in ``_rustvani_voice.py``.
"""

from __future__ import annotations

import resource
from typing import Any

import attrs
import trio

from rustvani_trio.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMFullResponseEnd,
    TextFrame,
    TranscriptionFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor

try:  # (absent before the inline processors landed: the "inline" configurations fail)
    from rustvani_trio.processor import InlineOutput, InlineProcessor
except ImportError:  # pragma: no cover
    InlineProcessor = FrameProcessor  # type: ignore[misc,assignment]
    InlineOutput = Any  # type: ignore[misc]
from rustvani_trio.task import PipelineParams, PipelineTask

from .._common import (
    Samples,
    concurrency_samples,
    cpu_now,
    now,
    rss_probe_start,
    rss_probe_stop,
)

_DOWN = FrameDirection.DOWNSTREAM
_LLM = ("burst", "paced", "interrupt", "tool", "concurrency", "slowsink", "voice")

try:
    from rustvani_trio.aggregators import LLMAssistantAggregator, LLMUserAggregator, TurnState
    from rustvani_trio.context import FunctionSchema, LLMContext
    from rustvani_trio.services.llm.function_registry import FunctionRegistry
    from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler

    _LLM_MISSING: str | None = None
except ImportError as exc:  # the LLM half of the package has not landed
    _LLM_MISSING = f"rustvani-trio LLM modules not importable: {exc}"


def capabilities(name: str) -> dict[str, str | None]:
    caps: dict[str, str | None] = {"hop": None}
    caps.update(dict.fromkeys(_LLM, _LLM_MISSING))
    return caps


def run(name: str, scenario: str, params: dict[str, Any]) -> Samples:
    if scenario == "voice":
        from ._rustvani_voice import voice

        return trio.run(voice, params)
    fn = {
        "hop": _hop,
        "burst": _stream,
        "paced": _stream,
        "interrupt": _interrupt,
        "tool": _tool,
        "concurrency": _concurrency,
        "slowsink": _slowsink,
    }[scenario]
    return trio.run(fn, params)


# --------------------------------------------------------------------------- processors


class PassThrough(FrameProcessor):
    """What a user writes for a processor that only looks at frames."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(frame, direction)


class InlineTap(InlineProcessor):
    """What a user writes for an inline processor that only looks at frames."""

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        return frame


def pass_throughs(params: dict[str, Any]) -> list[FrameProcessor]:
    """The K extra processors of a configuration: with lanes, or inline."""
    kind = InlineTap if params.get("inline") else PassThrough
    return [kind() for _ in range(params["k"])]


class Counter(PassThrough):
    """A pass-through right after the LLM that counts the text frames the LLM produced:
    those it handled plus those waiting in its lane."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink
        self.count = 0
        self.max_backlog = 0

    def observe(self) -> None:
        produced = self.count + self.statistics().downstream_waiting
        self.max_backlog = max(self.max_backlog, produced - len(self.sink.stamps))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            self.count += 1
            self.observe()
        await self.push_frame(frame, direction)


class Sink(FrameProcessor):
    """The end of the contestant's pipeline: timestamps text frames and swallows them (the
    task's own sink is not part of what is measured), forwards everything else.

    A turn is over at the LLMFullResponseEnd that follows text (or at ``expected`` texts).
    With ``forward_text`` it forwards text too (a tap in front of an assistant aggregator).
    ``state``, when given, is the user aggregator's turn state: the sink ends the bot's turn
    in it as an assistant aggregator would, so the next user message is not an interruption.
    """

    def __init__(
        self, *, delay: float = 0.0, state: Any = None, forward_text: bool = False
    ) -> None:
        super().__init__()
        self.delay = delay
        self.forward_text = forward_text
        self.state = state
        self.arm()

    def arm(self, expected: int = 0) -> None:
        self.stamps: list[float] = []
        self.expected = expected
        self.done = trio.Event()
        self.interrupted_at: float | None = None
        self.leaked = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _DOWN and isinstance(frame, TextFrame):
            self.stamps.append(now())
            if self.interrupted_at is not None:
                self.leaked += 1
            if self.expected and len(self.stamps) == self.expected:
                self.done.set()
            if self.forward_text:
                await self.push_frame(frame, direction)
            if self.delay:
                await trio.sleep(self.delay)
            return
        if isinstance(frame, LLMFullResponseEnd) and self.stamps:
            if self.state is not None:
                self.state.bot_responding = False
            self.done.set()
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.interrupted_at = now()


class Generator(FrameProcessor):
    """Hop cost: on a ``go`` TextFrame, pushes its prepared frames downstream."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.started_at = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "go":
            self.started_at = now()
            for f in self.frames:
                await self.push_frame(f)
            return
        await self.push_frame(frame, direction)


# --------------------------------------------------------------------------- plumbing


class _Run:
    """One PipelineTask running in a nursery, with an event for "StartFrame reached the end"."""

    def __init__(self, processors: list[FrameProcessor], params: PipelineParams | None = None):
        self.task = PipelineTask(Pipeline(processors), params=params or PipelineParams())
        self.started = trio.Event()
        self.task.add_event_handler("on_pipeline_started", lambda _t: self.started.set())

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.task.run)
        await self.started.wait()

    async def end(self) -> None:
        await self.task.queue_frame(EndFrame())


def _llm(params: dict[str, Any], registry: Any = None) -> FrameProcessor:
    script: dict[str, Any] = {"tokens": params["tokens"], "token_delay": params["token_delay"]}
    if params.get("tool_call"):  # the tool request streams only the call
        script.update(tokens=0, tool_call=params["tool_call"])
    config = OpenAILLMConfig(
        api_key="bench",
        base_url=params["base_url"],
        model="bench",
        extra_body={"x_script": script},
    )
    handler = (
        OpenAILLMHandler(config)
        if registry is None
        else OpenAILLMHandler.with_registry(config, registry)
    )
    return handler.into_processor()


def _user(state: Any = None) -> tuple[Any, Any]:
    context = LLMContext(messages=[])
    state = state if state is not None else TurnState()
    return LLMUserAggregator(context, text_mode=True, state=state), state


def _user_says(text: str = "hi") -> TranscriptionFrame:
    return TranscriptionFrame(text=text, finalized=True)


# --------------------------------------------------------------------------- scenarios


async def _stream(params: dict[str, Any]) -> Samples:
    out: Samples = {"ttft_ms": [], "total_ms": [], "cpu_ms": []}
    user, state = _user()
    sink = Sink(state=state)
    run_ = _Run([user, _llm(params), *pass_throughs(params), sink])
    async with trio.open_nursery() as nursery:
        await run_.start(nursery)
        for turn in range(params["turns"] + 1):  # turn 0 warms up connection and code paths
            sink.arm()
            t0, c0 = now(), cpu_now()
            await run_.task.queue_frame(_user_says())
            await sink.done.wait()
            if turn:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["ttft_ms"].append((sink.stamps[0] - t0) * 1e3)
                out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)
        await run_.end()
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
        user, state = _user()
        sink = Sink(state=state)
        run_ = _Run([user, _llm(params), *pass_throughs(params), sink])
        async with trio.open_nursery() as nursery:
            await run_.start(nursery)
            sink.arm()
            await run_.task.queue_frame(_user_says())
            await trio.sleep(params["interrupt_after"])
            t_int = now()
            await run_.task.queue_frame(InterruptionFrame())
            await trio.sleep(params["settle"])
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
            await run_.end()
    return out


async def _tool(params: dict[str, Any]) -> Samples:
    if params.get("postgres"):  # the "1 pg_query" row: a real query through the Postgres tool
        from ._pg_tool import pg_tool_round

        return await pg_tool_round(params)
    out: Samples = {"total_ms": [], "ttft_answer_ms": [], "cpu_ms": []}
    registry = FunctionRegistry()
    llm: Any = _llm(params, registry)
    # The scripted server answers every request carrying x_script.tool_call with the tool
    # call, so the handler asks for the text answer once the tool has run: the tool swaps
    # the handler's config (which the handler reads per request), and each turn swaps it back.
    ask_tool = llm.handler.config
    ask_text = attrs.evolve(
        ask_tool,
        extra_body={"x_script": {"tokens": params["tokens"], "token_delay": params["token_delay"]}},
    )

    async def get_time(_args: str) -> str:
        llm.handler.config = ask_text
        await trio.lowlevel.checkpoint()
        return '{"ok": true}'

    registry.register(
        params["tool_call"]["name"],
        get_time,
        schema=FunctionSchema(name=params["tool_call"]["name"], description="A trivial tool."),
    )
    user, state = _user()
    assistant = LLMAssistantAggregator(user.context, state=state)
    sink = Sink(forward_text=True)  # the assistant aggregator needs the text
    run_ = _Run([user, llm, sink, assistant])
    async with trio.open_nursery() as nursery:
        await run_.start(nursery)
        for turn in range(params["turns"] + 1):
            llm.handler.config = ask_tool
            sink.arm()
            t0, c0 = now(), cpu_now()
            await run_.task.queue_frame(_user_says("call the tool"))
            await sink.done.wait()
            if turn:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)
                out["ttft_answer_ms"].append((sink.stamps[0] - t0) * 1e3)
        await run_.end()
    return out


async def _concurrency(params: dict[str, Any]) -> Samples:
    n = params["conversations"]
    stamps: list[list[float]] = []
    await _warmup(params)
    baseline = rss_probe_start()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = now()

    async def conversation() -> None:
        user, state = _user()
        sink = Sink(state=state)
        stamps.append(sink.stamps)
        run_ = _Run([user, _llm(params), sink])
        async with trio.open_nursery() as nursery:
            await run_.start(nursery)
            await run_.task.queue_frame(_user_says())
            await sink.done.wait()
            await run_.end()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(conversation)
    return concurrency_samples(stamps, n, cpu0, t0, baseline)


async def _slowsink(params: dict[str, Any]) -> Samples:
    await _warmup(params)
    user, state = _user()
    sink = Sink(delay=params["sink_delay"], state=state)
    counter = Counter(sink)
    run_ = _Run([user, _llm(params), counter, sink])
    async with trio.open_nursery() as nursery:
        await run_.start(nursery)
        rss0 = rss_probe_start()
        await run_.task.queue_frame(_user_says())
        with trio.move_on_after(params["window"]):
            while True:  # the lane's backlog is seen here too, between two handled frames
                counter.observe()
                if sink.done.is_set():
                    break
                await trio.sleep(params["sample_every"])
        out: Samples = {
            "peak_rss_mb": [rss_probe_stop(rss0)],
            "max_backlog_frames": [float(counter.max_backlog)],
            "frames_at_sink": [float(len(sink.stamps))],
        }
        await run_.task.cancel("benchmark window over")
    return out


async def _hop(params: dict[str, Any]) -> Samples:
    out: Samples = {"us_per_frame": [], "frames_per_s": []}
    gen = Generator()
    sink = Sink()
    run_ = _Run([gen, *pass_throughs(params), sink])
    async with trio.open_nursery() as nursery:
        await run_.start(nursery)
        for n in (params["warmup_frames"], params["frames"]):
            gen.frames = [TextFrame(text="x") for _ in range(n)]
            sink.arm(expected=n)
            await run_.task.queue_frame(TextFrame(text="go"))
            await sink.done.wait()
            if n == params["frames"]:
                elapsed = sink.stamps[-1] - gen.started_at
                out["us_per_frame"].append(elapsed * 1e6 / n)
                out["frames_per_s"].append(n / elapsed)
        await run_.end()
    return out
