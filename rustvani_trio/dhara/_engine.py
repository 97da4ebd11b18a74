"""The engine behind :class:`~rustvani_trio.dhara.DharaManager`: calls, settling a round's
transitions, applying a node atomically, actions and announcements.

The rules it keeps (docs/dhara.md has the long form):

* A call that asks for a transition only records a request (keyed by its call id, with the
  node generation and the staged round it ran in). Sibling calls keep running in that node.
* Requests are settled when their round has settled: by the transition hook right after the
  round was committed; or, when an interruption stopped the turn between the commit and the
  hook, by the Dhara processor before the next turn. A request whose round was rolled back is
  dropped; one from an older node generation is stale and dropped.
* Several requests in one settlement: the first in the model's call order wins; a conflict
  (different targets) is reported.
* Applying a node is one synchronous step (no await): messages, system prompt, tools,
  tool_choice, registry and ``current_node`` change together. Only the pre actions and the
  summary request await, before it; if they are interrupted, the node is applied without the
  summary (the round that asked for it was committed), its post actions wait for its next
  answer, and the cancellation goes on. Reports and announcements that an interruption stops
  on their way out are queued, never lost.
* A reset keeps the messages added after the round that asked for it (a user message that
  arrived during the summary request, or the turn that settles an interrupted transition),
  after the new node's own.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..context import ContextRound, LLMContext, ToolSpec
from ..exceptions import RustvaniError
from ..frames import Frame, FrameDirection
from ..services.llm.function_registry import FunctionCallParams, ToolCallOutput
from ..services.llm.openai import AfterRound
from ._actions import _Actions
from ._frames import DharaNodeChanged
from ._wiring import _Wiring
from .call import DharaContext, PushFrame
from .node import ContextStrategy, DharaFunction, NodeConfig, as_result
from .state import FlowState, render

if TYPE_CHECKING:
    from ..services.llm.function_registry import FunctionRegistry
    from .processor import DharaProcessor
    from .summary import Summarizer

__all__ = ["DharaError"]

logger = logging.getLogger("rustvani_trio.dhara")
_DOWN = FrameDirection.DOWNSTREAM


class DharaError(RustvaniError, RuntimeError):
    """A flow used in a way it cannot work (unknown node, name clash, bad snapshot, ...)."""


@attrs.define
class _Node:
    name: str
    config: NodeConfig
    functions: dict[str, DharaFunction]


@attrs.define
class _Request:
    """A transition asked for by one call, waiting for its round to settle."""

    call_id: str
    function: str
    target: str
    generation: int
    round: ContextRound | None
    push: PushFrame
    orphan: bool = False


class _Engine(_Actions, _Wiring):
    """State and runtime logic; the public API is :class:`DharaManager`."""

    context: LLMContext
    registry: FunctionRegistry
    state: FlowState
    summarizer: Summarizer | None
    summary_timeout: float
    history: list[DharaNodeChanged]
    _nodes: dict[str, _Node]
    _globals: dict[str, DharaFunction]
    _current: str | None
    _generation: int
    _ours: set[str]
    _pending: dict[str, _Request]
    _outbox: list[tuple[Frame, FrameDirection]]
    _processor: DharaProcessor | None
    _post_next_turn: str | None
    _initial_due: bool
    _revision: int

    # ------------------------------------------------------------------ calls

    def _entry(self, fn: DharaFunction) -> Any:
        async def call(params: FunctionCallParams) -> ToolCallOutput:
            return await self._call(fn, params)

        call.__name__ = fn.name
        return call

    async def _call(self, fn: DharaFunction, params: FunctionCallParams) -> ToolCallOutput:
        self._ran.add(params.tool_call_id)
        await self._flush(params.push_frame)
        if self._processor is None and self._initial_due and not self._told_no_processor:
            await self._tell_no_processor(params.push_frame)
        node, generation = self._current, self._generation
        ctx = DharaContext(
            manager=self,  # type: ignore[arg-type]
            state=self.state,
            node=node,
            function_name=params.function_name,
            tool_call_id=params.tool_call_id,
            arguments=params.arguments,
            raw_arguments=params.raw_arguments,
            push=params.push_frame,
        )
        if fn.handler is None:
            value: Any = None
        elif fn.arity == 1:
            value = fn.handler(params.raw_arguments)
        else:
            value = fn.handler(params.raw_arguments, ctx)
        if inspect.isawaitable(value):
            value = await value
        result = as_result(fn.ack if fn.handler is None else value)
        target = fn.target(result)
        if target is not None:
            if target not in self._nodes:
                await self._report(
                    f"function {fn.name!r} asked for node {target!r}, which is not registered; "
                    f"the flow stays in {node!r}",
                    params.push_frame,
                )
            else:
                self._pending[params.tool_call_id] = _Request(
                    call_id=params.tool_call_id,
                    function=fn.name,
                    target=target,
                    generation=generation,
                    round=params.context.open_round,
                    push=params.push_frame,
                )
        return result.output()

    # ------------------------------------------------------------------ settling

    async def _hook(self, context: LLMContext) -> AfterRound | None:
        if context is not self.context:
            raise DharaError(
                "the transition hook was given a context that is not the DharaManager's: "
                "give the aggregators and the manager the same LLMContext"
            )
        self._check_calls_ran()
        change = await self._settle(in_hook=True)
        if change is None:
            return None
        node = self._nodes[change.current].config
        return AfterRound.CONTINUE if node.respond_immediately else AfterRound.END_TURN

    def _mark_orphans(self) -> None:
        """An interruption stopped the turn: requests recorded so far get no hook; the next
        turn settles them."""
        for request in self._pending.values():
            request.orphan = True

    def _position(self, request: _Request) -> tuple[int, int] | None:
        """Where the request's call sits in the committed context (assistant message index,
        call index), or ``None`` when its round is not committed."""
        if request.round is not None and request.round.is_open:
            return None
        messages = self.context.messages
        for i in range(len(messages) - 1, -1, -1):
            message = messages[i]
            for k, call in enumerate(message.get("tool_calls") or ()):
                if call.get("id") == request.call_id:
                    answered = any(
                        m.get("role") == "tool" and m.get("tool_call_id") == request.call_id
                        for m in messages[i + 1 :]
                    )
                    return (i, k) if answered else None
        return None

    async def _settle(
        self, *, in_hook: bool, push: PushFrame | None = None
    ) -> DharaNodeChanged | None:
        """Apply the transition asked for by committed calls (see the module docstring)."""
        committed: list[tuple[tuple[int, int], _Request]] = []
        for call_id, request in list(self._pending.items()):
            if request.generation != self._generation:
                del self._pending[call_id]  # asked in a node that was left since
                continue
            if not (in_hook or request.orphan):
                continue  # its round's hook will still run
            where = self._position(request)
            if where is None:
                if request.round is not None and request.round.is_open:
                    continue  # still running; decided when it has settled
                del self._pending[call_id]
                logger.info(
                    "dhara: %s (call %s) asked for %r in a round that was rolled back; "
                    "the flow stays in %r",
                    request.function,
                    call_id,
                    request.target,
                    self._current,
                )
                continue
            del self._pending[call_id]
            committed.append((where, request))
        if not committed:
            return None
        committed.sort(key=lambda item: item[0])
        (index, _k), winner = committed[0]
        out = push or winner.push
        reason = f"function {winner.function}"
        notice = None
        targets = list(dict.fromkeys(r.target for _, r in committed))
        if len(targets) > 1:
            asked = ", ".join(f"{r.function} -> {r.target}" for _, r in committed)
            notice = (
                f"conflicting transitions in one round ({asked}); the first call in the "
                f"model's order wins: {winner.target!r}"
            )
            reason += " (first of conflicting transitions)"
        if winner.orphan:
            reason += " (settled after an interruption)"
        # Messages after the round's results came after the transition (a user turn that
        # started after an interruption): a reset keeps them.
        messages = self.context.messages
        keep_from = index + 1
        while keep_from < len(messages) and messages[keep_from].get("role") == "tool":
            keep_from += 1
        return await self._enter(
            winner.target, reason, out, in_turn=in_hook, keep_from=keep_from, notice=notice
        )

    # ------------------------------------------------------------------ entering a node

    async def _enter(
        self,
        name: str,
        reason: str,
        push: PushFrame,
        *,
        in_turn: bool,
        keep_from: int | None = None,
        notice: str | None = None,
    ) -> DharaNodeChanged:
        node = self._nodes[name]
        said: list[str] = []
        summary: str | None = None
        if keep_from is None:
            keep_from = self.context.message_count
        try:
            if notice is not None:
                await self._report(notice, push)
            await self._run_actions(node, node.config.pre_actions, push, said)
            if node.config.context_strategy.strategy is ContextStrategy.RESET_WITH_SUMMARY:
                summary = await self._summarize(node, push)
                if summary is None:
                    reason += " (no summary: plain reset)"
        except trio.Cancelled:
            # The round asking for this node was committed: apply it anyway, now.
            lost = node.config.context_strategy.strategy is ContextStrategy.RESET_WITH_SUMMARY
            reason += " (interrupted: no summary)" if lost else " (interrupted)"
            try:
                frame = self._apply(name, reason, said=said, keep_from=keep_from)
            except DharaError as exc:
                self._report_nowait(str(exc))
            else:
                self._send_nowait(frame, _DOWN)
                self._post_after_interruption(node)
            raise
        frame = self._apply(name, reason, summary=summary, said=said, keep_from=keep_from)
        try:
            await push(frame, _DOWN)
        except trio.Cancelled:
            self._send_nowait(frame, _DOWN)
            self._post_after_interruption(node)
            raise
        await self._schedule_post(node, push, in_turn=in_turn)
        return frame

    def _functions_for(self, node: _Node) -> dict[str, DharaFunction]:
        functions = dict(node.functions)
        for name, fn in self._globals.items():
            functions.setdefault(name, fn)
        return functions

    def _tools_for(self, node: _Node) -> list[ToolSpec]:
        tools = list(node.config.tools)
        names = set(node.config.tool_names())
        for name, fn in self._globals.items():
            if name not in names and fn.schema is not None:
                tools.append(fn.schema)
        return tools

    def _apply(
        self,
        name: str,
        reason: str,
        *,
        summary: str | None = None,
        said: Sequence[str] = (),
        messages: list[dict[str, Any]] | None = None,
        keep_from: int | None = None,
    ) -> DharaNodeChanged:
        """Enter node ``name`` in one synchronous step; with ``messages`` (a restore) those
        replace the conversation instead of the node's strategy, prompt and task messages.
        A reset keeps the messages from index ``keep_from`` on (added after the transition
        was asked for), after the node's own."""
        node = self._nodes[name]
        cfg = node.config
        missing: list[str] = []

        def fill(text: str) -> str:
            out, absent = render(text, self.state)
            missing.extend(absent)
            return out

        functions = self._functions_for(node)
        tools = self._tools_for(node)
        head: list[dict[str, Any]] | None = messages
        additions: list[dict[str, Any]] = []
        prompt: str | None = None
        if messages is None:
            prompt = None if cfg.system_prompt is None else fill(cfg.system_prompt)
            additions = [dict(m, content=fill(m["content"])) for m in cfg.task_messages]
            additions += [{"role": "assistant", "content": s} for s in said]
            if cfg.context_strategy.strategy is not ContextStrategy.APPEND:
                current = self.context.messages
                if keep_from is not None and 0 < keep_from < len(current):
                    additions += [dict(m) for m in current[keep_from:]]
                head = [dict(current[0])] if current and current[0]["role"] == "system" else []
                if summary:
                    head.append(
                        {
                            "role": "system",
                            "content": f"Summary of the conversation so far: {summary}",
                        }
                    )
        # Check everything that could fail before changing anything.
        clash = [n for n in functions if n in self.registry and n not in self._ours]
        if clash:
            raise DharaError(
                f"node {name!r}: function(s) {', '.join(clash)} clash with functions registered "
                "outside Dhara (a built-in tool?); rename one of them"
            )
        LLMContext(additions)
        LLMContext(head or (), tools=tools, tool_choice=cfg.tool_choice)
        # From here on nothing awaits and nothing can fail: the node changes as a whole.
        if head is not None:
            self.context.set_messages(head)
        if prompt is not None:
            self.context.system_prompt = prompt
        self.context.add_messages(additions)
        self.context.set_tools(tools)
        self.context.set_tool_choice(cfg.tool_choice)
        for old in self._ours:
            if old in self.registry:
                self.registry.unregister(old)
        for fn_name, fn in functions.items():
            self.registry.register(fn_name, self._entry(fn), rich=True, timeout=fn.timeout)
        self._ours = set(functions)
        previous, self._current = self._current, name
        self._generation += 1
        self._post_next_turn = None
        frame = DharaNodeChanged(previous=previous, current=name, reason=reason)
        self.history.append(frame)
        logger.info("dhara: %s -> %s (%s)", previous, name, reason)
        if missing:
            self._report_nowait(
                f"node {name!r}: no value for {', '.join(sorted(set(missing)))} in the state; "
                "rendered as empty"
            )
        return frame
