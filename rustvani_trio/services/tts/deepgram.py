"""Deepgram streaming text-to-speech (extra ``tts-deepgram``).

Protocol (``wss://api.deepgram.com/v1/speak``): the voice, ``encoding=linear16`` and
``sample_rate`` in the query, ``Authorization: Token <key>``; ``{"type": "Speak", "text"}``
per sentence, ``{"type": "Flush"}`` at the end of an answer (answered by ``Flushed`` once
its audio was sent), ``{"type": "Clear"}`` on an interruption (answered by ``Cleared``; the
connection stays open; audio and ``Flushed`` until every Clear is answered are the
interrupted answer's and dropped; a Clear unanswered after ``idle_timeout`` reopens the
connection). Audio arrives as binary messages of raw PCM; ``Metadata``,
``Warning`` and ``Error`` messages are text.
"""

from __future__ import annotations

try:
    import trio_websocket  # noqa: F401 - the one dependency of the tts-deepgram extra
except ImportError as _exc:
    raise ImportError(
        "Deepgram TTS needs the tts-deepgram extra (trio-websocket): "
        "pip install 'rustvani-trio[tts-deepgram]'"
    ) from _exc

import json
import logging
from urllib.parse import urlencode

import attrs
import trio

from ..._text import excerpt
from ..._validators import positive
from ..stt._ws import WebSocketOptions
from ..stt._ws_options import ProviderConfig
from ._ws_tts import WebSocketTTSService

__all__ = ["DeepgramTTSConfig", "DeepgramTTSService"]

logger = logging.getLogger("rustvani_trio")


@attrs.frozen(kw_only=True)
class DeepgramTTSConfig(ProviderConfig):
    """Deepgram TTS settings.

    Attributes:
        api_key: the Deepgram key (sent in the ``Authorization`` header; never logged).
        voice: the Aura model, e.g. ``"aura-2-helena-en"``.
        sample_rate: of the PCM produced (linear16).
        base_url: ``wss://api.deepgram.com`` (a scripted server's URL in tests).
        mip_opt_out: opt out of Deepgram's model improvement programme.
        options: connection timeouts, keep-alive and reconnect policy.
    """

    env_var = "DEEPGRAM_API_KEY"

    voice: str = "aura-2-helena-en"
    sample_rate: int = attrs.field(default=24000, validator=positive)
    base_url: str = "wss://api.deepgram.com"
    mip_opt_out: bool | None = None
    options: WebSocketOptions = attrs.Factory(WebSocketOptions)


class DeepgramTTSService(WebSocketTTSService):
    """Deepgram streaming TTS as a processor (see :class:`TTSService` for the frames)."""

    service = "Deepgram TTS"

    def __init__(self, config: DeepgramTTSConfig, *, name: str | None = None) -> None:
        super().__init__(sample_rate=config.sample_rate, options=config.options, name=name or None)
        self.config = config
        # Clears sent and not yet answered by Cleared (a count: two interruptions can come
        # before the first Cleared); audio and Flushed are the interrupted answers' meanwhile.
        self._clears_pending = 0
        self._clears_sent = 0

    def ws_url(self) -> str:
        query: dict[str, str | int] = {
            "model": self.config.voice,
            "encoding": "linear16",
            "sample_rate": self.config.sample_rate,
        }
        if self.config.mip_opt_out is not None:
            query["mip_opt_out"] = str(self.config.mip_opt_out).lower()
        return f"{self.config.base_url.rstrip('/')}/v1/speak?{urlencode(query)}"

    def ws_headers(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Token {self.config.api_key}")]

    def secrets(self) -> tuple[str, ...]:
        return (self.config.api_key,)

    # ------------------------------------------------------------------ TTSService

    def text_message(self, text: str) -> str:
        return json.dumps({"type": "Speak", "text": text})

    def flush_message(self) -> str:
        return json.dumps({"type": "Flush"})

    async def stop_tts(self) -> None:
        self.abandon_answer()  # sentences not sent yet are simply not sent
        if self.connected:
            self._clears_pending += 1
            self._clears_sent += 1
            self.send(json.dumps({"type": "Clear"}))
            self.start_task_soon(self._await_cleared, self._clears_sent)

    async def _await_cleared(self, clear: int) -> None:
        """A Clear unanswered after ``idle_timeout`` (a provider bug, a lost message) would
        have every later answer's audio dropped: the connection is reopened instead, and the
        answer waiting meanwhile (none of it was heard) goes out again on the new one."""
        await trio.sleep(self.options.idle_timeout)
        if self._clears_pending and clear == self._clears_sent and not self._closing:
            logger.warning(
                "%s: %s did not answer Clear within idle_timeout=%ss; reconnecting",
                self.name,
                self.service,
                self.options.idle_timeout,
            )
            await self.reconnect()  # (the new connection starts with no Clear pending)

    # ------------------------------------------------------------------ WebSocketService

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            if message and not self._clears_pending:
                await self.push_audio(message)
            return
        data = json.loads(message)
        kind = data.get("type")
        if kind == "Flushed":
            # Between our Clear and its Cleared, a Flushed is the interrupted answer's (its
            # flush had finished as the Clear came), never the next answer's: the provider
            # handles messages in order, and the next answer's Flush went out after the Clear.
            if not self._clears_pending:
                self.answer_done()
        elif kind == "Cleared":
            self._clears_pending = max(0, self._clears_pending - 1)
        elif kind == "Warning":
            text = data.get("warn_msg") or data.get("description") or message
            code = data.get("warn_code")
            text = f"{text}" + (f" ({code})" if code else "")
            # the provider's text: escaped (no forged log lines) and bounded
            logger.warning(
                "%s: %s warning: %s", self.name, self.service, excerpt(self.redact(text))
            )
        elif kind == "Error":
            text = data.get("err_msg") or data.get("description") or message
            code = data.get("err_code")
            await self.report(f"{text}" + (f" ({code})" if code else ""))
            self.answer_done()
        elif kind != "Metadata":
            logger.debug("%s: unexpected message %s", self.name, excerpt(self.redact(message), 200))

    def close_error(self, code: int, reason: str) -> tuple[str, bool] | None:
        if code in (1000, 1001):
            return None
        text = f": {reason}" if reason else ""
        # 1008: Deepgram refused what we sent (bad text or parameters): a retry would too.
        return f"Deepgram closed the connection with code {code}{text}", code != 1008

    def on_disconnected(self) -> None:
        self._clears_pending = 0
        super().on_disconnected()

    async def before_close(self) -> None:
        self.send(json.dumps({"type": "Close"}))
