"""The transport's input side: client messages (either wire form) become pipeline frames."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from ..frames import (
    ErrorFrame,
    Frame,
    FrameDirection,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMMessagesAppendFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
)
from ..processor import FrameProcessor
from ._protobuf import (
    PbAudio,
    PbInterruption,
    PbMessage,
    PbText,
    PbTranscription,
    ProtobufDecodeError,
    decode_frame,
)
from .rtvi import (
    PROTOCOL_VERSION,
    InboundMessage,
    RTVIClientMessageFrame,
    RTVIProtocolError,
    RTVIServerMessageFrame,
    RTVIServerResponseFrame,
    message,
    parse_inbound,
)

if TYPE_CHECKING:
    from .websocket import WebSocketTransport

__all__ = ["WebSocketInputProcessor"]

logger = logging.getLogger("rustvani_trio.transport")

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
_SERVER_MAJOR = int(PROTOCOL_VERSION.split(".")[0])


def _library_version() -> str:
    from .. import __version__

    return __version__


class WebSocketInputProcessor(FrameProcessor):
    """The pipeline's first processor for one connection (built by
    :meth:`WebSocketTransport.input`). Downstream it forwards what the task queues and what
    the client sends; upstream it reports :class:`ErrorFrame` s to the client (``error``) and
    sends the server messages and responses pushed upstream to it."""

    def __init__(self, transport: WebSocketTransport, *, name: str) -> None:
        super().__init__(name=name)
        self._transport = transport
        self._audio_clock = 0.0
        self.client_ready = False
        #: ids of the speaking frames that bracket a typed message (not reported as speech)
        self.synthetic_ids: set[int] = set()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _UP:
            if isinstance(frame, RTVIServerMessageFrame | RTVIServerResponseFrame):
                for msg in self._transport.encoder.encode(frame):
                    await self._transport.send_message(msg)
                return
            if isinstance(frame, ErrorFrame):
                for msg in self._transport.encoder.encode(frame):
                    await self._transport.send_message(msg)
        await self.push_frame(frame, direction)

    # ------------------------------------------------------------------ the reader

    async def read_loop(self) -> None:
        """Read the client's messages until it leaves (run by the transport)."""
        from .websocket import ConnectionClosed

        await self._transport.started.wait()
        while True:
            try:
                data = await self._transport.connection.receive()
            except ConnectionClosed as exc:
                await self._transport.client_disconnected(exc)
                return
            await self.dispatch(data)

    async def dispatch(self, data: str | bytes) -> None:
        """Handle one message from the client; bad input is answered, never fatal."""
        transport = self._transport
        if isinstance(data, str):
            if transport.wire == "auto":
                transport.wire = "json"
            await self._on_json(data)
            return
        if transport.wire == "auto":
            pcm = transport.params.audio_in_sample_rate is not None
            transport.wire = "json" if pcm else "protobuf"
        if transport.wire == "json":
            await self._on_pcm(data)
        else:
            await self._on_protobuf(data)

    async def _reply_error(self, error: str, msg_id: str | None) -> None:
        if msg_id is None:
            await self._transport.send_message(message("error", {"error": error, "fatal": False}))
        else:
            await self._transport.send_message(
                message("error-response", {"error": error}, id=msg_id)
            )

    async def _on_json(self, text: str | bytes) -> None:
        try:
            msg = parse_inbound(text)
            await self._handle(msg)
        except RTVIProtocolError as exc:
            await self._reply_error(exc.error, exc.msg_id)

    async def _on_protobuf(self, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except ProtobufDecodeError as exc:
            await self._reply_error(f"invalid binary frame: {exc}", None)
            return
        if isinstance(frame, PbMessage):
            await self._on_json(frame.data)
        elif isinstance(frame, PbAudio):
            await self._push_audio(frame.audio, frame.sample_rate, frame.num_channels, None)
        elif isinstance(frame, PbText | PbTranscription) and not frame.text.strip():
            kind = "text" if isinstance(frame, PbText) else "transcription"
            await self._reply_error(f"an empty {kind} frame is not a user turn", None)
        elif isinstance(frame, PbText):
            await self._user_text(frame.text, run_immediately=True)
        elif isinstance(frame, PbTranscription):
            user = frame.user_id or self._transport.session_id
            await self.push_frame(TranscriptionFrame(text=frame.text, user_id=user))
        elif isinstance(frame, PbInterruption):
            await self._interrupt(None)

    async def _on_pcm(self, data: bytes) -> None:
        params = self._transport.params
        rate = params.audio_in_sample_rate
        if rate is None:
            await self._reply_error(
                "binary audio needs its format first: add sample_rate (and num_channels) to "
                "the URL, or send client-ready with data.audio_in = {sample_rate, num_channels}",
                None,
            )
            return
        await self._push_audio(data, rate, params.audio_in_channels, None)

    # ------------------------------------------------------------------ message types

    async def _handle(self, msg: InboundMessage) -> None:
        handler = _HANDLERS.get(msg.type)
        if handler is None:
            known = ", ".join(sorted(_HANDLERS))
            raise RTVIProtocolError(f"unknown message type {msg.type!r} (known: {known})", msg.id)
        await handler(self, msg)

    async def _client_ready(self, msg: InboundMessage) -> None:
        if msg.id is None:
            raise RTVIProtocolError("client-ready needs an 'id' (bot-ready answers with it)")
        data = msg.data if isinstance(msg.data, Mapping) else {}
        version = data.get("version")
        problem = None
        if not isinstance(version, str):
            problem = "client-ready has no protocol version (data.version)"
        else:
            try:
                major = int(version.split(".")[0])
            except ValueError:
                major = -1
            if major != _SERVER_MAJOR:
                problem = (
                    f"RTVI version {version!r} is not supported: this server speaks "
                    f"{PROTOCOL_VERSION} (any {_SERVER_MAJOR}.x client); compatibility issues "
                    "may occur"
                )
        if problem is not None:
            await self._reply_error(problem, msg.id)
        audio_in = data.get("audio_in")
        if isinstance(audio_in, Mapping):
            await self._declare_audio(audio_in, msg.id)
        self.client_ready = True
        about = {
            "library": "rustvani-trio",
            "library_version": _library_version(),
            "session_id": self._transport.session_id,
            **self._transport.about,
        }
        ready = message("bot-ready", {"version": PROTOCOL_VERSION, "about": about}, id=msg.id)
        await self._transport.send_message(ready)

    async def _declare_audio(self, audio_in: Mapping[str, Any], msg_id: str) -> None:
        import attrs

        rate, channels = audio_in.get("sample_rate"), audio_in.get("num_channels", 1)
        if not isinstance(rate, int) or isinstance(rate, bool):
            await self._reply_error("data.audio_in needs sample_rate, an integer (Hz)", msg_id)
            return
        try:
            params = attrs.evolve(
                self._transport.params, audio_in_sample_rate=rate, audio_in_channels=channels
            )
        except (TypeError, ValueError) as exc:
            await self._reply_error(f"data.audio_in: {exc}", msg_id)
            return
        self._transport.params = params

    async def _send_text(self, msg: InboundMessage) -> None:
        data = msg.data if isinstance(msg.data, Mapping) else None
        content = None if data is None else data.get("content")
        if not isinstance(content, str) or not content.strip():
            raise RTVIProtocolError("send-text needs data.content, a non-empty string", msg.id)
        options = data.get("options") if data is not None else None
        run = True
        if isinstance(options, Mapping):
            run = options.get("run_immediately", True) is not False
        await self._user_text(content, run_immediately=run)

    async def _user_text(self, text: str, *, run_immediately: bool) -> None:
        if not run_immediately:
            content = {"role": "user", "content": text}
            await self.push_frame(LLMMessagesAppendFrame(messages=(content,), run_llm=False))
            return
        # A typed message is a complete utterance: a final transcript followed by "stopped
        # speaking" is one user turn with any user aggregator (text mode runs it at the
        # transcript and interrupts the bot if it is answering; voice mode at the stop). The
        # stop is not reported to the client as speech. (No "started speaking" before it: a
        # system frame can overtake the transcript and would interrupt this very turn.)
        stopped = UserStoppedSpeakingFrame()
        self.synthetic_ids.add(stopped.id)
        if len(self.synthetic_ids) > 64:
            self.synthetic_ids = {stopped.id}
        await self.push_frame(TranscriptionFrame(text=text, user_id=self._transport.session_id))
        await self.push_frame(stopped)

    async def _client_message(self, msg: InboundMessage) -> None:
        data = msg.data if isinstance(msg.data, Mapping) else None
        type_ = None if data is None else data.get("t")
        if msg.id is None:
            raise RTVIProtocolError("client-message needs an 'id' (the response carries it)")
        if not isinstance(type_, str) or not type_:
            raise RTVIProtocolError("client-message needs data.t, a non-empty string", msg.id)
        frame = RTVIClientMessageFrame(msg_id=msg.id, type=type_, data=data and data.get("d"))
        if type_ == "interrupt":
            await self._interrupt(msg.id)
            return
        handler = self._transport.client_message_handlers.get(type_)
        if handler is None:
            await self.push_frame(frame)
            return
        try:
            result = await handler(frame)
        except Exception as exc:
            logger.debug("client-message handler %r failed", type_, exc_info=exc)
            await self._reply_error(f"{type_}: {type(exc).__name__}: {exc}", msg.id)
            return
        response = message("server-response", {"t": type_, "d": result}, id=msg.id)
        await self._transport.send_message(response)

    async def _interrupt(self, msg_id: str | None) -> None:
        if not self.interruptions_allowed:
            await self._reply_error("interruptions are disabled for this session", msg_id)
            return
        await self.push_frame(InterruptionFrame())
        if msg_id is not None:
            ok = message("server-response", {"t": "interrupt", "d": {"ok": True}}, id=msg_id)
            await self._transport.send_message(ok)

    async def _disconnect_bot(self, msg: InboundMessage) -> None:
        await self._transport.end(1000, "the client disconnected the bot")

    async def _raw_audio(self, msg: InboundMessage) -> None:
        data = msg.data if isinstance(msg.data, Mapping) else {}
        rate, channels = data.get("sampleRate"), data.get("numChannels", 1)
        batch = data.get("base64AudioBatch")
        chunks = batch if isinstance(batch, list) else [data.get("base64Audio")]
        if not isinstance(rate, int) or not isinstance(channels, int):
            raise RTVIProtocolError(f"{msg.type} needs integer sampleRate and numChannels", msg.id)
        for chunk in chunks:
            try:
                audio = base64.b64decode(str(chunk), validate=True)
            except (binascii.Error, ValueError):
                raise RTVIProtocolError(f"{msg.type}: audio is not valid base64", msg.id) from None
            if not await self._push_audio(audio, rate, channels, msg.id):
                return

    async def _push_audio(self, audio: bytes, rate: int, channels: int, msg_id: str | None) -> bool:
        if not audio:
            await self._reply_error("an empty audio message (no samples)", msg_id)
            return False
        if not 8000 <= rate <= 192000 or not 1 <= channels <= 8:
            await self._reply_error(
                f"unsupported audio format: {rate} Hz, {channels} channel(s)", msg_id
            )
            return False
        try:
            frame = InputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=channels)
        except (TypeError, ValueError) as exc:
            await self._reply_error(f"bad audio: {exc}", msg_id)
            return False
        await self.push_frame(frame)
        # Read a client's audio no faster than real time (plus a margin): the socket, not
        # memory, holds what it sends ahead.
        now = trio.current_time()
        self._audio_clock = max(self._audio_clock, now) + frame.duration
        ahead = self._audio_clock - now - self._transport.params.max_audio_ahead
        if ahead > 0:
            await trio.sleep(ahead)
        return True


_HANDLERS = {
    "client-ready": WebSocketInputProcessor._client_ready,
    "send-text": WebSocketInputProcessor._send_text,
    "client-message": WebSocketInputProcessor._client_message,
    "disconnect-bot": WebSocketInputProcessor._disconnect_bot,
    "raw-audio": WebSocketInputProcessor._raw_audio,
    "raw-audio-batch": WebSocketInputProcessor._raw_audio,
}
