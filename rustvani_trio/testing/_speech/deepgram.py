"""A scripted Deepgram streaming TTS server (``/v1/speak``) on loopback."""

from __future__ import annotations

import json
import math
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from ._common import ClientMessages, Faults, audio_for, serve_fake
from ._wsserver import FakeSocket, ServerHandle

__all__ = ["FakeDeepgramTTS", "open_fake_deepgram_tts"]


@attrs.define(eq=False)
class FakeDeepgramTTS:
    """Behaviour of the fake: the key it accepts, audio per character, chunk size, faults.

    Speak texts are buffered (or synthesised at once with ``synthesize_on_speak``); Flush
    synthesises the buffer (``audio_for``) in chunks of ``chunk_bytes`` then answers
    ``Flushed``; Clear stops the synthesis and answers ``Cleared``; Close closes. A wrong key
    is refused at the handshake with 401. Faults: ``error`` (an ``Error`` message, then
    ``close_code``), ``warning`` (a ``Warning`` message before the audio), ``silent``,
    ``drop_after_chunks``, ``first_delay`` / ``chunk_delay``, ``idle_close_after``,
    ``close_on_text``, ``flushed_before_cleared``, ``stop_reading_after``.
    """

    api_key: str = "test-key"
    sample_rate: int = 24000
    chunk_bytes: int = 4800
    secs_per_char: float = 0.01
    faults: Faults = attrs.Factory(Faults)
    server: ServerHandle | None = None
    texts: list[str] = attrs.Factory(list)
    flushes: int = 0
    clears: int = 0
    chunks_sent: int = 0
    warnings_sent: int = 0
    #: synthesise each Speak as it comes (like a streaming service), not only at Flush
    synthesize_on_speak: bool = False

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        if headers.get("authorization") != f"Token {self.api_key}":
            body = {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}
            return 401, json.dumps(body).encode()
        return None

    async def __call__(self, sock: FakeSocket) -> None:
        client = ClientMessages(sock, self.faults)
        buffer: list[str] = []
        sent_on_conn = [0]
        faults = self.faults
        jobs_send, jobs_recv = trio.open_memory_channel[tuple[str, str]](math.inf)
        worker_scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.idle_watch)
            nursery.start_soon(self._worker, sock, jobs_recv, sent_on_conn, worker_scope)
            while (message := await client.receive()) is not None:
                if not isinstance(message, str):
                    continue
                data: dict[str, Any] = json.loads(message)
                kind = data.get("type")
                if kind == "Speak":
                    self.texts.append(data["text"])
                    if faults.close_on_text > 0:
                        faults.close_on_text -= 1
                        await sock.close(1000, "idle timeout")
                        break
                    if self.synthesize_on_speak:
                        jobs_send.send_nowait(("speak", data["text"]))
                    else:
                        buffer.append(data["text"])
                elif kind == "Flush":
                    self.flushes += 1
                    if faults.error is not None:
                        error = {"type": "Error", "err_code": "DATA-0000", "err_msg": faults.error}
                        await sock.send_json(error)
                        faults.error = None
                        if faults.close_code is not None:
                            await sock.close(faults.close_code, faults.close_reason)
                            break
                        continue
                    if faults.warning is not None:
                        warning = {"type": "Warning", "warn_code": "W-0001"}
                        await sock.send_json({**warning, "warn_msg": faults.warning})
                        self.warnings_sent += 1
                        faults.warning = None
                    if faults.silent:
                        continue
                    if buffer:
                        jobs_send.send_nowait(("speak", "".join(buffer)))
                        buffer.clear()
                    jobs_send.send_nowait(("flush", ""))
                elif kind == "Clear":
                    self.clears += 1
                    buffer.clear()
                    while True:  # forget queued work, stop the current one
                        try:
                            jobs_recv.receive_nowait()
                        except trio.WouldBlock:
                            break
                    worker_scope.cancel()
                    worker_scope = trio.CancelScope()
                    nursery.start_soon(self._worker, sock, jobs_recv, sent_on_conn, worker_scope)
                    if faults.flushed_before_cleared is not None:
                        await trio.sleep(faults.flushed_before_cleared)
                        await sock.send_json({"type": "Flushed", "sequence_id": self.flushes})
                    await sock.send_json({"type": "Cleared", "sequence_id": self.clears})
                elif kind == "Close":
                    await sock.close(1000)
                    break
            nursery.cancel_scope.cancel()

    async def _worker(
        self,
        sock: FakeSocket,
        jobs: trio.MemoryReceiveChannel[tuple[str, str]],
        sent_on_conn: list[int],
        scope: trio.CancelScope,
    ) -> None:
        faults = self.faults
        with scope:
            async for kind, text in jobs:
                if kind == "flush":
                    await sock.send_json({"type": "Flushed", "sequence_id": self.flushes})
                    continue
                await trio.sleep(faults.first_delay)
                audio = audio_for(text, self.sample_rate, self.secs_per_char)
                for start in range(0, len(audio), self.chunk_bytes):
                    await sock.send(audio[start : start + self.chunk_bytes])
                    self.chunks_sent += 1
                    sent_on_conn[0] += 1
                    drop = faults.drop_after_chunks
                    if drop is not None and sent_on_conn[0] >= drop:
                        faults.drop_after_chunks = None
                        await sock.drop()
                        return
                    await trio.sleep(faults.chunk_delay)


def open_fake_deepgram_tts(
    fake: FakeDeepgramTTS | None = None,
) -> AbstractAsyncContextManager[FakeDeepgramTTS]:
    """Serve a :class:`FakeDeepgramTTS` on 127.0.0.1; its ``server.url`` is the base URL."""
    return serve_fake(fake if fake is not None else FakeDeepgramTTS())
