"""The context aggregators (issue 3): user input into the context, the answer back into it.

The unit tests drive the aggregators inside a real PipelineTask one frame at a time (waiting
until the pipeline is idle after each frame, so that system frames such as the speaking
signals and data frames such as transcripts arrive in the order the test means). The chat
tests run ``LLMUserAggregator -> OpenAILLMHandler -> LLMAssistantAggregator`` against the
scripted OpenAI-compatible server over real HTTP on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from conftest import Live, live

from rustvani_trio.aggregators import (
    LLMAssistantAggregator,
    LLMUserAggregator,
    create_context_aggregators,
)
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
    FunctionCallInfo,
    FunctionCallStart,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMMessagesAppendFrame,
    LLMText,
    TextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from rustvani_trio.task import PipelineParams, PipelineTask
from rustvani_trio.testing import TextReply, open_scripted_server

SYSTEM = {"role": "system", "content": "You are terse."}
NO_INTERRUPTIONS = PipelineParams(allow_interruptions=False)


def final(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text=text, user_id="u1", finalized=True)


def interim(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text=text, user_id="u1", finalized=False)


class ContextSnapshots(FrameProcessor):
    """Records the context's messages as each LLMContextFrame passes (the context object is
    shared and keeps changing, so the frame alone does not say what the turn saw)."""

    def __init__(self) -> None:
        super().__init__(name="snapshots")
        self.snapshots: list[list[dict[str, Any]]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self.snapshots.append(frame.context.messages)
        await self.push_frame(frame, direction)


@asynccontextmanager
async def driven(
    processors: Sequence[FrameProcessor], *, params: PipelineParams | None = None
) -> AsyncIterator[Live]:
    """Run ``processors`` (each frame sent waits until the pipeline is idle again); when the
    body is done, end the run with an EndFrame."""
    async with live(processors, params=params, settle=True, started=False, limit=10) as run:
        yield run
    assert run.task.finish_reason == "end"
    assert run.errors == []


# =========================================================================== the user side


async def test_voice_mode_final_transcripts_become_one_turn_at_the_stop() -> None:
    context = LLMContext([SYSTEM])
    snaps = ContextSnapshots()
    async with driven([LLMUserAggregator(context), snaps]) as run:
        await run.send(
            UserStartedSpeakingFrame(),
            interim("Hel"),
            final("Hello there."),
            interim("How"),
            final("How are you?"),
        )
        assert run.downstream_of(LLMContextFrame) == []  # nothing before the user stops speaking
        await run.send(UserStoppedSpeakingFrame())
    (turn,) = run.downstream_of(LLMContextFrame)
    assert isinstance(turn, LLMContextFrame) and turn.context is context
    assert snaps.snapshots == [[SYSTEM, {"role": "user", "content": "Hello there. How are you?"}]]
    # Interim transcripts and the speaking signals pass through; finals are consumed.
    passed = [f.text for f in run.downstream_of(TranscriptionFrame)]
    assert passed == ["Hel", "How"]
    assert run.kinds().count(UserStartedSpeakingFrame) == 1
    assert run.kinds().count(UserStoppedSpeakingFrame) == 1
    stop = run.kinds().index(UserStoppedSpeakingFrame)
    assert run.kinds().index(LLMContextFrame) > stop


async def test_voice_mode_transcript_after_the_stop_starts_the_turn() -> None:
    context = LLMContext([SYSTEM])
    snaps = ContextSnapshots()
    async with driven([LLMUserAggregator(context), snaps], params=NO_INTERRUPTIONS) as run:
        await run.send(UserStartedSpeakingFrame(), UserStoppedSpeakingFrame())
        assert run.downstream_of(LLMContextFrame) == []
        await run.send(final("Late transcript."))
        assert len(run.downstream_of(LLMContextFrame)) == 1
        # The next transcript waits for the next stop again.
        await run.send(final("Second."))
        assert len(run.downstream_of(LLMContextFrame)) == 1
        await run.send(UserStartedSpeakingFrame(), UserStoppedSpeakingFrame())
    assert [s[-1]["content"] for s in snaps.snapshots] == ["Late transcript.", "Second."]


async def test_voice_mode_ignores_empty_transcripts_and_silent_stops() -> None:
    context = LLMContext([SYSTEM])
    async with driven([LLMUserAggregator(context)]) as run:
        await run.send(UserStartedSpeakingFrame(), final("   "), UserStoppedSpeakingFrame())
        await run.send(UserStartedSpeakingFrame(), UserStoppedSpeakingFrame())
    assert run.downstream_of(LLMContextFrame) == []
    assert context.messages == [SYSTEM]


async def test_text_mode_each_message_is_a_turn() -> None:
    context = LLMContext([SYSTEM])
    snaps = ContextSnapshots()
    user = LLMUserAggregator(context, text_mode=True)
    async with driven([user, snaps], params=NO_INTERRUPTIONS) as run:
        await run.send(TextFrame(text="first"), final("second"), interim("typing"))
    assert len(run.downstream_of(LLMContextFrame)) == 2
    assert [[m["content"] for m in s[1:]] for s in snaps.snapshots] == [
        ["first"],
        ["first", "second"],
    ]
    assert [f.text for f in run.downstream_of(TranscriptionFrame)] == ["typing"]
    assert user.state.turns == 2


async def test_llm_text_is_not_user_input() -> None:
    # LLMText is a TextFrame; passing through the user aggregator it must stay the bot's.
    context = LLMContext([SYSTEM])
    async with driven([LLMUserAggregator(context, text_mode=True)]) as run:
        await run.send(LLMText(text="bot words"))
    assert run.downstream_of(LLMContextFrame) == []
    assert [f.text for f in run.downstream_of(LLMText)] == ["bot words"]
    assert context.messages == [SYSTEM]


async def test_messages_append_frame() -> None:
    context = LLMContext([SYSTEM])
    snaps = ContextSnapshots()
    extra = ({"role": "user", "content": "from the app"},)
    async with driven([LLMUserAggregator(context), snaps]) as run:
        await run.send(LLMMessagesAppendFrame(messages=extra))
        assert run.downstream_of(LLMContextFrame) == []
        assert context.messages == [SYSTEM, *extra]
        more = ({"role": "assistant", "content": "noted"}, {"role": "user", "content": "go"})
        await run.send(LLMMessagesAppendFrame(messages=more, run_llm=True))
    assert len(run.downstream_of(LLMContextFrame)) == 1
    assert snaps.snapshots == [[SYSTEM, *extra, *more]]
    assert run.downstream_of(LLMMessagesAppendFrame) == []  # consumed


async def test_upstream_frames_pass_the_user_aggregator_untouched() -> None:
    context = LLMContext([SYSTEM])
    task = PipelineTask(LLMUserAggregator(context, text_mode=True))
    up: list[Frame] = []
    task.add_event_handler("on_frame_reached_upstream", lambda _t, f: up.append(f))
    await task.queue_frame(TextFrame(text="upstream words"), FrameDirection.UPSTREAM)
    await task.queue_frame(EndFrame())
    with trio.fail_after(5):
        await task.run()
    assert [f.text for f in up if isinstance(f, TextFrame)] == ["upstream words"]
    assert context.messages == [SYSTEM]


# =========================================================================== the assistant side


async def test_assistant_collects_one_message_per_turn() -> None:
    context = LLMContext([SYSTEM, {"role": "user", "content": "hi"}])
    async with driven([LLMAssistantAggregator(context)]) as run:
        await run.send(
            LLMFullResponseStart(), LLMText(text="Hel"), LLMText(text="lo!"), LLMFullResponseEnd()
        )
        await run.send(LLMFullResponseStart(), LLMFullResponseEnd())  # empty: no message
    assert context.messages[2:] == [{"role": "assistant", "content": "Hello!"}]
    assert context.interrupted_indices() == []
    # Everything is forwarded.
    assert [f.text for f in run.downstream_of(LLMText)] == ["Hel", "lo!"]
    assert run.kinds().count(LLMFullResponseEnd) == 2


async def test_assistant_sets_aside_text_before_a_tool_round() -> None:
    context = LLMContext([SYSTEM, {"role": "user", "content": "weather?"}])
    call = FunctionCallInfo(tool_call_id="call_1", function_name="get_weather", arguments="{}")
    async with driven([LLMAssistantAggregator(context)]) as run:
        await run.send(
            LLMFullResponseStart(),
            LLMText(text="Let me check."),
            FunctionCallStart(calls=(call,)),
            FunctionCallEnd(),
            LLMText(text="It is "),
            LLMText(text="sunny."),
            LLMFullResponseEnd(),
        )
    # The text before the tool call belongs to the handler's tool-call message.
    assert context.messages[2:] == [{"role": "assistant", "content": "It is sunny."}]
    assert len(run.downstream_of(FunctionCallStart)) == 1


async def test_assistant_commits_the_interrupted_part_marked_interrupted() -> None:
    context = LLMContext([SYSTEM, {"role": "user", "content": "story?"}])
    async with driven([LLMAssistantAggregator(context)]) as run:
        await run.send(LLMFullResponseStart(), LLMText(text="Once upon"), LLMText(text=" a time"))
        await run.send(InterruptionFrame())
        # Stale text after the interruption (outside a turn) is not collected.
        await run.send(LLMText(text=" STALE"))
        await run.send(InterruptionFrame())  # a second interruption adds nothing
        await run.send(LLMFullResponseStart(), LLMText(text="Sure."), LLMFullResponseEnd())
    assert context.messages[2:] == [
        {"role": "assistant", "content": "Once upon a time"},
        {"role": "assistant", "content": "Sure."},
    ]
    assert context.is_interrupted(2) and not context.is_interrupted(3)
    assert context.interrupted_indices() == [2]
    assert len(run.downstream_of(InterruptionFrame)) == 2


# =========================================================================== the pair


async def test_user_speaking_while_the_bot_responds_interrupts() -> None:
    context = LLMContext([SYSTEM])
    user, assistant = create_context_aggregators(context)
    async with driven([user, assistant]) as run:
        await run.send(UserStartedSpeakingFrame(), final("Tell me a story."))
        await run.send(UserStoppedSpeakingFrame())
        await run.send(LLMFullResponseStart(), LLMText(text="Once"))
        assert run.downstream_of(InterruptionFrame) == []
        await run.send(UserStartedSpeakingFrame())
        assert len(run.downstream_of(InterruptionFrame)) == 1
        # After the interruption the bot is no longer responding: no second interruption.
        await run.send(UserStoppedSpeakingFrame(), UserStartedSpeakingFrame())
    assert len(run.downstream_of(InterruptionFrame)) == 1
    kinds = run.kinds()
    started = [i for i, k in enumerate(kinds) if k is UserStartedSpeakingFrame]
    assert started[1] < kinds.index(InterruptionFrame)
    assert context.messages[-1] == {"role": "assistant", "content": "Once"}
    assert context.is_interrupted(-1)


async def test_no_interruption_when_the_bot_has_finished() -> None:
    context = LLMContext([SYSTEM])
    user, assistant = create_context_aggregators(context)
    async with driven([user, assistant]) as run:
        await run.send(UserStartedSpeakingFrame(), final("Hi."), UserStoppedSpeakingFrame())
        await run.send(LLMFullResponseStart(), LLMText(text="Hello."), LLMFullResponseEnd())
        await run.send(UserStartedSpeakingFrame())
    assert run.downstream_of(InterruptionFrame) == []
    assert context.messages[1:] == [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
    ]


async def test_no_interruption_when_interruptions_are_not_allowed() -> None:
    context = LLMContext([SYSTEM])
    user, assistant = create_context_aggregators(context)
    async with driven([user, assistant], params=NO_INTERRUPTIONS) as run:
        await run.send(UserStartedSpeakingFrame(), final("Tell me a story."))
        await run.send(UserStoppedSpeakingFrame())
        await run.send(LLMFullResponseStart(), LLMText(text="Once"))
        await run.send(UserStartedSpeakingFrame())
        await run.send(LLMText(text=" upon a time."), LLMFullResponseEnd())
    assert run.downstream_of(InterruptionFrame) == []
    assert context.messages[-1] == {"role": "assistant", "content": "Once upon a time."}
    assert context.interrupted_indices() == []


async def test_text_mode_message_while_the_bot_responds_interrupts() -> None:
    context = LLMContext([SYSTEM])
    user, assistant = create_context_aggregators(context, text_mode=True)
    async with driven([user, assistant]) as run:
        await run.send(TextFrame(text="first"))
        await run.send(LLMFullResponseStart(), LLMText(text="Answering"))
        await run.send(TextFrame(text="never mind"))
    kinds = run.kinds()
    assert kinds.count(InterruptionFrame) == 1
    contexts = [i for i, k in enumerate(kinds) if k is LLMContextFrame]
    assert len(contexts) == 2 and contexts[0] < kinds.index(InterruptionFrame) < contexts[1]
    # (The order of the last two messages is covered by the chat test over HTTP below.)
    contents = [m["content"] for m in context.messages]
    assert sorted(contents[1:]) == ["Answering", "first", "never mind"]
    assert context.interrupted_indices() == [contents.index("Answering")]


# =========================================================================== chat over HTTP


def chat_pipeline(
    context: LLMContext, base_url: str, *, text_mode: bool = True
) -> list[FrameProcessor]:
    user, assistant = create_context_aggregators(context, text_mode=text_mode)
    config = OpenAILLMConfig(api_key="sk-test", base_url=base_url, model="gpt-4.1")
    llm = OpenAILLMHandler(config).into_processor(name="llm")
    return [user, llm, assistant]


async def test_two_turn_chat_over_http() -> None:
    context = LLMContext([SYSTEM])
    async with open_scripted_server() as server:
        server.add_replies(
            [TextReply(["Hi", " there", "!"]), TextReply(["Paris", " is", " in", " France."])]
        )
        async with driven(chat_pipeline(context, server.base_url)) as run:
            await run.send(TextFrame(text="Hello"))
            await run.wait_until(lambda: len(run.downstream_of(LLMFullResponseEnd)) == 1, limit=5.0)
            await run.send(TextFrame(text="Where is Paris?"))
            await run.wait_until(lambda: len(run.downstream_of(LLMFullResponseEnd)) == 2, limit=5.0)
    first, second = server.requests
    assert first.messages == [SYSTEM, {"role": "user", "content": "Hello"}]
    assert second.messages == [
        SYSTEM,
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "Where is Paris?"},
    ]
    assert context.messages[-1] == {"role": "assistant", "content": "Paris is in France."}
    assert run.downstream_of(InterruptionFrame) == []


async def test_voice_chat_barge_in_over_http() -> None:
    """The user talks over a streaming answer: the stream is cut (the server sees the
    disconnect), the part already produced is committed as interrupted, and the next turn's
    request carries it."""
    context = LLMContext([SYSTEM])
    story = [f"w{i} " for i in range(1000)]
    async with open_scripted_server() as server:
        server.add_replies([TextReply(story, token_delay=0.01), TextReply(["OK."])])
        async with driven(chat_pipeline(context, server.base_url, text_mode=False)) as run:
            await run.send(UserStartedSpeakingFrame(), final("Tell me a long story."))
            await run.send(UserStoppedSpeakingFrame())
            await run.wait_until(lambda: len(run.downstream_of(LLMText)) >= 3, limit=5.0)
            (streaming,) = server.requests
            await run.task.queue_frame(UserStartedSpeakingFrame())
            with trio.fail_after(1.0):
                await streaming.disconnected.wait()
            await run.wait_until(lambda: len(run.downstream_of(InterruptionFrame)) == 1, limit=5.0)
            await run.send(final("Stop, please."), UserStoppedSpeakingFrame())
            await run.wait_until(lambda: len(run.downstream_of(LLMFullResponseEnd)) == 1, limit=5.0)
    partial = context.messages[2]
    assert partial["role"] == "assistant"
    words = partial["content"].split()
    assert 3 <= len(words) < len(story)
    assert partial["content"] == "".join(story[: len(words)])
    assert context.is_interrupted(2)
    second = server.requests[1].messages
    assert second[2] == partial
    assert second[3] == {"role": "user", "content": "Stop, please."}
    assert context.messages[-1] == {"role": "assistant", "content": "OK."}
    assert not context.is_interrupted(-1)
    # Nothing from the cut stream reached the end of the pipeline after the interruption.
    after = run.downstream[run.kinds().index(InterruptionFrame) :]
    assert "".join(f.text for f in after if isinstance(f, LLMText)) == "OK."


async def test_text_chat_typing_over_the_answer_keeps_the_history_in_order() -> None:
    """The user sends a second message while the first answer streams: the partial answer is
    committed (interrupted) *before* the new user message, so the next request reads
    user, assistant (partial), user."""
    context = LLMContext([SYSTEM])
    story = [f"w{i} " for i in range(1000)]
    async with open_scripted_server() as server:
        server.add_replies([TextReply(story, token_delay=0.01), TextReply(["OK."])])
        async with driven(chat_pipeline(context, server.base_url)) as run:
            await run.send(TextFrame(text="Tell me a long story."))
            await run.wait_until(lambda: len(run.downstream_of(LLMText)) >= 3, limit=5.0)
            (streaming,) = server.requests
            await run.task.queue_frame(TextFrame(text="Stop, please."))
            with trio.fail_after(1.0):
                await streaming.disconnected.wait()
            await run.wait_until(lambda: len(run.downstream_of(LLMFullResponseEnd)) == 1, limit=5.0)
    roles = [m["role"] for m in server.requests[1].messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert server.requests[1].messages[-1] == {"role": "user", "content": "Stop, please."}
    assert [m["role"] for m in context.messages] == [*roles, "assistant"]
    assert context.is_interrupted(2)
