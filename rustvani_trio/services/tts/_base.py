"""TTSService: the answer logic shared by every text-to-speech processor (private base)."""

from __future__ import annotations

import abc
import re

import trio

from ...frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    OutputAudioRawFrame,
    StartFrame,
    TextFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from ...processor import FrameProcessor

__all__ = ["TTSService", "split_sentences"]

_DOWN = FrameDirection.DOWNSTREAM
# A sentence ends at . ! ? (or their CJK/Devanagari forms) followed by space, or at a newline.
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u0964\u3002\uff01\uff1f])\s+|\n+")


def split_sentences(text: str) -> tuple[list[str], str]:
    """Split off the complete sentences of ``text``; returns them and the unfinished rest."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        piece = text[start : match.start()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    return sentences, text[start:]


class TTSService(FrameProcessor):
    """Speaks the LLM's answers.

    One answer is the text between :class:`LLMFullResponseStart` and
    :class:`LLMFullResponseEnd` (a plain :class:`TextFrame` is spoken as an answer of its
    own). Every frame is forwarded; the answer produces :class:`TTSStartedFrame`, the audio as
    :class:`OutputAudioRawFrame` s of at most ``chunk_secs`` (pushed by whichever task receives
    it), :class:`TTSTextFrame` s for the text sent to synthesis, and, once the provider has
    delivered the whole answer's audio, :class:`TTSStoppedFrame` -- only then is
    ``LLMFullResponseEnd`` forwarded, so that a paced output (and the assistant aggregator
    behind it) see the answer end when its audio does, and a user who speaks meanwhile still
    interrupts it.

    On an interruption, audio of the interrupted answer that is still arriving is dropped
    (never pushed after the InterruptionFrame) and the provider is told to stop
    (:meth:`stop_tts`).

    Subclasses implement :meth:`run_tts` (send one piece of text), :meth:`flush_tts` (make the
    provider finish the answer and wait until its audio was pushed) and :meth:`stop_tts`, and
    deliver audio with :meth:`push_audio`.

    Args:
        sample_rate: the rate of the audio produced.
        aggregate_sentences: send text sentence by sentence (else as it comes).
        chunk_secs: the longest audio frame pushed.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        aggregate_sentences: bool = True,
        chunk_secs: float = 0.02,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if chunk_secs <= 0:
            raise ValueError(f"chunk_secs must be positive, got {chunk_secs}")
        self.sample_rate = sample_rate
        self.aggregate_sentences = aggregate_sentences
        self.chunk_secs = chunk_secs
        self._pending = ""
        self._speaking = False
        self._generation = 0
        self._push_scopes: set[trio.CancelScope] = set()
        self._carry = b""
        self._first_audio = True

    # ------------------------------------------------------------------ subclass API

    @abc.abstractmethod
    async def run_tts(self, text: str) -> bool | None:
        """Send one piece of the answer's text for synthesis; ``False`` when it was not sent
        (then no :class:`TTSTextFrame` reports it as spoken)."""

    @abc.abstractmethod
    async def flush_tts(self) -> None:
        """The answer's text is complete: make the provider finish, and return once all of
        the answer's audio has been pushed (or the provider failed)."""

    @abc.abstractmethod
    async def stop_tts(self) -> None:
        """The answer was interrupted: stop the provider (its late audio is dropped)."""

    async def push_audio(self, pcm: bytes, generation: int | None = None) -> bool:
        """Push audio of the current answer downstream in frames of at most ``chunk_secs``;
        ``False`` (nothing pushed) once the answer was interrupted. Pass the
        :attr:`generation` read when the audio was requested to drop audio of an older
        answer."""
        gen = self._generation if generation is None else generation
        if gen != self._generation:
            return False
        if self._first_audio:
            self._first_audio = False
            await self.stop_ttfb_metrics()
        data = self._carry + pcm
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        step = max(2, round(self.sample_rate * self.chunk_secs) * 2)
        for start in range(0, usable, step):
            if gen != self._generation:
                return False
            frame = OutputAudioRawFrame(
                audio=data[start : min(usable, start + step)], sample_rate=self.sample_rate
            )
            with trio.CancelScope() as scope:
                self._push_scopes.add(scope)
                try:
                    await self.push_frame(frame)
                finally:
                    self._push_scopes.discard(scope)
            if scope.cancelled_caught:
                return False
        return True

    @property
    def generation(self) -> int:
        """Increases with every interruption (audio of an older generation is stale)."""
        return self._generation

    @property
    def speaking(self) -> bool:
        """Whether an answer is being spoken (started and not finished or interrupted)."""
        return self._speaking

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is not _DOWN:
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMText):
            await self.push_frame(frame, direction)
            await self._add_text(frame.text)
        elif isinstance(frame, LLMFullResponseEnd):
            await self._finish()
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMFullResponseStart):
            await self.push_frame(frame, direction)
        elif type(frame) is TextFrame:
            await self.push_frame(frame, direction)
            await self._add_text(frame.text)
            await self._finish()
        else:
            await self.push_frame(frame, direction)

    async def _add_text(self, text: str) -> None:
        if not self.aggregate_sentences:
            await self._speak_piece(text)
            return
        self._pending += text
        sentences, self._pending = split_sentences(self._pending)
        for sentence in sentences:
            await self._speak_piece(sentence)

    async def _speak_piece(self, text: str) -> None:
        if not text.strip():
            return
        if not self._speaking:
            self._speaking = True
            self._first_audio = True
            self._carry = b""
            self.start_ttfb_metrics()
            await self.push_frame(TTSStartedFrame())
        if await self.run_tts(text) is not False:
            await self.push_frame(TTSTextFrame(text=text))

    async def _finish(self) -> None:
        rest, self._pending = self._pending, ""
        await self._speak_piece(rest.strip())
        if self._speaking:
            await self.flush_tts()
            self._speaking = False
            await self.push_frame(TTSStoppedFrame())

    async def on_start(self, frame: StartFrame) -> None:
        # A run starts with no answer, even when the pipeline's run before was cancelled in
        # the middle of one.
        self._pending = ""
        self._speaking = False
        self._carry = b""
        self._first_audio = True
        self._push_scopes.clear()
        await super().on_start(frame)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self._generation += 1
        for scope in self._push_scopes:
            scope.cancel()
        self._pending = ""
        self._carry = b""
        if self._speaking:
            self._speaking = False
            await self.stop_tts()
        await super().on_interruption(frame)

    async def on_stop(self, frame: EndFrame) -> None:
        # Text that never got its LLMFullResponseEnd is still spoken before the end.
        await self._finish()
        await super().on_stop(frame)
