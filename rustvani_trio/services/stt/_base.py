"""STTService: what every speech-to-text processor shares (private base)."""

from __future__ import annotations

import abc

import trio

from ...audio.pcm import to_mono
from ...audio.resample import Resampler
from ...frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InputAudioRawFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from ...processor import FrameProcessor

__all__ = ["STTService"]

_DOWN = FrameDirection.DOWNSTREAM


class STTService(FrameProcessor):
    """Transcribes :class:`InputAudioRawFrame` s into :class:`TranscriptionFrame` s.

    Sits after the VAD: audio is forwarded (``audio_passthrough``), converted to mono and to
    the engine's ``sample_rate`` and given to :meth:`run_stt`; the VAD's start and stop reach
    :meth:`on_speech_started` / :meth:`on_speech_stopped` (a provider flushes there).
    Transcripts go out with :meth:`push_transcript` (``final=False`` for interim results).

    When the engine answers a flush with the utterance's final transcript
    (``hold_stop_for_final``), the :class:`UserStoppedSpeakingFrame` behind the VAD stop is
    held until that transcript was pushed (at most ``final_timeout`` seconds), so the user
    aggregator closes the turn with all of the user's words, never before the last of them.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        audio_passthrough: bool = True,
        hold_stop_for_final: bool = False,
        final_timeout: float = 2.0,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.sample_rate = sample_rate
        self.audio_passthrough = audio_passthrough
        self.hold_stop_for_final = hold_stop_for_final
        self.final_timeout = final_timeout
        self._resampler: Resampler | None = None
        self._awaiting_final = False
        self._held_stop: UserStoppedSpeakingFrame | None = None
        self._hold_id = 0

    # ------------------------------------------------------------------ subclass API

    @abc.abstractmethod
    async def run_stt(self, pcm: bytes) -> None:
        """Take mono PCM s16le at :attr:`sample_rate`."""

    async def on_speech_started(self) -> None:
        """The VAD heard the user start speaking."""

    async def on_speech_stopped(self) -> None:
        """The VAD heard the user stop speaking (flush the engine here, then call
        :meth:`expect_final` if a final transcript will answer)."""

    def expect_final(self) -> None:
        """A final transcript will answer the flush just sent (holds the user's stop)."""
        self._awaiting_final = True

    async def push_transcript(
        self, text: str, *, final: bool = True, language: str | None = None
    ) -> None:
        """Push a transcript (empty text pushes nothing); a final one releases the held stop."""
        if text.strip():
            await self.push_frame(TranscriptionFrame(text=text.strip(), finalized=final))
        if final:
            await self.final_received()

    async def final_received(self) -> None:
        """The awaited final transcript arrived (or will not): release the user's stop."""
        self._awaiting_final = False
        held, self._held_stop = self._held_stop, None
        if held is not None:
            await self.push_frame(held)

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is not _DOWN:
            await self.push_frame(frame, direction)
        elif isinstance(frame, InputAudioRawFrame):
            if self.audio_passthrough:
                await self.push_frame(frame, direction)
            await self.run_stt(self._convert(frame))
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            await self.push_frame(frame, direction)
            self._held_stop = None  # the user went on: the turn continues
            self._awaiting_final = False
            await self.on_speech_started()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.push_frame(frame, direction)
            await self.on_speech_stopped()
        elif (
            isinstance(frame, UserStoppedSpeakingFrame)
            and self.hold_stop_for_final
            and self._awaiting_final
        ):
            self._held_stop = frame
            self._hold_id += 1
            self.start_task_soon(self._release_after, self._hold_id)
        else:
            await self.push_frame(frame, direction)

    def _convert(self, frame: InputAudioRawFrame) -> bytes:
        pcm = to_mono(frame.audio, frame.num_channels)
        if frame.sample_rate == self.sample_rate:
            return pcm
        if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
            self._resampler = Resampler(frame.sample_rate, self.sample_rate)
        return self._resampler.process(pcm)

    async def _release_after(self, hold_id: int) -> None:
        await trio.sleep(self.final_timeout)
        if hold_id == self._hold_id and self._held_stop is not None:
            await self.final_received()

    async def on_stop(self, frame: EndFrame) -> None:
        await super().on_stop(frame)
        held, self._held_stop = self._held_stop, None
        if held is not None:
            await self.push_frame(held)
