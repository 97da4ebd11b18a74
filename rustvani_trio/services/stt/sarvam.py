"""Sarvam streaming speech-to-text (extra ``stt-sarvam``).

Protocol (``wss://api.sarvam.ai/speech-to-text/ws``): ``language-code``, ``model``,
``mode``, ``sample_rate``, ``input_audio_codec`` and ``flush_signal`` in the query, the key
in the ``Api-Subscription-Key`` header; audio as ``{"audio": {"data": <base64>,
"sample_rate": "16000", "encoding": "audio/wav"}}``, ``{"type": "flush"}`` when the VAD hears
the user stop. Replies: ``{"type": "data", "data": {"transcript", "language_code", ...}}``,
``{"type": "events", "data": {"signal_type": "START_SPEECH" | "END_SPEECH"}}`` and
``{"type": "error", "data": {"message", "code"}}``.

Sarvam closes a socket that received nothing for about a minute (pipecat issue 3699), which
happens whenever the input stops (a muted microphone, a paused transport): after
``keepalive_interval`` seconds without sending, 100 ms of silence is sent.
"""

from __future__ import annotations

try:
    import trio_websocket  # noqa: F401 - the one dependency of the stt-sarvam extra
except ImportError as _exc:
    raise ImportError(
        "Sarvam STT needs the stt-sarvam extra (trio-websocket): "
        "pip install 'rustvani-trio[stt-sarvam]'"
    ) from _exc

import base64
import json
import logging
from urllib.parse import urlencode

import attrs

from ...audio.pcm import silence
from . import _sarvam as sarvam
from ._base import STTService
from ._ws import WebSocketOptions, WebSocketService
from ._ws_options import ProviderConfig

__all__ = ["SarvamSTTConfig", "SarvamSTTService"]

logger = logging.getLogger("rustvani_trio")


def _rate(_inst: object, _attr: object, value: int) -> None:
    if value not in (8000, 16000):
        raise ValueError(f"Sarvam STT takes 8000 or 16000 Hz audio, not {value}")


@attrs.frozen(kw_only=True)
class SarvamSTTConfig(ProviderConfig):
    """Sarvam STT settings.

    Attributes:
        api_key: the subscription key (sent in a header; never logged).
        language_code: BCP-47 (``"en-IN"``, ``"hi-IN"``, ...) or ``"unknown"`` to detect.
        model: ``"saarika:v2.5"`` or ``"saaras:v3"`` (which takes ``mode``).
        mode: ``"transcribe"``, ``"translate"``, ``"verbatim"``, ... (saaras:v3 only).
        sample_rate: 16000 or 8000; input audio is resampled to it.
        high_vad_sensitivity, vad_signals: Sarvam's own VAD options (``None``: its default).
        url: the endpoint (a scripted server's URL in tests).
        final_timeout: how long the user's stop waits for the flush's transcript.
        options: timeouts, keep-alive (default every 20 s) and reconnect policy.
    """

    env_var = "SARVAM_API_KEY"

    language_code: str = "en-IN"
    model: str = "saarika:v2.5"
    mode: str | None = None
    sample_rate: int = attrs.field(default=16000, validator=_rate)
    high_vad_sensitivity: bool | None = None
    vad_signals: bool | None = None
    url: str = "wss://api.sarvam.ai/speech-to-text/ws"
    final_timeout: float = 2.0
    options: WebSocketOptions = attrs.Factory(lambda: WebSocketOptions(keepalive_interval=20.0))


class SarvamSTTService(STTService, WebSocketService):
    """Sarvam streaming STT as a processor (after the VAD; see :class:`STTService`)."""

    service = "Sarvam STT"

    def __init__(self, config: SarvamSTTConfig, *, name: str | None = None) -> None:
        super().__init__(
            sample_rate=config.sample_rate,
            hold_stop_for_final=True,
            final_timeout=config.final_timeout,
            options=config.options,
            name=name,
        )
        self.config = config

    def ws_url(self) -> str:
        c = self.config
        query: dict[str, str | int] = {"language-code": c.language_code, "model": c.model}
        if c.mode is not None:
            query["mode"] = c.mode
        query.update(sample_rate=c.sample_rate, input_audio_codec="pcm_s16le", flush_signal="true")
        if c.high_vad_sensitivity is not None:
            query["high_vad_sensitivity"] = str(c.high_vad_sensitivity).lower()
        if c.vad_signals is not None:
            query["vad_signals"] = str(c.vad_signals).lower()
        return f"{c.url}?{urlencode(query)}"

    def ws_headers(self) -> list[tuple[str, str]]:
        return [(sarvam.KEY_HEADER, self.config.api_key)]

    def secrets(self) -> tuple[str, ...]:
        return (self.config.api_key,)

    def _audio_message(self, pcm: bytes) -> str:
        audio = {
            "data": base64.b64encode(pcm).decode("ascii"),
            "sample_rate": str(self.config.sample_rate),
            "encoding": "audio/wav",
        }
        return json.dumps({"audio": audio})

    async def run_stt(self, pcm: bytes) -> None:
        if pcm:
            self.send(self._audio_message(pcm))

    async def on_speech_stopped(self) -> None:
        self.send(json.dumps({"type": "flush"}))
        self.expect_reply()
        self.expect_final()

    async def send_keepalive(self) -> None:
        self.send(self._audio_message(silence(0.1, self.config.sample_rate)))

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return
        kind, data = sarvam.envelope(message)
        if kind == "data":
            self.reply_complete()
            text = str(data.get("transcript") or "")
            await self.push_transcript(text, final=True, language=data.get("language_code"))
        elif kind == "error":
            await self.report(sarvam.error_text(data, message))
            await self.final_received()
        elif kind == "events":
            logger.debug("%s: Sarvam VAD %s", self.name, data.get("signal_type"))

    def on_disconnected(self) -> None:
        # The flush's transcript will not come on this connection; the stop is released by
        # its timer (final_timeout) if it is held.
        pass
