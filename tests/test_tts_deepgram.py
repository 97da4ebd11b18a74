"""Deepgram streaming TTS against a scripted Deepgram server on loopback (real WebSockets)."""

from __future__ import annotations

import json

import pytest
import trio

pytest.importorskip("trio_websocket")

from rustvani_trio.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    OutputAudioRawFrame,
    TextFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.tts._ws_tts import MAX_RESENDS
from rustvani_trio.services.tts.deepgram import DeepgramTTSConfig, DeepgramTTSService
from rustvani_trio.testing import (
    FakeDeepgramTTS,
    Faults,
    open_fake_deepgram_tts,
)
from rustvani_trio.testing._speech.harness import live_pipeline, wait_until

KEY = "dg-secret-key-123"
FAST = WebSocketOptions(
    connect_timeout=2,
    send_timeout=1,
    idle_timeout=0.5,
    close_timeout=1,
    reconnect=ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
)


def answer(*pieces: str) -> list[Frame]:
    return [LLMFullResponseStart(), *(LLMText(text=p) for p in pieces), LLMFullResponseEnd()]


def tts_for(fake: FakeDeepgramTTS, key: str = KEY, **kw: object) -> DeepgramTTSService:
    assert fake.server is not None
    config = DeepgramTTSConfig(
        api_key=key, base_url=fake.server.url, options=kw.pop("options", FAST), **kw
    )  # type: ignore[arg-type]
    return DeepgramTTSService(config)


def audio_secs(frames: list[Frame]) -> float:
    return sum(f.duration for f in frames if isinstance(f, OutputAudioRawFrame))


def no_secret(frames: list[Frame]) -> None:
    for frame in frames:
        assert KEY not in repr(frame)


async def test_speaks_an_answer_in_order() -> None:
    async with open_fake_deepgram_tts(FakeDeepgramTTS(api_key=KEY)) as fake:
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Hello there. ", "How are", " you today?"))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            await live.end()
        frames = live.recorder.frames
        kinds = [type(f) for f in frames if not isinstance(f, (OutputAudioRawFrame, LLMText))]
        assert kinds[kinds.index(LLMFullResponseStart) :][:5] == [
            LLMFullResponseStart,
            TTSStartedFrame,
            TTSTextFrame,
            TTSTextFrame,
            TTSStoppedFrame,
        ]
        # Every audio frame comes after TTSStarted and before TTSStopped and the answer's end.
        first = live.recorder.index(live.recorder.of(TTSStartedFrame)[0])
        stopped = live.recorder.index(live.recorder.of(TTSStoppedFrame)[0])
        audio_at = [i for i, f in enumerate(frames) if isinstance(f, OutputAudioRawFrame)]
        assert first < audio_at[0] and audio_at[-1] < stopped < live.recorder.index(
            live.recorder.of(LLMFullResponseEnd)[0]
        )
        assert [f.text for f in live.recorder.of(TTSTextFrame)] == [
            "Hello there.",
            "How are you today?",
        ]
        assert [f.text for f in live.recorder.of(LLMText)] == [
            "Hello there. ",
            "How are",
            " you today?",
        ]
        chars = len("Hello there.") + len("How are you today?")
        assert audio_secs(frames) == pytest.approx(chars * 0.01, abs=0.001)
        assert all(
            f.sample_rate == 24000 and f.duration <= 0.02 + 1e-9
            for f in live.recorder.of(OutputAudioRawFrame)
        )
        sock = fake.server.connections[0]  # type: ignore[union-attr]
        assert sock.query == {
            "model": "aura-2-helena-en",
            "encoding": "linear16",
            "sample_rate": "24000",
        }
        assert sock.headers["authorization"] == f"Token {KEY}"
        sent = [json.loads(m) for m in sock.received if isinstance(m, str)]
        assert [m["type"] for m in sent] == ["Speak", "Speak", "Flush", "Close"]
        assert not live.errors


async def test_a_plain_text_frame_is_spoken_on_its_own() -> None:
    async with open_fake_deepgram_tts(FakeDeepgramTTS(api_key=KEY)) as fake:
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(TextFrame(text="Welcome!"))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        assert audio_secs(live.recorder.frames) == pytest.approx(0.08, abs=0.001)


async def test_interruption_clears_and_drops_late_audio() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, chunk_bytes=960, faults=Faults(chunk_delay=0.01))
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("This is a long answer that takes a while to say. " * 4))
            await live.recorder.wait_for_kind(OutputAudioRawFrame, 3)
            await live.send(InterruptionFrame())
            await live.recorder.wait_for_kind(InterruptionFrame)
            await wait_until(lambda: fake.clears > 0)  # late audio must not come out meanwhile
            await trio.sleep(0.05)
            await live.send(*answer("Second answer."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
            await live.end()
        frames = live.recorder.frames
        cut = live.recorder.index(live.recorder.of(InterruptionFrame)[0])
        second = live.recorder.index(live.recorder.of(LLMFullResponseStart)[1])
        assert not [f for f in frames[cut:second] if isinstance(f, OutputAudioRawFrame)]
        assert audio_secs(frames[second:]) == pytest.approx(len("Second answer.") * 0.01, abs=0.001)
        assert fake.clears == 1
        assert fake.server is not None and len(fake.server.connections) == 1  # no reconnect
        assert len(live.recorder.of(TTSStoppedFrame)) == 1  # the interrupted answer has none
        assert not live.errors


async def test_a_stale_flushed_after_an_interruption_does_not_end_the_next_answer() -> None:
    # The interrupted answer's flush had finished at the provider as the Clear came: its
    # Flushed arrives (before Cleared) after the next answer's flush went out. It must not be
    # taken for the next answer's: that answer ends when its own audio is in.
    fake = FakeDeepgramTTS(
        api_key=KEY, chunk_bytes=960, faults=Faults(chunk_delay=0.01, flushed_before_cleared=0.1)
    )
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("This answer is cut off by the user. " * 3))
            await live.recorder.wait_for_kind(OutputAudioRawFrame, 2)
            await live.send(InterruptionFrame())
            await live.recorder.wait_for_kind(InterruptionFrame)
            await wait_until(lambda: fake.clears == 1)
            await live.send(*answer("Next."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        rec = live.recorder
        second = rec.index(rec.of(LLMFullResponseStart)[1])
        stopped = rec.index(rec.of(TTSStoppedFrame)[0])
        assert audio_secs(rec.frames[second:stopped]) == pytest.approx(0.05, abs=0.001)
        assert not [f for f in rec.frames[stopped:] if isinstance(f, OutputAudioRawFrame)]


async def test_wrong_key_is_reported_once_without_the_key() -> None:
    async with open_fake_deepgram_tts(FakeDeepgramTTS(api_key="the-right-key")) as fake:
        async with live_pipeline([tts_for(fake)]) as live:
            error = await live.wait_for_error()
            await live.send(*answer("Hello."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)  # no hang without a provider
        assert "HTTP 401" in error.error and "API key" in error.error
        assert "Invalid credentials" in error.error  # the provider's own message
        assert error.processor is not None and "DeepgramTTS" in error.processor
        assert fake.server is not None and fake.server.rejected >= 1
        no_secret(live.errors + live.recorder.frames)


async def test_abrupt_drop_is_reported_and_reconnected() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, chunk_bytes=960, faults=Faults(drop_after_chunks=2))
    async with open_fake_deepgram_tts(fake):
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
        second = live.recorder.index(live.recorder.of(LLMFullResponseStart)[1])
        assert audio_secs(live.recorder.frames[second:]) == pytest.approx(0.11, abs=0.001)


async def test_idle_close_by_the_provider_reconnects_quietly() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(idle_close_after=0.1))
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            assert fake.server is not None
            conns = fake.server.connections
            await wait_until(lambda: bool(conns) and not conns[0].is_open)
            await live.send(*answer("After a quiet spell."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        assert not live.errors
        assert len(fake.server.connections) >= 2
        assert audio_secs(live.recorder.frames) == pytest.approx(0.2, abs=0.001)


async def test_an_answer_sent_as_the_provider_closes_its_socket_is_sent_again() -> None:
    # The provider closes (1000) as the answer's first text reaches it, answering nothing:
    # the whole answer goes out again, in order, on the next connection, and is heard once.
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(close_on_text=1))
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("First one. ", "Second one."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        assert not live.errors
        assert fake.server is not None and len(fake.server.connections) == 2
        assert fake.texts[0] == "First one."
        assert fake.texts[-2:] == ["First one.", "Second one."]
        assert fake.flushes == 1  # only the second connection saw the answer's end
        assert audio_secs(live.recorder.frames) == pytest.approx(0.21, abs=0.001)


async def test_an_answer_whose_connections_keep_closing_is_given_up_and_reported() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(close_on_text=MAX_RESENDS + 1))
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Never heard."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)  # released, not stuck
            error = await live.wait_for_error()
            await live.send(*answer("Heard."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2)
        assert fake.texts[: MAX_RESENDS + 1] == ["Never heard."] * (MAX_RESENDS + 1)
        assert "before any of the answer's audio arrived, 3 times" in error.error
        assert len(live.errors) == 1
        assert len(live.recorder.of(TTSStoppedFrame)) == 2
        assert audio_secs(live.recorder.frames) == pytest.approx(0.06, abs=0.001)


async def test_an_interruption_while_an_answer_waits_to_be_sent_again_drops_it() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(close_on_text=1, first_delay=0.3))
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Going to be cut off."))
            await wait_until(lambda: fake.flushes == 1)  # sent again, audio still to come
            await live.send(InterruptionFrame())
            await live.recorder.wait_for_kind(InterruptionFrame)
            await wait_until(lambda: fake.clears == 1)
            await live.send(*answer("Next."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        rec = live.recorder
        cut = rec.index(rec.of(InterruptionFrame)[0])
        assert not [f for f in rec.frames[:cut] if isinstance(f, OutputAudioRawFrame)]
        assert audio_secs(rec.frames[cut:]) == pytest.approx(0.05, abs=0.001)
        assert not live.errors


async def test_provider_error_message_is_reported() -> None:
    fake = FakeDeepgramTTS(
        api_key=KEY,
        faults=Faults(error="Text must not be empty", close_code=1008, close_reason="DATA-0000"),
    )
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Hi."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            await live.wait_for_error(within=3, count=2)
        texts = [e.error for e in live.errors]
        assert "Deepgram TTS: Text must not be empty (DATA-0000)" in texts
        assert any("code 1008: DATA-0000" in t for t in texts)
        assert all(isinstance(e, ErrorFrame) and not e.fatal for e in live.errors)


async def test_a_silent_provider_times_out() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(silent=True))
    async with open_fake_deepgram_tts(fake):
        tts = tts_for(fake)
        async with live_pipeline([tts]) as live:
            await live.send(*answer("Anyone there?"))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, within=5)
            error = await live.wait_for_error()
            # The next connection opens and is ready: a resend would go out on it now.
            await wait_until(lambda: tts.connection_count == 2 and tts.connected)
            await trio.sleep(0.05)
        assert "no reply within idle_timeout=0.5s" in error.error
        assert fake.texts == ["Anyone there?"] and fake.flushes == 1


async def test_slow_audio_streams_as_it_arrives() -> None:
    fake = FakeDeepgramTTS(
        api_key=KEY, chunk_bytes=2400, faults=Faults(chunk_delay=0.02, first_delay=0.02)
    )
    async with open_fake_deepgram_tts(fake):
        async with live_pipeline([tts_for(fake)]) as live:
            await live.send(*answer("Slowly does it, one chunk at a time."))
            await live.recorder.wait_for_kind(TTSStoppedFrame, within=5)
        rec = live.recorder
        times = [
            t
            for f, t in zip(rec.frames, rec.times, strict=True)
            if isinstance(f, OutputAudioRawFrame)
        ]
        assert times[-1] - times[0] >= 0.02 * 5  # pushed over time, not all at the end
        assert rec.times[rec.index(rec.of(TTSStoppedFrame)[0])] >= times[-1]


def test_config_checks_the_key() -> None:
    with pytest.raises(ValueError, match="DEEPGRAM_API_KEY"):
        DeepgramTTSConfig(api_key="")
    assert KEY not in repr(DeepgramTTSConfig(api_key=KEY))


async def test_a_warning_is_logged_escaped_and_bounded_and_the_audio_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    warning = f"Speak text is long\nINFO forged log line \x1b[31mred\x1b[0m key={KEY} " + "w" * 5000
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(warning=warning))
    caplog.set_level("WARNING", logger="rustvani_trio")
    async with open_fake_deepgram_tts(fake), live_pipeline([tts_for(fake)]) as live:
        await live.send(*answer("Hello there."))
        await live.recorder.wait_for_kind(TTSStoppedFrame)
        await live.end()
    assert not live.errors  # a warning is no error
    assert audio_secs(live.recorder.frames) == pytest.approx(0.12, abs=0.001)
    logged = [r.getMessage() for r in caplog.records if "warning" in r.getMessage()]
    assert len(logged) == 1, logged
    message = logged[0]
    assert "Deepgram TTS warning: Speak text is long\\nINFO forged log line" in message
    assert "\n" not in message and "\x1b" not in message  # escaped: no forged line, no colour
    assert KEY not in message and "key=***" in message
    assert len(message) < 600 and "characters)" in message  # bounded, saying it was cut
    assert fake.warnings_sent == 1
