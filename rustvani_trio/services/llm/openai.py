"""The OpenAI-compatible LLM handler: SSE streaming, function calling, re-invocation.

```python
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler

llm = OpenAILLMHandler(OpenAILLMConfig(api_key=os.environ["OPENAI_API_KEY"])).into_processor()
```

The processor takes an :class:`~rustvani_trio.frames.LLMContextFrame` and runs one *turn*:
``LLMFullResponseStart``, ``LLMText`` per content delta, and for each tool round
``FunctionCallStart``, per call ``FunctionCallInProgress`` / ``FunctionCallRawResult`` /
``FunctionCallResult``, ``FunctionCallEnd``, then the re-invocation, and finally
``LLMFullResponseEnd`` (which also closes a turn that failed). Works with any endpoint that
speaks the chat-completions API (OpenAI, Azure, vLLM, llama.cpp, Ollama, Groq, OpenRouter, ...).

An interruption or a CancelFrame cancels the turn's scope: the HTTP response is closed at once
(the server sees the disconnect), running tool calls are cancelled, the staged tool round is
rolled back, and nothing from that turn is emitted afterwards.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import functools
import inspect
import json
import logging
import math
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
import certifi
import httpx
import trio

from ...context import FunctionSchema, LLMContext
from ...exceptions import RustvaniError
from ...frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
    FunctionCallInfo,
    FunctionCallInProgress,
    FunctionCallRawResult,
    FunctionCallResult,
    FunctionCallStart,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMReasoningText,
    LLMRefusalText,
    LLMText,
    LLMTokenUsage,
    StartFrame,
)
from ...processor import FrameProcessor
from ...tools.base import BuiltinTool
from ._sse import (
    ChatStreamDecoder,
    ContentDelta,
    ReasoningDelta,
    RefusalDelta,
    SSEProtocolError,
    StreamResult,
)
from .function_registry import FunctionCallParams, FunctionRegistry, ToolCallOutput

__all__ = [
    "CONTEXT_WINDOWS",
    "AfterRound",
    "LLMRequestError",
    "OpenAILLMConfig",
    "OpenAILLMHandler",
    "OpenAILLMProcessor",
    "RetryPolicy",
    "TransitionHook",
    "context_window_for_model",
]

logger = logging.getLogger("rustvani_trio")


class AfterRound(enum.Enum):
    """What a transition hook may return to say how the turn goes on after a tool round."""

    #: Ask the model again (with the tool results): the default, also when the hook returns
    #: ``None``.
    CONTINUE = "continue"
    #: Close the turn now, without asking the model again (the conversation waits for the
    #: user; for example a flow that moved to a node that does not speak first).
    END_TURN = "end_turn"


TransitionHook = Callable[[LLMContext], "Awaitable[AfterRound | None] | AfterRound | None"]

# The seed's table: prefixes matched on the lowercased model name after its last "/".
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-3.5", 16_385),
    ("claude-opus-4", 1_048_576),
    ("claude-sonnet-4", 1_048_576),
    ("claude-3", 200_000),
    ("gemini-2", 1_048_576),
    ("gemini-1.5", 1_048_576),
)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) costs tens of ms of
    CPU, which per conversation would dominate a server handling many."""
    return ssl.create_default_context(cafile=certifi.where())


def context_window_for_model(model: str) -> int | None:
    """The default context window of ``model`` (``None`` when unknown: no trimming)."""
    short = model.lower().rsplit("/", 1)[-1]
    for prefix, tokens in CONTEXT_WINDOWS:
        if short.startswith(prefix):
            return tokens
    return None


# --------------------------------------------------------------------------- configuration


def _in_range(lo: float, hi: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not lo <= value <= hi:
            raise ValueError(f"{attr.name} must be between {lo} and {hi}, got {value}")

    return check


def _positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attr.name} must be positive, got {value}")


def _non_negative(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not value >= 0:
        raise ValueError(f"{attr.name} must not be negative, got {value}")


def _at_least_one(_inst: Any, attr: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attr.name} must be at least 1, got {value}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Retries of a request that failed before anything was streamed.

    Connection errors and HTTP 408, 409, 429 and 5xx are retried up to ``max_attempts`` in all,
    waiting ``initial_delay * multiplier**(n-1)`` (capped at ``max_delay``, with ``jitter`` as a
    fraction of random spread) or the server's ``Retry-After`` when it says more (capped at
    ``max_retry_after``). Nothing is retried once a delta was emitted, so text is never
    duplicated.
    """

    max_attempts: int = attrs.field(default=3, validator=_at_least_one)
    initial_delay: float = attrs.field(default=0.5, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=8.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.25, validator=_in_range(0.0, 1.0))
    max_retry_after: float = attrs.field(default=60.0, validator=_non_negative)
    retry_statuses: frozenset[int] = frozenset({408, 409, 429})

    def should_retry_status(self, status: int) -> bool:
        """Whether an HTTP status is worth another attempt."""
        return status in self.retry_statuses or 500 <= status <= 599

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        base = min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)
        base *= 1 + self.jitter * (2 * random.random() - 1)
        if retry_after is not None:
            base = max(base, min(retry_after, self.max_retry_after))
        return max(base, 0.0)


def _non_empty(_inst: Any, attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attr.name} must be a non-empty string, got {value!r}")


@attrs.frozen(kw_only=True)
class OpenAILLMConfig:
    """Settings of an :class:`OpenAILLMHandler`. Optional sampling fields are left out of the
    request when ``None``.

    Attributes:
        api_key: sent as ``Authorization: Bearer <key>`` (or ``api-key: <key>`` with
            ``auth_header="api-key"``, as Azure wants). Empty: no auth header.
        model: the model name sent in every request.
        base_url: the API root, e.g. ``https://api.openai.com/v1`` (a trailing slash is fine).
        max_tool_rounds: tool rounds per turn before a last request with ``tool_choice: none``.
        context_window_tokens: trim the context to this window (default: the model table).
        trim_budget: the fraction of the window the context may fill.
        extra_headers / extra_query / extra_body: merged into every request (Azure's
            ``api-version`` goes in ``extra_query``).
        include_usage: ask for a usage chunk (``stream_options.include_usage``).
        connect_timeout: seconds to connect. first_token_timeout: seconds from sending the
            request to the first delta. chunk_timeout: the longest silence between chunks.
        tool_timeout: default time limit of one tool call.
        tool_start_timeout / tool_stop_timeout: limits of a built-in tool's on_start / on_stop.
        retry: the :class:`RetryPolicy`.
    """

    api_key: str = ""
    model: str = attrs.field(default="gpt-4.1", validator=_non_empty)
    base_url: str = attrs.field(default="https://api.openai.com/v1", validator=_non_empty)
    temperature: float | None = attrs.field(default=None, validator=_in_range(0.0, 2.0))
    top_p: float | None = attrs.field(default=None, validator=_in_range(0.0, 1.0))
    frequency_penalty: float | None = attrs.field(default=None, validator=_in_range(-2.0, 2.0))
    presence_penalty: float | None = attrs.field(default=None, validator=_in_range(-2.0, 2.0))
    seed: int | None = None
    max_completion_tokens: int | None = attrs.field(default=None, validator=_at_least_one)
    service_tier: str | None = None
    reasoning_effort: str | None = None
    max_tool_rounds: int = attrs.field(default=5, validator=_at_least_one)
    context_window_tokens: int | None = attrs.field(default=None, validator=_at_least_one)
    trim_budget: float = attrs.field(default=0.8, validator=_in_range(0.05, 1.0))
    extra_headers: Mapping[str, str] = attrs.field(factory=dict)
    extra_query: Mapping[str, str] = attrs.field(factory=dict)
    extra_body: Mapping[str, Any] = attrs.field(factory=dict)
    auth_header: Literal["bearer", "api-key"] = attrs.field(
        default="bearer", validator=attrs.validators.in_(("bearer", "api-key"))
    )
    include_usage: bool = True
    connect_timeout: float = attrs.field(default=10.0, validator=_positive)
    first_token_timeout: float = attrs.field(default=60.0, validator=_positive)
    chunk_timeout: float = attrs.field(default=30.0, validator=_positive)
    tool_timeout: float = attrs.field(default=30.0, validator=_positive)
    tool_start_timeout: float = attrs.field(default=10.0, validator=_positive)
    tool_stop_timeout: float = attrs.field(default=10.0, validator=_positive)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)

    @classmethod
    def from_env(cls, **overrides: Any) -> OpenAILLMConfig:
        """Read ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` and ``OPENAI_MODEL``; keyword arguments
        override them."""
        values: dict[str, Any] = {}
        for field, var in (
            ("api_key", "OPENAI_API_KEY"),
            ("base_url", "OPENAI_BASE_URL"),
            ("model", "OPENAI_MODEL"),
        ):
            if os.environ.get(var):
                values[field] = os.environ[var]
        values.update(overrides)
        return cls(**values)

    @property
    def context_window(self) -> int | None:
        """``context_window_tokens``, or the model table's default."""
        return self.context_window_tokens or context_window_for_model(self.model)

    def chat_completions_url(self) -> str:
        """The endpoint URL."""
        return self.base_url.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        """Request headers (auth and extras)."""
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            if self.auth_header == "api-key":
                headers["api-key"] = self.api_key
            else:
                headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.extra_headers)
        return headers


class LLMRequestError(RustvaniError):
    """A request failed; ``retryable`` says whether another attempt may help."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return text[:300]


def _status_error(
    status: int, body: bytes, headers: httpx.Headers, cfg: OpenAILLMConfig
) -> LLMRequestError:
    msg = _server_message(body)
    if status in (401, 403):
        text = (
            f"authentication failed (HTTP {status}): {msg}. The API key was rejected: check "
            "OPENAI_API_KEY / OpenAILLMConfig.api_key"
            + (" (Azure wants auth_header='api-key')" if status == 401 else "")
        )
    elif status == 404:
        text = (
            f"not found (HTTP 404): {msg}. Check the model {cfg.model!r} and the base_url "
            f"{cfg.base_url!r}"
        )
    elif status == 429:
        text = f"rate limited (HTTP 429): {msg}"
    else:
        text = f"HTTP {status} from {cfg.chat_completions_url()}: {msg}"
    return LLMRequestError(
        text,
        status=status,
        retryable=cfg.retry.should_retry_status(status),
        retry_after=_parse_retry_after(headers.get("retry-after")),
    )


def _usage_from(data: Mapping[str, Any] | None) -> LLMTokenUsage | None:
    if not isinstance(data, Mapping):
        return None

    def num(value: Any) -> int:
        return int(value) if isinstance(value, int | float) else 0

    prompt = num(data.get("prompt_tokens"))
    completion = num(data.get("completion_tokens"))
    total = num(data.get("total_tokens")) or prompt + completion
    cached = reasoning = None
    pdetails = data.get("prompt_tokens_details")
    if isinstance(pdetails, Mapping) and isinstance(pdetails.get("cached_tokens"), int):
        cached = pdetails["cached_tokens"]
    elif isinstance(data.get("prompt_cache_hit_tokens"), int):
        cached = data["prompt_cache_hit_tokens"]
    cdetails = data.get("completion_tokens_details")
    if isinstance(cdetails, Mapping) and isinstance(cdetails.get("reasoning_tokens"), int):
        reasoning = cdetails["reasoning_tokens"]
    return LLMTokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


@attrs.define
class _Round:
    """What one request produced."""

    result: StreamResult
    emitted: int = 0  # content/reasoning/refusal deltas pushed


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
        for key in (
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
            "seed",
            "max_completion_tokens",
            "service_tier",
            "reasoning_effort",
        ):
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


class OpenAILLMProcessor(FrameProcessor):
    """A FrameProcessor running an :class:`OpenAILLMHandler` (see the module docstring)."""

    def __init__(self, handler: OpenAILLMHandler, *, name: str | None = None) -> None:
        super().__init__(name=name or f"OpenAILLM#{id(handler) % 10000}")
        self.handler = handler
        self._client: httpx.AsyncClient | None = None
        self._owns_client = True
        self._timeout = httpx.Timeout(None)
        self._started_tools: list[BuiltinTool] = []
        self._start_locks: dict[str, trio.Lock] = {}

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self, frame: StartFrame) -> None:
        cfg = self.handler.config
        self._timeout = httpx.Timeout(
            connect=cfg.connect_timeout,
            read=None,  # first_token_timeout / chunk_timeout: enforced by _stream's scope
            write=cfg.connect_timeout,
            pool=cfg.connect_timeout,
        )
        shared = self.handler.http_client
        if shared is not None:
            self._client, self._owns_client = shared, False
        else:
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=_ssl_context())
            self._owns_client = True
        cacheable = [t for t in self.handler.tools if t.is_cacheable]
        if cacheable:
            async with trio.open_nursery() as nursery:
                for tool in cacheable:
                    nursery.start_soon(self._start_tool, tool)

    async def _start_tool(self, tool: BuiltinTool) -> None:
        limit = self.handler.config.tool_start_timeout
        if await self._run_tool_hook(tool, tool.on_start, limit, "start"):
            self._started_tools.append(tool)

    async def _run_tool_hook(
        self, tool: BuiltinTool, hook: Callable[[], Awaitable[None]], limit: float, what: str
    ) -> bool:
        """Run a tool's lifecycle hook under ``limit``; report a failure or an overrun."""
        with trio.move_on_after(limit) as scope:
            try:
                await hook()
            except Exception as exc:
                await self.push_error(
                    f"tool {tool.name!r} failed to {what}: {type(exc).__name__}: {exc}",
                    exception=exc,
                )
                return False
        if scope.cancelled_caught:
            await self.push_error(f"tool {tool.name!r} did not {what} within {limit:g}s")
            return False
        return True

    async def _ensure_tool_started(self, name: str) -> None:
        """Start, before its first call, a tool that is not running: a non-cacheable one, or
        one added after StartFrame (or whose start at StartFrame failed)."""
        for tool in self.handler.tools:
            if tool in self._started_tools:
                continue
            if any(s.name == name for s in tool.tool_schemas()):
                async with self._start_locks.setdefault(tool.name, trio.Lock()):
                    if tool not in self._started_tools:
                        with trio.fail_after(self.handler.config.tool_start_timeout):
                            await tool.on_start()
                        self._started_tools.append(tool)

    async def on_stop(self, frame: EndFrame) -> None:
        tools, self._started_tools = self._started_tools, []
        try:
            async with trio.open_nursery() as nursery:
                for tool in tools:
                    nursery.start_soon(self._stop_tool, tool)
        finally:
            await self._close_client()

    async def _stop_tool(self, tool: BuiltinTool) -> None:
        await self._run_tool_hook(tool, tool.on_stop, self.handler.config.tool_stop_timeout, "stop")

    async def on_cancel(self, frame: CancelFrame) -> None:
        # The base class calls this once the cancelled calls have unwound; the tools release
        # what the calls used, bounded, and the client is closed whatever happens.
        tools, self._started_tools = self._started_tools, []
        try:
            with trio.move_on_after(self.cancel_timeout / 2):
                async with trio.open_nursery() as nursery:
                    for tool in tools:
                        nursery.start_soon(self._cancel_tool, tool)
        finally:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 1.0):
                await self._close_client()

    async def _cancel_tool(self, tool: BuiltinTool) -> None:
        try:
            await tool.on_cancel()
        except Exception as exc:
            # Logged too: after a run cancelled from outside nobody reads the ErrorFrame.
            logger.warning(
                "%s: tool %r on_cancel failed: %s", self.name, tool.name, exc, exc_info=exc
            )
            self.push_frame_nowait(
                ErrorFrame(
                    error=f"tool {tool.name!r} on_cancel failed: {type(exc).__name__}: {exc}",
                    processor=self.name,
                    exception=exc,
                ),
                FrameDirection.UPSTREAM,
            )

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()

    # ------------------------------------------------------------------ handler delegates

    @property
    def registry(self) -> FunctionRegistry:
        """The handler's function registry."""
        return self.handler.registry

    def add_tool(self, tool: BuiltinTool) -> OpenAILLMProcessor:
        """Same as :meth:`OpenAILLMHandler.add_tool`."""
        self.handler.add_tool(tool)
        return self

    def set_transition_hook(self, hook: TransitionHook | None) -> OpenAILLMProcessor:
        """Same as :meth:`OpenAILLMHandler.set_transition_hook`."""
        self.handler.set_transition_hook(hook)
        return self

    # ------------------------------------------------------------------ frames

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame) and direction is FrameDirection.DOWNSTREAM:
            await self.run_turn(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def run_turn(self, context: LLMContext) -> None:
        """Run one turn on ``context``: stream, run tool rounds, re-invoke, close the turn."""
        cfg = self.handler.config
        await self.push_frame(LLMFullResponseStart())
        self.start_processing_metrics()
        tool_rounds = 0
        # When cancelled (interruption, CancelFrame) nothing below runs: the InterruptionFrame
        # itself closes the turn for every processor downstream.
        try:
            while True:
                final = tool_rounds >= cfg.max_tool_rounds
                rnd = await self._request(context, tool_choice="none" if final else None)
                if rnd is None:
                    break
                if not rnd.result.tool_calls:
                    break
                if final:
                    await self.push_error(
                        f"the model still asked for tools after max_tool_rounds="
                        f"{cfg.max_tool_rounds} and tool_choice='none'; its calls were ignored"
                    )
                    break
                tool_rounds += 1
                await self._tool_round(context, rnd.result, tool_rounds)
                if tool_rounds >= cfg.max_tool_rounds:
                    await self.push_error(
                        f"max_tool_rounds={cfg.max_tool_rounds} reached; asking the model for "
                        "a final answer without tools"
                    )
                if await self._run_transition_hook(context) is AfterRound.END_TURN:
                    break
        except Exception as exc:
            # A failed turn (a transition hook that raised, ...) is still closed, so the
            # aggregators commit and the next turn works.
            await self.push_error(f"the turn failed: {type(exc).__name__}: {exc}", exception=exc)
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEnd())

    async def _run_transition_hook(self, context: LLMContext) -> AfterRound | None:
        hook = self.handler.transition_hook
        if hook is None:
            return None
        result = hook(context)
        if inspect.isawaitable(result):
            result = await result
        if result is not None and not isinstance(result, AfterRound):
            raise TypeError(
                f"the transition hook returned {result!r}; it must return None or an AfterRound"
            )
        return result

    # ------------------------------------------------------------------ one request

    async def _request(self, context: LLMContext, *, tool_choice: Any) -> _Round | None:
        """One request with retries. Returns ``None`` after reporting an error."""
        cfg = self.handler.config
        window = cfg.context_window
        if window is not None:
            removed = context.trim(window, budget=cfg.trim_budget)
            if removed:
                logger.info("%s: trimmed %d messages to fit the context window", self.name, removed)
        body = self.handler.build_request(context, tool_choice=tool_choice)
        sent = body["messages"]
        attempt = 0
        while True:
            attempt += 1
            rnd = _Round(result=StreamResult())
            try:
                await self._stream(body, rnd)
            except trio.Cancelled:
                # Interrupted: the usage of this request still counts.
                self._report_usage(rnd, context, sent, interrupted=True)
                raise
            except LLMRequestError as exc:
                if exc.retryable and rnd.emitted == 0 and attempt < cfg.retry.max_attempts:
                    delay = cfg.retry.delay(attempt, exc.retry_after)
                    logger.info(
                        "%s: attempt %d failed (%s); retrying in %.2fs",
                        self.name,
                        attempt,
                        exc,
                        delay,
                    )
                    await trio.sleep(delay)
                    continue
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                await self.push_error(f"LLM request failed{tries}: {exc}", exception=exc)
                self._report_usage(rnd, context, sent, interrupted=False)
                return None
            self._report_usage(rnd, context, sent, interrupted=False)
            return await self._check_finish(rnd)

    async def _check_finish(self, rnd: _Round) -> _Round | None:
        result = rnd.result
        if result.error is not None:
            await self.push_error(f"the LLM stream reported an error: {result.error.message}")
            return None
        if not result.done and result.finish_reason is None:
            await self.push_error(
                "the LLM stream ended before it was complete (no [DONE] and no finish_reason); "
                "the answer may be cut short"
            )
            return None
        if result.finish_reason == "length":
            await self.push_error(
                "the answer was cut off by the token limit (finish_reason 'length'); raise "
                "max_completion_tokens or shorten the context"
            )
        elif result.finish_reason == "content_filter":
            await self.push_error(
                "the answer was stopped by the provider's content filter "
                "(finish_reason 'content_filter')"
            )
        return rnd

    async def _stream(self, body: dict[str, Any], rnd: _Round) -> None:
        client = self._client
        if client is None:
            raise LLMRequestError("the LLM client is not open (no StartFrame yet?)")
        cfg = self.handler.config
        decoder = ChatStreamDecoder()
        rnd.result = decoder.result
        self.start_ttfb_metrics()
        # Until the first delta the deadline is first_token_timeout; after it, chunk_timeout
        # of silence between two chunks (time spent emitting under backpressure excluded).
        scope = trio.CancelScope(deadline=trio.current_time() + cfg.first_token_timeout)
        streaming = False
        try:
            with scope:
                async with client.stream(
                    "POST",
                    cfg.chat_completions_url(),
                    json=body,
                    headers=cfg.headers(),
                    params=dict(cfg.extra_query) or None,
                    timeout=self._timeout,
                ) as response:
                    if response.status_code != 200:
                        raw = await response.aread()
                        raise _status_error(response.status_code, raw, response.headers, cfg)
                    chunks = response.aiter_bytes()
                    async for chunk in chunks:
                        deltas = decoder.feed(chunk)
                        if not streaming and (deltas or decoder.result.tool_calls):
                            streaming = True
                            await self.stop_ttfb_metrics()
                        if streaming:
                            scope.deadline = math.inf
                        for delta in deltas:
                            await self._emit_delta(delta, rnd)
                        if streaming:
                            scope.deadline = trio.current_time() + cfg.chunk_timeout
                        if decoder.result.done:
                            # Read the end of the body (the terminating chunk) so that the
                            # keep-alive connection goes back to the pool; bounded, for servers
                            # that keep the stream open after [DONE].
                            with trio.move_on_after(1.0):
                                async for _rest in chunks:
                                    pass
                            break
                    scope.deadline = math.inf  # the stream is over: no stall from here on
                    for delta in decoder.close():
                        await self._emit_delta(delta, rnd)
        except httpx.TimeoutException as exc:  # connect, write or pool: reads have no timeout
            raise LLMRequestError(
                f"connection to {cfg.base_url} timed out ({type(exc).__name__}, "
                f"connect_timeout={cfg.connect_timeout}s)",
                retryable=True,
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise LLMRequestError(
                f"invalid base_url {cfg.base_url!r}: {exc}; it should look like "
                "'https://api.openai.com/v1'"
            ) from exc
        except httpx.TransportError as exc:
            raise LLMRequestError(
                f"connection to {cfg.base_url} failed: {type(exc).__name__}: {exc or 'no detail'}",
                retryable=True,
            ) from exc
        except SSEProtocolError as exc:  # a chunk that is not JSON
            raise LLMRequestError(f"the server sent an invalid stream: {exc}") from exc
        if scope.cancelled_caught and streaming:
            raise LLMRequestError(
                f"no data from the server for {cfg.chunk_timeout}s (chunk_timeout); "
                "the stream stalled",
                retryable=True,
            )
        if scope.cancelled_caught:
            raise LLMRequestError(
                f"no first token within first_token_timeout={cfg.first_token_timeout}s",
                retryable=True,
            )

    async def _emit_delta(self, delta: object, rnd: _Round) -> None:
        frame: Frame
        if isinstance(delta, ContentDelta):
            frame = LLMText(text=delta.text)
        elif isinstance(delta, ReasoningDelta):
            frame = LLMReasoningText(text=delta.text)
        elif isinstance(delta, RefusalDelta):
            frame = LLMRefusalText(text=delta.text)
        else:  # pragma: no cover - the decoder emits only these
            return
        rnd.emitted += 1
        await self.push_frame(frame)

    def _report_usage(
        self,
        rnd: _Round,
        context: LLMContext,
        sent: Sequence[Mapping[str, Any]],
        *,
        interrupted: bool,
    ) -> None:
        usage = _usage_from(rnd.result.usage)
        if usage is not None and usage.prompt_tokens:
            with contextlib.suppress(ValueError):
                context.calibrate_from_usage(usage.prompt_tokens, sent)
        if usage is None and interrupted:
            prompt = context.estimate_tokens(sent)
            usage = LLMTokenUsage(
                prompt_tokens=prompt,
                completion_tokens=rnd.emitted,
                total_tokens=prompt + rnd.emitted,
            )
        if usage is not None:
            self.push_usage_metrics_nowait(
                usage, model=rnd.result.model or self.handler.config.model, interrupted=interrupted
            )

    # ------------------------------------------------------------------ tool rounds

    async def _tool_round(self, context: LLMContext, result: StreamResult, number: int) -> None:
        calls: list[FunctionCallInfo] = []
        seen: set[str] = set()
        for i, accum in enumerate(result.tool_calls):
            call_id = accum.id or f"call_r{number}_{i}"
            while call_id in seen:
                call_id += "_dup"
            seen.add(call_id)
            name = accum.name
            if not name:
                name = "unnamed_function"
                await self.push_error(f"the model sent tool call {call_id} without a function name")
            calls.append(
                FunctionCallInfo(
                    tool_call_id=call_id, function_name=name, arguments=accum.arguments
                )
            )
        staged = context.begin_round()
        try:
            staged.set_assistant(
                result.text or None,
                [
                    {
                        "id": c.tool_call_id,
                        "type": "function",
                        "function": {"name": c.function_name, "arguments": c.arguments or "{}"},
                    }
                    for c in calls
                ],
            )
            await self.push_frame(FunctionCallStart(calls=tuple(calls), round=number))
            results: dict[str, str] = {}
            # Each call reports its InProgress and its Result in the model's call order: call i
            # waits for call i-1's, so frames are ordered while the calls run concurrently.
            started = [trio.Event() for _ in calls]
            reported = [trio.Event() for _ in calls]
            async with trio.open_nursery() as nursery:
                for i, call in enumerate(calls):
                    nursery.start_soon(
                        self._run_call,
                        call,
                        context,
                        results,
                        (started[i - 1], reported[i - 1]) if i else None,
                        (started[i], reported[i]),
                    )
            for call in calls:
                staged.add_tool_result(call.tool_call_id, results[call.tool_call_id])
            staged.commit()
        except BaseException:
            if staged.is_open:
                staged.rollback()
            raise
        await self.push_frame(FunctionCallEnd(round=number))

    async def _run_call(
        self,
        call: FunctionCallInfo,
        context: LLMContext,
        results: dict[str, str],
        previous: tuple[trio.Event, trio.Event] | None,
        own: tuple[trio.Event, trio.Event],
    ) -> None:
        """Runs one call and emits its frames, in order. Always leaves a result."""
        if previous is not None:
            await previous[0].wait()
        await self.push_frame(
            FunctionCallInProgress(
                tool_call_id=call.tool_call_id,
                function_name=call.function_name,
                arguments=call.arguments,
            )
        )
        own[0].set()
        output = await self._call_function(call, context)
        if previous is not None:
            await previous[1].wait()
        if output.raw is not None:
            await self.push_frame(
                FunctionCallRawResult(
                    tool_call_id=call.tool_call_id, function_name=call.function_name, raw=output.raw
                )
            )
        results[call.tool_call_id] = output.summary
        await self.push_frame(
            FunctionCallResult(
                tool_call_id=call.tool_call_id,
                function_name=call.function_name,
                result=output.summary,
            )
        )
        own[1].set()

    async def _call_function(self, call: FunctionCallInfo, context: LLMContext) -> ToolCallOutput:
        name = call.function_name
        entry = self.handler.registry.get(name)
        if entry is None:
            known = ", ".join(self.handler.registry.names()) or "none"
            return ToolCallOutput(
                f"Error: there is no function named {name!r}. Available functions: {known}."
            )
        raw_args = call.arguments.strip()
        try:
            parsed = json.loads(raw_args) if raw_args else {}
        except json.JSONDecodeError as exc:
            return ToolCallOutput(
                f"Error: the arguments for {name!r} are not valid JSON ({exc.msg} at position "
                f"{exc.pos}). Call the function again with a JSON object."
            )
        if not isinstance(parsed, dict):
            return ToolCallOutput(
                f"Error: the arguments for {name!r} must be a JSON object, "
                f"not {type(parsed).__name__}."
            )
        limit = entry.timeout or self.handler.config.tool_timeout
        params = FunctionCallParams(
            function_name=name,
            tool_call_id=call.tool_call_id,
            arguments=parsed,
            raw_arguments=raw_args or "{}",
            context=context,
            push_frame=self.push_frame,
        )
        with trio.move_on_after(limit) as scope:
            try:
                await self._ensure_tool_started(name)
                return await entry.call(params)
            except Exception as exc:
                await self.push_error(
                    f"function {name!r} (call {call.tool_call_id}) failed: "
                    f"{type(exc).__name__}: {exc}",
                    exception=exc,
                )
                return ToolCallOutput(
                    f"Error: the function {name!r} failed. The failure was reported; "
                    "do not retry the same call."
                )
        assert scope.cancelled_caught
        await self.push_error(
            f"function {name!r} (call {call.tool_call_id}) timed out after {limit:g}s"
        )
        return ToolCallOutput(f"Error: the function {name!r} timed out after {limit:g} seconds.")
