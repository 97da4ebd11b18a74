"""One streaming request: send it, check what came back, decode the events, emit each delta.

:func:`stream_answer` knows nothing of processors: it takes an ``emit`` callable for the deltas,
so it can be driven (and tested) alone. Its deadlines live in one cancel scope per request:

* ``first_token_timeout`` from sending the request until the first event with content or
  tool-call data;
* then ``chunk_timeout`` from the last such event: keep-alive comments, empty deltas or a byte
  now and then do not count as progress; once the ``finish_reason`` arrived, at most
  :data:`FINISH_GRACE_SECONDS` (only the usage chunk and ``[DONE]`` are left to come, and the
  answer stands without them);
* ``request_timeout`` for the whole request.

Time spent emitting (waiting on the pipeline's backpressure) is excluded from all three, and
httpx's read timeout is off; connect, write and pool timeouts are ``connect_timeout``.

What came back is checked first (:mod:`._body`): an error status, or a body that is no event
stream, is an :class:`LLMRequestError` with the server's message. The answer is released the
moment ``[DONE]`` (or an error event) arrives. The rest of the body (normally just the end of
the chunked encoding) is read in ``drains`` (:class:`~._body.Drains`, whose nursery outlives
the turn), so that the connection can go back to the pool; that read is bounded, a failure in
it only means that the connection is not reused, and no request waits for it: a request gives
the running drains a few scheduling rounds (no time) and then takes another connection.

An answer longer than ``max_answer_chars`` (text, reasoning, refusal and tool calls together)
is cut there: the rest is not read, the connection is closed, and the request fails with a
``protocol`` error; what was emitted stays emitted.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import certifi
import httpx
import trio

from ..._text import excerpt, redact_url
from ...frames import LLMTokenUsage
from ._body import DRAIN_SECONDS, Body, Drains, check_response
from ._chat_decoder import ChatStreamDecoder
from ._chat_types import StreamDelta, StreamResult
from ._config import OpenAILLMConfig, base_url_problem
from ._errors import LLMRequestError, map_exceptions, safe_text
from ._sse import SSEProtocolError

__all__ = [
    "DRAIN_SECONDS",
    "FINISH_GRACE_SECONDS",
    "Answer",
    "StallWatch",
    "http_timeouts",
    "open_client",
    "stream_answer",
]

logger = logging.getLogger("rustvani_trio")

#: Once the ``finish_reason`` arrived, how long the rest (the usage chunk, ``[DONE]``) may
#: keep the answer waiting without an event that carries data.
FINISH_GRACE_SECONDS: Final = 1.0


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) costs tens of ms of
    CPU, which per conversation would dominate a server handling many."""
    return ssl.create_default_context(cafile=certifi.where())


def http_timeouts(cfg: OpenAILLMConfig) -> httpx.Timeout:
    """httpx's timeouts for one request: reads have none (the stream's own deadlines apply)."""
    return httpx.Timeout(
        connect=cfg.connect_timeout, read=None, write=cfg.connect_timeout, pool=cfg.connect_timeout
    )


def open_client(cfg: OpenAILLMConfig) -> httpx.AsyncClient:
    """A client of one processor's own (close it with ``aclose``)."""
    return httpx.AsyncClient(timeout=http_timeouts(cfg), verify=_ssl_context())


@attrs.define
class Answer:
    """What one request produced: the decoder (whose ``result`` accumulates the answer) and the
    number of content, reasoning and refusal deltas emitted."""

    decoder: ChatStreamDecoder = attrs.Factory(ChatStreamDecoder)
    emitted: int = 0

    @property
    def result(self) -> StreamResult:
        """Everything accumulated so far (joins the pieces: read it once the stream is over)."""
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


class StallWatch:
    """Cancels a streaming request's scope once it went ``chunk_timeout`` without progress:
    exactly then, as a deadline moved at every progress event would, but for an attribute
    write per event (moving a ``CancelScope``'s deadline costs about a tenth of what a token
    costs in all) and one deadline write per ``chunk_timeout`` of streaming.

    :meth:`run` is its task (one per processor; its requests are sequential). A request arms
    it with :meth:`arm`, then moves :attr:`due` (``math.inf`` while it waits on the pipeline:
    that is no stall) and calls :meth:`wake` when the new due time is before :attr:`until`,
    the time the task wakes at anyway (it then looks at :attr:`due` again).
    """

    __slots__ = ("_lot", "_sleep", "alive", "due", "target", "until")

    def __init__(self) -> None:
        self.target: trio.CancelScope | None = None  # the armed request's scope
        self.due = math.inf  # when that request stalls (last progress + chunk_timeout)
        self.until = math.inf  # when the task wakes (inf: it is parked)
        self._sleep: trio.CancelScope | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self.alive = False  # whether run() runs (without it, requests move their deadline)

    def arm(self, scope: trio.CancelScope, due: float) -> None:
        self.target = scope
        self.due = due
        if due < self.until:
            self.wake(due)

    def disarm(self) -> None:
        self.target = None
        self.due = math.inf  # the task goes back to sleep when it next wakes

    def wake(self, due: float) -> None:
        """Make the task look at :attr:`due` by ``due`` (a slow path: a request armed it, a
        wait on the pipeline ended, or the time allowed got shorter)."""
        self.until = due
        if self._sleep is not None:
            self._sleep.deadline = due
        else:
            self._lot.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.alive = True
        task_status.started()
        try:
            while True:
                due = self.due
                if due == math.inf:
                    self.until = math.inf
                    await self._lot.park()
                elif trio.current_time() >= due:
                    target, self.target, self.due = self.target, None, math.inf
                    if target is not None:
                        target.cancel()
                else:
                    self.until = due
                    with trio.CancelScope(deadline=due) as self._sleep:
                        await trio.sleep_forever()
                    self._sleep = None
        finally:
            self.alive = False
            self._sleep = None
            self.until = math.inf


async def stream_answer(
    client: httpx.AsyncClient,
    cfg: OpenAILLMConfig,
    body: dict[str, Any] | bytes,
    answer: Answer,
    *,
    emit: Callable[[StreamDelta], Awaitable[None]],
    first_delta: Callable[[], Awaitable[object]],
    http_timeouts: httpx.Timeout,
    drains: Drains | None = None,
    room: Callable[[], float] | None = None,
    watch: StallWatch | None = None,
) -> None:
    """Send ``body`` (a JSON object, or one already encoded) and stream the answer into
    ``answer``, calling ``emit`` per delta and ``first_delta`` once, when the first content or
    tool-call data arrives.

    Raises :class:`LLMRequestError` for a failed request (``retryable`` says whether another
    attempt may help). A complete answer, one that reported an error, or one the server cut
    short returns normally: judging it is the caller's business. With ``drains``, the end of a
    finished body is read there so that its connection is reused; without, it is closed. An
    answer past ``cfg.max_answer_chars`` raises (not retryable) once the deltas within the
    limit were emitted. ``room`` says how many deltas ``emit`` takes without waiting (the
    pipeline's room); without it every emission is treated as one that may wait. With
    ``watch`` (whose task runs), stalls are watched there instead of by moving this request's
    deadline at every progress event.
    """
    decoder = answer.decoder
    decoder.max_answer_chars = cfg.max_answer_chars
    if watch is not None and not watch.alive:
        watch = None
    clock = trio.lowlevel.current_clock().current_time  # (trio.current_time, a layer less)
    start = clock()
    total = start + cfg.request_timeout if cfg.request_timeout is not None else math.inf
    scope = trio.CancelScope(deadline=min(total, start + cfg.first_token_timeout))
    chunk_timeout = cfg.chunk_timeout
    streaming = False
    with scope, map_exceptions(cfg):
        problem = base_url_problem(cfg.base_url)
        if problem is not None:
            raise LLMRequestError(
                f"invalid base_url {excerpt(redact_url(cfg.base_url), 200)!r}: {problem}; it "
                "should look like 'https://api.openai.com/v1'",
                kind="config",
            )
        headers = cfg.headers()
        payload: dict[str, Any] = {"json": body}
        if isinstance(body, bytes):  # already encoded (JSON)
            payload = {"content": body}
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        request = client.build_request(
            "POST",
            cfg.request_url(),
            headers=headers,
            params=dict(cfg.extra_query) or None,
            timeout=http_timeouts,
            **payload,
        )
        if drains is not None:
            await drains.settle()
        stream = Body(await client.send(request, stream=True))
        handed_off = False
        try:
            await check_response(stream, cfg)
            progress = 0
            finishing = False
            # The head read by check_response first, then the rest (the loop awaits the
            # byte stream itself: an async generator layer per read is a tenth of a token).
            chunk = stream.take_head()
            next_chunk = stream.next_chunk
            try:
                while True:
                    if not chunk:
                        try:
                            chunk = await next_chunk()
                        except StopAsyncIteration:
                            break
                    deltas = decoder.feed(chunk)
                    chunk = b""
                    if decoder.progress != progress:
                        progress = decoder.progress
                        if streaming and (
                            not deltas or (room is not None and room() >= len(deltas))
                        ):
                            # Tool-call data, or deltas the pipeline takes without waiting.
                            for delta in deltas:
                                answer.emitted += 1
                                await emit(delta)
                            if watch is None:
                                scope.deadline = min(total, clock() + chunk_timeout)
                            else:
                                due = clock() + chunk_timeout
                                watch.due = due
                                if due < watch.until:
                                    watch.wake(due)
                        else:
                            now = clock()
                            scope.deadline = math.inf  # our own backpressure is no stall
                            if watch is not None:
                                watch.due = math.inf
                            if not streaming:
                                streaming = True
                                await first_delta()
                            for delta in deltas:
                                answer.emitted += 1
                                await emit(delta)
                            later = clock()
                            total += later - now
                            if watch is None:
                                scope.deadline = min(total, later + chunk_timeout)
                            else:
                                scope.deadline = total
                                watch.arm(scope, later + chunk_timeout)
                    if decoder.ended:
                        break
                    if decoder.finished and not finishing:
                        # The finish_reason arrived: only usage and [DONE] are left to come.
                        finishing = True
                        chunk_timeout = min(chunk_timeout, FINISH_GRACE_SECONDS)
                        scope.deadline = min(scope.deadline, trio.current_time() + chunk_timeout)
                if not decoder.ended:
                    scope.deadline = math.inf  # the body is over: no stall from here on
                    if watch is not None:
                        watch.disarm()
                    for delta in decoder.close():
                        answer.emitted += 1
                        await emit(delta)
            except (httpx.TransportError, httpx.DecodingError) as exc:
                if not decoder.is_complete:
                    raise
                # The finish_reason arrived: the answer stands without [DONE].
                logger.debug("the stream broke after its finish_reason: %s", type(exc).__name__)
            if decoder.over_limit:
                raise _too_long_error(cfg)
            if decoder.done and drains is not None:
                drains.start(stream)
                handed_off = True
        except SSEProtocolError as exc:
            raise LLMRequestError(
                safe_text(f"the server sent an invalid stream: {exc}", cfg), kind="protocol"
            ) from exc
        except httpx.RequestError as exc:
            _attach(exc, request)
            raise
        finally:
            if watch is not None:
                watch.disarm()
            if not handed_off:
                await stream.aclose()
    if scope.cancelled_caught and not decoder.is_complete:
        raise _timeout_error(cfg, streaming=streaming, total_passed=trio.current_time() >= total)


def _attach(exc: httpx.RequestError, request: httpx.Request) -> None:
    """Give an error raised while the body was read its request, as httpx's own iterators do
    (the body is read from the transport's stream, past them)."""
    try:
        exc.request  # noqa: B018 (a property that raises when no request was set)
    except RuntimeError:
        exc.request = request


def _too_long_error(cfg: OpenAILLMConfig) -> LLMRequestError:
    return LLMRequestError(
        f"the answer went past max_answer_chars={cfg.max_answer_chars} characters (text, "
        "reasoning and tool calls together); the rest was not read and the connection was "
        "closed. What was already streamed stays; tool calls of this answer were not run. "
        "Raise OpenAILLMConfig(max_answer_chars=...) if answers this long are expected",
        kind="protocol",
    )


def _timeout_error(cfg: OpenAILLMConfig, *, streaming: bool, total_passed: bool) -> LLMRequestError:
    if total_passed:
        return LLMRequestError(
            f"the request took longer than request_timeout={cfg.request_timeout}s",
            kind="timeout",
        )
    if streaming:
        return LLMRequestError(
            f"no content from the server for {cfg.chunk_timeout}s (chunk_timeout); "
            "the stream stalled",
            kind="timeout",
            retryable=True,
        )
    return LLMRequestError(
        f"no first token within first_token_timeout={cfg.first_token_timeout}s",
        kind="timeout",
        retryable=True,
    )
