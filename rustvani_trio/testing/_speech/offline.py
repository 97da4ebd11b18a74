"""The whole voice loop offline: Silero VAD, pocketsphinx (a grammar), a scripted model that
answers what it heard, espeak-ng, and a paced output. Used by the demo, tests, benchmarks."""

from __future__ import annotations

from typing import Any

from ...aggregators import create_context_aggregators
from ...context import LLMContext
from ...processor import FrameProcessor
from ...testing.server import RecordedRequest, TextReply
from .paced import PacedAudioOutput

__all__ = ["GRAMMAR", "PHRASES", "WORDS", "answer_for", "offline_voice_pipeline", "scripted_answer"]

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
    context: LLMContext, llm: FrameProcessor, *, output: PacedAudioOutput | None = None
) -> list[FrameProcessor]:
    """``VAD -> STT -> user aggregator -> llm -> TTS -> output -> assistant aggregator``."""
    from ...audio.vad.silero import SileroVADProcessor
    from ...services.stt.pocketsphinx import PocketsphinxSTTService
    from ...services.tts.espeak import EspeakTTSService

    user, assistant = create_context_aggregators(context)
    return [
        SileroVADProcessor(),
        PocketsphinxSTTService(GRAMMAR, words=WORDS),
        user,
        llm,
        EspeakTTSService(),
        output if output is not None else PacedAudioOutput(),
        assistant,
    ]
