"""Offline speech-to-text with pocketsphinx (extra ``stt-pocketsphinx``): for demos and tests.

pocketsphinx (BSD-2) carries its US English acoustic model and dictionary inside the wheel,
so nothing is downloaded. Free-form recognition is weak; with a JSGF grammar (a short list
of phrases it should understand) it is exact on clear speech, which is what the demo and
the tests use. Not for production: use a provider (Sarvam, 60db) there.

Decoding is gated by the VAD: an utterance starts at the VAD's start (with the audio heard
just before it, so the first word is not clipped) and is decoded at the VAD's stop, before
the user's stop goes on, so the transcript always precedes it. The decoder holds the GIL
(about 0.5 ms per 20 ms of audio here), so it runs inline.
"""

from __future__ import annotations

import random
from array import array
from collections import deque
from collections.abc import Mapping
from typing import Any

from ...frames import CancelFrame, EndFrame
from ._base import STTService

__all__ = ["PocketsphinxSTTService", "available"]

# Decoders of finished services, by (grammar, words), for the next service to reuse: making
# one loads the acoustic model and holds the GIL for a few hundred milliseconds, which would
# stall every other session of a server each time a voice session starts.
_IDLE: dict[tuple[str | None, tuple[tuple[str, str], ...]], list[Any]] = {}
_IDLE_PER_KEY = 8


def available() -> bool:
    """Whether the ``stt-pocketsphinx`` extra is installed."""
    try:
        import pocketsphinx  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def _new_decoder(grammar: str | None, words: Mapping[str, str] | None) -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise ImportError(
            "pocketsphinx STT needs the 'stt-pocketsphinx' extra: "
            "pip install 'rustvani-trio[stt-pocketsphinx]'"
        ) from exc
    config: dict[str, Any] = {"samprate": 16000, "loglevel": "FATAL"}
    if grammar is not None:
        config["lm"] = None  # the grammar replaces the language model (faster to load)
    decoder = Decoder(**config)
    for word, phones in (words or {}).items():
        decoder.add_word(word, phones, True)
    if grammar is not None:
        try:
            decoder.add_jsgf_string("grammar", grammar)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(
                f"pocketsphinx could not use the grammar ({exc}); is every word in its "
                "dictionary? Add missing ones with words={'word': 'PHONES'}"
            ) from exc
        decoder.activate_search("grammar")
    return decoder


class PocketsphinxSTTService(STTService):
    """Offline STT after a VAD (see :class:`STTService` for the frames).

    Args:
        grammar: a JSGF grammar (its text): only its phrases are recognised. ``None``:
            free-form with the bundled language model (weak).
        words: pronunciations to add, e.g. ``{"pune": "P UW N EY"}`` (CMU phones).
        pre_roll: seconds of audio before the VAD's start fed to the decoder (with less
            leading quiet the decoder misses words more often).
        noise_floor: a few LSB of noise added to the audio: long runs of exact digital
            silence (synthetic speech, gated input) upset the decoder's normalisation.

    A service that has ended (EndFrame or CancelFrame) hands its decoder on to the next one
    made with the same grammar and words (a few are kept per grammar), so only the first
    session of a server pays for loading the model.
    """

    def __init__(
        self,
        grammar: str | None = None,
        *,
        words: Mapping[str, str] | None = None,
        pre_roll: float = 1.0,
        noise_floor: int = 3,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(sample_rate=16000, name=name, **kwargs)
        self._key = (grammar, tuple(sorted((words or {}).items())))
        idle = _IDLE.get(self._key)
        self._decoder: Any | None = idle.pop() if idle else _new_decoder(grammar, words)
        self.pre_roll = pre_roll
        self._history: deque[bytes] = deque()
        self._history_bytes = 0
        self._in_utterance = False
        rng = random.Random(7)
        self._noise = array("h", (rng.randint(-noise_floor, noise_floor) for _ in range(16000)))
        self._noise_at = 0

    def _with_noise(self, pcm: bytes) -> bytes:
        samples = array("h", pcm)
        noise, n, at = self._noise, len(self._noise), self._noise_at
        for i, s in enumerate(samples):
            v = s + noise[(at + i) % n]
            samples[i] = 32767 if v > 32767 else -32768 if v < -32768 else v
        self._noise_at = (at + len(samples)) % n
        return samples.tobytes()

    async def run_stt(self, pcm: bytes) -> None:
        if self._decoder is None:  # ended
            return
        pcm = self._with_noise(pcm)
        if self._in_utterance:
            if self._history:
                # The pre-roll is decoded here, not when the VAD's start arrives, so the
                # UserStartedSpeakingFrame right behind it (a barge-in) is not held up.
                for earlier in self._history:
                    self._decoder.process_raw(earlier, False, False)
                self._history.clear()
                self._history_bytes = 0
            self._decoder.process_raw(pcm, False, False)
            return
        self._history.append(pcm)
        self._history_bytes += len(pcm)
        limit = int(self.pre_roll * 16000) * 2
        while self._history and self._history_bytes - len(self._history[0]) >= limit:
            self._history_bytes -= len(self._history.popleft())

    async def on_speech_started(self) -> None:
        if self._in_utterance or self._decoder is None:
            return
        self._in_utterance = True
        self._decoder.start_utt()

    async def on_speech_stopped(self) -> None:
        if not self._in_utterance or self._decoder is None:
            return
        self._in_utterance = False
        for earlier in self._history:  # an utterance shorter than one audio frame
            self._decoder.process_raw(earlier, False, False)
        self._history.clear()
        self._history_bytes = 0
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        await self.push_transcript(hyp.hypstr if hyp is not None else "", final=True)

    async def on_stop(self, frame: EndFrame) -> None:
        await super().on_stop(frame)
        self._release()

    async def on_cancel(self, frame: CancelFrame) -> None:
        await super().on_cancel(frame)
        self._release()

    def _release(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return
        if self._in_utterance:
            self._in_utterance = False
            decoder.end_utt()
        idle = _IDLE.setdefault(self._key, [])
        if len(idle) < _IDLE_PER_KEY:
            idle.append(decoder)
