"""Fixes to anycorn, applied when a server starts: its WebSocket message limit, and its
sends to a peer that does not read.

anycorn 0.20 enforces ``websocket_max_message_size`` by sending close 1009, but then

* keeps the connection and goes on appending the rest of the oversized message (a client
  that never finishes its message grows the server's memory without bound), and waits for a
  close handshake that may never come (the close frame can sit unread behind the message);
* counts a text message's characters, not its bytes (a character is up to 4 bytes).

The replacement buffer counts bytes and holds nothing past the limit; the stream is ended
(TCP closed, the application told: ``websocket.disconnect`` with 1009) right after the close
frame.

Every write to a socket is shielded from cancellation, with no time limit: a peer that stops
reading (its receive window full) blocks the connection's sender for ever, the close frame
included, and with it the server's shutdown (even a second signal: trio cannot cancel it).
Here a write that does not complete within ``SEND_TIMEOUT_ATTR`` seconds (set on the anycorn
config) drops the connection: the socket is closed, the application gets its disconnect.

They are installed only on the anycorn they were checked against; elsewhere a warning says so
(the session's own byte check still refuses oversized text, see ``sessions``).
"""

from __future__ import annotations

import logging
from io import BytesIO, StringIO
from typing import Any

__all__ = ["SEND_TIMEOUT_ATTR", "apply"]

SEND_TIMEOUT_ATTR = "rustvani_send_timeout"
"""The anycorn config's attribute holding the longest a write to one socket may take."""

logger = logging.getLogger("rustvani_trio.server")

_applied = False


def apply() -> bool:
    """Install the fixes (once); returns whether they are in place."""
    global _applied
    if _applied:
        return True
    try:
        from anycorn.protocol import ws_stream
        from anycorn.protocol.events import StreamClosed
        from wsproto.events import TextMessage
    except ImportError:  # pragma: no cover - depends on anycorn's layout
        logger.warning("anycorn's WebSocket internals moved: message-limit fixes not applied")
        return False
    original = getattr(ws_stream.WSStream, "_handle_events", None)
    base = getattr(ws_stream, "WebsocketBuffer", None)
    too_large: type[Exception] | None = getattr(ws_stream, "FrameTooLargeError", None)
    if original is None or base is None or too_large is None:  # pragma: no cover
        logger.warning("anycorn's WebSocket internals moved: message-limit fixes not applied")
        return False
    error: type[Exception] = too_large

    class BoundedBuffer(base):  # type: ignore[misc,valid-type]
        """Counts bytes; once over the limit it keeps nothing and says so each time."""

        overflowed = False

        def extend(self, event: Any) -> None:
            if self.overflowed:
                raise error
            data = event.data
            size = len(data.encode()) if isinstance(event, TextMessage) else len(data)
            if self.length + size > self.max_length:
                self.overflowed = True
                self.value = None
                raise error
            if self.value is None:
                self.value = StringIO() if isinstance(event, TextMessage) else BytesIO()
            self.value.write(data)
            self.length += size

    async def handle_events(self: Any) -> None:
        await original(self)
        if getattr(self.buffer, "overflowed", False) and not self.closed:
            # The 1009 close frame is sent; end the connection now rather than read the
            # rest of the oversized message while waiting for the peer's close.
            self.close_code = 1009
            await self.send(StreamClosed(stream_id=self.stream_id))

    if not _bound_sends():  # pragma: no cover - depends on anycorn's layout
        return False
    setattr(ws_stream, "WebsocketBuffer", BoundedBuffer)  # noqa: B010 - on purpose
    setattr(ws_stream.WSStream, "_handle_events", handle_events)  # noqa: B010
    _applied = True
    return True


def _bound_sends() -> bool:
    try:
        import anyio
        import trio
        from anycorn.events import Closed, RawData, SendFile
        from anycorn.tcp_server import TCPServer
    except ImportError:  # pragma: no cover - depends on anycorn's layout
        logger.warning("anycorn's TCP server moved: socket writes are not bounded")
        return False
    original = getattr(TCPServer, "protocol_send", None)
    if original is None or not hasattr(TCPServer, "_close"):  # pragma: no cover
        logger.warning("anycorn's TCP server moved: socket writes are not bounded")
        return False

    async def protocol_send(self: Any, event: Any) -> None:
        timeout = getattr(self.config, SEND_TIMEOUT_ATTR, None)
        if timeout is None or not isinstance(event, RawData | SendFile):
            await original(self, event)
            return
        lock = self.send_lock
        # Uncontended (nearly always: one writer per connection), the lock is taken without
        # the trip through the scheduler that ``async with`` makes; this runs once per
        # WebSocket message.
        try:
            lock.acquire_nowait()
        except anyio.WouldBlock:
            await lock.acquire()
        try:
            timed_out = False
            try:
                # Shielded as in anycorn (a half-written frame would break the stream),
                # but bounded. (The server runs anycorn under trio: trio's scope directly.)
                with trio.CancelScope(deadline=trio.current_time() + timeout, shield=True) as scope:
                    if isinstance(event, RawData):
                        await self.stream.send(event.data)
                    else:
                        await self._transmit_file(event)
                timed_out = scope.cancelled_caught
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await self.protocol.handle(Closed())
            if timed_out:
                logger.info("a client did not read for %s s: connection dropped", timeout)
                await self._close()  # the socket is closed; the reader ends too
                await self.protocol.handle(Closed())
        finally:
            lock.release()

    setattr(TCPServer, "protocol_send", protocol_send)  # noqa: B010 - on purpose
    return True
