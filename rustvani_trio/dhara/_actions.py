"""Actions (pre and post), the summary request, and the ways Dhara's frames get into the
pipeline: the mixin of the engine that runs a node's actions and sends its announcements
and errors."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ..frames import EndTaskFrame, ErrorFrame, Frame, FrameDirection, TextFrame
from .call import DharaContext, PushFrame
from .node import NodeAction
from .state import FlowState, render

if TYPE_CHECKING:
    from ..context import LLMContext
    from ._engine import _Node
    from .processor import DharaProcessor
    from .summary import Summarizer

logger = logging.getLogger("rustvani_trio.dhara")
_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
SOURCE = "DharaManager"


class _Actions:
    """Actions and output; the engine's state is declared here for the type checker."""

    context: LLMContext
    state: FlowState
    summarizer: Summarizer | None
    summary_timeout: float
    _current: str | None
    _outbox: list[tuple[Frame, FrameDirection]]
    _processor: DharaProcessor | None
    _post_next_turn: str | None

    # ------------------------------------------------------------------ actions

    def _action_context(self, push: PushFrame | None) -> DharaContext:
        return DharaContext(
            manager=self,  # type: ignore[arg-type]
            state=self.state,
            node=self._current,
            push=push,
        )

    async def _run_function_action(self, action: NodeAction, push: PushFrame | None) -> None:
        assert action.handler is not None
        try:
            value = action.handler(self._action_context(push))
            if inspect.isawaitable(value):
                await value
        except Exception as exc:
            await self._report(
                f"action {action.name or 'function'!r} failed: {type(exc).__name__}: {exc}", push
            )

    async def _run_actions(
        self, node: _Node, actions: Sequence[NodeAction], push: PushFrame, said: list[str]
    ) -> None:
        """Run pre actions; the lines said are appended to ``said`` as they go out (recorded
        when the node is applied, also when an interruption stops the actions midway)."""
        for action in actions:
            if action.type == "tts_say":
                text, _ = render(action.text or "", self.state)
                await push(TextFrame(text=text), _DOWN)
                said.append(text)
            elif action.type == "end_conversation":
                await push(EndTaskFrame(reason=f"dhara: node {node.name} ended it"), _UP)
            else:
                await self._run_function_action(action, push)

    async def _schedule_post(self, node: _Node, push: PushFrame, *, in_turn: bool) -> None:
        """Post actions run once the node has answered: behind this turn when it was entered
        in a turn and responds immediately, behind the next turn otherwise."""
        if not node.config.post_actions:
            return
        if self._processor is not None:
            if in_turn and node.config.respond_immediately:
                self._processor.queue_after_answer(node.name, node.config.post_actions)
            else:
                self._post_next_turn = node.name
            return
        if (
            in_turn
            and node.config.respond_immediately
            and all(a.type == "end_conversation" for a in node.config.post_actions)
        ):
            end = EndTaskFrame(reason=f"dhara: node {node.name} ended it")
            try:
                await push(end, _UP)
            except trio.Cancelled:
                self._send_nowait(end, _UP)
                raise
            return
        await self._report(self._no_post_message(node), push)

    @staticmethod
    def _no_post_message(node: _Node) -> str:
        return (
            f"node {node.name!r} has post actions, which need dhara.processor() in the "
            "pipeline; they were not run"
        )

    def _post_after_interruption(self, node: _Node) -> None:
        """The node was entered but an interruption stopped its turn: its post actions run
        after its next answer."""
        if not node.config.post_actions:
            return
        if self._processor is not None:
            self._post_next_turn = node.name
        else:
            self._report_nowait(self._no_post_message(node))

    async def _summarize(self, node: _Node, push: PushFrame) -> str | None:
        """The bounded summary request; ``None`` (reported) on failure or timeout."""
        summarizer = self.summarizer
        if summarizer is None:
            await self._report(
                f"node {node.name!r} resets with a summary but the manager has no summarizer; "
                "reset without one",
                push,
            )
            return None
        instruction = node.config.context_strategy.summary_prompt
        text: object = None
        with trio.move_on_after(self.summary_timeout) as scope:
            try:
                text = await summarizer(self.context.messages, instruction)
            except Exception as exc:
                await self._report(
                    f"the summary for node {node.name!r} failed ({type(exc).__name__}: {exc}); "
                    "reset without one",
                    push,
                )
                return None
        if scope.cancelled_caught:
            await self._report(
                f"the summary for node {node.name!r} took longer than {self.summary_timeout:g}s; "
                "reset without one",
                push,
            )
            return None
        if not isinstance(text, str) or not text.strip():
            await self._report(f"the summary for node {node.name!r} was empty; reset", push)
            return None
        return text.strip()

    # ------------------------------------------------------------------ output

    async def _flush(self, push: PushFrame) -> None:
        """Send what waited for a way into the pipeline."""
        while self._outbox:
            frame, direction = self._outbox.pop(0)
            try:
                await push(frame, direction)
            except trio.Cancelled:
                # Not sent (a push raises before sending): it waits for the next way out.
                self._outbox.insert(0, (frame, direction))
                raise

    def _send_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        if self._processor is not None and self._processor.can_push:
            self._processor.push_frame_nowait(frame, direction)
        else:
            self._outbox.append((frame, direction))

    async def _report(self, message: str, push: PushFrame | None) -> None:
        logger.warning("dhara: %s", message)
        frame = ErrorFrame(error=message, processor=SOURCE)
        if push is None:
            self._send_nowait(frame, _UP)
            return
        try:
            await push(frame, _UP)
        except trio.Cancelled:
            self._send_nowait(frame, _UP)  # a report is never lost to an interruption
            raise

    def _report_nowait(self, message: str) -> None:
        logger.warning("dhara: %s", message)
        self._send_nowait(ErrorFrame(error=message, processor=SOURCE), _UP)
