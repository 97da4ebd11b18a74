"""The handler: configuration, functions, built-in tools, the transition hook, and the request
body built from a context. :meth:`OpenAILLMHandler.into_processor` puts it in a pipeline."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx

from ...context import FunctionSchema, LLMContext
from ...tools.base import BuiltinTool
from ._config import OpenAILLMConfig
from .function_registry import FunctionRegistry

if TYPE_CHECKING:
    from ._processor import OpenAILLMProcessor

__all__ = ["AfterRound", "OpenAILLMHandler", "TransitionHook"]


class AfterRound(enum.Enum):
    """What a transition hook may return to say how the turn goes on after a tool round."""

    #: Ask the model again (with the tool results): the default, also when the hook returns
    #: ``None``.
    CONTINUE = "continue"
    #: Close the turn now, without asking the model again (the conversation waits for the
    #: user; for example a flow that moved to a node that does not speak first).
    END_TURN = "end_turn"


TransitionHook = Callable[[LLMContext], "Awaitable[AfterRound | None] | AfterRound | None"]

# Sampling options copied into the request when they are set.
_OPTIONAL_FIELDS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "max_completion_tokens",
    "service_tier",
    "reasoning_effort",
)


class OpenAILLMHandler:
    """The LLM logic: requests, streaming, tools. :meth:`into_processor` wraps it in a
    :class:`~rustvani_trio.processor.FrameProcessor` for a pipeline.

    The handler's registry, tools and transition hook may be changed at any time (also by the
    transition hook itself); each request uses what is current.
    """

    def __init__(
        self,
        config: OpenAILLMConfig,
        registry: FunctionRegistry | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        #: A client shared by many handlers (many conversations in one process): its connection
        #: pool and TLS setup are paid once. The handler never closes a client it was given.
        self.http_client = http_client
        self.registry = registry if registry is not None else FunctionRegistry()
        self.tools: list[BuiltinTool] = []
        self.transition_hook: TransitionHook | None = None

    @classmethod
    def with_registry(cls, config: OpenAILLMConfig, registry: FunctionRegistry) -> OpenAILLMHandler:
        """A handler whose functions come from ``registry``."""
        return cls(config, registry)

    def add_tool(self, tool: BuiltinTool) -> OpenAILLMHandler:
        """Add a built-in tool: its functions are registered and its schemas offered to the
        model, without being copied into the context."""
        if any(t.name == tool.name for t in self.tools):
            raise ValueError(f"a tool named {tool.name!r} was already added")
        tool.register_all(self.registry)
        self.tools.append(tool)
        return self

    def set_transition_hook(self, hook: TransitionHook | None) -> OpenAILLMHandler:
        """Run ``hook(context)`` (sync or async) after each committed tool round, before the
        next request; it may change the system prompt, messages, tools, tool_choice and the
        registry. Returning :attr:`AfterRound.END_TURN` closes the turn without asking the
        model again."""
        self.transition_hook = hook
        return self

    def into_processor(self, *, name: str | None = None) -> OpenAILLMProcessor:
        """A pipeline processor running this handler."""
        from ._processor import OpenAILLMProcessor  # (the processor module imports this one)

        return OpenAILLMProcessor(self, name=name)

    # ------------------------------------------------------------------ request building

    def request_tools(self, context: LLMContext) -> list[dict[str, Any]] | None:
        """The tools offered to the model: the context's, then built-in tools' and
        registry schemas not already named in the context."""
        tools = list(context.tools_for_request() or [])
        names = {t["function"]["name"] for t in tools if isinstance(t.get("function"), dict)}
        extra: list[FunctionSchema] = []
        for tool in self.tools:
            extra.extend(tool.tool_schemas())
        extra.extend(self.registry.schemas())
        for schema in extra:
            if schema.name not in names:
                names.add(schema.name)
                tools.append(schema.to_openai())
        return tools or None

    def build_request(self, context: LLMContext, *, tool_choice: Any = None) -> dict[str, Any]:
        """The JSON body of one streaming request for ``context``."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": context.to_request_messages(),
            "stream": True,
        }
        if cfg.include_usage:
            body["stream_options"] = {"include_usage": True}
        for key in _OPTIONAL_FIELDS:
            value = getattr(cfg, key)
            if value is not None:
                body[key] = value
        tools = self.request_tools(context)
        if tools:
            body["tools"] = tools
            choice = tool_choice if tool_choice is not None else context.tool_choice
            if choice is not None:
                body["tool_choice"] = choice
        body.update(cfg.extra_body)
        return body
