"""A transport that watches every HTTP request of the bench on the wire.

The pipeline's OpenAI handler and the raw streams share one ``httpx.AsyncClient`` whose
transport is a :class:`WireTap` around httpx's own. Each bench request marks its HTTP
requests with a header (removed before anything is sent), so the tap can tell, for either
path alike, whether a response was open and when its connection was closed: that is how the
time from an interruption to the connection closing is measured, and how the pipeline's
failures are told apart (an HTTP status, no connection, a stream that broke).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import httpx
import trio

__all__ = ["REQUEST_HEADER", "WireExchange", "WireLog", "WireTap"]

REQUEST_HEADER = "x-rustvani-bench-request"
"""Names the bench request an HTTP request belongs to; the tap removes it before sending."""


@attrs.define(eq=False)
class WireExchange:
    """One HTTP request on the wire."""

    sent: float
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
    def __init__(self, inner: httpx.AsyncByteStream, exchange: WireExchange) -> None:
        self._inner = inner
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
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
    """Wraps ``inner``; records each request marked with :data:`REQUEST_HEADER` in ``log``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, log: WireLog) -> None:
        self._inner = inner
        self.log = log

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request_id = request.headers.pop(REQUEST_HEADER, None)
        if request_id is None:
            return await self._inner.handle_async_request(request)
        exchange = WireExchange(sent=trio.current_time())
        self.log._add(request_id, exchange)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            exchange.failure = type(exc).__name__
            _close(exchange)
            raise
        exchange.status = response.status_code
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _TappedStream(response.stream, exchange)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
