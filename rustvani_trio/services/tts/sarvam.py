"""Sarvam streaming text-to-speech (extra ``tts-sarvam``).

Protocol (``wss://api.sarvam.ai/text-to-speech/ws?model=...``, key in the
``Api-Subscription-Key`` header): a ``{"type": "config", "data": {...}}`` message first
(language, speaker, sample rate, codec, buffer sizes), then ``{"type": "text", "data":
{"text"}}`` per sentence and ``{"type": "flush"}`` at the end of an answer;
``{"type": "ping"}`` keeps an idle socket open. Replies: ``{"type": "audio", "data":
{"audio": <base64>}}`` (a chunk may carry a WAV header, which is removed),
``{"type": "event", "data": {"event_type": "final"}}`` once an answer's audio is complete
(``send_completion_event=true``) and ``{"type": "error", "data": {"message", "code"}}``.
There is no cancel message: an interruption drops the connection and opens a new one.
"""

from __future__ import annotations

try:
    import trio_websocket  # noqa: F401 - the one dependency of the tts-sarvam extra
except ImportError as _exc:
    raise ImportError(
        "Sarvam TTS needs the tts-sarvam extra (trio-websocket): "
        "pip install 'rustvani-trio[tts-sarvam]'"
    ) from _exc

import base64
import json
import logging
from typing import Any
from urllib.parse import urlencode

import attrs

from ..._text import excerpt
from ...audio.pcm import strip_wav_header
from ..stt import _sarvam as sarvam
from ..stt._ws import WebSocketOptions
from ..stt._ws_options import ProviderConfig
from ._ws_tts import WebSocketTTSService

__all__ = ["SarvamTTSConfig", "SarvamTTSService"]

logger = logging.getLogger("rustvani_trio")


@attrs.frozen(kw_only=True)
class SarvamTTSConfig(ProviderConfig):
    """Sarvam TTS settings.

    Attributes:
        api_key: the subscription key (sent in a header; never logged).
        model: ``"bulbul:v2"`` or ``"bulbul:v3"``.
        language_code: e.g. ``"en-IN"``, ``"hi-IN"``.
        speaker: the voice (``"anushka"`` for v2; v3 voices differ).
        sample_rate: of the PCM produced.
        pace: speaking rate (v2: 0.3-3.0, v3: 0.5-2.0).
        min_buffer_size, max_chunk_length: Sarvam's own text buffering.
        url: the endpoint (a scripted server's URL in tests).
        extra_config: more ``config`` fields (``pitch``, ``loudness``, ``temperature``, ...).
        options: timeouts, keep-alive (a ping every 20 s by default) and reconnect policy.
    """

    env_var = "SARVAM_API_KEY"

    model: str = "bulbul:v2"
    language_code: str = "en-IN"
    speaker: str = "anushka"
    sample_rate: int = 22050
    pace: float = 1.0
    min_buffer_size: int = 50
    max_chunk_length: int = 150
    url: str = "wss://api.sarvam.ai/text-to-speech/ws"
    extra_config: dict[str, Any] = attrs.Factory(dict)
    options: WebSocketOptions = attrs.Factory(lambda: WebSocketOptions(keepalive_interval=20.0))


class SarvamTTSService(WebSocketTTSService):
    """Sarvam streaming TTS as a processor (see :class:`TTSService` for the frames)."""

    service = "Sarvam TTS"

    def __init__(self, config: SarvamTTSConfig, *, name: str | None = None) -> None:
        super().__init__(sample_rate=config.sample_rate, options=config.options, name=name)
        self.config = config

    def ws_url(self) -> str:
        query = urlencode({"model": self.config.model, "send_completion_event": "true"})
        return f"{self.config.url}?{query}"

    def ws_headers(self) -> list[tuple[str, str]]:
        return [(sarvam.KEY_HEADER, self.config.api_key)]

    def secrets(self) -> tuple[str, ...]:
        return (self.config.api_key,)

    async def on_connected(self) -> None:
        c = self.config
        data: dict[str, Any] = {
            "target_language_code": c.language_code,
            "speaker": c.speaker,
            "speech_sample_rate": str(c.sample_rate),
            "pace": c.pace,
            "min_buffer_size": c.min_buffer_size,
            "max_chunk_length": c.max_chunk_length,
            "output_audio_codec": "linear16",
            "model": c.model,
            **c.extra_config,
        }
        await self.send_now(json.dumps({"type": "config", "data": data}))
        self.set_ready()

    # ------------------------------------------------------------------ TTSService

    def text_message(self, text: str) -> str | None:
        if not any(ch.isalnum() for ch in text):  # Sarvam rejects punctuation-only text
            return None
        return json.dumps({"type": "text", "data": {"text": text}})

    def flush_message(self) -> str:
        return json.dumps({"type": "flush"})

    async def stop_tts(self) -> None:
        self.abandon_answer()
        await self.reconnect()  # Sarvam has no cancel message: a new connection is silent

    async def send_keepalive(self) -> None:
        self.send(json.dumps({"type": "ping"}))

    # ------------------------------------------------------------------ WebSocketService

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return
        kind, data = sarvam.envelope(message)
        if kind == "audio":
            audio = data.get("audio")
            if audio:
                await self.push_audio(strip_wav_header(base64.b64decode(audio)))
        elif kind == "event":
            if data.get("event_type") == "final":
                self.answer_done()
        elif kind == "error":
            await self.report(sarvam.error_text(data, message))
            self.answer_done()
        else:
            logger.debug("%s: unexpected message %s", self.name, excerpt(self.redact(message), 200))
