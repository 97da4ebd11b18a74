"""A scripted Sarvam streaming TTS server (``/text-to-speech/ws``) on loopback."""

from __future__ import annotations

import base64
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from ...audio.pcm import wav_bytes
from ._common import ClientMessages, Faults, audio_for, serve_fake
from ._wsserver import FakeSocket, ServerHandle

__all__ = ["FakeSarvamTTS", "open_fake_sarvam_tts"]


@attrs.define(eq=False)
class FakeSarvamTTS:
    """Wants ``config`` first (an error message otherwise); buffers ``text``; on ``flush``
    sends the buffer's audio (``audio_for``) base64-encoded in chunks, each wrapped in a WAV
    header like the real service, then the ``final`` event; ``ping`` is accepted silently.

    Faults: ``error`` answers the next flush with an error message, ``silent`` never answers
    a flush, ``drop_after_chunks`` drops the connection (once) after that many audio chunks
    on it, ``first_delay`` / ``chunk_delay`` slow the audio, ``idle_close_after`` closes an
    idle connection with 1000, ``close_on_text`` closes it (1000) when text arrives,
    ``stop_reading_after`` stops reading."""

    api_key: str = "test-key"
    chunk_bytes: int = 4410
    secs_per_char: float = 0.01
    faults: Faults = attrs.Factory(Faults)
    server: ServerHandle | None = None
    configs: list[dict[str, Any]] = attrs.Factory(list)
    texts: list[str] = attrs.Factory(list)
    pings: int = 0
    flushes: int = 0

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        if headers.get("api-subscription-key") != self.api_key:
            return 403, b'{"error": {"message": "Invalid API subscription key"}}'
        return None

    async def __call__(self, sock: FakeSocket) -> None:
        client = ClientMessages(sock, self.faults)
        faults = self.faults
        config: dict[str, Any] | None = None
        buffer: list[str] = []
        sent_on_conn = [0]  # audio chunks sent on this connection
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.idle_watch)
            while (data := await client.receive_json()) is not None:
                kind = data.get("type")
                if config is None and kind != "config":
                    await sock.send_json(
                        {"type": "error", "data": {"message": "Send config first", "code": 400}}
                    )
                    continue
                if kind == "config":
                    config = data["data"]
                    self.configs.append(config)
                elif kind == "text":
                    self.texts.append(data["data"]["text"])
                    if faults.close_on_text > 0:
                        faults.close_on_text -= 1
                        await sock.close(1000, "idle timeout")
                        break
                    buffer.append(data["data"]["text"])
                elif kind == "ping":
                    self.pings += 1
                elif kind == "flush":
                    self.flushes += 1
                    if faults.error is not None:
                        await sock.send_json(
                            {"type": "error", "data": {"message": faults.error, "code": 422}}
                        )
                        faults.error = None
                        continue
                    text, buffer = " ".join(buffer), []
                    if faults.silent:
                        continue
                    rate = int(config["speech_sample_rate"]) if config else 22050
                    nursery.start_soon(self._synthesise, sock, text, rate, sent_on_conn)
            nursery.cancel_scope.cancel()

    async def _synthesise(
        self, sock: FakeSocket, text: str, rate: int, sent_on_conn: list[int]
    ) -> None:
        faults = self.faults
        await trio.sleep(faults.first_delay)
        audio = audio_for(text, rate, self.secs_per_char)
        for start in range(0, len(audio), self.chunk_bytes):
            chunk = wav_bytes(audio[start : start + self.chunk_bytes], rate)
            payload = {"content_type": "audio/wav", "audio": base64.b64encode(chunk).decode()}
            await sock.send_json({"type": "audio", "data": payload})
            sent_on_conn[0] += 1
            if faults.drop_after_chunks is not None and sent_on_conn[0] >= faults.drop_after_chunks:
                faults.drop_after_chunks = None
                await sock.drop()
                return
            await trio.sleep(faults.chunk_delay)
        await sock.send_json({"type": "event", "data": {"event_type": "final"}})


def open_fake_sarvam_tts(
    fake: FakeSarvamTTS | None = None,
) -> AbstractAsyncContextManager[FakeSarvamTTS]:
    """Serve a :class:`FakeSarvamTTS` on 127.0.0.1; its ``server.url`` is the endpoint."""
    return serve_fake(fake if fake is not None else FakeSarvamTTS())
