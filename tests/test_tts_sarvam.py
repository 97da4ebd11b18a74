"""Sarvam streaming TTS against a scripted Sarvam server on loopback (real WebSockets)."""

from __future__ import annotations

import pytest

pytest.importorskip("trio_websocket")

import trio

from rustvani_trio.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    OutputAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.tts.sarvam import SarvamTTSConfig, SarvamTTSService
from rustvani_trio.testing import FakeSarvamTTS, Faults, open_fake_sarvam_tts
from rustvani_trio.testing._speech.harness import live_pipeline, wait_until

KEY = "sarvam-tts-secret"


def options(**kw: object) -> WebSocketOptions:
    base: dict[str, object] = dict(
        connect_timeout=2,
        send_timeout=1,
        idle_timeout=1,
        close_timeout=1,
        keepalive_interval=None,
        reconnect=ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
    )
    base.update(kw)
    return WebSocketOptions(**base)  # type: ignore[arg-type]


def tts_for(fake: FakeSarvamTTS, **kw: object) -> SarvamTTSService:
    assert fake.server is not None
    opts = kw.pop("options", options())
    return SarvamTTSService(
        SarvamTTSConfig(api_key=KEY, url=fake.server.url + "/text-to-speech/ws", options=opts, **kw)
    )  # type: ignore[arg-type]


def answer(*pieces: str) -> list[Frame]:
    return [LLMFullResponseStart(), *(LLMText(text=p) for p in pieces), LLMFullResponseEnd()]


def audio_secs(frames: list[Frame]) -> float:
    return sum(f.duration for f in frames if isinstance(f, OutputAudioRawFrame))


async def test_config_first_sentences_and_wav_headers_stripped() -> None:
    fake = FakeSarvamTTS(api_key=KEY)
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(
                *answer("Namaste! ", "How can I", " help you today? I am", " listening")
            )
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
        assert fake.texts == ["Namaste!", "How can I help you today?", "I am listening"]
        assert [t.text for t in live.recorder.of(TTSTextFrame)] == fake.texts
        [config] = fake.configs
        assert config["target_language_code"] == "en-IN" and config["speaker"] == "anushka"
        assert (
            config["speech_sample_rate"] == "22050" and config["output_audio_codec"] == "linear16"
        )
        sock = fake.server.connections[0]  # type: ignore[union-attr]
        assert sock.query == {"model": "bulbul:v2", "send_completion_event": "true"}
        assert sock.headers["api-subscription-key"] == KEY
        chars = len(" ".join(fake.texts))
        # WAV headers were removed from every chunk: the audio is exactly the PCM sent.
        assert audio_secs(live.recorder.frames) == pytest.approx(chars * 0.01, abs=1 / 22050 * 2)
        rec = live.recorder
        audio_at = [i for i, f in enumerate(rec.frames) if isinstance(f, OutputAudioRawFrame)]
        assert (
            audio_at[-1]
            < rec.index(rec.of(TTSStoppedFrame)[0])
            < rec.index(rec.of(LLMFullResponseEnd)[0])
        )
        assert not live.errors


async def test_interruption_reconnects_and_drops_the_old_audio() -> None:
    fake = FakeSarvamTTS(api_key=KEY, chunk_bytes=882, faults=Faults(chunk_delay=0.01))
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("A long story begins here and goes on and on. " * 3))
            await live.recorder.wait_for_kind(OutputAudioRawFrame, 2)
            await live.send(InterruptionFrame())
            await wait_until(lambda: len(fake.server.connections) == 2)  # type: ignore[union-attr]
            await trio.sleep(0.1)
            await live.send(*answer("Short one."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        rec = live.recorder
        second = rec.index(rec.of(LLMFullResponseStart)[1])
        cut = rec.index(rec.of(InterruptionFrame)[0])
        assert not [f for f in rec.frames[cut:second] if isinstance(f, OutputAudioRawFrame)]
        assert audio_secs(rec.frames[second:]) == pytest.approx(0.1, abs=0.001)
        assert len(fake.configs) == 2  # the new connection was configured again
        assert not live.errors


async def test_ping_keeps_an_idle_socket_open() -> None:
    fake = FakeSarvamTTS(api_key=KEY, faults=Faults(idle_close_after=0.3))
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake, options=options(keepalive_interval=0.1))]) as live:
            await trio.sleep(1.0)
            await live.send(*answer("Still here."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        assert fake.pings >= 5
        assert fake.server is not None and len(fake.server.connections) == 1


async def test_provider_error_releases_the_answer() -> None:
    fake = FakeSarvamTTS(api_key=KEY, faults=Faults(error="Text exceeds maximum length"))
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Hello."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            error = await live.wait_for_error()
        assert error.error == "Sarvam TTS: Text exceeds maximum length (code 422)"


async def test_punctuation_only_text_is_not_sent() -> None:
    fake = FakeSarvamTTS(api_key=KEY)
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("...", " Okay."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
        assert fake.texts == ["Okay."]


async def test_abrupt_drop_is_reported_and_reconnected() -> None:
    fake = FakeSarvamTTS(api_key=KEY, chunk_bytes=882, faults=Faults(drop_after_chunks=2))
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("The first answer is cut off mid way."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)  # released, not stuck
            await live.wait_for_error(count=2)
            await live.send(*answer("Second try."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2)
        dropped, lost = sorted(e.error for e in live.errors)
        # why the connection ended, and that part of the answer was lost with it
        assert "dropped without a close frame" in dropped and "reconnecting" in dropped
        assert "before the answer's audio was complete; the rest of it is lost" in lost
        assert fake.server is not None and len(fake.server.connections) == 2
        assert len(fake.configs) == 2  # the new connection was configured again
        rec = live.recorder
        first = rec.index(rec.of(LLMFullResponseStart)[0])
        second = rec.index(rec.of(LLMFullResponseStart)[1])
        assert audio_secs(rec.frames[first:second]) == pytest.approx(0.04, abs=0.001)
        assert audio_secs(rec.frames[second:]) == pytest.approx(0.11, abs=0.001)


async def test_an_answer_sent_as_the_provider_closes_its_socket_is_sent_again() -> None:
    fake = FakeSarvamTTS(api_key=KEY, faults=Faults(close_on_text=1))
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("First one. ", "Second one."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        assert not live.errors
        assert fake.server is not None and len(fake.server.connections) == 2
        assert len(fake.configs) == 2  # the new connection was configured before the text
        assert fake.texts[0] == "First one."
        assert fake.texts[-2:] == ["First one.", "Second one."]
        # the fake joins an answer's texts with a space: 22 characters of audio, heard once
        assert audio_secs(live.recorder.frames) == pytest.approx(0.22, abs=0.001)


async def test_a_silent_provider_times_out_and_releases_the_answer() -> None:
    fake = FakeSarvamTTS(api_key=KEY, faults=Faults(silent=True))
    async with open_fake_sarvam_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Anyone there?"))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, within=5)
            error = await live.wait_for_error()
            fake.faults.silent = False
            await live.send(*answer("Now?"))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2, within=5)
        assert error.error == "Sarvam TTS: no reply within idle_timeout=1s; reconnecting"
        assert fake.server is not None and len(fake.server.connections) == 2
        assert audio_secs(live.recorder.frames) == pytest.approx(0.04, abs=0.001)
