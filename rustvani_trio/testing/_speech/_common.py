"""Pieces shared by the scripted provider fakes: faults, reading a client's messages under
them, audio for a text, and serving a fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import attrs
import trio

from ._wsserver import FakeSocket, Message, ServerHandle, open_ws_server

__all__ = ["ClientMessages", "Faults", "audio_for", "serve_fake"]


@attrs.define
class Faults:
    """Faults a fake provider injects (each ``None``/``False`` when off).

    Attributes:
        idle_close_after: close the connection (code 1000, "idle timeout") after this many
            seconds without a message from the client, like providers that reap idle sockets.
        drop_after_chunks: drop the TCP connection (no close frame) once, after this many
            audio chunks were sent on a connection (TTS fakes) or this many client messages
            were received on it (STT fakes).
        stop_reading_after: stop reading after this many client messages (then sends from
            the client block once the socket buffers fill).
        error: answer the next request with this provider error message (then go on).
        warning: send this provider warning with the next request, then answer it as usual
            (Deepgram's ``Warning`` message).
        close_code: after the error, close with this code (e.g. 1008) and ``close_reason``.
        chunk_delay: seconds between audio chunks (slow audio).
        first_delay: seconds before the first audio chunk of each answer (synthesis time).
        silent: never answer (a provider that hangs; 60db: not even its greeting).
        close_on_text: close the connection (code 1000, "idle timeout") when a text message
            arrives, without answering it, this many times (TTS fakes): a provider that
            reaps an idle socket just as the client's next text goes out on it.
        flushed_before_cleared: (Deepgram) on Clear, wait this many seconds, then answer
            ``Flushed`` (for the flush it had finished as the Clear came) before ``Cleared``:
            the stale ``Flushed`` reaches a client that may have sent its next answer meanwhile.
    """

    idle_close_after: float | None = None
    drop_after_chunks: int | None = None
    stop_reading_after: int | None = None
    error: str | None = None
    warning: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    chunk_delay: float = 0.0
    first_delay: float = 0.0
    silent: bool = False
    close_on_text: int = 0
    flushed_before_cleared: float | None = None


def audio_for(text: str, sample_rate: int, secs_per_char: float = 0.01) -> bytes:
    """Deterministic "speech" for ``text``: a quiet ramp, ``secs_per_char`` per character."""
    samples = round(len(text) * secs_per_char * sample_rate)
    return bytes((i * 7) & 0xFF if i % 2 == 0 else 0x10 for i in range(2 * samples))


@attrs.define(eq=False)
class ClientMessages:
    """A fake's reading of one connection, under the faults that act on reading: after
    ``faults.stop_reading_after`` messages it stops reading, and :meth:`idle_watch` (run
    beside the reading) closes the connection once the client was silent for
    ``faults.idle_close_after`` seconds."""

    sock: FakeSocket
    faults: Faults
    #: messages received so far on this connection
    count: int = 0
    #: when the client last sent something
    last: float = attrs.Factory(trio.current_time)

    async def receive(self) -> Message | None:
        """The client's next message, or ``None`` once it closed the connection."""
        message = await self.sock.receive()
        if message is not None:
            self.last = trio.current_time()
            self.count += 1
            limit = self.faults.stop_reading_after
            if limit is not None and self.count >= limit:
                await self.sock.stop_reading()
        return message

    async def receive_json(self) -> dict[str, Any] | None:
        """The client's next text message parsed as JSON (binary messages are skipped)."""
        while (message := await self.receive()) is not None:
            if isinstance(message, str):
                value: dict[str, Any] = json.loads(message)
                return value
        return None

    async def idle_watch(self) -> None:
        """Close the connection once the client was silent for ``idle_close_after``."""
        limit = self.faults.idle_close_after
        if limit is None:
            return
        while self.sock.is_open:
            remaining = self.last + limit - trio.current_time()
            if remaining <= 0:
                await self.sock.close(1000, "idle timeout")
                return
            await trio.sleep(remaining)


class Fake(Protocol):
    """What :func:`serve_fake` serves: a script per connection, a handshake check, and a
    place for the running server."""

    server: ServerHandle | None

    async def __call__(self, sock: FakeSocket) -> None: ...

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None: ...


F = TypeVar("F", bound=Fake)


@asynccontextmanager
async def serve_fake(fake: F) -> AsyncIterator[F]:
    """Serve ``fake`` on 127.0.0.1 for the block; ``fake.server`` is the running server
    (``fake.server.url`` its address) and ``fake.authorize`` checks each handshake."""
    async with open_ws_server(fake) as server:
        server.authorize = fake.authorize
        fake.server = server
        yield fake
