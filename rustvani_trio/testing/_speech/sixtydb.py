"""A scripted 60db streaming STT server (``/ws/stt``) on loopback."""

from __future__ import annotations

import base64
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio
import trio.lowlevel

from ...audio.pcm import level_dbfs
from ._common import ClientMessages, Faults, serve_fake
from ._wsserver import FakeSocket, ServerHandle

__all__ = ["FakeSixtyDbSTT", "open_fake_sixtydb_stt"]


@attrs.define(eq=False)
class FakeSixtyDbSTT:
    """Greets (``greeting_order``), starts a session on ``start``, and endpoints the audio it
    receives: a chunk louder than -50 dBFS is speech; after ``utterance_end_ms`` of quiet
    following speech it sends a partial (``is_partial``), a fast final (``is_final``) and the
    refined final (``speech_final``) with the next of ``transcripts`` (else
    ``"<n.n> seconds of speech"``). The key is checked from the ``apiKey`` query: a wrong one
    is closed with 1008 after the greeting.

    Faults: ``drop_after_chunks`` drops the connection after that many client messages,
    ``silent`` never says anything (no greeting, no reply), ``first_delay`` /
    ``chunk_delay`` come before an utterance's first message and between its messages,
    ``idle_close_after`` closes an idle connection with 1000, ``stop_reading_after`` stops
    reading after that many client messages, ``error`` is sent after the next audio message
    and ``close_code`` closes the connection at ``start``."""

    api_key: str = "test-key"
    transcripts: list[str] = attrs.Factory(list)
    greeting_order: tuple[str, ...] = ("connecting", "connection_established", "connected")
    faults: Faults = attrs.Factory(Faults)
    server: ServerHandle | None = None
    starts: list[dict[str, Any]] = attrs.Factory(list)
    audio_before_session: int = 0
    stops: int = 0

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        """Every handshake is accepted: 60db checks the key after its greeting."""
        return None

    async def __call__(self, sock: FakeSocket) -> None:
        client = ClientMessages(sock, self.faults)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.idle_watch)
            await self._converse(sock, client)
            nursery.cancel_scope.cancel()

    async def _converse(self, sock: FakeSocket, client: ClientMessages) -> None:
        faults = self.faults
        if faults.silent:  # a provider that hangs: reads, never answers
            while await client.receive() is not None:
                pass
            return
        for greeting in self.greeting_order:
            if greeting == "connected":
                await sock.send_json({"type": "connected", "message": "upstream ready"})
            else:
                await sock.send_json({greeting: True, "message": greeting})
        if sock.query.get("apiKey") != self.api_key:
            await sock.close(1008, "Invalid API key or insufficient credits")
            return
        session = False
        speech = quiet = 0.0
        utterance_end = 0.5
        while (data := await client.receive_json()) is not None:
            if faults.drop_after_chunks is not None and client.count >= faults.drop_after_chunks:
                faults.drop_after_chunks = None
                await sock.drop()
                return
            kind = data.get("type")
            if kind == "start":
                self.starts.append(data)
                utterance_end = data["config"].get("utterance_end_ms", 500) / 1000
                if faults.close_code is not None:
                    await sock.close(faults.close_code, faults.close_reason)
                    return
                session = True
                await sock.send_json({"type": "session_started", "session_id": "s-1"})
            elif kind == "audio":
                if not session:
                    self.audio_before_session += 1
                    continue
                pcm = base64.b64decode(data["audio"])
                secs = len(pcm) / 2 / int(data["sample_rate"])
                if level_dbfs(pcm) > -50:
                    speech, quiet = speech + secs, 0.0
                elif speech:
                    quiet += secs
                    if quiet >= utterance_end - 1e-9:
                        await self._utterance(sock, speech)
                        speech = quiet = 0.0
                if faults.error is not None:
                    await sock.send_json(
                        {"type": "error", "error": faults.error, "error_code": "E42"}
                    )
                    faults.error = None
            elif kind == "stop":
                self.stops += 1
                if speech:
                    await self._utterance(sock, speech)
                await sock.send_json({"type": "session_stopped", "billing_summary": {"seconds": 1}})
                await trio.lowlevel.checkpoint()

    async def _utterance(self, sock: FakeSocket, speech: float) -> None:
        text = self.transcripts.pop(0) if self.transcripts else f"{speech:.1f} seconds of speech"
        words = text.split()
        await trio.sleep(self.faults.first_delay)
        await sock.send_json({"type": "speech_started"})
        messages: list[dict[str, Any]] = [
            {
                "type": "transcription",
                "text": " ".join(words[:1]),
                "is_partial": True,
                "is_final": False,
            },
            {
                "type": "transcription",
                "text": text.lower(),
                "is_final": True,
                "speech_final": False,
            },
            {
                "type": "transcription",
                "text": text,
                "is_final": True,
                "speech_final": True,
                "language": "en",
                "confidence": 0.93,
            },
        ]
        for i, message in enumerate(messages):
            if i:
                await trio.sleep(self.faults.chunk_delay)
            await sock.send_json(message)


def open_fake_sixtydb_stt(
    fake: FakeSixtyDbSTT | None = None,
) -> AbstractAsyncContextManager[FakeSixtyDbSTT]:
    """Serve a :class:`FakeSixtyDbSTT` on 127.0.0.1; its ``server.url`` is the endpoint."""
    return serve_fake(fake if fake is not None else FakeSixtyDbSTT())
