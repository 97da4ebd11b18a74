"""A scripted Sarvam streaming STT server (``/speech-to-text/ws``) on loopback."""

from __future__ import annotations

import base64
import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from ._common import ClientMessages, Faults, serve_fake
from ._wsserver import FakeSocket, ServerHandle

__all__ = ["FakeSarvamSTT", "open_fake_sarvam_stt"]


@attrs.define(eq=False)
class FakeSarvamSTT:
    """Accepts audio messages and answers each flush with the next of ``transcripts`` (or,
    when they run out, ``"<n.n> seconds"`` for the audio since the previous flush).
    Counts keep-alive silence like any audio. A wrong key is refused with 403."""

    api_key: str = "test-key"
    transcripts: list[str] = attrs.Factory(list)
    reply_delay: float = 0.0
    faults: Faults = attrs.Factory(Faults)
    server: ServerHandle | None = None
    audio_messages: int = 0
    audio_secs: float = 0.0
    flushes: int = 0

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        if headers.get("api-subscription-key") != self.api_key:
            body = {
                "error": {
                    "message": "Invalid API subscription key",
                    "code": "invalid_api_key_error",
                }
            }
            return 403, json.dumps(body).encode()
        return None

    async def __call__(self, sock: FakeSocket) -> None:
        client = ClientMessages(sock, self.faults)
        faults = self.faults
        pending = 0.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.idle_watch)
            while (message := await client.receive()) is not None:
                if (
                    faults.drop_after_chunks is not None
                    and client.count >= faults.drop_after_chunks
                ):
                    faults.drop_after_chunks = None
                    await sock.drop()
                    break
                data: dict[str, Any] = json.loads(message)
                if "audio" in data:
                    audio = base64.b64decode(data["audio"]["data"])
                    secs = len(audio) / 2 / int(data["audio"]["sample_rate"])
                    self.audio_messages += 1
                    self.audio_secs += secs
                    pending += secs
                elif data.get("type") == "flush":
                    self.flushes += 1
                    if faults.error is not None:
                        error = {"message": faults.error, "code": 429}
                        await sock.send_json({"type": "error", "data": error})
                        faults.error = None
                        continue
                    if faults.silent:
                        continue
                    text = self.transcripts.pop(0) if self.transcripts else f"{pending:.1f} seconds"
                    pending = 0.0
                    nursery.start_soon(self._reply, sock, text)
            nursery.cancel_scope.cancel()

    async def _reply(self, sock: FakeSocket, text: str) -> None:
        await trio.sleep(self.reply_delay)
        reply = {
            "request_id": f"req-{self.flushes}",
            "transcript": text,
            "language_code": "en-IN",
            "metrics": {"audio_duration": 1.0, "processing_latency": self.reply_delay},
        }
        await sock.send_json({"type": "data", "data": reply})


def open_fake_sarvam_stt(
    fake: FakeSarvamSTT | None = None,
) -> AbstractAsyncContextManager[FakeSarvamSTT]:
    """Serve a :class:`FakeSarvamSTT` on 127.0.0.1; its ``server.url`` is the endpoint."""
    return serve_fake(fake if fake is not None else FakeSarvamSTT())
