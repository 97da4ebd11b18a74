"""The pipeline path: ``LLMUserAggregator -> OpenAILLMProcessor -> sink`` in a PipelineTask.

One pipeline runs one request (a conversation's turn): it is started before the request's
clock starts, and ended after the turn. The sink timestamps every output frame as it arrives
at the end of the pipeline, which is what a real-time agent's next stage (a TTS, a socket)
would see.
"""

from __future__ import annotations

import trio

from ..frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallStart,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMReasoningText,
    LLMRefusalText,
    LLMText,
    LLMUsageMetricsData,
    MetricsFrame,
)
from ..processor import FrameProcessor
from ..services.llm.openai import LLMRequestError
from ._raw import not_a_stream
from ._records import ErrorInfo, Redactor, RequestRecord, clip
from ._wire import WireExchange

__all__ = ["BenchSink", "classify_error_frame"]

_DOWN = FrameDirection.DOWNSTREAM
_OUTPUT = (LLMText, LLMReasoningText, LLMRefusalText)
# The handler reports an answer cut by the token limit (or a content filter) as a non-fatal
# error although the request completed: with --max-tokens that is the expected outcome.
_BENIGN = ("(finish_reason 'length')", "(finish_reason 'content_filter')")


class BenchSink(FrameProcessor):
    """The end of the benchmarked pipeline: timestamps output frames and swallows them,
    records usage and the tool round, and says when the turn is over."""

    def __init__(self, record: RequestRecord) -> None:
        super().__init__(name=f"BenchSink#{record.index}")
        self.record = record
        self.turn_over = trio.Event()
        self.last_activity = trio.current_time()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.last_activity = trio.current_time()
        if direction is _DOWN:
            record = self.record
            if isinstance(frame, _OUTPUT):
                record.token_times.append(trio.current_time())
                return
            if isinstance(frame, FunctionCallStart):
                if record.tool_call_at is None:
                    record.tool_call_at = trio.current_time()
                record.precall_tokens += len(record.token_times)
                record.token_times.clear()  # the answer's tokens come after the tool round
            elif isinstance(frame, MetricsFrame):
                for data in frame.data:
                    if isinstance(data, LLMUsageMetricsData) and not data.interrupted:
                        usage = data.value
                        record.take_usage(usage.completion_tokens, usage.prompt_tokens)
            elif isinstance(frame, LLMFullResponseEnd):
                record.end = trio.current_time()
                self.turn_over.set()
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.turn_over.set()

    async def on_stop(self, frame: EndFrame) -> None:
        self.turn_over.set()


def classify_error_frame(
    frame: ErrorFrame, exchanges: list[WireExchange], redact: Redactor
) -> ErrorInfo | None:
    """The failure an ErrorFrame of the pipeline stands for; ``None`` for a benign note (an
    answer cut at the token limit). What happened on the wire decides where the frame alone
    cannot: a transport error before any response is a connection failure, after it a
    broken stream."""
    message = clip(redact(frame.error))
    if any(marker in frame.error for marker in _BENIGN):
        return None
    exc = frame.exception
    responded = any(x.status is not None for x in exchanges)
    for x in exchanges:
        if x.status == 200 and "text/event-stream" not in (x.content_type or ""):
            return ErrorInfo("stream", clip(redact(not_a_stream(x.content_type or ""))))
    if isinstance(exc, LLMRequestError):
        # The handler's own classification decides, not words in a server's message.
        if exc.status is not None or exc.kind == "http":
            return ErrorInfo("http", message, status=exc.status)
        if exc.kind == "timeout":
            return ErrorInfo("timeout", message)
        if exc.kind == "connection":
            return ErrorInfo("stream" if responded else "connection", message)
        if exc.kind in ("protocol", "stream"):
            return ErrorInfo("stream", message)
        return ErrorInfo("other", message)
    if exc is None and responded and "stream" in frame.error.lower():
        return ErrorInfo("stream", message)  # an error event, an unfinished stream
    return ErrorInfo("other", message)
