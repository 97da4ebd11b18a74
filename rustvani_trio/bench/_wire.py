"""A transport that watches every HTTP request of the bench on the wire.

The pipeline's OpenAI handler and the raw streams share one ``httpx.AsyncClient`` whose
transport is a :class:`WireTap` around httpx's own. Each bench request marks its HTTP
requests with a header (removed before anything is sent), so the tap can tell, for either
path alike, whether a response was open and when its connection was closed: that is how the
time from an interruption to the connection closing is measured, and how the pipeline's
failures are told apart (an HTTP status, no connection, a stream that broke).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import attrs
import httpx
import trio

from ..exceptions import RustvaniError

__all__ = [
    "REQUEST_HEADER",
    "ResponseLimitExceeded",
    "StreamLimits",
    "WireExchange",
    "WireLog",
    "WireTap",
]

REQUEST_HEADER = "x-rustvani-bench-request"
"""Names the bench request an HTTP request belongs to; the tap removes it before sending."""


class ResponseLimitExceeded(RustvaniError, httpx.TransportError):
    """A response body went past the bench's limits (an endless line, or far more lines than
    the request's token limit allows); the bench stopped reading it. Both paths see it as a
    broken stream."""


@attrs.frozen
class StreamLimits:
    """How much of one response body the bench reads before it gives up on it.

    ``max_line_bytes`` bounds the memory an endless SSE line takes; ``max_lines`` (non-empty
    lines: ``data:``, comments ...) ends a stream that ignores the token limit or never ends.
    """

    max_line_bytes: int = 8 * 1024 * 1024
    max_lines: int | None = None
    token_limit: int | None = None

    @classmethod
    def for_tokens(cls, limit: int, *, max_line_bytes: int = 8 * 1024 * 1024) -> StreamLimits:
        """Room for ``limit`` tokens with up to four lines each (one per token is the rule)."""
        return cls(max_line_bytes=max_line_bytes, max_lines=4 * limit + 64, token_limit=limit)


_NEWLINE = re.compile(rb"\r\n|\r|\n")


class _LineCounter:
    """Counts the lines of a body as its bytes arrive; raises when past the limits."""

    def __init__(self, limits: StreamLimits) -> None:
        self._limits = limits
        self._line = 0  # bytes of the current line so far
        self._lines = 0  # non-empty lines ended so far

    def feed(self, chunk: bytes) -> None:
        limits = self._limits
        for n, piece in enumerate(_NEWLINE.split(chunk)):
            if n:
                self._lines += self._line > 0
                self._line = 0
                if limits.max_lines is not None and self._lines > limits.max_lines:
                    raise ResponseLimitExceeded(
                        f"the response went past {limits.max_lines} lines for a request "
                        f"allowing {limits.token_limit} output tokens: the server ignores the "
                        "token limit or never ends its stream; the bench stopped reading it"
                    )
            self._line += len(piece)
            if self._line > limits.max_line_bytes:
                raise ResponseLimitExceeded(
                    f"a line of the response went past {limits.max_line_bytes} bytes; the "
                    "bench stopped reading it"
                )


@attrs.define(eq=False)
class WireExchange:
    """One HTTP request on the wire."""

    sent: float
    content_type: str | None = None
    last_activity: float = 0.0
    """When bytes last moved (the request sent, a piece of the body received)."""
    status: int | None = None
    completed: bool = False
    """The response body was read to its end."""
    failure: str | None = None
    """The exception type when the transport failed (no response, or a broken body)."""
    closed_at: float | None = None
    closed: trio.Event = attrs.Factory(trio.Event)


class WireLog:
    """The exchanges of each bench request, by its id."""

    def __init__(self) -> None:
        self._exchanges: dict[str, list[WireExchange]] = {}

    def exchanges(self, request_id: str) -> list[WireExchange]:
        """The request's exchanges so far, in the order they were sent."""
        return list(self._exchanges.get(request_id, ()))

    def last_activity(self, request_id: str) -> float | None:
        """When bytes of the request's exchanges last moved (``None`` before any)."""
        times = [x.last_activity for x in self._exchanges.get(request_id, ())]
        return max(times) if times else None

    def open_exchanges(self, request_id: str) -> list[WireExchange]:
        """The request's exchanges whose connection is not closed yet."""
        return [x for x in self._exchanges.get(request_id, ()) if x.closed_at is None]

    def forget(self, request_id: str) -> None:
        self._exchanges.pop(request_id, None)

    def _add(self, request_id: str, exchange: WireExchange) -> None:
        self._exchanges.setdefault(request_id, []).append(exchange)


def _close(exchange: WireExchange) -> None:
    if exchange.closed_at is None:
        exchange.closed_at = trio.current_time()
        exchange.closed.set()


class _TappedStream(httpx.AsyncByteStream):
    def __init__(
        self, inner: httpx.AsyncByteStream, exchange: WireExchange, limits: StreamLimits
    ) -> None:
        self._inner = inner
        self._exchange = exchange
        self._lines = _LineCounter(limits)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._exchange.last_activity = trio.current_time()
                self._lines.feed(chunk)
                yield chunk
        except httpx.TransportError as exc:
            self._exchange.failure = type(exc).__name__
            raise
        self._exchange.completed = True

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            _close(self._exchange)


class WireTap(httpx.AsyncBaseTransport):
    """Wraps ``inner``; records each request marked with :data:`REQUEST_HEADER` in ``log``
    and reads no more of its response than ``limits`` allow."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        log: WireLog,
        limits: StreamLimits | None = None,
    ) -> None:
        self._inner = inner
        self.log = log
        self.limits = limits or StreamLimits()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request_id = request.headers.pop(REQUEST_HEADER, None)
        if request_id is None:
            return await self._inner.handle_async_request(request)
        now = trio.current_time()
        exchange = WireExchange(sent=now, last_activity=now)
        self.log._add(request_id, exchange)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            exchange.failure = type(exc).__name__
            _close(exchange)
            raise
        exchange.status = response.status_code
        exchange.content_type = response.headers.get("content-type", "")
        exchange.last_activity = trio.current_time()
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _TappedStream(response.stream, exchange, self.limits)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
