"""60db streaming speech-to-text (extra ``stt-60db``).

Protocol (``wss://api.60db.ai/ws/stt?apiKey=<key>``): the server greets with
``{"connection_established": ...}`` and ``{"type": "connected"}`` (in either order; a
``{"connecting": ...}`` may come first); the client then sends ``{"type": "start",
"languages": [...], "config": {...}}``, and streams audio once ``{"type":
"session_started"}`` arrived (audio sent earlier waits in the queue). Audio goes as
``{"type": "audio", "audio": <base64 PCM s16le>, "encoding": "linear", "sample_rate",
"timestamp"}``. Transcripts come as ``{"type": "transcription", "text", "is_final",
"speech_final", "is_partial", "language", "confidence"}``: partials, then a fast final
(``is_final`` without ``speech_final``), then the refined one (``speech_final``); only the
last is final for us, the others are interim. ``{"type": "stop"}`` ends the session
(``session_stopped``). A close with code 1008 means the key was refused or the account has
no credit left: reported, and not retried in a loop. A server that has not started the
session within ``idle_timeout`` of the connection is taken for dead (reported, reconnected).
"""

from __future__ import annotations

try:
    import trio_websocket  # noqa: F401 - the one dependency of the stt-60db extra
except ImportError as _exc:
    raise ImportError(
        "60db STT needs the stt-60db extra (trio-websocket): pip install 'rustvani-trio[stt-60db]'"
    ) from _exc

import base64
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import attrs
import trio

from ._base import STTService
from ._ws import WebSocketOptions, WebSocketService
from ._ws_options import ProviderConfig

__all__ = ["SixtyDbSTTConfig", "SixtyDbSTTService"]

logger = logging.getLogger("rustvani_trio")


@attrs.frozen(kw_only=True)
class SixtyDbSTTConfig(ProviderConfig):
    """60db STT settings.

    Attributes:
        api_key: the key (60db takes it in the URL; it is redacted from every error).
        languages: language codes, e.g. ``("en",)``; empty to detect.
        sample_rate: of the audio sent (input is resampled to it).
        utterance_end_ms: silence after which 60db finalises an utterance.
        interim_results_frequency: ms between partial results (``None``: none).
        continuous_mode: keep the session open between utterances.
        url: the endpoint (a scripted server's URL in tests).
        options: timeouts and reconnect policy.
    """

    env_var = "SIXTYDB_API_KEY"

    languages: tuple[str, ...] = ("en",)
    sample_rate: int = 16000
    utterance_end_ms: int = 500
    interim_results_frequency: int | None = 300
    continuous_mode: bool = True
    url: str = "wss://api.60db.ai/ws/stt"
    options: WebSocketOptions = attrs.Factory(WebSocketOptions)


class SixtyDbSTTService(STTService, WebSocketService):
    """60db streaming STT as a processor (after the VAD; see :class:`STTService`)."""

    service = "60db STT"

    def __init__(self, config: SixtyDbSTTConfig, *, name: str | None = None) -> None:
        super().__init__(sample_rate=config.sample_rate, options=config.options, name=name)
        self.config = config
        self._start_sent = False
        self._stopped = trio.Event()

    def ws_url(self) -> str:
        return f"{self.config.url}?apiKey={quote(self.config.api_key, safe='')}"

    def secrets(self) -> tuple[str, ...]:
        return (self.config.api_key,)

    def _start_message(self) -> str:
        c = self.config
        config: dict[str, Any] = {
            "encoding": "linear",
            "sample_rate": c.sample_rate,
            "utterance_end_ms": c.utterance_end_ms,
            "continuous_mode": c.continuous_mode,
        }
        if c.interim_results_frequency is not None:
            config["interim_results_frequency"] = c.interim_results_frequency
        message: dict[str, Any] = {"type": "start", "config": config}
        if c.languages:
            message["languages"] = list(c.languages)
        return json.dumps(message)

    async def on_connected(self) -> None:
        self._start_sent = False  # sent on the greeting; audio waits for session_started
        self.expect_reply()  # the greeting and session_started, within idle_timeout

    async def run_stt(self, pcm: bytes) -> None:
        if pcm:
            message = {
                "type": "audio",
                "audio": base64.b64encode(pcm).decode("ascii"),
                "encoding": "linear",
                "sample_rate": self.config.sample_rate,
                "timestamp": int(time.time() * 1000),
            }
            self.send(json.dumps(message))

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            return
        data: dict[str, Any] = json.loads(message)
        kind = data.get("type")
        if "connection_established" in data or kind in ("connection_established", "connected"):
            if not self._start_sent:
                self._start_sent = True
                await self.send_now(self._start_message())
        elif kind == "session_started":
            self.reply_complete()
            self.set_ready()
        elif kind == "transcription":
            await self._transcription(data)
        elif kind == "error":
            error = data.get("error") or data.get("message") or message
            code = data.get("error_code")
            await self.report(f"{error}" + (f" ({code})" if code else ""))
        elif kind == "session_stopped":
            self._stopped.set()
        elif kind == "speech_started":
            logger.debug("%s: 60db heard speech start", self.name)

    async def _transcription(self, data: dict[str, Any]) -> None:
        text = str(data.get("text") or "")
        final = bool(data.get("is_final")) and bool(data.get("speech_final"))
        if final or text.strip():
            await self.push_transcript(text, final=final, language=data.get("language"))

    def close_error(self, code: int, reason: str) -> tuple[str, bool] | None:
        if code == 1008:
            why = f": {reason}" if reason else ""
            return (
                f"60db refused the session (close code 1008{why}); the API key is wrong or "
                "the account has no credit left",
                False,
            )
        return super().close_error(code, reason)

    def on_disconnected(self) -> None:
        self._start_sent = False
        self._stopped.set()

    async def before_close(self) -> None:
        self._stopped = trio.Event()
        self.send(json.dumps({"type": "stop"}))
        await self._stopped.wait()  # bounded by close_timeout
