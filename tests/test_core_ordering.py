"""Ordering between the two lanes, observers, and the user aggregator's speaking signals
(regressions of issue 14's core fixes).

* An observer is told of a push only once the frame was delivered (a cancelled sender's frame,
  never delivered, is never reported).
* A control or data frame is handled only after the system frames that arrived before it at
  the same processor: input audio (system frames) ahead of an EndFrame is handled before
  ``on_stop``, and a transcript that follows a "started speaking" signal cannot start a turn
  that the signal then interrupts.

Trio runs the tasks woken together in a random order, so the tests that are about a race run
the same few steps many times (each in a fresh pipeline; virtual time, no real sleeps).
"""

from __future__ import annotations

import trio
import trio.testing
from conftest import live

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseStart,
    LLMText,
    TextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from rustvani_trio.observer import BaseObserver, FramePushed
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.task import PipelineTask

DOWN = FrameDirection.DOWNSTREAM
RACE_RUNS = 40


class Recorder(BaseObserver):
    def __init__(self) -> None:
        self.pushes: list[FramePushed] = []

    def on_push_frame(self, event: FramePushed) -> None:
        self.pushes.append(event)


class Slow(FrameProcessor):
    """Takes ``delay`` seconds over each text frame."""

    def __init__(self, delay: float) -> None:
        super().__init__(name="slow", max_buffer=1)
        self.delay = delay

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame):
            await trio.sleep(self.delay)
        await self.push_frame(frame, direction)


class Pusher(FrameProcessor):
    """On "go": pushes ``count`` text frames, each under a scope the test can cancel."""

    def __init__(self, count: int) -> None:
        super().__init__(name="pusher")
        self.count = count
        self.scope: trio.CancelScope | None = None
        self.pushed: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "go":
            with trio.CancelScope() as self.scope:
                for i in range(self.count):
                    out = TextFrame(text=str(i))
                    await self.push_frame(out)
                    self.pushed.append(out)
            return
        await self.push_frame(frame, direction)


async def test_an_observer_never_sees_a_frame_a_cancelled_sender_did_not_deliver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The pusher's neighbour takes one frame at a time, slowly: the pusher waits for room,
    # and is cancelled while it waits. The frame it was pushing was never delivered, so no
    # observer may have been told about it.
    observer = Recorder()
    pusher, slow = Pusher(count=10), Slow(delay=1.0)
    task = PipelineTask(Pipeline([pusher, slow]), observers=[observer])
    async with live(task) as run:
        await run.send(TextFrame(text="go"))
        await trio.sleep(2.5)
        assert pusher.scope is not None
        pusher.scope.cancel()
        await trio.sleep(20)
    told = [e.frame for e in observer.pushes if e.source is pusher and e.destination is slow]
    told_texts = [f for f in told if isinstance(f, TextFrame)]
    assert told_texts == pusher.pushed
    assert 0 < len(told_texts) < 10
    arrived = [f for f in run.downstream_of(TextFrame) if f.text != "go"]
    assert arrived == pusher.pushed


class AudioCounter(FrameProcessor):
    """Counts input audio (system frames) as it handles it, taking a little time over each;
    ``on_stop`` records how many it had handled when the EndFrame arrived."""

    def __init__(self) -> None:
        super().__init__(name="audio")
        self.handled = 0
        self.at_stop: int | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioRawFrame):
            await trio.sleep(0.01)
            self.handled += 1
            return
        await self.push_frame(frame, direction)

    async def on_stop(self, frame: EndFrame) -> None:
        self.at_stop = self.handled


class AudioThenEnd(FrameProcessor):
    """On "go": pushes ``count`` input audio frames, then an EndFrame, without a pause."""

    def __init__(self, count: int) -> None:
        super().__init__(name="mic")
        self.count = count

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "go":
            for _ in range(self.count):
                await self.push_frame(
                    InputAudioRawFrame(audio=b"\0\0" * 160, sample_rate=16000, num_channels=1)
                )
            await self.push_frame(EndFrame())
            return
        await self.push_frame(frame, direction)


async def test_input_audio_ahead_of_an_end_frame_is_handled_before_on_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counter = AudioCounter()
    async with live([AudioThenEnd(count=5), counter], end=False) as run:
        await run.send(TextFrame(text="go"))
        await run.wait_down(EndFrame)
    assert counter.at_stop == 5
    assert run.task.finish_reason == "end"


async def test_a_transcript_behind_started_speaking_is_not_interrupted_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The bot answers a first message; then the user starts speaking and a final transcript
    # follows at once (a typed message sent with its speaking signals). The signal interrupts
    # the first answer; the transcript's own turn must not be interrupted, whichever of the
    # aggregator's two tasks runs first.
    for _ in range(RACE_RUNS):
        context = LLMContext([])
        user, assistant = create_context_aggregators(context, text_mode=True)
        async with live([user, assistant], settle=True) as run:
            await run.send(TextFrame(text="first"))
            await run.send(LLMFullResponseStart(), LLMText(text="Answ"))
            await run.send(
                UserStartedSpeakingFrame(),
                TranscriptionFrame(text="second", user_id="u", finalized=True),
                UserStoppedSpeakingFrame(),
                settle=False,
            )
            await trio.testing.wait_all_tasks_blocked()
        kinds = run.kinds()
        assert kinds.count(InterruptionFrame) == 1, kinds
        turns = [i for i, k in enumerate(kinds) if k is LLMContextFrame]
        assert len(turns) == 2
        assert turns[0] < kinds.index(InterruptionFrame) < turns[1]
        assert context.messages[-1] == {"role": "user", "content": "second"}
        assert user.state.bot_responding


async def test_voice_mode_transcript_right_behind_started_speaking_joins_its_utterance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A stop without a transcript leaves the aggregator waiting for a late one. The user then
    # starts a new utterance: its transcript must go into the new utterance (ended by the
    # next stop), not be taken for the late transcript of the last one.
    for _ in range(RACE_RUNS):
        context = LLMContext([])
        user, _assistant = create_context_aggregators(context)
        async with live([user], settle=True) as run:
            await run.send(UserStartedSpeakingFrame(), UserStoppedSpeakingFrame())
            await run.send(
                UserStartedSpeakingFrame(),
                TranscriptionFrame(text="hello", user_id="u", finalized=True),
                settle=False,
            )
            await trio.testing.wait_all_tasks_blocked()
            assert run.downstream_of(LLMContextFrame) == []
            await run.send(
                TranscriptionFrame(text="there", user_id="u", finalized=True),
                UserStoppedSpeakingFrame(),
            )
        [turn] = run.downstream_of(LLMContextFrame)
        assert context.messages == [{"role": "user", "content": "hello there"}]
        assert turn.context is context
