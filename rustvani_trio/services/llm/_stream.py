"""One streaming request: send it, check the status, decode the events, emit each delta.

:func:`stream_answer` knows nothing of processors: it takes an ``emit`` callable for the deltas,
so it can be driven (and tested) alone. Its deadlines live in one cancel scope per request:
``first_token_timeout`` until the first delta, then ``chunk_timeout`` of silence, lifted while
deltas are being emitted (waiting on our own backpressure is never taken for a stalled server).
httpx's read timeout is off; connect, write and pool timeouts are ``connect_timeout``.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import certifi
import httpx
import trio

from ...frames import LLMTokenUsage
from ._chat_decoder import ChatStreamDecoder
from ._chat_types import StreamDelta, StreamResult
from ._config import OpenAILLMConfig
from ._errors import LLMRequestError, map_exceptions, status_error
from ._sse import SSEProtocolError

__all__ = ["Answer", "open_client", "request_timeout", "stream_answer"]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) costs tens of ms of
    CPU, which per conversation would dominate a server handling many."""
    return ssl.create_default_context(cafile=certifi.where())


def request_timeout(cfg: OpenAILLMConfig) -> httpx.Timeout:
    """httpx's timeouts for one request: reads have none (the stream's own deadlines apply)."""
    return httpx.Timeout(
        connect=cfg.connect_timeout, read=None, write=cfg.connect_timeout, pool=cfg.connect_timeout
    )


def open_client(cfg: OpenAILLMConfig) -> httpx.AsyncClient:
    """A client of one processor's own (close it with ``aclose``)."""
    return httpx.AsyncClient(timeout=request_timeout(cfg), verify=_ssl_context())


@attrs.define
class Answer:
    """What one request produced: the decoder (whose ``result`` accumulates the answer) and the
    number of content, reasoning and refusal deltas emitted."""

    decoder: ChatStreamDecoder = attrs.Factory(ChatStreamDecoder)
    emitted: int = 0

    @property
    def result(self) -> StreamResult:
        """Everything accumulated so far."""
        return self.decoder.result

    def token_usage(self) -> LLMTokenUsage | None:
        """The usage chunk's counts, or ``None`` when the server sent none."""
        data = self.result.usage
        if not isinstance(data, Mapping):
            return None
        prompt = _count(data.get("prompt_tokens"))
        completion = _count(data.get("completion_tokens"))
        total = _count(data.get("total_tokens")) or prompt + completion
        cached = reasoning = None
        pdetails = data.get("prompt_tokens_details")
        if isinstance(pdetails, Mapping) and isinstance(pdetails.get("cached_tokens"), int):
            cached = pdetails["cached_tokens"]
        elif isinstance(data.get("prompt_cache_hit_tokens"), int):
            cached = data["prompt_cache_hit_tokens"]
        cdetails = data.get("completion_tokens_details")
        if isinstance(cdetails, Mapping) and isinstance(cdetails.get("reasoning_tokens"), int):
            reasoning = cdetails["reasoning_tokens"]
        return LLMTokenUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
        )


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


async def stream_answer(
    client: httpx.AsyncClient,
    cfg: OpenAILLMConfig,
    body: dict[str, Any],
    answer: Answer,
    *,
    emit: Callable[[StreamDelta], Awaitable[None]],
    first_delta: Callable[[], Awaitable[object]],
    http_timeouts: httpx.Timeout,
) -> None:
    """Send ``body`` and stream the answer into ``answer``, calling ``emit`` per delta and
    ``first_delta`` once, when the first delta (or tool-call data) arrives.

    Raises :class:`LLMRequestError` for a failed request (``retryable`` says whether another
    attempt may help). A complete answer, or one the server cut short, returns normally:
    judging it is the caller's business.
    """
    decoder = answer.decoder
    # Until the first delta the deadline is first_token_timeout; after it, chunk_timeout
    # of silence between two chunks (time spent emitting under backpressure excluded).
    scope = trio.CancelScope(deadline=trio.current_time() + cfg.first_token_timeout)
    streaming = False
    try:
        with scope, map_exceptions(cfg):
            async with client.stream(
                "POST",
                cfg.chat_completions_url(),
                json=body,
                headers=cfg.headers(),
                params=dict(cfg.extra_query) or None,
                timeout=http_timeouts,
            ) as response:
                if response.status_code != 200:
                    raw = await response.aread()
                    raise status_error(response.status_code, raw, response.headers, cfg)
                chunks = response.aiter_bytes()
                async for chunk in chunks:
                    deltas = decoder.feed(chunk)
                    if not streaming and (deltas or decoder.result.tool_calls):
                        streaming = True
                        await first_delta()
                    if streaming:
                        scope.deadline = math.inf
                    for delta in deltas:
                        answer.emitted += 1
                        await emit(delta)
                    if streaming:
                        scope.deadline = trio.current_time() + cfg.chunk_timeout
                    if decoder.result.done:
                        # Read the end of the body (the terminating chunk) so that the
                        # keep-alive connection goes back to the pool; bounded, for servers
                        # that keep the stream open after [DONE].
                        with trio.move_on_after(1.0):
                            async for _rest in chunks:
                                pass
                        break
                scope.deadline = math.inf  # the stream is over: no stall from here on
                for delta in decoder.close():
                    answer.emitted += 1
                    await emit(delta)
    except SSEProtocolError as exc:  # a chunk that is not JSON
        raise LLMRequestError(f"the server sent an invalid stream: {exc}") from exc
    if scope.cancelled_caught and streaming:
        raise LLMRequestError(
            f"no data from the server for {cfg.chunk_timeout}s (chunk_timeout); the stream stalled",
            retryable=True,
        )
    if scope.cancelled_caught:
        raise LLMRequestError(
            f"no first token within first_token_timeout={cfg.first_token_timeout}s",
            retryable=True,
        )
