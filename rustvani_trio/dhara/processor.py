"""DharaProcessor: the flow's place in the pipeline, between the user aggregator and the LLM.

```
LLMUserAggregator -> DharaProcessor -> OpenAILLMProcessor -> LLMAssistantAggregator
```

It sees every turn start (an LLMContextFrame) in order with the user's input, and starts the
flow once the pipeline has started, which is what makes these work:

* the initial node is announced, runs its pre actions and, with ``respond_immediately``,
  speaks first: once, and not at all when a user turn got there first;
* a transition whose round was committed but whose turn was interrupted before the transition
  hook ran is applied before the next turn;
* post actions are queued behind the node's answer and run when that answer has left the
  pipeline (``end_conversation`` then queues an EndFrame);
* with a session store, a snapshot is written after every turn (answered or interrupted:
  a marker behind each turn, which no interruption drops, says when it is over).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ..frames import (
    EndFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    LLMContextFrame,
    StartFrame,
)
from ..processor import FrameProcessor
from ._engine import DharaError
from ._frames import _AfterAnswer, _SaidLine, _TurnDone
from .node import NodeAction
from .state import render

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..aggregators import TurnState
    from ..frames import CancelFrame
    from ..task import PipelineTask
    from .manager import DharaManager
    from .store import SessionStore

__all__ = ["DharaProcessor"]

logger = logging.getLogger("rustvani_trio.dhara")
_DOWN = FrameDirection.DOWNSTREAM


class DharaProcessor(FrameProcessor):
    """Runs a :class:`~rustvani_trio.dhara.DharaManager` 's flow in a pipeline (see the module
    docstring). Build it with ``dhara.processor()``."""

    def __init__(
        self,
        manager: DharaManager,
        *,
        store: SessionStore | None = None,
        session_id: str | None = None,
        save_timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        if (store is None) != (session_id is None):
            raise ValueError("give both store and session_id, or neither")
        if not save_timeout > 0:
            raise ValueError(f"save_timeout must be positive, got {save_timeout!r}")
        super().__init__(name=name or "Dhara")
        self.manager = manager
        self.store = store
        self.session_id = session_id
        self.save_timeout = save_timeout
        #: Set once the pipeline has started (frames pushed without waiting can go in).
        self.can_push = False
        self._turn_seen = False
        self._turns = 0
        self._deferred_saves = 0
        self._kicked_off: trio.Event | None = None
        self._user_state: TurnState | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def turn_running(self) -> bool:
        """Whether a turn let through here has not yet left the pipeline."""
        return self._turns > 0

    async def on_start(self, frame: StartFrame) -> None:
        self._turn_seen = False
        self._turns = self._deferred_saves = 0
        other = self.manager._processor
        if (
            other is not None
            and other is not self
            and other.pipeline_task is not None
            and not other.pipeline_task.has_finished
        ):
            raise DharaError(
                f"this DharaManager already runs in {other.pipeline_task.name}; build one manager "
                "per conversation (DharaFlow.build(...) or a new DharaManager for each session)"
            )
        self.manager._processor = self
        task = self.pipeline_task
        self._kicked_off = None
        if task is not None:
            self._kicked_off = trio.Event()
            problem = self._check_pipeline(task)
            if problem is not None:
                await self.push_error(problem)
            task.add_event_handler("on_pipeline_started", self._started)
            task.add_event_handler("on_frame_reached_downstream", self._at_sink)

    def _check_pipeline(self, task: PipelineTask) -> str | None:
        """Find the LLM that runs the Dhara hook (adopting its registry); raise for a wiring
        that cannot work, return a problem to report for one that may not."""
        from ..aggregators import LLMUserAggregator
        from ..services.llm.openai import OpenAILLMProcessor

        processors = task.processors()
        self._user_state = next(
            (
                p.state
                for p in processors
                if isinstance(p, LLMUserAggregator) and p.context is self.manager.context
            ),
            None,
        )
        hook = self.manager.create_transition_hook()
        llms = [p for p in processors if isinstance(p, OpenAILLMProcessor)]
        for processor in llms:
            if processor.handler.transition_hook is not hook:
                continue
            if processor.handler.registry is not self.manager.registry:
                # The seed's wiring as written: OpenAILLMHandler(config) with its own registry.
                self.manager._adopt_registry(processor.handler.registry)
            if processors.index(processor) < processors.index(self):
                raise ValueError(
                    f"{self.name} must come before {processor.name} (between the user "
                    "aggregator and the LLM)"
                )
            return None
        fix = "call llm.set_transition_hook(dhara.create_transition_hook())"
        if llms and all(p.handler.transition_hook is None for p in llms):
            raise DharaError(
                f"no LLM in the pipeline runs the Dhara transition hook ("
                f"{', '.join(p.name for p in llms)} has none): {fix}; without it no "
                "transition is ever applied"
            )
        if llms:
            return (
                "the LLM in the pipeline runs a transition hook that is not Dhara's; unless it "
                f"calls Dhara's, no transition will be applied: {fix}"
            )
        return (
            "no OpenAI LLM processor is in the pipeline; unless yours runs Dhara's transition "
            f"hook, no transition will be applied: {fix}"
        )

    def _detach(self) -> None:
        self.can_push = False
        if self.manager._processor is self:
            self.manager._processor = None

    async def on_stop(self, frame: EndFrame) -> None:
        self._detach()

    async def on_cancel(self, frame: CancelFrame) -> None:
        self._detach()

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        # The turn was stopped: a transition of a round it already committed gets no hook.
        self.manager._mark_orphans()

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is _DOWN and isinstance(frame, LLMContextFrame):
            self._turn_seen = True
            await self._before_turn()
            self._turns += 1
            try:
                await self.push_frame(frame, direction)
            except BaseException:
                self._turns -= 1
                raise
            self._after_turn_start()
            self.push_frame_nowait(_TurnDone())
            return
        await self.push_frame(frame, direction)

    async def _started(self, task: PipelineTask) -> None:
        """Every processor has started (frames queued before the run are not in yet)."""
        self.can_push = True
        try:
            await self._kickoff()
        except Exception as exc:
            await self.push_error(f"Dhara could not start the flow: {exc}", exception=exc)
        finally:
            if self._kicked_off is not None:
                self._kicked_off.set()

    async def _kickoff(self) -> None:
        manager = self.manager
        if manager.current_node is None:
            await self.push_error(
                "the flow has no node: call set_initial_node() or restore() before the "
                "pipeline starts"
            )
            return
        await manager._flush(self.push_frame)
        if not manager._initial_due:
            return
        manager._initial_due = False
        node = manager._nodes[manager.current_node]
        said: list[str] = []
        try:
            await manager._run_actions(node, node.config.pre_actions, self.push_frame, said)
        finally:
            manager.context.add_messages([{"role": "assistant", "content": s} for s in said])
        user = self._user_state
        if node.config.respond_immediately and not self._turn_seen and not (user and user.turns):
            # Speak first, unless a user turn came first (then the node answers that one).
            # The check and the push happen without a checkpoint between them; the user
            # aggregator counts it as the bot's turn, so a user who speaks now interrupts it
            # (one answer, never the opening line and then a second answer to the same text).
            self._turn_seen = True
            if user is not None:
                user.turns += 1
                user.bot_responding = True
            self._turns += 1
            self.push_frame_nowait(LLMContextFrame(context=manager.context))
            if node.config.post_actions:
                self.queue_after_answer(node.name, node.config.post_actions, in_turn=False)
            self.push_frame_nowait(_TurnDone())
        elif node.config.post_actions:
            manager._post_next_turn = node.name

    async def _before_turn(self) -> None:
        manager = self.manager
        if self._kicked_off is not None:
            # The initial node's pre actions run before its first request.
            await self._kicked_off.wait()
        await manager._flush(self.push_frame)
        if any(r.orphan for r in manager._pending.values()):
            await manager._settle(in_hook=False, push=self.push_frame)

    def _after_turn_start(self) -> None:
        manager = self.manager
        name = manager._post_next_turn
        if name is not None and name == manager.current_node:
            manager._post_next_turn = None
            self.queue_after_answer(name, manager.node(name).post_actions, in_turn=False)

    def queue_after_answer(
        self, node: str, actions: Sequence[NodeAction], *, in_turn: bool = True
    ) -> None:
        """Queue ``actions`` behind the answer being produced (they go into the LLM's lane,
        which it works through in order). ``in_turn``: queued while the turn runs, so behind
        its ``_TurnDone``; the session is saved after them instead."""
        said: list[str] = []
        for action in actions:
            if action.type == "tts_say":
                text, _ = render(action.text or "", self.manager.state)
                said.append(text)
                self.push_frame_nowait(_SaidLine(text=text))
        if in_turn and self.store is not None:
            self._deferred_saves += 1
        marker = _AfterAnswer(node=node, actions=tuple(actions), said=tuple(said), save=in_turn)
        self.push_frame_nowait(marker)

    # ------------------------------------------------------------------ at the pipeline's end

    async def _at_sink(self, task: PipelineTask, frame: Frame) -> None:
        try:
            if isinstance(frame, _TurnDone):
                self._turns = max(self._turns - 1, 0)
                if self._deferred_saves:
                    self._deferred_saves -= 1
                elif self.store is not None:
                    await self._save()
            elif isinstance(frame, _AfterAnswer):
                await self._run_post(task, frame)
                if frame.save and self.store is not None:
                    await self._save()
        except Exception as exc:
            await self.push_error(f"Dhara failed at the end of a turn: {exc}", exception=exc)

    async def _run_post(self, task: PipelineTask, marker: _AfterAnswer) -> None:
        manager = self.manager
        said = list(marker.said)
        for action in marker.actions:
            if action.type == "tts_say":
                manager.context.add_assistant_message(said.pop(0))
            elif action.type == "function":
                await manager._run_function_action(action, self.push_frame)
            elif not task.has_finished:
                logger.info("dhara: node %s ends the conversation", marker.node)
                await task.queue_frame(EndFrame(reason=f"dhara: node {marker.node} ended it"))

    async def _save(self) -> None:
        assert self.store is not None and self.session_id is not None
        self.manager._revision += 1
        snapshot: Any = self.manager.snapshot()
        with trio.move_on_after(self.save_timeout) as scope:
            try:
                await self.store.save(self.session_id, snapshot)
            except Exception as exc:
                # Reported; the conversation goes on (the next turn saves again).
                await self.push_error(
                    f"could not save session {self.session_id!r}: {exc}", exception=exc
                )
                return
        if scope.cancelled_caught:
            await self.push_error(
                f"saving session {self.session_id!r} took longer than {self.save_timeout:g}s"
            )
