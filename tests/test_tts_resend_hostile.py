"""Hostile tests of WebSocketTTSService's resend of an answer caught by a closing connection.

Real providers and careless callers against the claims of ``services/tts/_ws_tts.py``: an
answer whose connection ends before any of its audio arrived goes out again (whole, in
order, heard once); one whose audio had started is not repeated and ends with an error; an
interruption, an EndFrame or a CancelFrame while a resend waits, a provider that cannot be
reached again, errors and late replies in the middle of a resend. Scripted Deepgram and
Sarvam servers over real loopback WebSockets.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

pytest.importorskip("trio_websocket")

from tts_providers import (
    BOTH,
    DEEPGRAM,
    KEY,
    PER_CHAR,
    SARVAM,
    Provider,
    answer,
    audio_secs,
    deepgram_tts,
    options,
    sarvam_tts,
    secs_of,
    serving,
)

from rustvani_trio.frames import (
    CancelFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    OutputAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.services.stt._ws import ReconnectPolicy
from rustvani_trio.services.tts._ws_tts import MAX_RESENDS
from rustvani_trio.services.tts.deepgram import DeepgramTTSConfig, DeepgramTTSService
from rustvani_trio.task import PipelineTask
from rustvani_trio.testing import (
    FakeDeepgramTTS,
    FakeSarvamTTS,
    Faults,
    open_fake_deepgram_tts,
    open_fake_sarvam_tts,
)
from rustvani_trio.testing._speech._common import audio_for
from rustvani_trio.testing._speech._wsserver import FakeSocket, open_ws_server
from rustvani_trio.testing._speech.harness import LivePipeline, Recorder, live_pipeline, wait_until

# a reconnect that waits long enough for a test to act while the answer is pending
SLOW = ReconnectPolicy(max_attempts=5, initial_delay=0.3, max_delay=0.3, jitter=0)
_deepgram, _sarvam = deepgram_tts, sarvam_tts


def sarvam_secs(*texts: str) -> float:
    """The Sarvam fake joins an answer's texts with a space before making its audio."""
    return len(" ".join(texts)) * PER_CHAR


def spoken(provider: Provider, *texts: str) -> float:
    return sarvam_secs(*texts) if provider is SARVAM else secs_of(*texts)


def between(live: LivePipeline, start: Frame, end: Frame | None = None) -> list[Frame]:
    rec = live.recorder
    stop = rec.index(end) if end is not None else len(rec.frames)
    return rec.frames[rec.index(start) : stop]


def errors_with(live: LivePipeline, text: str) -> list[str]:
    return [e.error for e in live.errors if text in e.error]


def dead_url() -> str:
    """A loopback WebSocket URL whose port refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


# ---------------------------------------------------------------------- nothing heard: resent


@BOTH
async def test_a_close_between_sentences_before_any_audio_resends_them_in_order(
    provider: Provider,
) -> None:
    # The answer streams in over several LLMText frames; its connection closes as the first
    # sentence arrives, before the flush. The first sentence goes out again on the next
    # connection, the rest follows on it, and every sentence is heard exactly once.
    async with serving(provider, faults=Faults(close_on_text=1)) as fake:
        tts = provider.make_tts(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(LLMFullResponseStart(), LLMText(text="Hello there. "))
            await wait_until(lambda: tts.connection_count == 2 and tts.connected)
            await live.send(LLMText(text="How are"), LLMText(text=" you?"), LLMFullResponseEnd())
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            await live.end()
        assert fake.texts == ["Hello there.", "Hello there.", "How are you?"]
        assert fake.flushes == 1
        assert audio_secs(live.recorder.frames) == pytest.approx(
            spoken(provider, "Hello there.", "How are you?"), abs=0.001
        )
        assert not live.errors


@BOTH
async def test_back_to_back_answers_with_the_close_on_the_second_one(provider: Provider) -> None:
    # Two answers queued at once; the provider reaps the socket just as the second answer's
    # text reaches it (after the first answer's text, before its audio was sent back). The
    # first answer is heard once, the second is sent again and heard once.
    async with serving(provider, faults=Faults(first_delay=0.15)) as fake:
        tts = provider.make_tts(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(*answer("First answer."), *answer("Second answer."))
            await wait_until(lambda: fake.texts == ["First answer."])
            fake.faults.close_on_text = 1  # the next text (the second answer's) is unanswered
            await live.recorder.wait_for_kind(TTSStoppedFrame, 2)
            await live.end()
        assert fake.texts == ["First answer.", "Second answer.", "Second answer."]
        rec = live.recorder
        first, second = rec.of(LLMFullResponseStart)
        assert audio_secs(between(live, first, second)) == pytest.approx(
            secs_of("First answer."), abs=0.001
        )
        assert audio_secs(between(live, second)) == pytest.approx(
            secs_of("Second answer."), abs=0.001
        )
        assert tts.connection_count == 2
        assert not live.errors


async def test_a_provider_closing_right_after_each_answer_loses_nothing() -> None:
    # A provider that closes its socket (1000) right after each answer's Flushed: the answer
    # was complete, so it is neither sent again nor reported lost.
    texts: list[str] = []

    async def one_answer_per_connection(sock: FakeSocket) -> None:
        buffer: list[str] = []
        while (message := await sock.receive_json()) is not None:
            if message["type"] == "Speak":
                texts.append(message["text"])
                buffer.append(message["text"])
            elif message["type"] == "Flush":
                await sock.send(audio_for("".join(buffer), 24000))
                await sock.send_json({"type": "Flushed", "sequence_id": 1})
                await sock.close(1000, "done")
                return

    async with open_ws_server(one_answer_per_connection) as server:
        config = DeepgramTTSConfig(api_key=KEY, base_url=server.url, options=options())
        tts = DeepgramTTSService(config)
        async with live_pipeline([tts]) as live:
            for n in range(3):
                await live.send(*answer(f"Answer {n}."))
                await live.recorder.wait_for_kind(TTSStoppedFrame, n + 1)
            await live.end()
        assert texts == ["Answer 0.", "Answer 1.", "Answer 2."]
        assert audio_secs(live.recorder.frames) == pytest.approx(
            3 * secs_of("Answer 0."), abs=0.001
        )
        assert not live.errors


# ---------------------------------------------------------------------- audio heard: not resent


@asynccontextmanager
async def one_heard_then_two_lost() -> AsyncIterator[tuple[FakeDeepgramTTS, LivePipeline]]:
    """An answer whose first sentence, "One.", was heard and whose second, "Two.", was lost:
    Deepgram synthesises each Speak as it comes, and reaps the socket as "Two." arrives
    (before the flush). Yields the fake and the pipeline on the next connection; the block
    ends the run."""
    fake = FakeDeepgramTTS(api_key=KEY, synthesize_on_speak=True)
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(LLMFullResponseStart(), LLMText(text="One. "))
            await live.recorder.wait_for(
                lambda frames: audio_secs(frames) >= secs_of("One.") - 1e-9
            )
            fake.faults.close_on_text = 1
            await live.send(LLMText(text="Two. "))
            await wait_until(lambda: tts.connection_count == 2)
            yield fake, live
            await live.end()


async def test_a_sentence_lost_after_audio_was_heard_ends_the_answer() -> None:
    # The docstring: "part of the answer's audio is lost: the answer ends there". The third
    # sentence must not be heard after a gap where the second should have been, nor sent to
    # the provider, nor reported as spoken (no TTSTextFrame, RTVI's bot-tts-text; this part
    # from a review).
    async with one_heard_then_two_lost() as (fake, live):
        await live.send(LLMText(text="Three."), LLMFullResponseEnd())
        await live.recorder.wait_for_kind(LLMFullResponseEnd)
    assert fake.texts[:2] == ["One.", "Two."]  # "Two." was sent once and never answered
    assert "Three." not in fake.texts
    assert errors_with(live, "the rest of it is lost")
    # Only the first sentence was heard: the answer ended where its audio was lost.
    assert audio_secs(live.recorder.frames) == pytest.approx(secs_of("One."), abs=0.001)
    assert [f.text for f in live.recorder.of(TTSTextFrame)] == ["One.", "Two."]


async def test_an_answer_that_lost_audio_and_is_then_interrupted_still_reports_the_loss() -> None:
    async with one_heard_then_two_lost() as (_fake, live):
        await live.send(InterruptionFrame())
        await live.wait_for_error()
    assert len(errors_with(live, "the rest of it is lost")) == 1
    assert audio_secs(live.recorder.frames) == pytest.approx(secs_of("One."), abs=0.001)


async def test_an_answer_given_up_before_its_flush_is_not_spoken_in_part() -> None:
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(close_on_text=MAX_RESENDS + 1))
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(LLMFullResponseStart(), LLMText(text="One. "))
            await wait_until(lambda: tts.connection_count == MAX_RESENDS + 2)
            await live.send(LLMText(text="Two."), LLMFullResponseEnd())
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            await live.end()
        assert fake.texts[: MAX_RESENDS + 1] == ["One."] * (MAX_RESENDS + 1)
        assert errors_with(live, "the answer is not spoken")
        # "the answer is not spoken": then none of it may be heard (here "Two." was).
        assert audio_secs(live.recorder.frames) == 0


# ---------------------------------------------------------------------- interruptions


@BOTH
async def test_an_interruption_while_the_resend_waits_for_a_connection(
    provider: Provider,
) -> None:
    # The answer's connection closed on its text; the next connection attempt is refused and
    # the service backs off. The user interrupts meanwhile: the cut answer is never sent
    # again nor heard, and the next answer is spoken exactly once.
    async with serving(provider, faults=Faults(close_on_text=1)) as fake:
        tts = provider.make_tts(fake, options(reconnect=SLOW))
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connection_count == 1)
            fake.server.reject_next = [(503, b'{"error": "busy"}')]
            await live.send(*answer("Cut off before it began."))
            await live.wait_for_error()  # the refusal: backing off, the answer waiting
            await live.send(InterruptionFrame())
            await live.recorder.wait_for_kind(InterruptionFrame)
            await live.send(*answer("Next."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
            await live.end()
        assert fake.texts == ["Cut off before it began.", "Next."]
        assert fake.flushes == 1
        cut = live.recorder.of(InterruptionFrame)[0]
        assert audio_secs(live.recorder.frames) == pytest.approx(secs_of("Next."), abs=0.001)
        assert audio_secs(between(live, cut)) == pytest.approx(secs_of("Next."), abs=0.001)
        assert len(live.recorder.of(TTSStoppedFrame)) == 1  # the cut answer has none
        assert len(live.errors) == 1 and "HTTP 503" in live.errors[0].error


@pytest.mark.parametrize(
    ("provider", "faults"),
    [
        # Deepgram: the resent answer's audio is streaming when the user interrupts (Clear)
        (DEEPGRAM, Faults(close_on_text=1, chunk_delay=0.01)),
        # Sarvam: its flush went out again, its audio not yet (the interruption reconnects;
        # the fake is not interrupted mid-audio, where its server trips on the client's close)
        (SARVAM, Faults(close_on_text=1, first_delay=0.3)),
    ],
    ids=["deepgram-playing", "sarvam-synthesising"],
)
async def test_an_interruption_of_the_resent_answer(provider: Provider, faults: Faults) -> None:
    # None of the cut answer's audio comes out after the InterruptionFrame, and the next
    # answer is spoken exactly once.
    async with serving(provider, chunk_bytes=480, faults=faults) as fake:
        tts = provider.make_tts(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(*answer("A long answer that was sent twice and is cut off. " * 2))
            if provider is DEEPGRAM:
                await live.recorder.wait_for_kind(OutputAudioRawFrame, 3)
            else:
                await wait_until(lambda: fake.flushes == 1)
            await live.send(InterruptionFrame())
            await live.recorder.wait_for_kind(InterruptionFrame)
            await trio.sleep(0.05)  # late audio of the cut answer would come out now
            fake.faults.chunk_delay = fake.faults.first_delay = 0
            await live.send(*answer("Next."))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
            await live.end()
        rec = live.recorder
        cut = rec.of(InterruptionFrame)[0]
        nxt = rec.of(LLMFullResponseStart)[1]
        assert not [f for f in between(live, cut, nxt) if isinstance(f, OutputAudioRawFrame)]
        assert audio_secs(between(live, nxt)) == pytest.approx(secs_of("Next."), abs=0.001)
        assert fake.texts.count("Next.") == 1
        assert len(rec.of(TTSStoppedFrame)) == 1
        assert not live.errors


# ---------------------------------------------------------------------- end and cancel


@BOTH
async def test_an_end_frame_while_a_resend_waits_speaks_it_once_then_ends(
    provider: Provider,
) -> None:
    # The answer never got its LLMFullResponseEnd; its connection closed on its text and the
    # reconnect backs off. EndFrame: the answer is still spoken (once), then the run ends.
    async with serving(provider, faults=Faults(close_on_text=1)) as fake:
        tts = provider.make_tts(fake, options(reconnect=SLOW))
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connection_count == 1)
            fake.server.reject_next = [(503, b'{"error": "busy"}')]
            await live.send(LLMFullResponseStart(), LLMText(text="Said before the end. "))
            await live.wait_for_error()
            with trio.fail_after(SLOW.max_delay + 2):  # a hang guard, not a speed check
                await live.end()
        assert live.task.finish_reason == "end"
        assert fake.texts == ["Said before the end.", "Said before the end."]
        assert audio_secs(live.recorder.frames) == pytest.approx(
            secs_of("Said before the end."), abs=0.001
        )
        assert len(live.recorder.of(TTSStoppedFrame)) == 1
        assert tts.connection_count == 2
        assert len(live.errors) == 1 and "HTTP 503" in live.errors[0].error


@BOTH
async def test_an_end_frame_behind_an_answer_the_provider_keeps_refusing(
    provider: Provider,
) -> None:
    # The provider reaps the socket on every text: the pending answer is tried
    # MAX_RESENDS + 1 times, reported, and the run still ends.
    async with serving(provider, faults=Faults(close_on_text=100)) as fake:
        tts = provider.make_tts(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(LLMFullResponseStart(), LLMText(text="Never heard. "))
            with trio.fail_after(5):  # a hang guard
                await live.end()
        assert live.task.finish_reason == "end"
        assert fake.texts == ["Never heard."] * (MAX_RESENDS + 1)
        assert audio_secs(live.recorder.frames) == 0
        assert len(live.recorder.of(TTSStoppedFrame)) == 1
        [error] = live.errors
        assert f"before any of the answer's audio arrived, {MAX_RESENDS + 1} times" in error.error


@BOTH
async def test_a_cancel_frame_while_a_resend_waits_ends_at_once(provider: Provider) -> None:
    async with serving(provider, faults=Faults(close_on_text=1)) as fake:
        tts = provider.make_tts(fake, options(reconnect=SLOW))
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connection_count == 1)
            fake.server.reject_next = [(503, b'{"error": "busy"}')]
            await live.send(*answer("Cancelled while waiting."))
            await live.wait_for_error()
            await live.task.queue_frame(CancelFrame(reason="hang up"))
            with trio.fail_after(2):  # a hang guard
                await wait_until(lambda: live.task.has_finished)
            await trio.sleep(SLOW.max_delay + 0.1)  # the backoff would have ended by now
        assert live.task.finish_reason == "cancel"
        assert fake.texts == ["Cancelled while waiting."]  # not sent again after the cancel
        assert tts.connection_count == 1
        assert fake.server.rejected == 1
        assert audio_secs(live.recorder.frames) == 0
        assert not live.recorder.of(TTSStoppedFrame)


# ---------------------------------------------------------------------- the provider fails


@BOTH
async def test_a_refused_port_after_the_close_releases_the_pending_answer(
    provider: Provider,
) -> None:
    # The answer's connection closes on its text, and from then on the provider's port
    # refuses connections: the reconnect policy gives up, the answer is released
    # (TTSStoppedFrame, then LLMFullResponseEnd) and reported, and it is not spoken later
    # once the provider is back.
    async with serving(provider, faults=Faults(close_on_text=1)) as fake:
        tts: Any = provider.make_tts(fake, options())
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connection_count == 1)
            good = tts.config
            tts.config = attrs.evolve(
                good, **{"base_url" if provider is DEEPGRAM else "url": dead_url()}
            )
            await live.send(*answer("Lost to ", "a dead port."))
            with trio.fail_after(5):
                await live.recorder.wait_for_kind(LLMFullResponseEnd)
            given_up = errors_with(live, "giving up for now")
            tts.config = good
            await live.send(*answer("Back again."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2)
            await live.end()
        rec = live.recorder
        first_end = rec.of(LLMFullResponseEnd)[0]
        assert rec.index(rec.of(TTSStoppedFrame)[0]) < rec.index(first_end)
        assert len(given_up) == 1 and "could not connect" in given_up[0]
        assert fake.texts == ["Lost to a dead port.", "Back again."]
        assert audio_secs(rec.frames) == pytest.approx(secs_of("Back again."), abs=0.001)
        assert KEY not in " ".join(e.error for e in live.errors)


@pytest.mark.parametrize(
    ("provider", "faults"),
    [
        # Deepgram answers the flush with an Error message, then closes (1011)
        (DEEPGRAM, Faults(close_on_text=1, error="Text could not be processed", close_code=1011)),
        # Sarvam answers it with an error message and keeps the connection
        (SARVAM, Faults(close_on_text=1, error="Text could not be processed")),
    ],
    ids=["deepgram", "sarvam"],
)
async def test_a_provider_error_on_the_resent_answer_ends_it(
    provider: Provider, faults: Faults
) -> None:
    # The resent answer's flush is answered with the provider's error: the answer ends there
    # (reported once), is not sent a third time, and the next answer is spoken.
    async with serving(provider, faults=faults) as fake:
        tts = provider.make_tts(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(*answer("Refused twice."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            await live.wait_for_error()
            await live.send(*answer("Fine."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2)
            await live.end()
        assert fake.texts.count("Refused twice.") == 2
        assert fake.flushes == 2
        assert len(errors_with(live, "Text could not be processed")) == 1
        assert not errors_with(live, "not spoken") and not errors_with(live, "is lost")
        rec = live.recorder
        first, second = rec.of(LLMFullResponseStart)
        assert audio_secs(between(live, first, second)) == 0
        if provider is DEEPGRAM:
            assert audio_secs(between(live, second)) == pytest.approx(secs_of("Fine."), abs=0.001)
        else:
            # The Sarvam fake keeps the refused text in its buffer (the connection stays),
            # so it is spoken with the next answer: what a provider keeping its buffer after
            # an error would do; the service does not reconnect after an error.
            assert audio_secs(between(live, second)) >= secs_of("Fine.") - 0.001
        assert len(rec.of(TTSStoppedFrame)) == 2


async def test_a_late_reply_on_the_resent_answer_is_not_sent_a_third_time() -> None:
    # Resent on the next connection, the answer gets no reply within idle_timeout: it is
    # given up (reported as late), not sent again; the next answer is spoken once.
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(close_on_text=1, silent=True))
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options())
        async with live_pipeline([tts]) as live:
            await live.send(*answer("Unanswered."))
            with trio.fail_after(3):
                await live.recorder.wait_for_kind(LLMFullResponseEnd)
            error = await live.wait_for_error()
            fake.faults.silent = False
            await live.send(*answer("Answered."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2)
            await live.end()
        assert "no reply within idle_timeout=0.5s" in error.error
        assert fake.texts == ["Unanswered.", "Unanswered.", "Answered."]
        assert not errors_with(live, "not spoken")  # the late reply was reported as such
        assert audio_secs(live.recorder.frames) == pytest.approx(secs_of("Answered."), abs=0.001)


@pytest.mark.parametrize("resend", [True, False], ids=["resent", "begun-while-down"])
async def test_a_flush_queued_while_reconnecting_outlives_idle_timeout(resend: bool) -> None:
    # The answer's end (its flush) comes while the service backs off longer than
    # idle_timeout. On the next connection the answer must go out and be spoken, not be
    # given up at once for a reply the provider was never asked for. (The large config
    # makes the config's send take a few schedule points, as TLS and a real network do.)
    fake = FakeSarvamTTS(api_key=KEY, faults=Faults(close_on_text=int(resend)))
    policy = ReconnectPolicy(max_attempts=5, initial_delay=0.5, max_delay=0.5, jitter=0)
    async with open_fake_sarvam_tts(fake):
        tts = _sarvam(
            fake,
            options(reconnect=policy, idle_timeout=0.3, close_timeout=0.5),
            extra_config={"pad": "x" * 100_000},
        )
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connection_count == 1)
            assert fake.server is not None
            fake.server.reject_next = [(503, b'{"error": "busy"}')]
            if resend:
                await live.send(LLMFullResponseStart(), LLMText(text="Wait for me. "))
            else:
                await fake.server.connections[0].close(1000, "idle timeout")
            await live.wait_for_error()  # refused: backing off for 0.5 s (> idle_timeout)
            if not resend:
                await live.send(LLMFullResponseStart(), LLMText(text="Wait for me. "))
            await live.send(LLMFullResponseEnd())
            await live.recorder.wait_for_kind(LLMFullResponseEnd, within=5)
            await live.end()
        assert fake.texts[-1:] == ["Wait for me."]
        assert audio_secs(live.recorder.frames) == pytest.approx(secs_of("Wait for me."), abs=0.001)
        assert not errors_with(live, "no reply within")


async def test_an_answer_longer_than_max_queued_while_down_is_not_spoken_in_part() -> None:
    # Sent again while disconnected, an answer of more messages than max_queued would lose its
    # beginning to the queue's bound and be heard from the middle: it ends instead, not
    # spoken, and says why. The next answer is spoken whole.
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(close_on_text=1, first_delay=0.05))
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options(max_queued=3))
        async with live_pipeline([tts]) as live:
            sentences = [f"Sentence {n}. " for n in range(4)]
            await live.send(*answer(*sentences))
            await live.recorder.wait_for_kind(LLMFullResponseEnd)
            await live.send(*answer("Next."))
            await live.recorder.wait_for_kind(LLMFullResponseEnd, 2)
            await live.end()
        [too_long] = errors_with(live, "went past max_queued=3 messages")
        assert too_long.startswith("Deepgram TTS:") and "not spoken" in too_long
        assert not errors_with(live, "dropped while the connection was down")
        second = live.recorder.of(LLMFullResponseStart)[1]
        assert audio_secs(between(live, live.recorder.of(LLMFullResponseStart)[0], second)) == 0
        assert audio_secs(live.recorder.frames) == pytest.approx(secs_of("Next."), abs=0.001)
        assert len(live.recorder.of(TTSStoppedFrame)) == 2


# ---------------------------------------------------------------------- (from a review)


async def test_a_pipeline_run_again_after_a_cancel_mid_answer_speaks_its_first_answer() -> None:
    # Run 1 is cancelled while an answer's text is out (no LLMFullResponseEnd yet). The
    # pipeline is run again by a new task: its first answer is spoken, with no error left
    # over from run 1 and its own TTSStartedFrame.
    fake = FakeDeepgramTTS(api_key=KEY, faults=Faults(first_delay=5))
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options())
        recorder = Recorder()
        pipeline = Pipeline([tts, recorder])
        first = PipelineTask(pipeline)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await first.queue_frames([LLMFullResponseStart(), LLMText(text="Cut by a hang-up. ")])
            await wait_until(lambda: fake.texts == ["Cut by a hang-up."])
            await first.cancel("hang up")
        assert (first.finish_reason or "").startswith("cancel")

        fake.faults.first_delay = 0
        recorder.frames.clear()
        errors: list[str] = []
        second = PipelineTask(pipeline)
        second.add_event_handler(
            "on_frame_reached_upstream",
            lambda _t, f: errors.append(f.error) if isinstance(f, ErrorFrame) else None,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(second.run)
            await second.queue_frames(answer("Run two."))
            await recorder.wait_for_kind(LLMFullResponseEnd)
            await second.cancel("done")
        assert errors == []
        assert fake.texts == ["Cut by a hang-up.", "Run two."]
        assert audio_secs(recorder.frames) == pytest.approx(secs_of("Run two."), abs=0.001)
        assert recorder.of(TTSStartedFrame)
