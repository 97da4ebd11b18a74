"""One benchmarked request, through the pipeline or as a raw stream (the load shapes that
issue them are in ``_levels``).

Each request is one user turn. Request ``i`` of a phase goes through the pipeline when ``i``
is even and as a raw stream when it is odd, so both halves see the same load at the same
time, over the same HTTP client and connection pool.
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import trio

from ..aggregators import LLMUserAggregator
from ..context import LLMContext
from ..frames import EndFrame, ErrorFrame, InterruptionFrame, TranscriptionFrame
from ..pipeline import Pipeline
from ..services.llm.function_registry import FunctionRegistry
from ..services.llm.openai import OpenAILLMConfig, OpenAILLMHandler, RetryPolicy
from ..task import PipelineParams, PipelineTask
from ._config import BenchConfig
from ._pipeline import BenchSink, classify_error_frame
from ._progress import Progress
from ._prompt import TOOL_NAME, TOOL_SCHEMA, make_prompt, run_tool
from ._raw import StreamOutcome, stream_once
from ._records import ErrorInfo, Redactor, RequestRecord
from ._wire import REQUEST_HEADER, WireExchange, WireLog

__all__ = ["PATHS", "Session", "run_request"]

PATHS = ("pipeline", "raw")
_CLOSE_LIMIT = 10.0  # the longest wait for a connection to close after an interruption


@attrs.define(eq=False)
class Session:
    """What every request of a run shares: the settings, one HTTP client, the wire log."""

    config: BenchConfig
    client: httpx.AsyncClient
    wire: WireLog
    redact: Redactor
    progress: Progress

    def handler(self, base_url: str, request_id: str) -> tuple[OpenAILLMHandler, LLMContext]:
        """A fresh handler and context for one request (the same for both paths)."""
        cfg = self.config
        llm = OpenAILLMConfig(
            api_key=cfg.api_key,
            model=cfg.model,
            base_url=base_url,
            max_completion_tokens=cfg.max_tokens,
            extra_headers={REQUEST_HEADER: request_id},
            extra_body=dict(cfg.extra_body),
            connect_timeout=cfg.connect_timeout,
            first_token_timeout=cfg.request_timeout,
            chunk_timeout=cfg.request_timeout,
            retry=RetryPolicy(max_attempts=1),  # a benchmark counts failures, never hides them
            max_tool_rounds=2,
        )
        registry = FunctionRegistry()
        handler = OpenAILLMHandler.with_registry(llm, registry, http_client=self.client)
        if cfg.tools:
            registry.register(TOOL_NAME, run_tool)
            handler.set_transition_hook(_answer_without_tools)
            return handler, LLMContext(tools=[TOOL_SCHEMA], tool_choice="required")
        return handler, LLMContext()


def _answer_without_tools(context: LLMContext) -> None:
    context.set_tool_choice("none")


# --------------------------------------------------------------------------- one request


async def _interrupt_watch(
    session: Session, record: RequestRecord, request_id: str, cancel: Any
) -> None:
    """At ``start + interrupt_after_ms``: note what is open on the wire, interrupt, and wait
    for those connections to close."""
    after = session.config.interrupt_after_ms
    assert after is not None
    await trio.sleep_until(record.start + after / 1000.0)
    open_now = session.wire.open_exchanges(request_id)
    record.interrupt_at = trio.current_time()
    await cancel()
    await _wait_closed(record, open_now)


async def _wait_closed(record: RequestRecord, open_now: list[WireExchange]) -> None:
    if not open_now:
        record.interrupt_outcome = "nothing_open"
        return
    with trio.move_on_after(_CLOSE_LIMIT):
        for exchange in open_now:
            await exchange.closed.wait()
        record.closed_at = max(x.closed_at or 0.0 for x in open_now)
        record.interrupt_outcome = "closed"
        return
    record.interrupt_outcome = "close_timeout"


async def _pipeline_request(
    session: Session, record: RequestRecord, request_id: str, base_url: str, prompt: str
) -> None:
    handler, context = session.handler(base_url, request_id)
    sink = BenchSink(record)
    user = LLMUserAggregator(context, text_mode=True)
    task = PipelineTask(
        Pipeline([user, handler.into_processor(), sink]),
        params=PipelineParams(enable_usage_metrics=True),
        name=f"bench-{request_id}",
    )
    errors: list[ErrorFrame] = []
    started = trio.Event()
    task.add_event_handler("on_error", lambda _task, frame: errors.append(frame))
    task.add_event_handler("on_pipeline_started", lambda _task: started.set())
    # The handler's own timeouts end a turn whose server falls silent; this guard only ends
    # a turn in which nothing at all moves (no byte on the wire, no frame at the sink) for
    # longer than those: a slow but steady stream may take as long as it needs.
    guard = session.config.request_timeout + _CLOSE_LIMIT
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        await started.wait()
        record.start = trio.current_time()
        await task.queue_frame(TranscriptionFrame(text=prompt, finalized=True))
        async with trio.open_nursery() as watch:
            if session.config.interrupt_after_ms is not None:

                async def interrupt() -> None:
                    await task.queue_frame(InterruptionFrame())

                watch.start_soon(_interrupt_watch, session, record, request_id, interrupt)
            stuck = not await _turn_over(sink, session.wire, request_id, guard)
            if record.interrupt_at is None:
                watch.cancel_scope.cancel()  # finished before the interruption was due
        if stuck:
            message = f"nothing moved for {guard:g}s (no bytes, no frames) and the turn went on"
            record.fail(ErrorInfo("timeout", message))
            await task.cancel("bench: the turn did not end")
        else:
            await task.queue_frame(EndFrame())
    # The run is over: every ErrorFrame it produced has been delivered.
    exchanges = session.wire.exchanges(request_id)
    for frame in errors:
        info = classify_error_frame(frame, exchanges, session.redact)
        if info is None:
            record.warnings.append(session.redact(frame.error))
        else:
            record.fail(info)
    tools = session.config.tools
    if tools and record.ok and not record.interrupted and record.tool_call_at is None:
        record.fail(ErrorInfo("no_tool_call", "the model answered without calling the tool"))


async def _turn_over(sink: BenchSink, wire: WireLog, request_id: str, idle: float) -> bool:
    """Wait for the turn to be over; ``False`` if nothing moved for ``idle`` seconds first."""
    while not sink.turn_over.is_set():
        latest = max(sink.last_activity, wire.last_activity(request_id) or 0.0)
        if trio.current_time() >= latest + idle:
            return False
        with trio.move_on_at(latest + idle):
            await sink.turn_over.wait()
    return True


async def _raw_turn(
    session: Session,
    record: RequestRecord,
    handler: OpenAILLMHandler,
    context: LLMContext,
    body: dict[str, Any],
) -> None:
    cfg = handler.config
    url, headers = cfg.chat_completions_url(), cfg.headers()

    def stamp(at: float) -> None:
        record.token_times.append(at)

    async def once(request_body: dict[str, Any]) -> StreamOutcome | None:
        result = await stream_once(
            session.client,
            url,
            request_body,
            headers,
            limit=session.config.request_timeout,
            on_token=stamp,
            redact=session.redact,
        )
        if isinstance(result, ErrorInfo):
            record.fail(result)
            return None
        return result

    outcome = await once(body)
    if outcome is None:
        return
    if session.config.tools:
        if not outcome.tool_calls:
            record.fail(ErrorInfo("no_tool_call", "the model answered without calling the tool"))
            return
        record.tool_call_at = trio.current_time()
        record.precall_tokens = len(record.token_times)
        record.token_times.clear()
        calls = [outcome.tool_calls[i] for i in sorted(outcome.tool_calls)]
        for n, call in enumerate(calls):
            call["id"] = call["id"] or f"call_{n}"
        context.add_message(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"] or "{}"},
                    }
                    for c in calls
                ],
            }
        )
        for call in calls:
            context.add_message(
                {"role": "tool", "tool_call_id": call["id"], "content": run_tool(call["arguments"])}
            )
        context.set_tool_choice("none")
        outcome = await once(handler.build_request(context))
        if outcome is None:
            return
    usage = outcome.usage or {}
    record.take_usage(usage.get("completion_tokens"), usage.get("prompt_tokens"))
    record.end = trio.current_time()


async def _raw_request(
    session: Session, record: RequestRecord, request_id: str, base_url: str, prompt: str
) -> None:
    handler, context = session.handler(base_url, request_id)
    context.add_user_message(prompt)
    body = handler.build_request(context)  # the very body the pipeline's handler sends
    scope = trio.CancelScope()

    async def interrupt() -> None:
        scope.cancel()
        await trio.lowlevel.checkpoint()

    record.start = trio.current_time()
    async with trio.open_nursery() as watch:
        if session.config.interrupt_after_ms is not None:
            watch.start_soon(_interrupt_watch, session, record, request_id, interrupt)
        with scope:
            await _raw_turn(session, record, handler, context, body)
        if record.interrupt_at is None:
            watch.cancel_scope.cancel()


async def run_request(
    session: Session, base_url: str, record: RequestRecord, level_key: str
) -> None:
    """Run one request on its path and record what it measured."""
    request_id = f"{level_key}:{record.index}"
    prompt = make_prompt(
        session.config.prompt_tokens,
        seed=session.config.seed,
        key=request_id,
        tools=session.config.tools,
    )
    record.token_limit = session.config.output_limit
    run = _pipeline_request if record.path == "pipeline" else _raw_request
    try:
        await run(session, record, request_id, base_url, prompt)
    finally:
        session.wire.forget(request_id)
    record.finished = True
    if session.config.interrupt_after_ms is not None and record.interrupt_outcome is None:
        record.interrupt_outcome = "finished_before"
    ttft = record.metrics()["ttft_ms"]
    session.progress.request_done(record.ok, ttft)
