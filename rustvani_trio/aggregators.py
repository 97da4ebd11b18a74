"""Context aggregators: user input into the context, the assistant's answer back into it.

```
LLMUserAggregator --LLMContextFrame--> OpenAILLMHandler --LLMText...--> LLMAssistantAggregator
```

Both aggregators share one :class:`~rustvani_trio.context.LLMContext`. Build them as a pair
with :func:`create_context_aggregators` so the user side knows when the bot is responding (and
so when a user who starts speaking interrupts it).
"""

from __future__ import annotations

import logging

import attrs

from ._processor_run import Arrived
from .context import LLMContext
from .frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
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
from .processor import FrameProcessor

__all__ = ["LLMAssistantAggregator", "LLMUserAggregator", "TurnState", "create_context_aggregators"]

_DOWN = FrameDirection.DOWNSTREAM
logger = logging.getLogger("rustvani_trio")


@attrs.define
class TurnState:
    """State shared by a pair of aggregators."""

    bot_responding: bool = False
    turns: int = 0
    #: Set by the user side when it interrupts the bot and has committed the partial answer;
    #: until the InterruptionFrame reaches the assistant side, the output it still sees is
    #: stale and is not collected (it would land after the new user message).
    discard_stale: bool = False
    assistant: LLMAssistantAggregator | None = None
    """The pair's assistant side: an interruption commits its partial answer before the user
    message that caused the interruption is added."""


class LLMUserAggregator(FrameProcessor):
    """Turns user input into a user message and an :class:`LLMContextFrame` (one turn).

    * Voice mode (default): final :class:`TranscriptionFrame` s are collected until
      :class:`UserStoppedSpeakingFrame`; then the text becomes one user message and a turn
      starts. A final transcript that arrives after the stop starts the turn at once.
      Interim transcripts (``finalized=False``) pass through.
    * Text mode (``text_mode=True``, for chat apps): each final TranscriptionFrame or plain
      :class:`TextFrame` is one user message and one turn.
    * :class:`LLMMessagesAppendFrame` appends messages, and runs a turn if ``run_llm``.
    * When the user starts speaking (or, in text mode, sends a message) while the bot responds
      and the run allows interruptions, an :class:`InterruptionFrame` is pushed downstream.

    The speaking signals are system frames: they are forwarded, and interrupt the bot, as they
    arrive, while their effect on the turn (which utterance a transcript belongs to) is
    ordered with the transcripts, as the signals and the transcripts arrived. A transcript
    that arrives after a "started speaking" signal is handled after the signal (so it cannot
    start a turn that the signal then interrupts).
    """

    _arrival_marks = (UserStartedSpeakingFrame, UserStoppedSpeakingFrame)

    def __init__(
        self,
        context: LLMContext,
        *,
        text_mode: bool = False,
        state: TurnState | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.context = context
        self.text_mode = text_mode
        self.state = state if state is not None else TurnState()
        self._parts: list[str] = []
        self._awaiting_transcript = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        interim = isinstance(frame, TranscriptionFrame) and not frame.finalized
        if direction is not _DOWN or interim:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TranscriptionFrame) or type(frame) is TextFrame:
            await self._user_text(frame.text)
        elif isinstance(frame, UserStartedSpeakingFrame):
            # A system frame: it goes on, and interrupts the bot, at once; the turn bookkeeping
            # is done at its marker (below), put in our process lane as it arrived.
            await self.push_frame(frame, direction)
            await self._maybe_interrupt()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, Arrived):
            if isinstance(frame.frame, UserStartedSpeakingFrame):
                self._awaiting_transcript = False
            elif self._parts:
                await self._run_turn()
            else:
                self._awaiting_transcript = True
        elif isinstance(frame, LLMMessagesAppendFrame):
            self.context.add_messages(frame.messages)
            if frame.run_llm:
                await self._start_turn()
        else:
            await self.push_frame(frame, direction)

    async def on_stop(self, frame: EndFrame) -> None:
        if self._parts:
            # The user spoke but the turn never ended: keep the words in the context.
            text = " ".join(self._parts)
            self._parts.clear()
            self.context.add_user_message(text)
            logger.info("%s: kept an unfinished user turn in the context: %r", self.name, text)

    async def _user_text(self, text: str) -> None:
        if not text.strip():
            return
        self._parts.append(text.strip())
        if self.text_mode:
            await self._maybe_interrupt()
            await self._run_turn()
        elif self._awaiting_transcript:
            self._awaiting_transcript = False
            await self._run_turn()

    async def _maybe_interrupt(self) -> None:
        if self.interruptions_allowed and self.state.bot_responding:
            self.state.bot_responding = False
            if self.state.assistant is not None:
                self.state.assistant.commit_interrupted()
                self.state.discard_stale = True
            await self.push_frame(InterruptionFrame())

    async def _run_turn(self) -> None:
        text = " ".join(self._parts)
        self._parts.clear()
        self.context.add_user_message(text)
        await self._start_turn()

    async def _start_turn(self) -> None:
        self.state.turns += 1
        self.state.bot_responding = True
        await self.push_frame(LLMContextFrame(context=self.context))


class LLMAssistantAggregator(FrameProcessor):
    """Collects the :class:`LLMText` of one turn into one assistant message.

    Text between :class:`LLMFullResponseStart` and :class:`LLMFullResponseEnd` becomes one
    assistant message when the turn ends. Text the model streamed before a tool round belongs
    to the handler's tool-call message, so it is set aside at :class:`FunctionCallStart` and
    dropped at :class:`FunctionCallEnd` (the round was committed with it). On an interruption
    or a cancel, the part already produced (including text before a round that was rolled
    back) is committed, marked as interrupted. Every frame is forwarded.
    """

    def __init__(
        self, context: LLMContext, *, state: TurnState | None = None, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        self.context = context
        self.state = state if state is not None else TurnState()
        self._parts: list[str] = []
        self._precall: list[str] = []
        self._precall_ids: frozenset[str] = frozenset()
        self._in_turn = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _DOWN and not self.state.discard_stale:
            if isinstance(frame, LLMFullResponseStart):
                self._in_turn = True
                self.state.bot_responding = True
                self._parts.clear()
            elif isinstance(frame, LLMText):
                if self._in_turn:
                    self._parts.append(frame.text)
            elif isinstance(frame, FunctionCallStart):
                # This text goes into the handler's tool-call message when the round commits;
                # kept aside in case the round is interrupted (then it is rolled back).
                self._precall.extend(self._parts)
                self._precall_ids = frozenset(c.tool_call_id for c in frame.calls)
                self._parts.clear()
            elif isinstance(frame, FunctionCallEnd):
                self._precall.clear()
                self._precall_ids = frozenset()
            elif isinstance(frame, LLMFullResponseEnd):
                self._commit(interrupted=False)
                self.state.bot_responding = False
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        if self.state.discard_stale:
            # The pair's user side interrupted: it already committed the answer and ended the
            # bot's turn; a turn it started since (the message that interrupted) goes on.
            self.state.discard_stale = False
            self._commit(interrupted=True)
        else:
            self.commit_interrupted()

    async def on_cancel(self, frame: CancelFrame) -> None:
        # A cancelled answer is kept like an interrupted one (as pipecat does): the user heard
        # it, and a conversation resumed later must not ask the same thing again.
        self.commit_interrupted()

    def commit_interrupted(self) -> None:
        """Commit the part of the answer produced so far, marked interrupted (at most once)."""
        self._commit(interrupted=True)
        self.state.bot_responding = False

    def _round_was_committed(self) -> bool:
        """Whether the context already holds the tool-call message of the pending round (an
        interruption can drop FunctionCallEnd after the handler committed the round)."""
        for message in reversed(self.context.messages):
            if message.get("role") == "assistant" and message.get("tool_calls"):
                ids = {call.get("id") for call in message["tool_calls"]}
                return ids == self._precall_ids
        return False

    def _commit(self, *, interrupted: bool) -> None:
        if self._precall and self._round_was_committed():
            self._precall.clear()
        self._precall_ids = frozenset()
        text = "".join(self._precall) + "".join(self._parts)
        self._precall.clear()
        self._parts.clear()
        if self._in_turn and text:
            self.context.add_assistant_message(text, interrupted=interrupted)
        self._in_turn = False


def create_context_aggregators(
    context: LLMContext, *, text_mode: bool = False
) -> tuple[LLMUserAggregator, LLMAssistantAggregator]:
    """A user and an assistant aggregator sharing ``context`` and their turn state."""
    state = TurnState()
    assistant = LLMAssistantAggregator(context, state=state)
    state.assistant = assistant
    return LLMUserAggregator(context, text_mode=text_mode, state=state), assistant
