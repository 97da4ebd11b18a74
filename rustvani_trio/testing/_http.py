"""Private HTTP/1.1 plumbing for the scripted server: h11 over one trio stream.

An :class:`HttpConnection` owns one accepted connection. A *reader* task
(:meth:`HttpConnection.run_reader`) receives bytes for as long as the connection lives and feeds
them to the h11 state machine, so that a client closing its end is seen at once, even while
the handler is sleeping between two tokens or stalling: the reader then cancels every scope
opened with :meth:`HttpConnection.watch_disconnect`.

Streamed bodies are written with a fast path that frames ``Transfer-Encoding: chunked`` chunks
directly (h11 keeps no per-chunk state for chunked bodies), which saves a few microseconds per
token; everything else goes through h11.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from http import HTTPStatus
from typing import Final

import attrs
import h11
import trio

__all__ = ["MAX_BODY_SIZE", "HttpConnection", "IncomingRequest", "only_client_errors"]

_RECEIVE_SIZE = 65536
_MAX_HEADER_SIZE = 64 * 1024
MAX_BODY_SIZE = 32 * 1024 * 1024
"""The largest request body the server reads (a larger one gets HTTP 413)."""
_READ_AHEAD = MAX_BODY_SIZE + 2 * _MAX_HEADER_SIZE
"""How much a client may send ahead while a response is played (pipelined requests): one
request of the largest size; beyond it the connection is closed (h11 would buffer it all)."""


@attrs.define(eq=False)
class IncomingRequest:
    """One complete HTTP request, headers and body."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str


_CLIENT_ERRORS: Final = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.RemoteProtocolError,
    OSError,
)


def only_client_errors(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception in a group) is a client's doing: a reset, a
    closed connection, a protocol error."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only_client_errors(inner) for inner in exc.exceptions)
    return isinstance(exc, _CLIENT_ERRORS)


@cache
def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _too_large() -> h11.RemoteProtocolError:
    return h11.RemoteProtocolError(
        f"the request body is larger than {MAX_BODY_SIZE:,} bytes", error_status_hint=413
    )


def _check_framing(request: h11.Request) -> None:
    """Refuse what h11 accepts but a test server should not guess at."""
    names = [name for name, _ in request.headers]
    if b"content-length" in names and b"transfer-encoding" in names:
        # h11 follows Transfer-Encoding (RFC 9112 allows it); the two disagreeing is a sign
        # of a broken client (or request smuggling), and the body could wait forever.
        raise h11.RemoteProtocolError(
            "the request has both Content-Length and Transfer-Encoding", error_status_hint=400
        )
    for name, value in request.headers:
        if name == b"content-length" and int(value) > MAX_BODY_SIZE:
            raise _too_large()


def _new_h11() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_SIZE)


@attrs.define(eq=False)
class HttpConnection:
    """One server-side HTTP/1.1 connection (keep-alive aware) over a trio stream."""

    stream: trio.abc.Stream
    machine: h11.Connection = attrs.field(factory=_new_h11)
    peer_closed: bool = attrs.field(default=False, init=False)
    """True once the client closed (or reset) its end of the connection."""
    _data_arrived: trio.Event = attrs.field(factory=trio.Event, init=False)
    _watchers: set[trio.CancelScope] = attrs.field(factory=set, init=False)
    _chunked: bool = attrs.field(default=False, init=False)
    _head: bool = attrs.field(default=False, init=False)
    _read_ahead: int = attrs.field(default=0, init=False)
    """Bytes received since the last request was read (h11 buffers them)."""
    _reading: bool = attrs.field(default=False, init=False)
    """True while :meth:`next_request` runs (what arrives then is being read)."""
    flooded: bool = attrs.field(default=False, init=False)
    """True when the client sent too much ahead and the connection was given up."""

    async def run_reader(self) -> None:
        """Feed received bytes to h11 until EOF; on EOF cancel the watched scopes.

        Runs for the whole life of the connection, next to the request handler. A
        :class:`trio.ClosedResourceError` means that *we* closed the stream (a scripted drop
        or the end of the connection): that is not a client disconnect.

        While a response is played, what arrives is buffered by h11 (pipelined requests): a
        client that sends more than one request of the largest size ahead is treated as gone
        (:attr:`flooded`), so that the buffer stays bounded.
        """
        while True:
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except trio.ClosedResourceError:
                return
            except trio.BrokenResourceError:
                data = b""
            self._read_ahead += len(data)
            if self._read_ahead > _READ_AHEAD and not self._reading:
                self.flooded = True
                data = b""
            if not data:
                self.peer_closed = True
                self.machine.receive_data(b"")
                for scope in self._watchers:
                    scope.cancel()
                self._data_arrived.set()
                return
            self.machine.receive_data(bytes(data))
            self._data_arrived.set()

    @contextmanager
    def watch_disconnect(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that is cancelled as soon as the client closes the connection."""
        with trio.CancelScope() as scope:
            if self.peer_closed:
                scope.cancel()
            self._watchers.add(scope)
            try:
                yield scope
            finally:
                self._watchers.discard(scope)

    async def next_request(self) -> IncomingRequest | None:
        """Read the next complete request; ``None`` when the client closed the connection.

        Raises :class:`h11.RemoteProtocolError` on a malformed (or truncated) request.
        """
        self._reading = True
        self._read_ahead = 0
        try:
            return await self._read_request()
        finally:
            self._reading = False
            self._read_ahead = 0

    async def _read_request(self) -> IncomingRequest | None:
        request: h11.Request | None = None
        body = bytearray()
        sent_100 = False
        while True:
            event = self.machine.next_event()
            if event is h11.NEED_DATA:
                if (
                    request is not None
                    and not sent_100
                    and self.machine.they_are_waiting_for_100_continue
                ):
                    sent_100 = True
                    await self.send(
                        h11.InformationalResponse(status_code=100, headers=[], reason=_reason(100))
                    )
                self._data_arrived = trio.Event()
                await self._data_arrived.wait()
            elif isinstance(event, h11.Request):
                request = event
                self._head = event.method == b"HEAD"
                _check_framing(event)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_SIZE:
                    raise _too_large()
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return IncomingRequest(
                    method=request.method.decode("ascii", "replace"),
                    target=request.target.decode("utf-8", "replace"),
                    headers=[
                        (name.decode("latin-1").lower(), value.decode("latin-1"))
                        for name, value in request.headers
                    ],
                    body=bytes(body),
                    http_version=request.http_version.decode("ascii", "replace"),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # PAUSED cannot happen: the caller starts the next cycle first.
                raise h11.RemoteProtocolError(f"unexpected event {event!r}")

    def can_keep_alive(self) -> bool:
        """Start the next request/response cycle if both sides allow it."""
        if self.machine.our_state is h11.DONE and self.machine.their_state is h11.DONE:
            self.machine.start_next_cycle()
            return True
        return False

    def can_send_response(self) -> bool:
        """True while no response has been started for the current request."""
        return self.machine.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def send(self, *events: h11.Event) -> None:
        """Serialize ``events`` with h11 and write them in one ``send_all``."""
        out = bytearray()
        for event in events:
            data = self.machine.send(event)
            if data:
                out += data
        if out:
            await self.stream.send_all(out)

    async def start_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], *, chunked: bool
    ) -> None:
        """Send the status line and headers; ``chunked`` announces a streamed body."""
        if chunked:
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        await self.send(
            h11.Response(status_code=status, headers=list(headers), reason=_reason(status))
        )
        # h11 keeps chunked framing only for HTTP/1.1 peers (1.0 gets a close-delimited body).
        self._chunked = chunked and self.machine.their_http_version == b"1.1"

    def frame(self, data: bytes) -> bytes:
        """Frame one piece of a streamed body (``b""`` for empty data)."""
        if not data:
            return b""
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return self.machine.send(h11.Data(data=data)) or b""

    async def send_body(self, data: bytes) -> None:
        """Write one piece of the response body (a chunk when the body is chunked)."""
        framed = self.frame(data)
        if framed:
            await self.stream.send_all(framed)

    async def end_body(self, last: bytes = b"") -> None:
        """Write ``last`` (if any) and the end of the body, in one ``send_all``."""
        framed = self.frame(last)  # before EndOfMessage: h11 frames a 1.0 body itself
        end = self.machine.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(framed + end)

    async def send_full(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Send a complete response with a ``Content-Length`` body."""
        response = h11.Response(
            status_code=status,
            headers=[*headers, (b"content-length", str(len(body)).encode("ascii"))],
            reason=_reason(status),
        )
        if self._head:  # a HEAD response announces the body but carries none
            await self.send(response, h11.EndOfMessage())
        else:
            await self.send(response, h11.Data(data=body), h11.EndOfMessage())

    async def abort(self) -> None:
        """Close the connection abruptly (no end of body, no further responses)."""
        await trio.aclose_forcefully(self.stream)
