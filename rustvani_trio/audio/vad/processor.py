"""VADAnalyzer (the model interface) and VADProcessor (audio in, speaking signals out)."""

from __future__ import annotations

import abc
import logging
import time

import trio

from ...frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InputAudioRawFrame,
    StartFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from ...processor import FrameProcessor
from ..pcm import level_dbfs, to_mono
from ..resample import Resampler
from ._machine import VadParams, VADState, VadStateMachine, volume_from_dbfs

__all__ = ["VADAnalyzer", "VADProcessor"]

logger = logging.getLogger("rustvani_trio")
_DOWN = FrameDirection.DOWNSTREAM

#: Per-chunk decay of the held loudness (fast attack, slow release).
_RELEASE = 0.85

#: Chunks timed inline before deciding whether inference runs in a worker thread.
_PROBE_CHUNKS = 25


class VADAnalyzer(abc.ABC):
    """A voice activity model: speech probability of fixed-size chunks of mono PCM s16le.

    Subclasses set :attr:`sample_rate` and :attr:`chunk_samples` (what the model takes) and
    :attr:`releases_gil` (whether inference lets other Python threads run; only then can a
    worker thread keep it off the event loop). One analyzer per audio stream: models keep
    state between chunks.
    """

    sample_rate: int = 16000
    chunk_samples: int = 512
    releases_gil: bool = False

    @abc.abstractmethod
    def voice_confidence(self, chunk: bytes) -> float:
        """Speech probability (0..1) of one chunk of ``chunk_samples`` samples."""

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget the stream so far (a new stream starts)."""


class VADProcessor(FrameProcessor):
    """Voice activity detection on :class:`InputAudioRawFrame` s.

    Audio is forwarded unchanged (first), then analysed: converted to mono and to the
    model's rate, cut into the model's chunks, and run through the quiet -> starting ->
    speaking -> stopping machine of :class:`VadParams`. When speech has lasted
    ``start_secs`` it pushes :class:`VADUserStartedSpeakingFrame` and
    :class:`UserStartedSpeakingFrame` (which lets the user aggregator interrupt the bot);
    after ``stop_secs`` of quiet, :class:`VADUserStoppedSpeakingFrame` and
    :class:`UserStoppedSpeakingFrame`. At the end of the stream (EndFrame) a user still
    speaking is reported as stopped.

    Args:
        analyzer: the model (one per stream), e.g. ``SileroVADAnalyzer()``.
        params: thresholds and timings.
        emit_user_speaking: also push the ``UserStarted/StoppedSpeakingFrame`` turn signals
            (turn them off when another processor decides turns).
        offload: run inference in a worker thread (``True``), inline on the event loop
            (``False``), or decide from the first chunks (``None``): a thread only when a
            chunk takes longer than ``offload_threshold`` seconds *and* the model releases
            the GIL (otherwise the thread would block the loop just the same, plus a hop).
    """

    def __init__(
        self,
        analyzer: VADAnalyzer,
        params: VadParams | None = None,
        *,
        emit_user_speaking: bool = True,
        offload: bool | None = None,
        offload_threshold: float = 0.002,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.analyzer = analyzer
        self.params = params if params is not None else VadParams()
        self.emit_user_speaking = emit_user_speaking
        self.offload = offload
        self.offload_threshold = offload_threshold
        self._machine = VadStateMachine(self.params)
        self._chunk_bytes = 2 * analyzer.chunk_samples
        self._chunk_secs = analyzer.chunk_samples / analyzer.sample_rate
        self._buffer = bytearray()
        self._resampler: Resampler | None = None
        self._probe_time = 0.0
        self._probed = 0
        self._limiter = trio.CapacityLimiter(1)
        self._volume = 0.0

    @property
    def state(self) -> VADState:
        """The current state of the user's voice."""
        return self._machine.state

    @property
    def offloaded(self) -> bool:
        """Whether inference runs in a worker thread (decided after the first chunks)."""
        return self.offload is True

    async def on_start(self, frame: StartFrame) -> None:
        self.analyzer.reset()
        self._machine.reset()
        self._buffer.clear()
        self._resampler = None
        self._volume = 0.0

    async def on_stop(self, frame: EndFrame) -> None:
        if self._machine.state in (VADState.SPEAKING, VADState.STOPPING):
            self._machine.reset()
            await self._push_stopped()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not (isinstance(frame, InputAudioRawFrame) and direction is _DOWN):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(frame, direction)
        await self._analyze(frame)

    async def _analyze(self, frame: InputAudioRawFrame) -> None:
        pcm = to_mono(frame.audio, frame.num_channels)
        rate = self.analyzer.sample_rate
        if frame.sample_rate != rate:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, rate)
            pcm = self._resampler.process(pcm)
        buffer = self._buffer
        buffer += pcm
        size = self._chunk_bytes
        while len(buffer) >= size:
            chunk = bytes(buffer[:size])
            del buffer[:size]
            confidence = await self._confidence(chunk)
            # Fast attack, slow release: the gap between two words (digital silence from a
            # synthesiser, a breath) must not reset a start that is being confirmed.
            volume = max(volume_from_dbfs(level_dbfs(chunk)), self._volume * _RELEASE)
            self._volume = volume
            change = self._machine.step(confidence, volume, self._chunk_secs)
            if change is VADState.SPEAKING:
                await self._push_started()
            elif change is VADState.QUIET:
                await self._push_stopped()

    async def _confidence(self, chunk: bytes) -> float:
        if self.offload:
            return await trio.to_thread.run_sync(
                self.analyzer.voice_confidence, chunk, limiter=self._limiter
            )
        if self.offload is None:
            started = time.perf_counter()
            value = self.analyzer.voice_confidence(chunk)
            self._probe_time += time.perf_counter() - started
            self._probed += 1
            if self._probed >= _PROBE_CHUNKS:
                mean = self._probe_time / self._probed
                self.offload = mean > self.offload_threshold and self.analyzer.releases_gil
                logger.debug(
                    "%s: %.2f ms per chunk; inference %s",
                    self.name,
                    mean * 1000,
                    "in a worker thread" if self.offload else "inline",
                )
            return value
        return self.analyzer.voice_confidence(chunk)

    async def _push_started(self) -> None:
        now = trio.current_time()
        await self.push_frame(
            VADUserStartedSpeakingFrame(
                start_secs=self.params.start_secs, timestamp=now - self._machine.speech_secs
            )
        )
        if self.emit_user_speaking:
            await self.push_frame(UserStartedSpeakingFrame())

    async def _push_stopped(self) -> None:
        now = trio.current_time()
        await self.push_frame(
            VADUserStoppedSpeakingFrame(stop_secs=self.params.stop_secs, timestamp=now)
        )
        if self.emit_user_speaking:
            await self.push_frame(UserStoppedSpeakingFrame())
