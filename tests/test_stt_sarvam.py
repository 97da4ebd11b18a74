"""Sarvam streaming STT against a scripted Sarvam server on loopback (real WebSockets)."""

from __future__ import annotations

import pytest

pytest.importorskip("trio_websocket")

import trio

from rustvani_trio.audio.pcm import silence
from rustvani_trio.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.stt.sarvam import SarvamSTTConfig, SarvamSTTService
from rustvani_trio.testing import (
    FakeSarvamSTT,
    Faults,
    open_fake_sarvam_stt,
)
from rustvani_trio.testing._speech.audio import tone
from rustvani_trio.testing._speech.harness import live_pipeline, wait_until

KEY = "sarvam-secret-456"


def options(**kw: object) -> WebSocketOptions:
    base: dict[str, object] = dict(
        connect_timeout=2,
        send_timeout=0.3,
        idle_timeout=1,
        close_timeout=1,
        keepalive_interval=None,
        reconnect=ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
    )
    base.update(kw)
    return WebSocketOptions(**base)  # type: ignore[arg-type]


def stt_for(fake: FakeSarvamSTT, key: str = KEY, **kw: object) -> SarvamSTTService:
    assert fake.server is not None
    opts = kw.pop("options", options())
    config = SarvamSTTConfig(
        api_key=key,
        url=fake.server.url + "/speech-to-text/ws",
        options=opts,
        final_timeout=0.3,
        **kw,
    )  # type: ignore[arg-type]
    return SarvamSTTService(config)


def audio(pcm: bytes, rate: int = 16000) -> list[Frame]:
    step = rate // 50 * 2
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate)
        for i in range(0, len(pcm), step)
    ]


def utterance(seconds: float = 0.6, rate: int = 16000) -> list[Frame]:
    return [
        VADUserStartedSpeakingFrame(),
        UserStartedSpeakingFrame(),
        *audio(tone(300, seconds, sample_rate=rate), rate),
        VADUserStoppedSpeakingFrame(),
        UserStoppedSpeakingFrame(),
    ]


async def test_transcribes_and_holds_the_stop_for_the_final() -> None:
    fake = FakeSarvamSTT(api_key=KEY, transcripts=["what is the weather in paris"], reply_delay=0.1)
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*utterance())
            await live.recorder.wait_for_kind(UserStoppedSpeakingFrame)
        rec = live.recorder
        [transcript] = rec.of(TranscriptionFrame)
        assert transcript.text == "what is the weather in paris" and transcript.finalized
        # The user's stop waited for the transcript (the VAD stop did not).
        assert rec.index(rec.of(VADUserStoppedSpeakingFrame)[0]) < rec.index(transcript)
        assert rec.index(transcript) < rec.index(rec.of(UserStoppedSpeakingFrame)[0])
        assert len(rec.of(InputAudioRawFrame)) == 30  # passed through
        assert fake.audio_secs == pytest.approx(0.6, abs=1e-6) and fake.flushes == 1
        sock = fake.server.connections[0]  # type: ignore[union-attr]
        assert sock.headers["api-subscription-key"] == KEY
        assert sock.query == {
            "language-code": "en-IN",
            "model": "saarika:v2.5",
            "sample_rate": "16000",
            "input_audio_codec": "pcm_s16le",
            "flush_signal": "true",
        }
        assert not live.errors


async def test_48k_input_is_resampled_to_16k() -> None:
    fake = FakeSarvamSTT(api_key=KEY)
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*utterance(1.0, rate=48000))
            await live.recorder.wait_for_kind(TranscriptionFrame)
        assert live.recorder.of(TranscriptionFrame)[0].text == "1.0 seconds"
        assert fake.audio_secs == pytest.approx(1.0, abs=0.002)


async def test_the_stop_is_released_when_no_transcript_comes() -> None:
    fake = FakeSarvamSTT(api_key=KEY, faults=Faults(silent=True))
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*utterance())
            await live.recorder.wait_for_kind(VADUserStoppedSpeakingFrame)
            started = trio.current_time()
            await live.recorder.wait_for_kind(UserStoppedSpeakingFrame, within=3)
            waited = trio.current_time() - started
        assert 0.25 <= waited <= 1.0  # final_timeout=0.3
        assert not live.recorder.of(TranscriptionFrame)


async def test_keepalive_carries_the_socket_through_long_silence() -> None:
    fake = FakeSarvamSTT(api_key=KEY, faults=Faults(idle_close_after=0.3))
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake, options=options(keepalive_interval=0.1))]) as live:
            await trio.sleep(1.0)  # no audio at all: a muted microphone
            await live.send(*utterance())
            await live.recorder.wait_for_kind(TranscriptionFrame)
        assert fake.server is not None and len(fake.server.connections) == 1
        assert fake.audio_messages >= 30 + 5  # the keep-alive silence went out
        assert not live.errors


async def test_without_keepalive_the_provider_reaps_the_socket() -> None:
    fake = FakeSarvamSTT(api_key=KEY, faults=Faults(idle_close_after=0.3))
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            conns = fake.server.connections  # type: ignore[union-attr]
            await wait_until(lambda: bool(conns) and not conns[0].is_open)
            await live.send(*utterance())
            await live.recorder.wait_for_kind(TranscriptionFrame)
        assert len(conns) >= 2  # reopened quietly (a normal close is no error)
        assert not live.errors


async def test_a_provider_that_stops_reading_is_detected() -> None:
    fake = FakeSarvamSTT(api_key=KEY, faults=Faults(stop_reading_after=3))
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake, options=options(send_buffer_bytes=4096))]) as live:
            await live.send(*audio(silence(20.0, 16000)))
            error = await live.wait_for_error(within=5)
            fake.faults.stop_reading_after = None
            await wait_until(lambda: len(fake.server.connections) >= 2)  # type: ignore[union-attr]
        assert "stopped reading" in error.error and "send_timeout=0.3s" in error.error


async def test_provider_error_is_reported_and_the_stop_released() -> None:
    fake = FakeSarvamSTT(api_key=KEY, faults=Faults(error="Rate limit exceeded"))
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*utterance())
            error = await live.wait_for_error()
            await live.recorder.wait_for_kind(UserStoppedSpeakingFrame, within=1)
        assert error.error == "Sarvam STT: Rate limit exceeded (code 429)"


async def test_wrong_key() -> None:
    async with open_fake_sarvam_stt(FakeSarvamSTT(api_key="right")) as fake:
        async with live_pipeline([stt_for(fake)]) as live:
            error = await live.wait_for_error()
        assert "HTTP 403 (is the API key right?)" in error.error
        assert "Invalid API subscription key" in error.error
        assert KEY not in error.error


async def test_abrupt_drop_reconnects_and_goes_on() -> None:
    fake = FakeSarvamSTT(api_key=KEY, faults=Faults(drop_after_chunks=5))
    async with open_fake_sarvam_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*audio(silence(0.2, 16000)))
            error = await live.wait_for_error()
            await live.send(*utterance())
            await live.recorder.wait_for_kind(TranscriptionFrame)
        assert "dropped without a close frame" in error.error
        assert fake.server is not None and len(fake.server.connections) == 2


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="8000 or 16000"):
        SarvamSTTConfig(api_key="k", sample_rate=48000)
    with pytest.raises(ValueError, match="SARVAM_API_KEY"):
        SarvamSTTConfig(api_key=" ")
