"""Opening a provider connection, and what a failed attempt means (private)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

import trio
import trio_websocket

from ...exceptions import RustvaniError
from ._ws_options import WebSocketOptions

__all__ = ["CONNECT_ERRORS", "ConnectFailed", "connect_failure", "first_error", "open_connection"]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class ConnectFailed(RustvaniError):
    """A connection attempt failed; ``retry`` says whether another attempt may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


CONNECT_ERRORS = (
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio_websocket.HandshakeError,
)


_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        import certifi

        _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


async def open_connection(
    nursery: trio.Nursery,
    url: str,
    headers: list[tuple[str, str]],
    options: WebSocketOptions,
    redact: Callable[[str], str],
) -> trio_websocket.WebSocketConnection:
    """TCP (+TLS on ``wss``) and the WebSocket handshake under ``connect_timeout``; the
    connection's reader task runs in ``nursery``."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError as exc:  # an unclosed [ or a port out of range: no retry can help
        raise ConnectFailed(f"not a WebSocket URL: {redact(url)!r} ({exc})", retry=False) from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConnectFailed(f"not a WebSocket URL: {redact(url)!r}", retry=False)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = [(k.encode(), v.encode()) for k, v in headers]
    with trio.fail_after(options.connect_timeout):
        if parts.scheme == "wss":
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
            stream = await trio.open_ssl_over_tcp_stream(
                parts.hostname, port, ssl_context=_tls(), https_compatible=True
            )
            raw = stream.transport_stream
        else:
            stream = raw = await trio.open_tcp_stream(parts.hostname, port)
        if options.send_buffer_bytes is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.send_buffer_bytes)
        host = parts.netloc.rsplit("@", 1)[-1]
        return await trio_websocket.wrap_client_stream(
            nursery, stream, host, resource, extra_headers=extra, max_message_size=8 << 20
        )


def connect_failure(exc: BaseException, options: WebSocketOptions) -> ConnectFailed:
    """The error of a failed connection attempt, and whether to try again."""
    if isinstance(exc, ConnectFailed):
        return exc
    if isinstance(exc, trio.TooSlowError):
        return ConnectFailed(
            f"no connection within connect_timeout={options.connect_timeout}s", retry=True
        )
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"").decode("utf-8", "replace").strip()[:300]
        retry = exc.status_code in (408, 429) or exc.status_code >= 500
        hint = " (is the API key right?)" if exc.status_code in (401, 403) else ""
        detail = f": {body}" if body else ""
        return ConnectFailed(
            f"the connection was refused: HTTP {exc.status_code}{hint}{detail}", retry=retry
        )
    return ConnectFailed(f"could not connect: {type(exc).__name__}: {exc}", retry=True)
