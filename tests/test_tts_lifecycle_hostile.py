"""Hostile tests of the TTS processors' lifecycle and barge-in interplay.

A pipeline run is cancelled at different moments (mid-answer, mid-resend, mid-flush, while
reconnecting) and the same processors are run again by a new PipelineTask: every answer of
the new run must be spoken exactly once, with its own TTSStarted/TTSText/TTSStopped frames
and no error left over. Interruptions in quick succession, an EndFrame right behind one,
Deepgram's stale ``Flushed``, a ``Cleared`` that never comes, and Sarvam's reconnect racing
the next answer. Scripted Deepgram and Sarvam servers over real loopback WebSockets (and
espeak-ng when it is installed).

Invariants checked throughout: no audio of an interrupted answer after its InterruptionFrame;
an answer's TTSStoppedFrame comes after all of its audio; no TTSTextFrame for text that was
not sent; no hang (``trio.fail_after`` guards); no task outlives its run; no error carries
the API key.
"""

from __future__ import annotations

import base64
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
    SARVAM,
    Provider,
    answer,
    audio_secs,
    deepgram_tts,
    sarvam_tts,
    secs_of,
    serving,
)
from tts_providers import options as tts_options

from rustvani_trio.frames import (
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
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.tts._base import TTSService
from rustvani_trio.task import PipelineTask
from rustvani_trio.testing import (
    FakeDeepgramTTS,
    Faults,
    open_fake_deepgram_tts,
)
from rustvani_trio.testing._speech._common import audio_for
from rustvani_trio.testing._speech._wsserver import FakeSocket, open_ws_server
from rustvani_trio.testing._speech.harness import Recorder, live_pipeline, wait_until

# a backoff long enough for a test to act while the service waits to reconnect
SLOW = ReconnectPolicy(max_attempts=5, initial_delay=0.4, max_delay=0.4, jitter=0)
GUARD = 5.0  # hang guards (never a speed check)
_deepgram, _sarvam = deepgram_tts, sarvam_tts


def options(**kw: Any) -> WebSocketOptions:
    return tts_options(**{"close_timeout": 0.5, **kw})


# ---------------------------------------------------------------------- runs of one pipeline


def _tasks_below(task: trio.lowlevel.Task) -> list[str]:
    return [
        name
        for nursery in task.child_nurseries
        for child in nursery.child_tasks
        for name in [child.name, *_tasks_below(child)]
    ]


def live_tasks() -> list[str]:
    """The tasks of this trio run but the fake servers' (a task left behind by a pipeline
    run shows up here)."""
    return [n for n in _tasks_below(trio.lowlevel.current_root_task()) if "._speech." not in n]


@attrs.define(eq=False)
class Run:
    """One run of a pipeline by its own PipelineTask: what reached its ends."""

    task: PipelineTask
    recorder: Recorder
    errors: list[str] = attrs.Factory(list)

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.task.queue_frame(frame)

    @property
    def frames(self) -> list[Frame]:
        return self.recorder.frames


class Line:
    """The same processors (a TTS and a recorder), run again and again by new tasks."""

    def __init__(self, *processors: FrameProcessor) -> None:
        self.recorder = Recorder()
        self.pipeline = Pipeline([*processors, self.recorder])
        self.runs: list[Run] = []

    @asynccontextmanager
    async def run(self) -> AsyncIterator[Run]:
        """Run the pipeline for the block; on leaving, the run is cancelled (a hang-up) unless
        it already finished. The recorder starts empty for each run."""
        self.recorder.frames.clear()
        self.recorder.times.clear()
        task = PipelineTask(self.pipeline)
        run = Run(task, self.recorder)
        self.runs.append(run)

        def upstream(_task: PipelineTask, frame: Frame) -> None:
            if isinstance(frame, ErrorFrame):
                run.errors.append(frame.error)

        task.add_event_handler("on_frame_reached_upstream", upstream)
        before = live_tasks()
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                await nursery.start(task.run)
                try:
                    yield run
                finally:
                    if not task.has_finished:
                        with trio.CancelScope(shield=True), trio.move_on_after(GUARD):
                            await task.cancel("hang up")
        assert task.has_finished
        assert live_tasks() == before  # nothing of the run is left running

    def all_errors(self) -> list[str]:
        return [e for r in self.runs for e in r.errors]


async def end(run: Run) -> None:
    from rustvani_trio.frames import EndFrame

    await run.task.queue_frame(EndFrame())
    await wait_until(lambda: run.task.has_finished, within=GUARD)


# ---------------------------------------------------------------------- what an answer looks like


def segments(frames: list[Frame]) -> list[list[Frame]]:
    """The frames from each LLMFullResponseStart to the next (what comes before the first
    one is dropped)."""
    out: list[list[Frame]] = []
    for frame in frames:
        if isinstance(frame, LLMFullResponseStart):
            out.append([])
        if out:
            out[-1].append(frame)
    return out


def assert_spoken(seg: list[Frame], texts: list[str], secs: float) -> None:
    """One answer spoken whole and once: TTSStarted, its texts, all its audio, TTSStopped,
    then its LLMFullResponseEnd; nothing of it interrupted."""
    kinds = [type(f) for f in seg]
    assert not any(k is InterruptionFrame for k in kinds), kinds
    assert kinds.count(TTSStartedFrame) == 1 and kinds.count(TTSStoppedFrame) == 1, kinds
    started, stopped = kinds.index(TTSStartedFrame), kinds.index(TTSStoppedFrame)
    audio_at = [i for i, k in enumerate(kinds) if k is OutputAudioRawFrame]
    assert audio_at, "the answer has no audio"
    assert started < audio_at[0] and audio_at[-1] < stopped, "audio outside TTSStarted/Stopped"
    assert stopped < kinds.index(LLMFullResponseEnd)
    assert [f.text for f in seg if isinstance(f, TTSTextFrame)] == texts
    assert audio_secs(seg) == pytest.approx(secs, abs=0.001)


def assert_cut(seg: list[Frame]) -> None:
    """An interrupted answer: none of its audio after its InterruptionFrame, no TTSStopped."""
    kinds = [type(f) for f in seg]
    assert InterruptionFrame in kinds, kinds
    cut = kinds.index(InterruptionFrame)
    assert OutputAudioRawFrame not in kinds[cut:], "audio of the cut answer after its interruption"
    assert TTSStoppedFrame not in kinds, kinds


def assert_no_key(errors: list[str]) -> None:
    assert not [e for e in errors if KEY in e]


# ---------------------------------------------------------------------- Deepgram: Clear / Cleared


async def test_two_interruptions_before_the_first_cleared_keep_the_next_answer_whole() -> None:
    # The user barges in twice in quick succession: the second answer (already flushed) is
    # interrupted before Deepgram's Cleared for the first interruption came back. That
    # Cleared must not end the wait for the second one: the stale Flushed of the second Clear
    # would otherwise end the third answer before its audio (and its audio would follow its
    # TTSStoppedFrame).
    fake = FakeDeepgramTTS(
        api_key=KEY, chunk_bytes=960, faults=Faults(chunk_delay=0.01, flushed_before_cleared=0.2)
    )
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options())
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("The first answer is long and the user cuts it. " * 2))
            await run.recorder.wait_for_kind(OutputAudioRawFrame, 2)
            await run.send(InterruptionFrame())
            await run.recorder.wait_for_kind(InterruptionFrame)
            await run.send(*answer("Second answer."))
            await run.recorder.wait_for(lambda fs: TTSTextFrame(text="Second answer.") in fs)
            await run.send(InterruptionFrame())  # before the first Cleared came back
            await run.recorder.wait_for_kind(InterruptionFrame, 2)
            await run.send(*answer("Third."))
            await run.recorder.wait_for_kind(LLMFullResponseEnd, within=GUARD)
            await trio.sleep(0.1)  # audio of the third answer arriving late would show now
            await end(run)
        first, second, third = segments(run.frames)
        assert_cut(first)
        assert_cut(second)
        assert fake.clears == 2
        assert_spoken(third, ["Third."], secs_of("Third."))
        assert not run.errors


@attrs.define(eq=False)
class NoClearedDeepgram:
    """A Deepgram-like server with a provider bug: Clear stops the audio but is never
    answered with Cleared. Speak is buffered; Flush sends the buffer's audio after
    ``first_delay`` in chunks, then Flushed (in a task of its own, so a Clear can stop it)."""

    api_key: str = KEY
    first_delay: float = 0.0
    server: Any = None
    texts: list[str] = attrs.Factory(list)
    clears: int = 0

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        return None if headers.get("authorization") == f"Token {self.api_key}" else (401, b"{}")

    async def __call__(self, sock: FakeSocket) -> None:
        buffer: list[str] = []
        async with trio.open_nursery() as nursery:
            speaking = trio.CancelScope()
            while (message := await sock.receive_json()) is not None:
                kind = message["type"]
                if kind == "Speak":
                    self.texts.append(message["text"])
                    buffer.append(message["text"])
                elif kind == "Flush":
                    text, buffer = "".join(buffer), []
                    speaking = trio.CancelScope()
                    nursery.start_soon(self._speak, sock, text, speaking)
                elif kind == "Clear":
                    self.clears += 1
                    buffer.clear()
                    speaking.cancel()  # ... and no Cleared
                elif kind == "Close":
                    break
            nursery.cancel_scope.cancel()

    async def _speak(self, sock: FakeSocket, text: str, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(self.first_delay)
            audio = audio_for(text, 24000)
            for start in range(0, len(audio), 4800):
                await sock.send(audio[start : start + 4800])
            await sock.send_json({"type": "Flushed", "sequence_id": 1})


async def test_a_cleared_that_never_comes_does_not_silence_the_answers_after_it() -> None:
    # Deepgram never answers the Clear of an interruption (a provider bug, or a Cleared lost
    # with a proxy). The client must not drop every later answer's audio for ever: the next
    # answers are spoken (at worst after a reconnect), and the run still ends.
    fake = NoClearedDeepgram(first_delay=0.3)
    async with open_ws_server(fake) as server:
        server.authorize = fake.authorize
        fake.server = server
        tts = _deepgram(fake, options())
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("Interrupted while it is synthesised."))
            await wait_until(lambda: fake.texts == ["Interrupted while it is synthesised."])
            await run.send(InterruptionFrame())
            await wait_until(lambda: fake.clears == 1)
            fake.first_delay = 0
            await run.send(*answer("Second."))
            await run.recorder.wait_for_kind(LLMFullResponseEnd, within=GUARD)
            await run.send(*answer("Third."))
            await run.recorder.wait_for_kind(LLMFullResponseEnd, 2, within=GUARD)
            await end(run)
        _, second, third = segments(run.frames)
        assert_spoken(second, ["Second."], secs_of("Second."))
        assert_spoken(third, ["Third."], secs_of("Third."))


# ---------------------------------------------------------------------- cancelled, then run again

MOMENTS = ["mid-text", "mid-flush", "mid-audio", "mid-resend", "reconnecting", "mid-clear", "ended"]


async def _cancel_run_at(moment: str, provider: Provider, fake: Any, run: Run) -> None:
    """Drive run 1 to ``moment``; the caller then cancels it."""
    tts_texts = len(fake.texts)
    if moment == "mid-text":  # an answer's first sentence is out, its end not yet
        await run.send(LLMFullResponseStart(), LLMText(text="Cut mid-answer. "))
        await wait_until(lambda: len(fake.texts) == tts_texts + 1)
    elif moment == "mid-flush":  # its flush is out, the provider is synthesising
        fake.faults.first_delay = 10
        await run.send(*answer("Cut while synthesised."))
        await wait_until(lambda: fake.flushes == 1)
    elif moment == "mid-audio":  # its audio is streaming
        fake.faults.chunk_delay = 0.02
        await run.send(*answer("Cut while it is being heard, which takes a while."))
        await run.recorder.wait_for_kind(OutputAudioRawFrame, 2)
    elif moment == "mid-resend":  # its connection closed on its text; the reconnect backs off
        await wait_until(lambda: fake.server.connections)
        fake.faults.close_on_text = 1
        fake.server.reject_next = [(503, b'{"error": "busy"}')]
        await run.send(*answer("Cut while waiting to be sent again."))
        await wait_until(lambda: run.errors)
    elif moment == "ended":  # not cancelled: run 1 ended with an EndFrame after an answer
        await run.send(*answer("Said in run one."))
        await run.recorder.wait_for_kind(LLMFullResponseEnd)
        await end(run)
    elif moment == "reconnecting":  # between answers: the connection dropped, retry backs off
        await wait_until(lambda: fake.server.connections)
        fake.server.reject_next = [(503, b'{"error": "busy"}')]
        await fake.server.connections[-1].drop()
        await wait_until(lambda: run.errors)
    else:  # "mid-clear": an answer was interrupted; Deepgram's Cleared (Sarvam's new
        # connection) has not come yet
        fake.faults.first_delay = 10
        if provider is DEEPGRAM:
            fake.faults.flushed_before_cleared = 10
        else:
            fake.server.reject_next = [(503, b'{"error": "busy"}')]
        await run.send(*answer("Cut, then hung up on."))
        await wait_until(lambda: fake.flushes == 1)
        await run.send(InterruptionFrame())
        await run.recorder.wait_for_kind(InterruptionFrame)
        if provider is DEEPGRAM:
            await wait_until(lambda: fake.clears == 1)
        else:
            await wait_until(lambda: run.errors)


@BOTH
@pytest.mark.parametrize("moment", MOMENTS)
async def test_a_run_cancelled_then_run_again_speaks_every_answer_once(
    provider: Provider, moment: str
) -> None:
    # A caller hangs up (the task is cancelled) at ``moment``; the same processors are run
    # again by a new PipelineTask. Every answer of the new run is spoken exactly once, with
    # its own frames, nothing of run 1 is heard or sent again, and no error of run 1 shows.
    async with serving(provider) as fake:
        tts = provider.make_tts(fake, options(reconnect=SLOW))
        line = Line(tts)
        async with line.run() as first:
            await _cancel_run_at(moment, provider, fake, first)
        if moment == "ended":
            assert first.task.finish_reason == "end"
        else:
            assert (first.task.finish_reason or "").startswith("cancel")
            assert not first.recorder.of(TTSStoppedFrame)

        fake.faults = Faults()
        fake.server.reject_next = []
        sent_before = len(fake.texts)
        async with line.run() as second:
            await second.send(*answer("Run two, ", "first answer."))
            await second.recorder.wait_for_kind(LLMFullResponseEnd)
            await second.send(*answer("Run two, second."))
            await second.recorder.wait_for_kind(LLMFullResponseEnd, 2)
            await end(second)
        assert second.task.finish_reason == "end"
        a, b = segments(second.frames)
        assert_spoken(a, ["Run two, first answer."], secs_of("Run two, first answer."))
        assert_spoken(b, ["Run two, second."], secs_of("Run two, second."))
        assert fake.texts[sent_before:] == ["Run two, first answer.", "Run two, second."]
        assert second.errors == []
        assert_no_key(line.all_errors())


# ---------------------------------------------------------------------- Sarvam: reconnect races


async def test_sarvam_next_answer_right_behind_an_interruption_is_spoken_once() -> None:
    # Sarvam has no cancel message: an interruption drops the connection and opens a new
    # one. The next answer comes right behind the interruption, while the old connection is
    # still closing: it must go out on the new connection only, and be heard once.
    async with serving(SARVAM, faults=Faults(first_delay=0.3)) as fake:
        tts = _sarvam(fake, options())
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("Cut while it is synthesised."))
            await wait_until(lambda: fake.flushes == 1)
            fake.faults.first_delay = 0
            await run.send(InterruptionFrame(), *answer("Right behind it."))
            await run.recorder.wait_for_kind(LLMFullResponseEnd)
            await trio.sleep(0.35)  # the cut answer's audio would have come by now
            await end(run)
        cut, nxt = segments(run.frames)
        assert_cut(cut)
        assert_spoken(nxt, ["Right behind it."], secs_of("Right behind it."))
        assert fake.texts == ["Cut while it is synthesised.", "Right behind it."]
        assert fake.flushes == 2
        assert not run.errors


async def test_sarvam_two_interruptions_back_to_back() -> None:
    # The second answer is cut right after it was sent, while the first interruption's
    # reconnect is still under way: a second reconnect; the third answer is spoken once.
    async with serving(SARVAM, faults=Faults(first_delay=0.3)) as fake:
        tts = _sarvam(fake, options())
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("First, cut while synthesised."))
            await wait_until(lambda: fake.flushes == 1)
            await run.send(InterruptionFrame(), *answer("Second, cut at once."))
            await run.recorder.wait_for(lambda fs: TTSTextFrame(text="Second, cut at once.") in fs)
            await run.send(InterruptionFrame())
            await run.recorder.wait_for_kind(InterruptionFrame, 2)
            fake.faults.first_delay = 0
            await run.send(*answer("Third."))
            await run.recorder.wait_for_kind(LLMFullResponseEnd)
            await trio.sleep(0.35)  # audio of the cut answers would have come by now
            await end(run)
        first, second, third = segments(run.frames)
        assert_cut(first)
        assert_cut(second)
        assert_spoken(third, ["Third."], secs_of("Third."))
        assert fake.texts.count("Third.") == 1
        assert not run.errors


CYCLES = 12


async def test_sarvam_resends_after_the_interruption_reconnect_are_counted_fairly() -> None:
    # The next answer comes right behind an interruption (its text may be queued while the
    # old connection is still closing), and the provider then reaps the new socket on its
    # text twice. The answer went out on two connections: MAX_RESENDS=2 allows it a third,
    # where it is spoken. The interruption's own reconnect (its text never went out there)
    # must not count as one of its resends. (Whether the text is queued before the old
    # connection's end is handled is up to the scheduler: the scene is played CYCLES times.)
    async with serving(SARVAM) as fake:
        tts = _sarvam(fake, options())
        line = Line(tts)
        async with line.run() as run:
            for n in range(CYCLES):
                flushes = fake.flushes
                fake.faults.first_delay = 10
                await run.send(*answer(f"Cut number {n}."))
                await wait_until(lambda: fake.flushes > flushes)  # noqa: B023
                fake.faults.first_delay = 0
                fake.faults.close_on_text = 2
                await run.send(InterruptionFrame(), *answer(f"Behind number {n}."))
                await run.recorder.wait_for_kind(LLMFullResponseEnd, n + 1)
                if run.errors:
                    break
            await end(run)
        assert run.errors == []
        pairs = zip(*[iter(segments(run.frames))] * 2, strict=True)
        for n, (cut, nxt) in enumerate(pairs):
            assert_cut(cut)
            assert_spoken(nxt, [f"Behind number {n}."], secs_of(f"Behind number {n}."))


# ---------------------------------------------------------------------- end right behind a cut


@BOTH
@pytest.mark.parametrize("then_answer", [False, True], ids=["end", "answer-then-end"])
async def test_an_end_frame_right_behind_an_interruption(
    provider: Provider, then_answer: bool
) -> None:
    # The user interrupts and the session ends at once (EndFrame right behind the
    # InterruptionFrame), or after one more short answer. The run ends cleanly, the cut
    # answer is not heard after its interruption, the short answer is spoken once.
    faults = Faults(chunk_delay=0.02) if provider is DEEPGRAM else Faults(first_delay=0.3)
    async with serving(provider, chunk_bytes=960, faults=faults) as fake:
        tts = provider.make_tts(fake, options())
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("A long answer that the user cuts short, then leaves."))
            if provider is DEEPGRAM:
                await run.recorder.wait_for_kind(OutputAudioRawFrame, 2)
            else:
                await wait_until(lambda: fake.flushes == 1)
            fake.faults.first_delay = fake.faults.chunk_delay = 0
            tail = answer("Goodbye.") if then_answer else []
            await run.send(InterruptionFrame(), *tail)
            await end(run)
        assert run.task.finish_reason == "end"
        segs = segments(run.frames)
        assert_cut(segs[0])
        if then_answer:
            assert len(segs) == 2
            assert_spoken(segs[1], ["Goodbye."], secs_of("Goodbye."))
        else:
            assert len(segs) == 1
        assert not run.errors


# ---------------------------------------------------------------------- Deepgram: a second cut


async def test_an_interruption_right_after_the_stale_flushed_and_cleared() -> None:
    # The first interruption's stale Flushed and its Cleared came back; the second answer is
    # heard, and the user interrupts it too (one Clear outstanding at a time). Its own stale
    # Flushed must not end the third answer, sent right behind the second interruption.
    fake = FakeDeepgramTTS(
        api_key=KEY, chunk_bytes=960, faults=Faults(chunk_delay=0.01, flushed_before_cleared=0.1)
    )
    async with open_fake_deepgram_tts(fake):
        tts = _deepgram(fake, options())
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("The first answer is cut off by the user. " * 2))
            await run.recorder.wait_for_kind(OutputAudioRawFrame, 2)
            await run.send(InterruptionFrame())
            await run.recorder.wait_for_kind(InterruptionFrame)
            await run.send(*answer("The second answer is cut off as well. " * 2))
            heard = len(run.recorder.of(OutputAudioRawFrame))
            await run.recorder.wait_for_kind(OutputAudioRawFrame, heard + 2)
            await run.send(InterruptionFrame(), *answer("Third."))
            await run.recorder.wait_for_kind(LLMFullResponseEnd, within=GUARD)
            await trio.sleep(0.1)  # late audio of the third answer would show now
            await end(run)
        first, second, third = segments(run.frames)
        assert_cut(first)
        assert_cut(second)
        assert_spoken(third, ["Third."], secs_of("Third."))
        assert fake.clears == 2
        assert not run.errors


# ---------------------------------------------------------------------- espeak-ng


def _espeak() -> TTSService:
    espeak = pytest.importorskip("rustvani_trio.services.tts.espeak")
    if not espeak.available():
        pytest.skip("espeak-ng is not installed")
    tts: TTSService = espeak.EspeakTTSService()
    return tts


def _pcm(frames: list[Frame]) -> bytes:
    return b"".join(f.audio for f in frames if isinstance(f, OutputAudioRawFrame))


LONG = " ".join(f"This is sentence number {n} of a long answer." for n in range(12))


@pytest.mark.parametrize("moment", ["before-audio", "mid-audio", "after-interruption"])
async def test_espeak_cancelled_then_run_again_speaks_each_answer_once(moment: str) -> None:
    # espeak-ng synthesises in a worker task of the run. Run 1 is cancelled before any
    # audio, while audio streams, or right after an interruption; run 2 (a new task, the
    # same processors) speaks each of its answers once: exactly the audio a fresh service
    # makes for them, nothing of run 1 mixed in.
    texts = ["Run two begins.", "And it goes on."]
    reference = Line(_espeak())
    async with reference.run() as ref:
        for n, text in enumerate(texts):
            await ref.send(*answer(text))
            await ref.recorder.wait_for_kind(LLMFullResponseEnd, n + 1)
        await end(ref)
    expected = [_pcm(seg) for seg in segments(ref.frames)]
    assert all(expected)

    line = Line(_espeak())
    async with line.run() as first:
        await first.send(*answer(LONG))
        if moment != "before-audio":
            await first.recorder.wait_for_kind(OutputAudioRawFrame)
        if moment == "after-interruption":
            await first.send(InterruptionFrame())
            await first.recorder.wait_for_kind(InterruptionFrame)
    assert (first.task.finish_reason or "").startswith("cancel")
    assert not first.recorder.of(TTSStoppedFrame)

    async with line.run() as second:
        for n, text in enumerate(texts):
            await second.send(*answer(text))
            await second.recorder.wait_for_kind(LLMFullResponseEnd, n + 1)
        await end(second)
    segs = segments(second.frames)
    assert not _pcm(second.frames[: second.recorder.index(segs[0][0])])  # nothing before
    for seg, text, pcm in zip(segs, texts, expected, strict=True):
        assert_spoken(seg, [text], audio_secs(seg))
        assert _pcm(seg) == pcm
    assert second.errors == []


@attrs.define(eq=False)
class BusySarvam:
    """A Sarvam-like server that is busy (reads nothing) for ``busy`` seconds after each
    flush, like a server synthesising in its reading loop; then it answers the flush."""

    busy: float = 0.3
    server: Any = None
    flushes: int = 0

    def authorize(self, path: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        return None if headers.get("api-subscription-key") == KEY else (403, b"{}")

    async def __call__(self, sock: FakeSocket) -> None:
        buffer: list[str] = []
        while (message := await sock.receive_json()) is not None:
            if message["type"] == "text":
                buffer.append(message["data"]["text"])
            elif message["type"] == "flush":
                self.flushes += 1
                await trio.sleep(self.busy)
                text, buffer = " ".join(buffer), []
                chunk = audio_for(text, 22050)
                payload = {"audio": base64.b64encode(chunk).decode()}
                await sock.send_json({"type": "audio", "data": payload})
                await sock.send_json({"type": "event", "data": {"event_type": "final"}})


async def test_sarvam_end_right_behind_an_interruption_does_not_wait_out_close_timeout() -> None:
    # Sarvam's interruption closes its connection (a close handshake) and opens a new one.
    # The provider answers the close a little late (busy synthesising); the session ends
    # right behind the interruption. The end must come once the close is answered, not
    # after close_timeout (here longer than the hang guard). (The EndFrame comes once the old
    # connection is closing: a few ms after the interruption.)
    fake = BusySarvam(busy=0.3)
    async with open_ws_server(fake) as server:
        server.authorize = fake.authorize
        fake.server = server
        tts = _sarvam(fake, options(close_timeout=1.2))
        line = Line(tts)
        async with line.run() as run:
            await run.send(*answer("Cut while the provider is busy."))
            await wait_until(lambda: fake.flushes == 1)
            await run.send(InterruptionFrame())
            await wait_until(lambda: not tts.connected)  # the old connection is closing
            with trio.fail_after(0.9):  # a hang guard: 0.3 s is what the provider needs
                await end(run)
        assert run.task.finish_reason == "end"
        assert_cut(segments(run.frames)[0])


# ---------------------------------------------------------------------- (from a review)

# A backoff long enough that a connection held back by it cannot open during a test.
HELD_BACK = ReconnectPolicy(max_attempts=3, initial_delay=60.0, max_delay=60.0, jitter=0.0)


async def test_sarvam_barge_ins_soon_after_a_reconnect_are_not_backed_off() -> None:
    # Sarvam says nothing on a new connection until it has audio, and reopens the connection
    # on every interruption (reconnect()). A user who barges in twice, each time before the
    # answer's first audio and within a second of the connection opening, has the service
    # end two "quiet, quick" connections in a row: ac6199b takes that for a provider that
    # closes every connection at once and holds the next connection back by the reconnect
    # policy's backoff, so the third answer waits (0.5 s, 1 s, 2 s ... with the default
    # policy; 60 s here). The connections were ended by us, not by the provider.
    async with serving(SARVAM, faults=Faults(first_delay=0.8)) as fake:
        server = fake.server
        opts = WebSocketOptions(
            connect_timeout=2,
            send_timeout=1,
            idle_timeout=5,
            close_timeout=1,
            keepalive_interval=None,
            reconnect=HELD_BACK,
        )
        tts = sarvam_tts(fake, opts)
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connected)
            for n in (1, 2):
                await live.send(*answer(f"Answer number {n} is a fine one."))
                await live.recorder.wait_for_kind(TTSStartedFrame, n)
                await trio.sleep(0.2)  # before the first audio (first_delay=0.8)
                await live.send(InterruptionFrame())
                if n == 1:
                    await wait_until(lambda: len(server.connections) == 2)
                    await wait_until(lambda: tts.connected)
            await live.send(*answer("The third answer."))
            # The third connection opens at once (not held back by the 60 s backoff).
            await wait_until(lambda: len(server.connections) == 3, within=5)


async def test_a_healthy_connection_does_not_end_an_answer_as_past_max_queued() -> None:
    # ee399ef ends an answer when the outbound queue is full, "while the connection was
    # down". But the queue also fills on a healthy, ready connection: the sentences of one
    # LLMText are queued by run_tts one after another with no checkpoint between them, so
    # the writer cannot drain the queue meanwhile. Six sentences in one text frame with
    # max_queued=4: the answer is cut after four, and the error blames a connection that
    # never went down.

    text = "One is here. Two is here. Three is here. Four is here. Five is here. Six is here. "
    async with serving(SARVAM) as fake:
        tts = SARVAM.make_tts(fake, options(max_queued=4))
        async with live_pipeline([tts]) as live:
            await wait_until(lambda: tts.connected)
            await live.send(*answer(text))
            await live.recorder.wait_for_kind(TTSStoppedFrame)
        assert tts.connection_count == 1  # the connection never went down
        assert [e.error for e in live.errors] == []
        assert len(live.recorder.of(TTSTextFrame)) == 6
