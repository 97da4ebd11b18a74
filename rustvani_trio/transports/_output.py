"""The transport's output side: the answer's frames become RTVI messages, audio is paced."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import trio

from ..frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMFullResponseEnd,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from ..observer import BaseObserver, FramePushed
from ..processor import FrameProcessor
from ._protobuf import PbAudio, encode_frame
from .rtvi import (
    RTVIClientMessageFrame,
    RTVIServerMessageFrame,
    RTVIServerResponseFrame,
    message,
    node_changed_data,
)

if TYPE_CHECKING:
    from .websocket import WebSocketTransport

__all__ = ["WebSocketOutputProcessor"]

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM


class _SideChannelObserver(BaseObserver):
    """Reports the frames that need not pass the output transport: user transcripts (the
    user aggregator consumes them) and flow node changes, at their first push."""

    def __init__(self, transport: WebSocketTransport) -> None:
        self._transport = transport
        self._seen: collections.deque[int] = collections.deque(maxlen=64)

    @staticmethod
    def handles(frame: Frame) -> bool:
        return isinstance(frame, TranscriptionFrame) or node_changed_data(frame) is not None

    def on_push_frame(self, event: FramePushed) -> None:
        frame = event.frame
        if not self.handles(frame) or frame.id in self._seen:
            return
        self._seen.append(frame.id)
        for msg in self._transport.encoder.encode(frame):
            self._transport.send_message_nowait(msg)


class WebSocketOutputProcessor(FrameProcessor):
    """Sends the pipeline's output to the client (built by :meth:`WebSocketTransport.output`;
    put it after the LLM and TTS, before the assistant aggregator). Frames are forwarded;
    server messages, responses and unanswered client messages end here.

    Audio goes out in ``audio_out_chunk`` pieces, each when the client's unplayed audio would
    otherwise fall below ``audio_out_lead``; the first chunk of a run of audio brings a
    :class:`BotStartedSpeakingFrame`, ``bot_stopped_gap`` seconds without audio (or an
    interruption) a :class:`BotStoppedSpeakingFrame` (both pushed up- and downstream).
    """

    def __init__(self, transport: WebSocketTransport, *, name: str) -> None:
        super().__init__(name=name)
        self._transport = transport
        self.observer = _SideChannelObserver(transport)
        self._play_end = 0.0
        self._speaking = False
        self._speaking_started = trio.Event()
        self._audio_format: tuple[int, int] | None = None
        self._silence: trio.CancelScope | None = None
        #: seconds of audio sent (for tests and metrics)
        self.audio_sent = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        transport = self._transport
        if direction is _UP:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, OutputAudioRawFrame):
            await self._play(frame)
        elif isinstance(frame, LLMFullResponseEnd | TTSStoppedFrame):
            # The answer ends when it was heard: the assistant aggregator (and the user
            # side, which interrupts only while the bot responds) see its end after the
            # last of its audio has played, not when it was sent ahead.
            await trio.sleep_until(self._play_end)
            for msg in transport.encoder.encode(frame):
                await transport.send_message(msg)
        elif isinstance(frame, RTVIClientMessageFrame):
            error = f"no handler for client-message type {frame.type!r}"
            await transport.send_message(
                message("error-response", {"error": error}, id=frame.msg_id)
            )
            return
        elif isinstance(frame, RTVIServerMessageFrame | RTVIServerResponseFrame):
            for msg in transport.encoder.encode(frame):
                await transport.send_message(msg)
            return
        elif not self.observer.handles(frame) and not self._synthetic(frame):
            for msg in transport.encoder.encode(frame):
                await transport.send_message(msg)
        await self.push_frame(frame, direction)

    def _synthetic(self, frame: Frame) -> bool:
        return (
            isinstance(frame, UserStartedSpeakingFrame | UserStoppedSpeakingFrame)
            and frame.id in self._transport.input().synthetic_ids
        )

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        # Every frame of the interrupted answer was drained before this point, and its
        # audio still queued for the writer is dropped, so nothing of it follows
        # bot-interrupted (at most the one chunk being written at this moment). Audio the
        # client already holds (at most audio_out_lead) cannot be recalled.
        self._transport.drop_queued_audio()
        for msg in self._transport.encoder.interrupted():
            await self._transport.send_message(msg)
        self._play_end = trio.current_time()
        await self._stop_speaking()

    async def on_stop(self, frame: EndFrame) -> None:
        # Let the audio already sent finish playing before the pipeline (and socket) ends.
        await trio.sleep_until(self._play_end)
        await self._stop_speaking()

    # ------------------------------------------------------------------ audio

    async def _play(self, frame: OutputAudioRawFrame) -> None:
        params = self._transport.params
        rate, channels = frame.sample_rate, frame.num_channels
        bytes_per_frame = 2 * channels
        step = max(1, round(rate * params.audio_out_chunk)) * bytes_per_frame
        audio = frame.audio
        for offset in range(0, len(audio), step):
            chunk = audio[offset : offset + step]
            duration = len(chunk) / bytes_per_frame / rate
            await trio.sleep_until(self._play_end + duration - params.audio_out_lead)
            self._play_end = max(self._play_end, trio.current_time())
            if not self._speaking:
                await self._start_speaking()  # announced before its first audio
            await self._send_audio(chunk, rate, channels)
            self._play_end = max(self._play_end, trio.current_time()) + duration
            self.audio_sent += duration
            if self._silence is not None:
                self._silence.deadline = self._play_end + params.bot_stopped_gap

    async def _send_audio(self, chunk: bytes, rate: int, channels: int) -> None:
        transport = self._transport
        if transport.wire == "protobuf":
            data = PbAudio(audio=chunk, sample_rate=rate, num_channels=channels)
            await transport.send_audio(encode_frame(data))
            return
        if self._audio_format != (rate, channels):
            self._audio_format = (rate, channels)
            fmt = {"type": "audio-format", "sample_rate": rate, "num_channels": channels}
            await transport.send_message(message("server-message", fmt))
        await transport.send_audio(chunk)

    async def _start_speaking(self) -> None:
        self._speaking = True
        self._speaking_started.set()
        await self._announce(BotStartedSpeakingFrame(), "bot-started-speaking")

    async def _stop_speaking(self) -> None:
        if not self._speaking:
            return
        self._speaking = False
        self._speaking_started = trio.Event()
        await self._announce(BotStoppedSpeakingFrame(), "bot-stopped-speaking")

    async def _announce(self, frame: Frame, rtvi_type: str) -> None:
        await self._transport.send_message(message(rtvi_type))
        if self.start_frame is not None:
            await self.push_frame(frame, _UP)
            await self.push_frame(type(frame)(), _DOWN)

    async def speaking_monitor(self) -> None:
        """Says when the bot stopped speaking: ``bot_stopped_gap`` after its audio ran out
        (run by the transport)."""
        gap = self._transport.params.bot_stopped_gap
        while True:
            await self._speaking_started.wait()
            # Each chunk sent moves this scope's deadline (see _play).
            with trio.CancelScope(deadline=self._play_end + gap) as self._silence:
                await trio.sleep_forever()
            self._silence = None
            await self._stop_speaking()
