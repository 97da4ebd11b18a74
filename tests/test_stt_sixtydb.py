"""60db streaming STT against a scripted 60db server on loopback (real WebSockets)."""

from __future__ import annotations

import attrs
import pytest

pytest.importorskip("trio_websocket")

from rustvani_trio.audio.pcm import silence
from rustvani_trio.frames import Frame, InputAudioRawFrame, TranscriptionFrame
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.stt.sixtydb import SixtyDbSTTConfig, SixtyDbSTTService
from rustvani_trio.testing import FakeSixtyDbSTT, Faults, open_fake_sixtydb_stt
from rustvani_trio.testing._speech.audio import tone
from rustvani_trio.testing._speech.harness import live_pipeline, wait_until

KEY = "60db/secret+key 789"  # URL-encoded in the query: must be redacted in that form too
FAST = WebSocketOptions(
    connect_timeout=2,
    send_timeout=1,
    idle_timeout=1,
    close_timeout=1,
    reconnect=ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
)


def stt_for(fake: FakeSixtyDbSTT, key: str = KEY) -> SixtyDbSTTService:
    assert fake.server is not None
    return SixtyDbSTTService(
        SixtyDbSTTConfig(api_key=key, url=fake.server.url + "/ws/stt", options=FAST)
    )


def audio(pcm: bytes, rate: int = 16000) -> list[Frame]:
    step = rate // 50 * 2
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate)
        for i in range(0, len(pcm), step)
    ]


def speech_then_quiet() -> list[Frame]:
    return audio(silence(0.2, 16000) + tone(300, 0.8) + silence(0.7, 16000))


@pytest.mark.parametrize(
    "order",
    [
        ("connecting", "connection_established", "connected"),
        ("connected", "connection_established"),
        ("connection_established",),
        ("connected",),
    ],
)
async def test_handshake_in_either_order_then_transcripts(order: tuple[str, ...]) -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, transcripts=["Book a table for two."], greeting_order=order)
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*speech_then_quiet())
            await live.recorder.wait_for(
                lambda f: any(isinstance(x, TranscriptionFrame) and x.finalized for x in f)
            )
            await live.end()
        transcripts = live.recorder.of(TranscriptionFrame)
        # partial and fast final are interim; only the refined speech_final is final
        assert [(t.text, t.finalized) for t in transcripts] == [
            ("Book", False),
            ("book a table for two.", False),
            ("Book a table for two.", True),
        ]
        assert len(fake.starts) == 1  # one start, whichever greeting came first
        start = fake.starts[0]
        assert start["languages"] == ["en"] and start["config"]["encoding"] == "linear"
        assert start["config"]["sample_rate"] == 16000
        assert fake.stops == 1  # EndFrame stopped the session cleanly
        assert not live.errors


async def test_audio_before_the_session_waits_for_it() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY)
    async with open_fake_sixtydb_stt(fake):
        stt = stt_for(fake)
        async with live_pipeline([stt]) as live:
            await live.send(*speech_then_quiet())  # queued at once, before the greeting
            await live.recorder.wait_for(
                lambda f: any(isinstance(x, TranscriptionFrame) and x.finalized for x in f)
            )
        assert fake.audio_before_session == 0
        assert live.recorder.of(TranscriptionFrame)[-1].text == "0.8 seconds of speech"


async def test_close_1008_is_reported_clearly_and_not_retried() -> None:
    fake = FakeSixtyDbSTT(api_key="the-right-one")
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            error = await live.wait_for_error()
        assert "close code 1008: Invalid API key or insufficient credits" in error.error
        assert "no credit" in error.error
        assert fake.server is not None and len(fake.server.connections) == 1  # no retry loop
        for e in live.errors:
            assert KEY not in e.error and "60db%2Fsecret" not in e.error


async def test_provider_error_message() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, faults=Faults(error="Unsupported sample rate"))
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*audio(silence(0.1, 16000)))
            error = await live.wait_for_error()
        assert error.error == "60db STT: Unsupported sample rate (E42)"


def test_the_key_is_url_encoded_and_redacted() -> None:
    stt = SixtyDbSTTService(SixtyDbSTTConfig(api_key=KEY))
    assert stt.ws_url() == "wss://api.60db.ai/ws/stt?apiKey=60db%2Fsecret%2Bkey%20789"
    assert stt.redact(f"failed: {stt.ws_url()}") == "failed: wss://api.60db.ai/ws/stt?apiKey=***"


async def test_abrupt_drop_reconnects_and_goes_on() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, faults=Faults(drop_after_chunks=5))
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*audio(silence(0.2, 16000)))
            error = await live.wait_for_error()
            await live.send(*speech_then_quiet())
            await live.recorder.wait_for(
                lambda f: any(isinstance(x, TranscriptionFrame) and x.finalized for x in f)
            )
            await live.end()
        assert "dropped without a close frame" in error.error and "reconnecting" in error.error
        assert fake.server is not None and len(fake.server.connections) == 2
        assert len(fake.starts) == 2  # the new connection started a session of its own
        assert live.recorder.of(TranscriptionFrame)[-1].text == "0.8 seconds of speech"


async def test_an_idle_close_by_the_provider_reconnects_quietly() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, faults=Faults(idle_close_after=0.3))
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            assert fake.server is not None
            conns = fake.server.connections
            await wait_until(lambda: bool(conns) and not conns[0].is_open)
            assert conns[0].closed_by_client is None  # the provider closed it
            await live.send(*speech_then_quiet())
            await live.recorder.wait_for(
                lambda f: any(isinstance(x, TranscriptionFrame) and x.finalized for x in f)
            )
        assert len(conns) >= 2
        assert not live.errors  # a normal close (1000) is no error


async def test_a_provider_that_stops_reading_is_detected() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, faults=Faults(stop_reading_after=3))
    options = attrs.evolve(FAST, send_timeout=0.3, send_buffer_bytes=4096)
    async with open_fake_sixtydb_stt(fake):
        stt = SixtyDbSTTService(
            SixtyDbSTTConfig(api_key=KEY, url=fake.server.url + "/ws/stt", options=options)  # type: ignore[union-attr]
        )
        async with live_pipeline([stt]) as live:
            await live.send(*audio(silence(20.0, 16000)))
            error = await live.wait_for_error(within=5)
            fake.faults.stop_reading_after = None
            await wait_until(lambda: len(fake.server.connections) >= 2)  # type: ignore[union-attr]
        assert "stopped reading" in error.error and "send_timeout=0.3s" in error.error
        assert "reconnecting" in error.error


async def test_a_provider_that_never_greets_times_out() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, faults=Faults(silent=True))
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*speech_then_quiet())
            error = await live.wait_for_error(within=5)
            fake.faults.silent = False
            await live.recorder.wait_for(
                lambda f: any(isinstance(x, TranscriptionFrame) and x.finalized for x in f)
            )
        assert "no reply within idle_timeout=1s" in error.error
        assert fake.server is not None and len(fake.server.connections) >= 2


async def test_slow_transcripts_arrive_one_by_one() -> None:
    fake = FakeSixtyDbSTT(api_key=KEY, faults=Faults(first_delay=0.05, chunk_delay=0.05))
    async with open_fake_sixtydb_stt(fake):
        async with live_pipeline([stt_for(fake)]) as live:
            await live.send(*speech_then_quiet())
            await live.recorder.wait_for(
                lambda f: any(isinstance(x, TranscriptionFrame) and x.finalized for x in f)
            )
        rec = live.recorder
        times = [rec.times[rec.index(t)] for t in rec.of(TranscriptionFrame)]
        assert len(times) == 3
        assert times[1] - times[0] >= 0.04 and times[2] - times[1] >= 0.04
