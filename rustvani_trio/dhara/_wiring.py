"""Wiring mistakes told, never silent: the engine's checks for a pipeline without the Dhara
processor and for an LLM handler that does not use Dhara's function registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..services.llm.function_registry import FunctionRegistry

if TYPE_CHECKING:
    from ..context import LLMContext
    from ..services.llm.openai import AfterRound
    from ._engine import _Node
    from .call import PushFrame
    from .manager import DharaManager

__all__: list[str] = []

#: How the LLM handler answers a call to a function its registry does not have.
_NOT_FOUND = "Error: there is no function named"


class _TransitionHook:
    """The manager's transition hook. ``attach_to_handler(handler)`` (called by a handler
    that supports it when the hook is set) adopts the handler's own function registry, so
    ``OpenAILLMHandler(config)`` works without the Dhara processor too."""

    def __init__(self, manager: DharaManager) -> None:
        self._manager = manager

    async def __call__(self, context: LLMContext) -> AfterRound | None:
        return await self._manager._hook(context)

    def attach_to_handler(self, handler: Any) -> None:
        registry = getattr(handler, "registry", None)
        if isinstance(registry, FunctionRegistry) and registry is not self._manager.registry:
            self._manager._adopt_registry(registry)


class _Wiring:
    """A mixin of the engine (its state is declared here for the type checker)."""

    context: LLMContext
    _nodes: dict[str, _Node]
    _current: str | None
    _ours: set[str]
    _ran: set[str]
    _told_no_processor: bool

    if TYPE_CHECKING:

        async def _report(self, message: str, push: PushFrame | None) -> None: ...

    async def _tell_no_processor(self, push: PushFrame) -> None:
        """Without the Dhara processor, what needs a place in the pipeline did not happen:
        say so once, at the first call, instead of leaving it a silent no-op."""
        self._told_no_processor = True
        node = self._nodes[self._current] if self._current is not None else None
        if node is None:
            return
        skipped = []
        if node.config.respond_immediately:
            skipped.append("did not speak first (respond_immediately)")
        if node.config.pre_actions:
            skipped.append("did not run its pre actions")
        if skipped:
            await self._report(
                f"no Dhara processor is in the pipeline, so the initial node {node.name!r} "
                f"{' and '.join(skipped)}; put dhara.processor() between the user aggregator "
                "and the LLM",
                push,
            )

    def _check_calls_ran(self) -> None:
        """Raise when the model called a Dhara function of the round just committed that
        Dhara never ran: the LLM handler has another function registry."""
        ran, self._ran = self._ran, set()
        messages = self.context.messages
        for i in range(len(messages) - 1, -1, -1):
            calls = (
                messages[i].get("tool_calls") if messages[i].get("role") == "assistant" else None
            )
            if not calls:
                continue
            answers = {
                m.get("tool_call_id"): m.get("content")
                for m in messages[i + 1 :]
                if m.get("role") == "tool"
            }
            missed = [
                call["function"]["name"]
                for call in calls
                if call.get("function", {}).get("name") in self._ours
                and call.get("id") not in ran
                and str(answers.get(call.get("id"), "")).startswith(_NOT_FOUND)
            ]
            if missed:
                raise _error(
                    f"the model called Dhara's {', '.join(sorted(set(missed)))} but the LLM "
                    "handler does not use Dhara's function registry (the model was told there "
                    "is no such function). Build the handler with "
                    "OpenAILLMHandler.with_registry(config, dhara.registry), or put "
                    "dhara.processor() in the pipeline between the user aggregator and the LLM: "
                    "at start it moves Dhara's functions into the handler's registry"
                )
            return


def _error(message: str) -> Exception:
    from ._engine import DharaError

    return DharaError(message)
