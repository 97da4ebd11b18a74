"""The voice pipeline of ``serve-chat --voice`` through the WebSocket transport, end to end
on a virtual clock: a client speaks PCM (espeak-ng's voice) into the socket; the offline
engines hear it, the scripted model answers, the bot's audio comes back paced; the client
speaking during the answer interrupts it (barge-in)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from rustvani_trio.aggregators import LLMUserAggregator
from rustvani_trio.context import LLMContext
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.services.llm.openai import OpenAILLMConfig
from rustvani_trio.testing import open_scripted_server
from rustvani_trio.testing._speech.audio import espeak_available, speak
from rustvani_trio.testing._speech.client import VoiceClient
from rustvani_trio.testing._speech.offline import InlineEspeakTTS, answer_for, scripted_answer
from rustvani_trio.testing._speech.scenario import Silence, Speech, Until
from rustvani_trio.testing.server import ScriptedServer

voice = pytest.importorskip("rustvani_trio.server.voice", reason="needs the server extra")
from rustvani_trio.server.sessions import Session  # noqa: E402
from rustvani_trio.transports.memory import MemoryConnection  # noqa: E402
from rustvani_trio.transports.websocket import WebSocketTransport  # noqa: E402


@pytest.fixture(autouse=True)
def _needs_engines() -> None:
    missing = voice.missing_engines()
    if missing or not espeak_available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the offline voice engines are missing in CI: {missing}")
        pytest.skip(f"needs {missing}")


class Call:
    """One session of the voice factory over an in-memory socket, with a client."""

    def __init__(self, client: VoiceClient, context: LLMContext, model: ScriptedServer) -> None:
        self.client, self.context, self.model = client, context, model


@pytest.fixture
async def call() -> AsyncIterator[Call]:
    """(Tests take ``autojump_clock`` themselves: pytest-trio finds the clock among the
    test's own arguments.)"""
    # The model streams slowly (0.15 s a token), so it is still answering at the barge-in.
    reply = scripted_answer(token_delay=0.15, first_token_delay=0.1)
    async with open_scripted_server(default_reply=reply) as model:
        config = OpenAILLMConfig(api_key="", base_url=model.base_url)
        # espeak-ng inline: no time passes on the virtual clock while it speaks
        tts = lambda: InlineEspeakTTS(name="tts")  # noqa: E731
        async with voice.open_voice_factory(config, tts=tts) as factory:
            conn = MemoryConnection()
            transport = WebSocketTransport(conn, session_id="v1")
            session = Session(
                id="v1", transport=transport, query={}, headers={}, client=None, started=0.0
            )
            task = await factory(session)
            assert isinstance(task.pipeline, Pipeline)
            user = next(p for p in task.pipeline.processors if isinstance(p, LLMUserAggregator))
            client = VoiceClient.over_memory(conn)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.run, task)
                nursery.start_soon(client.read)
                ready = await client.connect()
                assert "tell me a joke" in ready["data"]["about"]["voice"]["understands"]
                yield Call(client, user.context, model)
                nursery.cancel_scope.cancel()


async def test_a_spoken_question_is_answered_aloud_and_a_barge_in_interrupts_it(
    autojump_clock: trio.testing.MockClock, call: Call
) -> None:
    client = call.client
    question, stop = speak("what is the weather in paris"), speak("stop")

    def bot_stopped(times: int) -> Any:
        return lambda: len(client.of("bot-stopped-speaking")) >= times

    await client.say(
        [
            Silence(0.3),
            Speech(question, "question"),
            Until(client.first_audio, after=1.0),
            Speech(stop, "barge-in"),
            Silence(1.0),
        ]
    )
    # the second answer ("Okay, I will stop.") is spoken to its end
    await client.wait_for(bot_stopped(2), within=60)
    kinds = client.summary()
    assert client.transcripts() == ["what is the weather in paris", "stop"], kinds
    for event in ("user-started-speaking", "user-stopped-speaking", "bot-started-speaking"):
        assert event in kinds
    # Voice to voice: the VAD's stop_secs (0.8 s) + the model's first token (0.1 s) + the
    # other 10 tokens of the first sentence (the TTS speaks whole sentences; 0.15 s each);
    # espeak-ng and the framework take no virtual time.
    assert client.voice_to_voice == pytest.approx(0.8 + 0.1 + 10 * 0.15, abs=0.1)
    # Barge-in: the bot fell silent within start_secs (7 VAD chunks of 32 ms) + the chunk
    # the speech began in + the model's onset + one 20 ms audio chunk; after bot-interrupted
    # no audio of the old answer arrives.
    assert 0.2 <= client.barge_in <= 7 * 0.032 + 0.032 + 0.1 + 0.02 + 0.02, kinds
    assert client.audio_after_interruption() == []
    # the LLM stream was cancelled; the part produced so far was committed, interrupted
    first_request = call.model.requests[0]
    assert first_request.disconnected.is_set() and not first_request.completed.is_set()
    messages = call.context.messages
    assert messages[1] == {"role": "user", "content": "what is the weather in paris"}
    assert messages[2]["role"] == "assistant" and call.context.is_interrupted(2)
    partial = messages[2]["content"]
    assert partial.startswith("In Paris it is") and len(partial) < len(answer_for("paris"))
    assert messages[3] == {"role": "user", "content": "stop"}
    assert messages[4] == {"role": "assistant", "content": "Okay, I will stop."}
    # the bot's voice came back: espeak-ng's 22.05 kHz, more than the short second answer
    audio = client.of("<audio>")
    assert {r.sample_rate for r in audio} == {22050}
    assert sum(r.seconds for r in audio) > 2.0


async def test_a_typed_message_is_spoken(
    autojump_clock: trio.testing.MockClock, call: Call
) -> None:
    client = call.client
    await client.send_message("send-text", {"content": "tell me a joke"})
    await client.wait_for(lambda: bool(client.of("bot-stopped-speaking")), within=60)
    kinds = client.summary()
    assert kinds.index("bot-llm-started") < kinds.index("<audio>"), kinds
    assert kinds.index("bot-started-speaking") < kinds.index("<audio>"), kinds
    assert "bot-tts-started" in kinds and "bot-tts-text" in kinds
    # typed text is not reported as speech
    assert "user-started-speaking" not in kinds and "user-stopped-speaking" not in kinds
    assert sum(r.seconds for r in client.of("<audio>")) > 2.0
    assert call.context.messages[-1]["content"] == answer_for("joke")


def test_serve_chat_voice_option(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import argparse

    from rustvani_trio._cli import serve_chat

    parser = argparse.ArgumentParser()
    serve_chat.configure(parser)
    assert serve_chat.run(parser.parse_args(["--voice", "--factory", "app:make"])) == 2
    assert "exclude each other" in capsys.readouterr().err
    monkeypatch.setattr(voice, "missing_engines", lambda: ["espeak-ng (apt-get install it)"])
    assert serve_chat.run(parser.parse_args(["--voice"])) == 2
    assert "--voice needs espeak-ng" in capsys.readouterr().err


async def test_the_factory_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice, "missing_engines", lambda: ["pocketsphinx (pip install ...)"])
    with pytest.raises(RuntimeError, match="needs pocketsphinx"):
        async with voice.open_voice_factory():
            pass
