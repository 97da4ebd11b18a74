"""pipecat 1.14's voice-agent token path, the equivalent of rustvani-trio's (see
``_rustvani_voice.py``): ``user aggregator -> OpenAILLMService -> text filter -> sentence
aggregator -> fake TTS -> output sink -> assistant aggregator``, the user and assistant
aggregators from ``LLMContextAggregatorPair``, the other steps pipecat ``FrameProcessor`` s
doing the shared work of :mod:`benchmarks._common` (pipecat has no lighter kind of processor).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
)
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

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
from .pipecat_ import _llm, _Run

_DOWN = FrameDirection.DOWNSTREAM


@dataclass
class Sentence(DataFrame):
    """One sentence for the TTS (not a TextFrame, as in the rustvani-trio pipeline)."""

    text: str


class TextFilter(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == _DOWN and isinstance(frame, LLMTextFrame) and "*" in frame.text:
            frame = LLMTextFrame(text=strip_markdown(frame.text))
        await self.push_frame(frame, direction)


class SentenceAggregator(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.buffer = ""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self.buffer = ""
        if direction == _DOWN and isinstance(frame, LLMTextFrame):
            self.buffer += frame.text
            sentences, self.buffer = split_sentences(self.buffer)
            await self.push_frame(frame, direction)
            for sentence in sentences:
                await self.push_frame(Sentence(text=sentence))
            return
        if isinstance(frame, LLMFullResponseEndFrame) and self.buffer.strip():
            rest, self.buffer = self.buffer.strip(), ""
            await self.push_frame(Sentence(text=rest))
        await self.push_frame(frame, direction)


class FakeTTS(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, Sentence):
            for _ in range(audio_chunks(frame.text)):
                await self.push_frame(
                    OutputAudioRawFrame(audio=AUDIO_CHUNK, sample_rate=16000, num_channels=1)
                )
            return
        await self.push_frame(frame, direction)


class AudioSink(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.arm()

    def arm(self) -> None:
        self.stamps: list[float] = []
        self.done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame):
            self.stamps.append(now())
            return
        if isinstance(frame, LLMFullResponseEndFrame):
            self.done.set()
        await self.push_frame(frame, direction)


async def voice(params: dict[str, Any]) -> Samples:
    out: Samples = {"ttfa_ms": [], "total_ms": [], "cpu_us_per_token": [], "audio_frames": []}
    tokens = voice_tokens(params["tokens"])
    llm = _llm({**params, "tokens": tokens})
    pair = LLMContextAggregatorPair(LLMContext())
    sink = AudioSink()
    run_ = _Run(
        [pair.user(), llm, TextFilter(), SentenceAggregator(), FakeTTS(), sink, pair.assistant()]
    )

    async def body(worker: PipelineWorker) -> None:
        for turn in range(params["turns"] + 1):
            sink.arm()
            t0, c0 = now(), cpu_now()
            message: Any = {"role": "user", "content": "hi"}
            await worker.queue_frame(LLMMessagesAppendFrame(messages=[message], run_llm=True))
            await sink.done.wait()
            if turn:
                out["cpu_us_per_token"].append((cpu_now() - c0) * 1e6 / len(tokens))
                out["ttfa_ms"].append((sink.stamps[0] - t0) * 1e3)
                out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)
                out["audio_frames"].append(float(len(sink.stamps)))

    await run_.drive(body)
    return out
