"""The processor: a turn per LLMContextFrame, its retries and tool rounds, the client and the
built-in tools' lifecycle."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from typing import Any

import httpx
import trio

from ..._frame_base import text_maker
from ..._text import describe, excerpt
from ...context import LLMContext
from ...frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMReasoningText,
    LLMRefusalText,
    LLMText,
    LLMTokenUsage,
    StartFrame,
)
from ...processor import FrameProcessor
from ...tools.base import BuiltinTool
from ._body import Drains
from ._chat_types import ContentDelta, ReasoningDelta, StreamDelta
from ._errors import LLMAnswerCutShort, LLMRequestError, safe_text
from ._handler import AfterRound, OpenAILLMHandler, TransitionHook
from ._stream import Answer, StallWatch, http_timeouts, open_client, stream_answer
from ._tool_round import ToolRound
from ._toolset import Toolset

__all__ = ["OpenAILLMProcessor"]

logger = logging.getLogger("rustvani_trio")

# The frames of the deltas, one per token: built without attrs' generic __init__.
_text = text_maker(LLMText)
_reasoning = text_maker(LLMReasoningText)
_refusal = text_maker(LLMRefusalText)

# Models whose missing context window was already reported (once per model and process).
_UNKNOWN_MODELS: set[str] = set()


def _warn_no_window(model: str) -> None:
    if model not in _UNKNOWN_MODELS:
        _UNKNOWN_MODELS.add(model)
        logger.warning(
            "the context window of model %r is unknown, so its context is not trimmed and may "
            "grow past what the model accepts; set OpenAILLMConfig(context_window_tokens=...) "
            "to trim it",
            excerpt(model, 100),
        )


class OpenAILLMProcessor(FrameProcessor):
    """A FrameProcessor running an :class:`OpenAILLMHandler`: one turn per
    :class:`~rustvani_trio.frames.LLMContextFrame` (see :mod:`rustvani_trio.services.llm.openai`).
    """

    def __init__(self, handler: OpenAILLMHandler, *, name: str | None = None) -> None:
        if not isinstance(handler, OpenAILLMHandler):
            raise TypeError(f"OpenAILLMProcessor takes an OpenAILLMHandler, got {handler!r}")
        super().__init__(name=name)
        self.handler = handler
        self._client: httpx.AsyncClient | None = None
        self._timeout = httpx.Timeout(None)
        self._toolset = Toolset(self, lambda: self.handler.tools)
        # Where the ends of finished bodies are read (for connection reuse): a nursery of the
        # run's that outlives turns, so that no turn waits for a drain (a request that starts
        # meanwhile takes another connection); cancelled before the client is closed.
        self._drains: Drains | None = None
        self._drains_scope: trio.CancelScope | None = None
        # Watches the streaming request for stalls (a task in the drains' nursery).
        self._watch: StallWatch | None = None

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self, frame: StartFrame) -> None:
        cfg = self.handler.config
        self._timeout = http_timeouts(cfg)
        shared = self.handler.http_client
        self._client = shared if shared is not None else open_client(cfg)
        await self.start_task(self._host_drains)
        await self._toolset.start_cacheable(cfg.tool_start_timeout)

    async def _host_drains(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Hold the nursery the drains run in, until :meth:`_stop_drains`."""
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as drains:
                watch = StallWatch()
                await drains.start(watch.run)
                self._drains, self._drains_scope, self._watch = Drains(drains), scope, watch
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    self._drains = self._watch = None

    def _stop_drains(self) -> None:
        scope, self._drains_scope, self._drains = self._drains_scope, None, None
        self._watch = None
        if scope is not None:
            scope.cancel()

    async def on_stop(self, frame: EndFrame) -> None:
        self._stop_drains()
        try:
            await self._toolset.stop_all(self.handler.config.tool_stop_timeout)
        finally:
            await self._close_client()

    async def on_cancel(self, frame: CancelFrame) -> None:
        # The base class calls this once the cancelled calls have unwound; the tools release
        # what the calls used, bounded, and the client is closed whatever happens.
        self._stop_drains()
        try:
            await self._toolset.cancel_all(self.cancel_timeout / 2)
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
                await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and self.handler.http_client is None:  # our own
            await client.aclose()

    # ------------------------------------------------------------------ handler delegates

    def add_tool(self, tool: BuiltinTool) -> OpenAILLMProcessor:
        """Same as :meth:`OpenAILLMHandler.add_tool`."""
        self.handler.add_tool(tool)
        return self

    def set_transition_hook(self, hook: TransitionHook | None) -> OpenAILLMProcessor:
        """Same as :meth:`OpenAILLMHandler.set_transition_hook`."""
        self.handler.set_transition_hook(hook)
        return self

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame) and direction is FrameDirection.DOWNSTREAM:
            await self.run_turn(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def run_turn(self, context: LLMContext) -> None:
        """Run one turn on ``context``: stream, run tool rounds, re-invoke, close the turn."""
        # The turn's start needs no task switch of its own (the burst that wants its first
        # frame handled at once is the answer's, armed at its first token): downstream sees
        # it as soon as the request waits on the network.
        self._unyielded = 0
        await self.push_frame(LLMFullResponseStart())
        self.start_processing_metrics()
        # When cancelled (interruption, CancelFrame) nothing below runs: the
        # InterruptionFrame itself closes the turn for every processor downstream.
        try:
            await self._rounds(context)
        except Exception as exc:
            # A failed turn (a transition hook that raised, ...) is still closed, so the
            # aggregators commit and the next turn works.
            message = safe_text(describe(exc), self.handler.config)
            await self.push_error(f"the turn failed: {message}", exception=exc)
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEnd())

    async def _rounds(self, context: LLMContext) -> None:
        """Request, run the tool round the answer asks for, and again, until an answer
        without tool calls, a failure, or the transition hook ends the turn."""
        cfg = self.handler.config
        tool_rounds = 0
        while True:
            final = tool_rounds >= cfg.max_tool_rounds
            answer = await self._request(context, tool_choice="none" if final else None)
            if answer is None or not answer.result.tool_calls:
                return
            if final:
                await self.push_error(
                    f"the model still asked for tools after max_tool_rounds="
                    f"{cfg.max_tool_rounds} and tool_choice='none'; its calls were ignored"
                )
                return
            tool_rounds += 1
            round_ = ToolRound(self, self.handler.registry, self._toolset, cfg)
            await round_.run(context, answer.result, tool_rounds)
            if tool_rounds >= cfg.max_tool_rounds:
                await self.push_error(
                    f"max_tool_rounds={cfg.max_tool_rounds} reached; asking the model for "
                    "a final answer without tools"
                )
            if await self._run_transition_hook(context) is AfterRound.END_TURN:
                return

    async def _run_transition_hook(self, context: LLMContext) -> AfterRound | None:
        hook = self.handler.transition_hook
        if hook is None:
            return None
        result = hook(context)
        if inspect.isawaitable(result):
            result = await result
        if result is not None and not isinstance(result, AfterRound):
            raise TypeError(
                f"the transition hook returned {result!r}; it must return None or an AfterRound"
            )
        return result

    # ------------------------------------------------------------------ one request

    async def _request(self, context: LLMContext, *, tool_choice: Any) -> Answer | None:
        """One request with retries. Returns ``None`` after reporting an error."""
        cfg = self.handler.config
        window = cfg.context_window
        if window is None:
            _warn_no_window(cfg.model)
        else:
            removed = context.trim(window, budget=cfg.trim_budget)
            if removed:
                logger.info("%s: trimmed %d messages to fit the context window", self.name, removed)
        handler = self.handler
        body: dict[str, Any] | bytes
        if type(handler).build_request is OpenAILLMHandler.build_request:
            # Encoded here, once for all attempts, each message of the context once for all
            # the requests that send it (a request no longer re-encodes the conversation).
            body = handler._request_content(context, tool_choice)
        else:  # a subclass builds its own
            body = handler.build_request(context, tool_choice=tool_choice)
        # The request's estimate, uncalibrated (what calibrate() wants): cached per message,
        # so O(1) in the history, where re-estimating the messages sent was O(history).
        sent = context.estimate_tokens(calibrated=False)
        attempt = 0
        while True:
            attempt += 1
            answer = Answer()
            try:
                # (stream_answer is awaited here, not in a helper: every level between the
                # process loop and the socket is passed at each read of the stream)
                client = self._client
                if client is None:
                    raise LLMRequestError(
                        "the LLM client is not open (no StartFrame yet?)", kind="config"
                    )
                self.start_ttfb_metrics()
                await stream_answer(
                    client,
                    cfg,
                    body,
                    answer,
                    emit=self._emit,
                    first_delta=self._first_delta,
                    http_timeouts=self._timeout,
                    drains=self._drains,
                    room=self.downstream_room,
                    watch=self._watch,
                )
            except trio.Cancelled:
                # Interrupted: the usage of this request still counts.
                self._report_usage(answer, context, sent, interrupted=True)
                raise
            except LLMRequestError as exc:
                if exc.retryable and answer.emitted == 0 and attempt < cfg.retry.max_attempts:
                    delay = cfg.retry.delay(attempt, exc.retry_after)
                    logger.info(
                        "%s: attempt %d failed (%s); retrying in %.2fs",
                        self.name,
                        attempt,
                        exc,
                        delay,
                    )
                    await trio.sleep(delay)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                await self.push_error(f"LLM request failed{tries}: {exc}", exception=exc)
                self._report_usage(answer, context, sent, interrupted=False)
                return None
            self._report_usage(answer, context, sent, interrupted=False)
            return await self._check_finish(answer)

    async def _first_delta(self) -> None:
        await self.stop_ttfb_metrics()
        self.yield_on_next_push()  # the first token goes on before the rest of its read

    async def _emit(self, delta: StreamDelta) -> None:
        frame: Frame
        if isinstance(delta, ContentDelta):
            frame = _text(delta.text)
        elif isinstance(delta, ReasoningDelta):
            frame = _reasoning(delta.text)
        else:
            frame = _refusal(delta.text)
        await self.push_frame(frame)

    async def _check_finish(self, answer: Answer) -> Answer | None:
        """Report what is wrong with a finished answer; ``None`` when it is unusable."""
        result = answer.result
        if result.error is not None:
            exc = LLMRequestError(
                safe_text(
                    f"the LLM stream reported an error: {excerpt(result.error.message)}",
                    self.handler.config,
                ),
                kind="stream",
            )
            await self.push_error(str(exc), exception=exc)
            return None
        if not result.done and result.finish_reason is None:
            exc = LLMRequestError(
                "the LLM stream ended before it was complete (no [DONE] and no finish_reason); "
                "the answer may be cut short",
                kind="protocol",
            )
            await self.push_error(str(exc), exception=exc)
            return None
        cut: LLMAnswerCutShort | None = None
        if result.finish_reason == "length":
            cut = LLMAnswerCutShort(
                "the answer was cut off by the token limit (finish_reason 'length'); raise "
                "max_completion_tokens or shorten the context",
                kind="length",
            )
        elif result.finish_reason == "content_filter":
            cut = LLMAnswerCutShort(
                "the answer was stopped by the provider's content filter "
                "(finish_reason 'content_filter')",
                kind="content_filter",
            )
        if cut is not None:
            await self.push_error(str(cut), exception=cut)
        return answer

    def _report_usage(
        self, answer: Answer, context: LLMContext, sent: int, *, interrupted: bool
    ) -> None:
        """Report the request's usage; ``sent`` is its uncalibrated prompt estimate."""
        usage = answer.token_usage()
        if usage is not None and usage.prompt_tokens:
            with contextlib.suppress(ValueError):
                context.calibrate(usage.prompt_tokens, sent)
        if usage is None and interrupted:
            prompt = math.floor(sent * context.calibration_factor + 0.5)
            usage = LLMTokenUsage(
                prompt_tokens=prompt,
                completion_tokens=answer.emitted,
                total_tokens=prompt + answer.emitted,
            )
        if usage is not None:
            model = answer.result.model
            self.push_usage_metrics_nowait(
                usage,
                model=excerpt(model, 100) if model else self.handler.config.model,
                interrupted=interrupted,
            )
