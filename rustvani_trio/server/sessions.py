"""Sessions: one pipeline per WebSocket connection, admitted, tracked and ended by the
:class:`SessionManager`.

A session runs in its connection's task (inside the server's task group), so the session's
lifetime is the connection's: nothing outlives a socket. The manager holds the registry that
limits, health and shutdown need.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

from ..task import PipelineTask
from ..transports.websocket import (
    ConnectionClosed,
    WebSocketInputProcessor,
    WebSocketOutputProcessor,
    WebSocketParams,
    WebSocketTransport,
)
from .config import ServerConfig

__all__ = ["PipelineFactory", "Session", "SessionManager"]

logger = logging.getLogger("rustvani_trio.server")

# Close codes a browser can see (the application range 4000-4999 for ours).
UNAUTHORIZED, FORBIDDEN_ORIGIN = 4001, 4003
GOING_AWAY, MESSAGE_TOO_BIG, INTERNAL_ERROR, TRY_AGAIN_LATER = 1001, 1009, 1011, 1013

ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]


@attrs.define(kw_only=True, eq=False)
class Session:
    """One connection's session, handed to the application's factory.

    Attributes:
        id: a random id (also in logs and in ``bot-ready``).
        transport: put ``transport.input()`` first and ``transport.output()`` after the
            LLM/TTS in the pipeline.
        query: the WebSocket URL's query parameters (the token removed).
        headers: the upgrade request's headers (lower-case names; ``authorization`` removed).
        client: the peer's address, when known.
        started: ``trio.current_time()`` when it connected.
    """

    id: str
    transport: WebSocketTransport
    query: Mapping[str, str]
    headers: Mapping[str, str]
    client: tuple[str, int] | None
    started: float

    def input(self) -> WebSocketInputProcessor:
        """The pipeline's first processor: ``self.transport.input()``."""
        return self.transport.input()

    def output(self) -> WebSocketOutputProcessor:
        """The processor that talks to the client: ``self.transport.output()``."""
        return self.transport.output()


PipelineFactory = Callable[[Session], Awaitable[PipelineTask]]
"""``async def make_pipeline(session) -> PipelineTask``: builds the pipeline of one session."""


class _ASGIConnection:
    """An accepted ASGI WebSocket as the transport's :class:`WebSocketConnection`."""

    def __init__(self, receive: Receive, send: Send, max_message_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_message_bytes
        self.closed = False

    async def receive(self) -> str | bytes:
        while True:
            msg = await self._receive()
            if msg["type"] == "websocket.receive":
                text = msg.get("text")
                if text is None:
                    return msg.get("bytes") or b""
                # anycorn's limit counts a text message's characters; ours is in bytes
                # (a character is up to 4 of them).
                if len(text) * 4 > self._max_bytes and len(text.encode()) > self._max_bytes:
                    reason = f"message too big: over {self._max_bytes} bytes"
                    await self.close(MESSAGE_TOO_BIG, reason)
                    raise ConnectionClosed(MESSAGE_TOO_BIG, reason)
                return text  # type: ignore[no-any-return]
            if msg["type"] == "websocket.disconnect":
                self.closed = True
                raise ConnectionClosed(int(msg.get("code") or 1005), msg.get("reason") or "")

    async def send(self, data: str | bytes) -> None:
        if self.closed:
            raise ConnectionClosed(1006, "already closed")
        key = "text" if isinstance(data, str) else "bytes"
        await self._send({"type": "websocket.send", key: data})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


async def _reject(scope: Mapping[str, Any], send: Send, status: int, text: str) -> None:
    """Refuse a WebSocket handshake with an HTTP status (403 where the server cannot)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


class SessionManager:
    """Admits connections (token, origin, capacity), runs one session per connection with
    the application's factory, and ends them all on shutdown."""

    def __init__(self, config: ServerConfig, factory: PipelineFactory) -> None:
        self.config = config
        self.factory = factory
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self.total_sessions = 0
        self.refused: dict[int, int] = {}
        self._changed = trio.Event()
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ admission

    def _refusal(
        self, scope: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, str] | None:
        config = self.config
        if self.draining:
            return GOING_AWAY, "server shutting down"
        if config.token_required:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            given = query.get("token", "")
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            expected = (config.token or "").encode()
            if not hmac.compare_digest(given.encode(), expected):
                return UNAUTHORIZED, "unauthorized: missing or wrong token"
        if config.host_checked and not config.host_allowed(headers.get("host", "")):
            return FORBIDDEN_ORIGIN, "host not allowed"
        origin = headers.get("origin")
        if config.origin_checked and origin is not None and not self._origin_ok(origin, headers):
            return FORBIDDEN_ORIGIN, "origin not allowed"
        if len(self.sessions) >= config.max_sessions:
            return TRY_AGAIN_LATER, f"try again later: server full ({config.max_sessions} sessions)"
        return None

    def _origin_ok(self, origin: str, headers: Mapping[str, str]) -> bool:
        allowed = self.config.allowed_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        # The server's own page: the origin names the host the request was sent to.
        try:
            netloc = urlsplit(origin).netloc.lower()
        except ValueError:
            return False
        host = headers.get("host", "").lower()
        return bool(netloc) and netloc == host

    def _transport_params(self, query: Mapping[str, str]) -> WebSocketParams:
        params = self.config.transport
        changes: dict[str, Any] = {}
        if "sample_rate" in query:
            changes["audio_in_sample_rate"] = int(query["sample_rate"])
        if "num_channels" in query:
            changes["audio_in_channels"] = int(query["num_channels"])
        if "wire" in query:
            changes["wire"] = query["wire"]
        return attrs.evolve(params, **changes) if changes else params

    # ------------------------------------------------------------------ one connection

    async def websocket(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI handler of the WebSocket endpoint."""
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        headers = _headers(scope)
        if not _valid_key(headers.get("sec-websocket-key", "")):
            # anycorn accepts any key; RFC 6455 wants 16 bytes in base64.
            await _reject(scope, send, 400, "bad Sec-WebSocket-Key: 16 bytes in base64 expected")
            return
        await send({"type": "websocket.accept"})
        conn = _ASGIConnection(receive, send, self.config.max_message_bytes)
        refusal = self._refusal(scope, headers)
        query = {
            k: v
            for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            if k != "token"
        }
        if refusal is None:
            try:
                params = self._transport_params(query)
            except (TypeError, ValueError) as exc:
                refusal = 1008, f"bad parameter: {exc}"[:120]
        if refusal is not None:
            self.refused[refusal[0]] = self.refused.get(refusal[0], 0) + 1
            logger.info("refused a connection: %s %s", *refusal)
            await conn.close(*refusal)
            return
        session_id = f"{os.getpid():x}-{next(self._ids)}-{secrets.token_hex(3)}"
        headers.pop("authorization", None)
        client = scope.get("client")
        session = Session(
            id=session_id,
            transport=WebSocketTransport(
                conn, params, session_id=session_id, about={"worker": os.getpid()}
            ),
            query=query,
            headers=headers,
            client=tuple(client) if client else None,
            started=trio.current_time(),
        )
        self._add(session)
        try:
            await self._run(session, conn)
        finally:
            self._remove(session)

    async def _run(self, session: Session, conn: _ASGIConnection) -> None:
        try:
            task = await self.factory(session)
            if not isinstance(task, PipelineTask):
                raise TypeError(f"the pipeline factory returned {task!r}, not a PipelineTask")
        except Exception:
            logger.exception("session %s: the pipeline factory failed", session.id)
            await conn.close(INTERNAL_ERROR, "could not start a session")
            return
        if self.draining:
            await conn.close(GOING_AWAY, "server shutting down")
            return
        logger.info("session %s: started (%d open)", session.id, len(self.sessions))
        try:
            await session.transport.run(task)
        except Exception:
            # A bug in a pipeline must not take the server down: report it, close, go on.
            logger.exception("session %s: failed", session.id)
            with trio.move_on_after(1):
                await conn.close(INTERNAL_ERROR, "internal error")
        logger.info("session %s: ended (%s)", session.id, session.transport.close_code)

    def _add(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.total_sessions += 1
        self._notify()

    def _remove(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_sessions(self, count: int) -> None:
        """Wait until exactly ``count`` sessions are open."""
        while len(self.sessions) != count:
            await self._changed.wait()

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self) -> None:
        """Refuse new sessions, let every session finish its answer (an EndFrame, at most
        ``shutdown_timeout`` seconds), then cancel what is left; every socket is closed with
        1001."""
        self.draining = True
        open_now = list(self.sessions.values())
        if open_now:
            logger.info("shutting down: ending %d sessions", len(open_now))
        for session in open_now:
            await session.transport.end(GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.shutdown_timeout):
            await self.wait_sessions(0)
        for session in list(self.sessions.values()):
            await session.transport.cancel(GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.transport.close_timeout + 5):
            await self.wait_sessions(0)

    async def cancel_all(self) -> None:
        """Stop at once (a second signal during shutdown): every session's pipeline is
        cancelled and its socket closed with 1001, all within ``close_timeout``."""
        self.draining = True
        for session in list(self.sessions.values()):
            await session.transport.cancel(GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.transport.close_timeout + 1):
            await self.wait_sessions(0)

    def stats(self) -> dict[str, Any]:
        """What ``/health`` reports."""
        return {
            "status": "draining" if self.draining else "ok",
            "sessions": len(self.sessions),
            "max_sessions": self.config.max_sessions,
            "total_sessions": self.total_sessions,
            "pid": os.getpid(),
        }
