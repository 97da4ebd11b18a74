"""rustvani-trio's voice-agent token path: ``user aggregator -> LLM -> text filter -> sentence
aggregator -> fake TTS -> output sink -> assistant aggregator``.

The text filter and the sentence aggregator are what a user writes for such synchronous steps:
inline processors (``params["inline"]``, the default) or, for comparison, processors with
lanes. The fake TTS and the sink are processors with lanes (a real TTS waits on a provider).
The work of each step is the shared one of :mod:`benchmarks._common`.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    DataFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMMessagesAppendFrame,
    LLMText,
    OutputAudioRawFrame,
)
from rustvani_trio.processor import FrameProcessor

try:  # (absent before the inline processors landed: only the "lanes" configuration runs)
    from rustvani_trio.processor import InlineOutput, InlineProcessor
except ImportError:  # pragma: no cover
    InlineProcessor = FrameProcessor  # type: ignore[misc,assignment]
    InlineOutput = Any  # type: ignore[misc]

from .._common import (
    AUDIO_CHUNK,
    Samples,
    audio_chunks,
    cpu_now,
    now,
    split_sentences,
    strip_markdown,
    voice_tokens,
)
from .rustvani import _llm, _Run

_DOWN = FrameDirection.DOWNSTREAM


@attrs.frozen(kw_only=True)
class Sentence(DataFrame):
    """One sentence for the TTS (not a TextFrame: the assistant aggregator collects the
    LLM's text, which goes on beside it)."""

    text: str


def _filtered(frame: Frame) -> Frame:
    if isinstance(frame, LLMText) and "*" in frame.text:
        return LLMText(text=strip_markdown(frame.text))
    return frame


class _Sentences:
    """The sentence aggregator's state and step, shared by both of its forms."""

    def __init__(self) -> None:
        self.buffer = ""

    def step(self, frame: Frame) -> list[Frame]:
        if isinstance(frame, LLMText):
            self.buffer += frame.text
            sentences, self.buffer = split_sentences(self.buffer)
            return [frame, *(Sentence(text=s) for s in sentences)]
        if isinstance(frame, LLMFullResponseEnd) and self.buffer.strip():
            rest, self.buffer = self.buffer.strip(), ""
            return [Sentence(text=rest), frame]
        return [frame]


class InlineFilter(InlineProcessor):
    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        return _filtered(frame) if direction is _DOWN else frame


class InlineSentences(InlineProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.sentences = _Sentences()

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        if direction is not _DOWN:
            return frame
        out = self.sentences.step(frame)
        return out[0] if len(out) == 1 else out

    def interrupted(self, frame: InterruptionFrame) -> None:
        self.sentences.buffer = ""


class LaneFilter(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await self.push_frame(_filtered(frame) if direction is _DOWN else frame, direction)


class LaneSentences(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.sentences = _Sentences()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is not _DOWN:
            await self.push_frame(frame, direction)
            return
        for out in self.sentences.step(frame):
            await self.push_frame(out)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        self.sentences.buffer = ""


class FakeTTS(FrameProcessor):
    """Turns each sentence into 20 ms audio frames; forwards everything else."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, Sentence):
            for _ in range(audio_chunks(frame.text)):
                await self.push_frame(
                    OutputAudioRawFrame(audio=AUDIO_CHUNK, sample_rate=16000, num_channels=1)
                )
            return
        await self.push_frame(frame, direction)


class AudioSink(FrameProcessor):
    """The output: timestamps and swallows audio; the turn is over at LLMFullResponseEnd."""

    def __init__(self) -> None:
        super().__init__()
        self.arm()

    def arm(self) -> None:
        self.stamps: list[float] = []
        self.done = trio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, OutputAudioRawFrame):
            self.stamps.append(now())
            return
        if isinstance(frame, LLMFullResponseEnd):
            self.done.set()
        await self.push_frame(frame, direction)


async def voice(params: dict[str, Any]) -> Samples:
    """``turns`` measured turns (after one to warm up), each queued as a user message."""
    out: Samples = {"ttfa_ms": [], "total_ms": [], "cpu_us_per_token": [], "audio_frames": []}
    tokens = voice_tokens(params["tokens"])
    llm = _llm({**params, "tokens": tokens})
    context = LLMContext(messages=[])
    user, assistant = create_context_aggregators(context, text_mode=True)
    inline = params.get("inline", True)
    if inline and InlineProcessor is FrameProcessor:
        raise RuntimeError("this rustvani-trio has no inline processors")
    steps = [InlineFilter(), InlineSentences()] if inline else [LaneFilter(), LaneSentences()]
    sink = AudioSink()
    run_ = _Run([user, llm, *steps, FakeTTS(), sink, assistant])
    message = {"role": "user", "content": "hi"}
    async with trio.open_nursery() as nursery:
        await run_.start(nursery)
        for turn in range(params["turns"] + 1):
            sink.arm()
            t0, c0 = now(), cpu_now()
            await run_.task.queue_frame(LLMMessagesAppendFrame(messages=(message,), run_llm=True))
            await sink.done.wait()
            if turn:
                out["cpu_us_per_token"].append((cpu_now() - c0) * 1e6 / len(tokens))
                out["ttfa_ms"].append((sink.stamps[0] - t0) * 1e3)
                out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)
                out["audio_frames"].append(float(len(sink.stamps)))
        await run_.end()
    return out
