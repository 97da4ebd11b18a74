"""A minimal WebSocket server on loopback for scripted provider fakes (wsproto over trio).

Written on wsproto directly (not on a server library) so a script controls what real
servers do wrong: reject the handshake with a status and body, close with any code, drop
the TCP connection without a close frame, stop reading (with a small receive buffer, so
the client's sends really block), or go silent.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

__all__ = ["FakeSocket", "ServerHandle", "open_ws_server"]

Message = str | bytes


class _Dropped(Exception):
    """The script dropped or closed the connection."""


@attrs.define(eq=False)
class FakeSocket:
    """One accepted connection, as the script sees it."""

    path: str
    headers: dict[str, str]
    stream: trio.SocketStream
    ws: WSConnection
    received: list[Message] = attrs.Factory(list)
    closed_by_client: tuple[int, str] | None = None
    _inbox: list[Message] = attrs.Factory(list)
    _text: list[str] = attrs.Factory(list)
    _bytes: list[bytes] = attrs.Factory(list)
    _open: bool = True
    _send_lock: trio.Lock = attrs.Factory(trio.Lock)

    @property
    def query(self) -> dict[str, str]:
        """The request's query parameters (last value of each)."""
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    @property
    def is_open(self) -> bool:
        return self._open

    async def receive(self) -> Message | None:
        """The next message from the client, or ``None`` when it closed the connection."""
        while not self._inbox:
            if not self._open:
                return None
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._open = False
                return None
            self.ws.receive_data(data)
            await self._handle_events()
        return self._inbox.pop(0)

    async def receive_json(self) -> dict[str, Any] | None:
        """The next text message parsed as JSON (binary messages are skipped)."""
        while True:
            message = await self.receive()
            if message is None:
                return None
            if isinstance(message, str):
                value: dict[str, Any] = json.loads(message)
                return value

    async def _handle_events(self) -> None:
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    message = "".join(self._text)
                    self._text.clear()
                    self.received.append(message)
                    self._inbox.append(message)
            elif isinstance(event, BytesMessage):
                self._bytes.append(bytes(event.data))
                if event.message_finished:
                    data = b"".join(self._bytes)
                    self._bytes.clear()
                    self.received.append(data)
                    self._inbox.append(data)
            elif isinstance(event, Ping):
                await self._write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closed_by_client = (event.code, event.reason or "")
                with suppress(LocalProtocolError):
                    await self._write(self.ws.send(event.response()))
                self._open = False

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                # A frame is written whole or not at all: a write cancelled half-way would
                # corrupt the stream (bounded, for a client that stopped reading).
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._open = False
                raise _Dropped from exc

    async def send(self, message: Message) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        event = (
            TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        )
        try:
            data = self.ws.send(event)
        except LocalProtocolError as exc:  # the client closed the connection meanwhile
            self._open = False
            raise _Dropped from exc
        await self._write(data)

    async def send_json(self, value: Any) -> None:
        await self.send(json.dumps(value))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """A clean close: a close frame with ``code`` and ``reason``, then the TCP close."""
        if self._open:
            with suppress(_Dropped, LocalProtocolError):
                await self._write(self.ws.send(CloseConnection(code=code, reason=reason)))
        await self.drop()

    async def drop(self) -> None:
        """An abrupt drop: the TCP connection closes with no close frame."""
        self._open = False
        with trio.move_on_after(1):
            await self.stream.aclose()

    async def stop_reading(self) -> None:
        """Never read again (the client's sends block once the buffers are full)."""
        await trio.sleep_forever()


Script = Callable[[FakeSocket], Awaitable[None]]


@attrs.define(eq=False)
class ServerHandle:
    """A running fake server: ``url``, every connection so far, and the script in use."""

    host: str
    port: int
    script: Script
    connections: list[FakeSocket] = attrs.Factory(list)
    #: handshake answers to give before accepting: (status, body) per connection, in order
    reject_next: list[tuple[int, bytes]] = attrs.Factory(list)
    #: checks each handshake (path, lower-cased headers); a (status, body) rejects it
    authorize: Callable[[str, dict[str, str]], tuple[int, bytes] | None] | None = None
    #: handshakes refused so far (by ``reject_next`` or ``authorize``)
    rejected: int = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def received(self) -> list[Message]:
        """Every message of every connection, in order."""
        return [m for c in self.connections for m in c.received]


async def _serve_one(handle: ServerHandle, stream: trio.SocketStream) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    async with stream:
        request: Request | None = None
        while request is None:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    request = event
        headers = {k.decode().lower(): v.decode() for k, v in request.extra_headers}
        refusal = handle.reject_next.pop(0) if handle.reject_next else None
        if refusal is None and handle.authorize is not None:
            refusal = handle.authorize(request.target, headers)
        if refusal is not None:
            status, body = refusal
            handle.rejected += 1
            reply = ws.send(
                RejectConnection(
                    status_code=status,
                    has_body=True,
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
            )
            reply += ws.send(RejectData(data=body))
            with trio.move_on_after(1):
                await stream.send_all(reply)
            return
        await stream.send_all(ws.send(AcceptConnection()))
        sock = FakeSocket(path=request.target, headers=headers, stream=stream, ws=ws)
        handle.connections.append(sock)
        with suppress(_Dropped):
            await handle.script(sock)
        if sock.is_open:
            await sock.close()


@asynccontextmanager
async def open_ws_server(
    script: Script, *, receive_buffer: int | None = 4096
) -> AsyncIterator[ServerHandle]:
    """Serve ``script`` (one call per connection) on 127.0.0.1 at a free port.

    ``receive_buffer`` sets SO_RCVBUF on accepted sockets (small, so a script that stops
    reading makes the client's sends block soon).
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    if receive_buffer is not None:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    host, port = listener.socket.getsockname()[:2]
    handle = ServerHandle(host=host, port=port, script=script)

    async def accept_loop() -> None:
        async with trio.open_nursery() as conns:
            while True:
                stream = await listener.accept()
                conns.start_soon(_serve_one, handle, stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop)
        try:
            yield handle
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await listener.aclose()
