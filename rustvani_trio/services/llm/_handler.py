"""The handler: configuration, functions, built-in tools, the transition hook, and the request
body built from a context. :meth:`OpenAILLMHandler.into_processor` puts it in a pipeline."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import httpx

from ..._context.history import encode_json
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
# The messages of a body that _request_content encodes (they are put in encoded).
_PENDING: Final[list[Any]] = []

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

    One way to do each thing: functions come from the registry given to :meth:`with_registry`
    (or an empty one; register more in :attr:`registry` at any time), built-in tools from
    :meth:`add_tool`, the hook from :meth:`set_transition_hook`. Each request uses what is
    current, so the transition hook itself may change them.

    Args:
        config: the settings (``handler.config`` may be replaced between turns).
        http_client: a client shared by many handlers (many conversations in one process): its
            connection pool and TLS setup are paid once. The handler never closes a client it
            was given; without one, each processor opens and closes its own.
    """

    def __init__(
        self, config: OpenAILLMConfig, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self._http_client = http_client
        self._registry = FunctionRegistry()
        self._tools: list[BuiltinTool] = []
        self._transition_hook: TransitionHook | None = None

    @classmethod
    def with_registry(
        cls,
        config: OpenAILLMConfig,
        registry: FunctionRegistry,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> OpenAILLMHandler:
        """A handler whose functions come from ``registry`` (the same object, not a copy)."""
        if not isinstance(registry, FunctionRegistry):
            raise TypeError(f"registry must be a FunctionRegistry, got {registry!r}")
        handler = cls(config, http_client=http_client)
        handler._registry = registry
        return handler

    @property
    def registry(self) -> FunctionRegistry:
        """The functions the model may call (register and unregister in it at any time)."""
        return self._registry

    @property
    def tools(self) -> tuple[BuiltinTool, ...]:
        """The built-in tools, in the order they were added (add one with :meth:`add_tool`)."""
        return tuple(self._tools)

    @property
    def transition_hook(self) -> TransitionHook | None:
        """The hook set with :meth:`set_transition_hook`, if any."""
        return self._transition_hook

    @property
    def http_client(self) -> httpx.AsyncClient | None:
        """The shared client given to the constructor, if any."""
        return self._http_client

    def add_tool(self, tool: BuiltinTool) -> OpenAILLMHandler:
        """Add a built-in tool: its functions are registered and its schemas offered to the
        model, without being copied into the context."""
        if not isinstance(tool, BuiltinTool):
            raise TypeError(f"add_tool() takes a BuiltinTool, got {tool!r}")
        if any(t.name == tool.name for t in self._tools):
            raise ValueError(f"a tool named {tool.name!r} was already added")
        tool.register_all(self._registry)
        self._tools.append(tool)
        return self

    def set_transition_hook(self, hook: TransitionHook | None) -> OpenAILLMHandler:
        """Run ``hook(context)`` (sync or async) after each committed tool round, before the
        next request; it may change the system prompt, messages, tools, tool_choice and the
        registry. Returning :attr:`AfterRound.END_TURN` closes the turn without asking the
        model again. ``None`` removes the hook.

        A hook object with an ``attach_to_handler(handler)`` method is told which handler it
        was set on (a conversation flow uses it to adopt the handler's function registry).
        """
        if hook is not None and not callable(hook):
            raise TypeError(f"the transition hook must be callable or None, got {hook!r}")
        self._transition_hook = hook
        attach = getattr(hook, "attach_to_handler", None)
        if callable(attach):
            attach(self)
        return self

    def into_processor(self, *, name: str | None = None) -> OpenAILLMProcessor:
        """A pipeline processor running this handler (named ``OpenAILLMProcessor#n`` unless
        ``name`` is given)."""
        from ._processor import OpenAILLMProcessor  # (the processor module imports this one)

        return OpenAILLMProcessor(self, name=name)

    # ------------------------------------------------------------------ request building

    def request_tools(self, context: LLMContext) -> list[dict[str, Any]] | None:
        """The tools offered to the model: the context's, then built-in tools' and
        registry schemas not already named in the context."""
        tools = list(context.tools_for_request() or [])
        names = {t["function"]["name"] for t in tools if isinstance(t.get("function"), dict)}
        extra: list[FunctionSchema] = []
        for tool in self._tools:
            extra.extend(tool.tool_schemas())
        extra.extend(self._registry.schemas())
        for schema in extra:
            if schema.name not in names:
                names.add(schema.name)
                tools.append(schema.to_openai())
        return tools or None

    def build_request(self, context: LLMContext, *, tool_choice: Any = None) -> dict[str, Any]:
        """The JSON body of one streaming request for ``context``."""
        return self._request_body(context, context.to_request_messages(), tool_choice)

    def _request_content(self, context: LLMContext, tool_choice: Any) -> bytes:
        """The body of :meth:`build_request`, encoded as httpx encodes a ``json=`` body,
        with the context's messages encoded once for all requests (the processor's path
        when ``build_request`` is not overridden)."""
        body = self._request_body(context, _PENDING, tool_choice)
        # (The body starts with the model and the messages; extra_body may not set these.)
        model = body.pop("model")
        del body["messages"]
        head = encode_json({"model": model})[:-1]  # '{"model":"..."'
        rest = encode_json(body)[1:]  # '"stream":true,...}' (the body always streams)
        return f'{head},"messages":{context._request_messages_json()},{rest}'.encode()

    def _request_body(
        self, context: LLMContext, messages: Sequence[Any], tool_choice: Any
    ) -> dict[str, Any]:
        """:meth:`build_request` with the messages given: the processor, which only
        serialises the body, gives the context's read-only messages instead of a copy."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": messages,
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
