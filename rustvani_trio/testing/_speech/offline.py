"""The whole voice loop offline: Silero VAD, pocketsphinx (a grammar), a scripted model that
answers what it heard, espeak-ng, and a paced output. Used by the demo, tests, benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from ...aggregators import create_context_aggregators
from ...context import LLMContext
from ...frames import UserStartedSpeakingFrame
from ...observer import BaseObserver, FramePushed
from ...pipeline import Pipeline
from ...processor import FrameProcessor
from ...services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from ...services.tts.espeak import EspeakTTSService
from ...task import PipelineTask
from ...testing.server import RecordedRequest, TextReply, open_scripted_server
from .audio import speak
from .harness import wait_until
from .paced import PacedAudioOutput
from .scenario import Microphone, Silence, Speech, Until

__all__ = [
    "GRAMMAR",
    "PHRASES",
    "WORDS",
    "Conversation",
    "InlineEspeakTTS",
    "answer_for",
    "converse",
    "offline_voice_pipeline",
    "scripted_answer",
]

GRAMMAR = """#JSGF V1.0;
grammar demo;
public <request> = what is the weather in <city> | tell me a joke | stop | thank you ;
<city> = paris | oslo | london | pune ;
"""
WORDS = {"pune": "P UW N EY"}
PHRASES = [
    "what is the weather in paris (or oslo, london, pune)",
    "tell me a joke",
    "stop",
    "thank you",
]

_WEATHER = {
    "paris": "eighteen degrees and light rain",
    "oslo": "four degrees and snow",
    "london": "twelve degrees and cloudy",
    "pune": "thirty one degrees and sunny",
}


def answer_for(heard: str) -> str:
    """What the scripted model says to ``heard``."""
    heard = heard.lower()
    for city, weather in _WEATHER.items():
        if city in heard:
            return (
                f"In {city.title()} it is {weather} right now. "
                "Take a coat if you go out this evening. "
                "Tomorrow looks much the same, with a little more wind in the afternoon. "
                "Is there anything else you would like to know?"
            )
    if "joke" in heard:
        return "Why did the robot go on holiday? It needed to recharge its batteries. Ha ha."
    if "stop" in heard:
        return "Okay, I will stop."
    if "thank" in heard:
        return "You are welcome!"
    return "Sorry, I did not catch that."


def scripted_answer(*, token_delay: float = 0.02, first_token_delay: float = 0.1) -> Any:
    """A reply factory for the scripted server: answers the last user message."""

    def reply(request: RecordedRequest) -> TextReply:
        users = [m for m in request.messages if m.get("role") == "user"]
        heard = str(users[-1].get("content", "")) if users else ""
        words = answer_for(heard).split(" ")
        tokens = [w + " " for w in words[:-1]] + words[-1:]
        return TextReply(tokens, token_delay=token_delay, first_token_delay=first_token_delay)

    return reply


def offline_voice_pipeline(
    context: LLMContext,
    llm: FrameProcessor,
    output: PacedAudioOutput | None = None,
    *,
    inline_tts: bool = False,
) -> list[FrameProcessor]:
    """``VAD -> STT -> user aggregator -> llm -> TTS -> output -> assistant aggregator``
    (``inline_tts``: :class:`InlineEspeakTTS`, for runs on a virtual clock)."""
    from ...audio.vad.silero import SileroVADProcessor
    from ...services.stt.pocketsphinx import PocketsphinxSTTService

    user, assistant = create_context_aggregators(context)
    return [
        SileroVADProcessor(),
        PocketsphinxSTTService(GRAMMAR, words=WORDS),
        user,
        llm,
        InlineEspeakTTS() if inline_tts else EspeakTTSService(),
        output if output is not None else PacedAudioOutput(),
        assistant,
    ]


class InlineEspeakTTS(EspeakTTSService):
    """espeak-ng run to completion inline, blocking the event loop for the few tens of
    milliseconds a sentence takes: under a virtual clock no time passes while it speaks
    (a process the loop waits on lets the clock jump ahead), so timings are deterministic.
    For tests; the real service streams the process's output instead."""

    async def _synthesise(self, text: str, generation: int) -> None:
        pcm = speak(
            text,
            sample_rate=self.sample_rate,
            voice=self.voice,
            words_per_minute=self.words_per_minute,
        )
        await self.push_audio(pcm, generation)


class _SpeakingTimes(BaseObserver):
    """Records when UserStartedSpeakingFrames were pushed (the first push is the VAD's)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_push_frame(self, event: FramePushed) -> None:
        if isinstance(event.frame, UserStartedSpeakingFrame):
            self.times.append(event.timestamp)


Builder = Callable[[LLMContext, FrameProcessor, PacedAudioOutput], list[FrameProcessor]]


@attrs.define
class Conversation:
    """What happened: the microphone's marks, the audio sent, the context, the requests."""

    mic: Microphone
    output: PacedAudioOutput
    context: LLMContext
    requests: list[RecordedRequest]
    user_started: list[float] = attrs.Factory(list)

    @property
    def voice_to_voice(self) -> float:
        """End of the question's speech to the first bot audio sent."""
        return self.output.sent[0].time - self.mic.speech_end["question"]

    @property
    def barge_in(self) -> float:
        """First sample of the barge-in speech to the last audio of the first answer sent."""
        start = self.mic.speech_start["barge-in"]
        return self._last_audio_before(start + 1.0) - start

    @property
    def barge_in_after_vad(self) -> float:
        """The VAD's decision (UserStartedSpeakingFrame) to the last audio sent: the share of
        the pipeline and the output, without the VAD's start_secs and the model's onset."""
        start = self.mic.speech_start["barge-in"]
        decided = min(t for t in self.user_started if t >= start)
        return self._last_audio_before(start + 1.0) - decided

    @property
    def interruption_delay(self) -> float:
        """The VAD's decision to the output stopping the bot (the interruption's way through
        the aggregator, the LLM and the TTS to the output)."""
        start = self.mic.speech_start["barge-in"]
        decided = min(t for t in self.user_started if t >= start)
        return min(t for t in self.output.stopped_at if t >= decided) - decided

    def _last_audio_before(self, limit: float) -> float:
        return max(s.time for s in self.output.sent if s.time < limit)


async def converse(
    question: bytes,
    *,
    barge_in: bytes | None = None,
    build: Builder | None = None,
    token_delay: float = 0.02,
    first_token_delay: float = 0.1,
    barge_in_after: float = 1.0,
    within: float = 60.0,
) -> Conversation:
    """Say ``question`` (16 kHz PCM) to a voice pipeline (``build``: offline engines by
    default) with a scripted model; optionally say ``barge_in`` ``barge_in_after`` seconds
    into the answer; return when the bot has finished talking (its answer to the question,
    and to the barge-in, which both must be understood)."""
    output = PacedAudioOutput()
    mic = Microphone()
    context = LLMContext([{"role": "system", "content": "Be brief."}])
    reply = scripted_answer(token_delay=token_delay, first_token_delay=first_token_delay)
    async with open_scripted_server(default_reply=reply) as server:
        config = OpenAILLMConfig(base_url=server.base_url, api_key="scripted")
        llm = OpenAILLMHandler(config).into_processor()
        processors = (build or offline_voice_pipeline)(context, llm, output)
        speaking = _SpeakingTimes()
        task = PipelineTask(Pipeline(processors), observers=[speaking])
        segments: list[Speech | Silence | Until] = [Silence(0.3), Speech(question, "question")]
        if barge_in is not None:
            segments += [
                Until(output.first_audio, after=barge_in_after),
                Speech(barge_in, "barge-in"),
                Silence(2.0),
            ]
        else:
            segments += [Until(output.first_audio, after=0.5)]
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            await mic.play(task, segments)
            # Every answer spoken to its end (the barge-in gets an answer of its own).
            answers = 1 if barge_in is None else 2
            await wait_until(
                lambda: (
                    len(output.stopped_at) >= answers
                    and len(output.started_at) == len(output.stopped_at)
                ),
                within,
            )
            await task.cancel("conversation over")
        return Conversation(mic, output, context, list(server.requests), speaking.times)
