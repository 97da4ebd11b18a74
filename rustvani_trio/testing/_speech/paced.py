"""A paced audio output standing in for a transport's output (which the WebSocket transport
provides): bot audio leaves in real time, a small ``lead`` ahead of playback, so an
interruption stops audible output within about one chunk."""

from __future__ import annotations

import attrs
import trio

from ...frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMFullResponseEnd,
    OutputAudioRawFrame,
    TTSStoppedFrame,
)
from ...processor import FrameProcessor

__all__ = ["PacedAudioOutput", "SentAudio"]

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM


@attrs.frozen
class SentAudio:
    """One chunk "sent to the client": when, and what."""

    time: float
    frame: OutputAudioRawFrame


class PacedAudioOutput(FrameProcessor):
    """Paces :class:`OutputAudioRawFrame` s in real time (they are recorded in :attr:`sent`,
    not forwarded), pushes :class:`BotStartedSpeakingFrame` / :class:`BotStoppedSpeakingFrame`
    both ways, and forwards ``TTSStoppedFrame`` / ``LLMFullResponseEnd`` only once the audio
    before them has played, so the assistant aggregator sees an answer end when it was
    heard. An interruption drops the queued audio (the lane is drained) and stops the bot."""

    def __init__(self, *, lead: float = 0.02, name: str | None = None) -> None:
        super().__init__(name=name)
        self.lead = lead
        self.sent: list[SentAudio] = []
        self.started_at: list[float] = []
        self.stopped_at: list[float] = []
        self._play_end = 0.0
        self._speaking = False
        self.first_audio = trio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _DOWN and isinstance(frame, OutputAudioRawFrame):
            now = trio.current_time()
            self._play_end = max(self._play_end, now)
            if not self._speaking:
                self._speaking = True
                self.started_at.append(now)
                await self._both_ways(BotStartedSpeakingFrame())
            await trio.sleep_until(self._play_end - self.lead)
            self.sent.append(SentAudio(trio.current_time(), frame))
            self.first_audio.set()
            self._play_end += frame.duration
        elif direction is _DOWN and isinstance(frame, (TTSStoppedFrame, LLMFullResponseEnd)):
            await trio.sleep_until(self._play_end)
            if isinstance(frame, TTSStoppedFrame) and self._speaking:
                await self._stop_speaking()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self._play_end = trio.current_time()
        if self._speaking:
            await self._stop_speaking()

    async def _stop_speaking(self) -> None:
        self._speaking = False
        self.stopped_at.append(trio.current_time())
        await self._both_ways(BotStoppedSpeakingFrame())

    async def _both_ways(self, frame: Frame) -> None:
        await self.push_frame(frame, _DOWN)
        await self.push_frame(type(frame)(), _UP)

    @property
    def audio(self) -> bytes:
        """Everything sent, concatenated."""
        return b"".join(s.frame.audio for s in self.sent)
