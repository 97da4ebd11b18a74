"""Pieces shared by the scripted provider fakes: faults, and audio for a text."""

from __future__ import annotations

import attrs
import trio

from ._wsserver import FakeSocket

__all__ = ["Faults", "audio_for", "idle_watch"]


@attrs.define
class Faults:
    """Faults a fake provider injects (each ``None``/``False`` when off).

    Attributes:
        idle_close_after: close the connection (code 1000, "idle timeout") after this many
            seconds without a message from the client, like providers that reap idle sockets.
        drop_after_chunks: drop the TCP connection (no close frame) after sending this many
            audio chunks in total on a connection.
        stop_reading_after: stop reading after this many client messages (then sends from
            the client block once the socket buffers fill).
        error: answer the next request with this provider error message (then go on).
        close_code: after the error, close with this code (e.g. 1008) and ``close_reason``.
        chunk_delay: seconds between audio chunks (slow audio).
        first_delay: seconds before the first audio chunk of each answer (synthesis time).
        silent: never answer (a provider that hangs).
    """

    idle_close_after: float | None = None
    drop_after_chunks: int | None = None
    stop_reading_after: int | None = None
    error: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    chunk_delay: float = 0.0
    first_delay: float = 0.0
    silent: bool = False


def audio_for(text: str, sample_rate: int, secs_per_char: float = 0.01) -> bytes:
    """Deterministic "speech" for ``text``: a quiet ramp, ``secs_per_char`` per character."""
    samples = round(len(text) * secs_per_char * sample_rate)
    return bytes((i * 7) & 0xFF if i % 2 == 0 else 0x10 for i in range(2 * samples))


async def idle_watch(sock: FakeSocket, faults: Faults, activity: list[float]) -> None:
    """Close ``sock`` once the client was silent for ``faults.idle_close_after`` seconds
    (``activity[0]`` holds the time of the last client message)."""
    limit = faults.idle_close_after
    if limit is None:
        return
    while sock.is_open:
        remaining = activity[0] + limit - trio.current_time()
        if remaining <= 0:
            await sock.close(1000, "idle timeout")
            return
        await trio.sleep(remaining)
