"""Function calling end to end: the registry, built-in tools, tool rounds, re-invocation, the
transition hook, failures, interruptions. Every test talks real HTTP to the scripted
OpenAI-compatible server on loopback.

Clocks: these tests run under pytest-trio's ``autojump_clock`` (the hypothesis test under its
own ``MockClock(autojump_threshold=0)``). The in-process scripted server sleeps with
``trio.sleep`` in the same run, so scripted delays, handler sleeps and tool timeouts all pass in
virtual time, and HTTP over loopback takes no virtual time at all (on Linux the bytes are
readable as soon as ``send`` returns, so the clock never jumps past them). That is what lets a
test assert that two 1 s handlers finish in 1.0 s, not "less than 2 s". None of the scripted
replies stalls, so httpx's own timeouts never fire under the jumping clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
    FunctionCallInProgress,
    FunctionCallRawResult,
    FunctionCallResult,
    FunctionCallStart,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    TextFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm.function_registry import (
    FunctionCallParams,
    FunctionRegistry,
    RegistryWarning,
    ToolCallOutput,
)
from rustvani_trio.services.llm.openai import (
    AfterRound,
    OpenAILLMConfig,
    OpenAILLMHandler,
    OpenAILLMProcessor,
    RetryPolicy,
)
from rustvani_trio.task import PipelineParams, PipelineTask
from rustvani_trio.testing import (
    ErrorReply,
    RawReply,
    RecordedRequest,
    Reply,
    RunResult,
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
    run_test,
)
from rustvani_trio.tools.base import BuiltinTool

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "openai-sse"

CALL_FRAMES = (FunctionCallInProgress, FunctionCallRawResult, FunctionCallResult)

WEATHER = FunctionSchema(
    name="get_weather",
    description="The current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with open_scripted_server() as srv:
        yield srv


def make_config(server: ScriptedServer, **overrides: Any) -> OpenAILLMConfig:
    """A config for the scripted server; no retries (a failed request must show)."""
    values: dict[str, Any] = {
        "api_key": "sk-test",
        "model": "gpt-test",  # not in the context-window table: no trimming
        "base_url": server.base_url,
        "retry": RetryPolicy(max_attempts=1),
    }
    values.update(overrides)
    return OpenAILLMConfig(**values)


def user_context(text: str = "What's the weather in Paris and in Rome?", **kw: Any) -> LLMContext:
    return LLMContext(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}],
        **kw,
    )


async def one_turn(
    processor: FrameProcessor | Sequence[FrameProcessor], context: LLMContext, **kw: Any
) -> RunResult:
    """One LLMContextFrame, then an EndFrame (it flows behind the turn, so the turn ends)."""
    return await run_test(processor, [LLMContextFrame(context=context)], **kw)


def kinds(frames: Sequence[Frame], only: tuple[type[Frame], ...] | None = None) -> list[str]:
    return [type(f).__name__ for f in frames if only is None or isinstance(f, only)]


def per_call(frames: Sequence[Frame]) -> dict[str, list[str]]:
    """For each tool_call_id, the kinds of its frames in arrival order."""
    out: dict[str, list[str]] = {}
    for f in frames:
        if isinstance(f, CALL_FRAMES):
            out.setdefault(f.tool_call_id, []).append(type(f).__name__)
    return out


def text_of(frames: Sequence[Frame]) -> str:
    return "".join(f.text for f in frames if isinstance(f, LLMText))


def errors(result: RunResult) -> list[str]:
    return [f.error for f in result.upstream_of(ErrorFrame)]


def assert_context_sound(context: LLMContext) -> None:
    """``validate()`` passes and every tool call is answered by exactly one tool message."""
    context.validate()
    assert context.open_round is None
    messages = context.messages
    call_ids = [
        c["id"] for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])
    ]
    answers = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert len(call_ids) == len(set(call_ids)), call_ids
    assert sorted(answers) == sorted(call_ids)


def tool_round_messages(request: RecordedRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The last assistant tool_calls message of a request and the tool messages after it."""
    messages = request.messages
    index = max(
        i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls")
    )
    tools = []
    for m in messages[index + 1 :]:
        if m["role"] != "tool":
            break
        tools.append(m)
    return messages[index], tools


def tool_names(request: RecordedRequest) -> list[str]:
    return [t["function"]["name"] for t in request.json.get("tools", [])]


def call(
    name: str, arguments: str | dict[str, Any] = "{}", id: str | None = None
) -> ScriptedToolCall:
    return ScriptedToolCall(name, arguments, id)


@attrs.define
class Log:
    """Timestamped events recorded by handlers and tools."""

    events: list[tuple[float, str]] = attrs.Factory(list)

    def add(self, what: str) -> None:
        self.events.append((trio.current_time(), what))

    def names(self) -> list[str]:
        return [what for _, what in self.events]

    def at(self, what: str) -> float:
        (t,) = [t for t, w in self.events if w == what]
        return t


def sleeper(log: Log, label: str, seconds: float, result: str | None = None) -> Callable[..., Any]:
    """A simple handler that logs its start and end (or its cancellation) and sleeps."""

    async def handler(args: str) -> str:
        log.add(f"{label} start")
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            log.add(f"{label} cancelled")
            raise
        finally:
            log.add(f"{label} finally")
        log.add(f"{label} end")
        return result if result is not None else f"{label} done"

    return handler


# --------------------------------------------------------------------------- 1. registry


async def test_with_registry_usage_from_the_issue(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[str] = []

    async def get_weather(args: str) -> str:
        seen.append(args)
        await trio.sleep(0.1)
        return "18C and sunny"

    registry = FunctionRegistry()
    registry.register("get_weather", get_weather)
    config = make_config(server)
    llm = OpenAILLMHandler.with_registry(config, registry).into_processor()
    assert isinstance(llm, OpenAILLMProcessor)
    assert llm.handler.registry is registry

    server.add_reply(ToolCallReply([call("get_weather", {"city": "Paris"}, "call_w")]))
    server.add_reply(TextReply(["It is ", "18C ", "and sunny."]))
    context = user_context("Weather in Paris?", tools=[WEATHER])
    result = await one_turn(llm, context)

    assert seen == ['{"city": "Paris"}']
    assert len(server.requests) == 2
    assert text_of(result.downstream) == "It is 18C and sunny."
    assistant, tools = tool_round_messages(server.requests[1])
    assert assistant["tool_calls"][0]["id"] == "call_w"
    assert tools == [{"role": "tool", "tool_call_id": "call_w", "content": "18C and sunny"}]
    assert errors(result) == []
    assert_context_sound(context)
    # The context now holds the round and the tools it was given.
    assert [m["role"] for m in context.messages] == ["system", "user", "assistant", "tool"]


async def test_rich_handler_gets_parsed_args_call_id_context_and_push_frame(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    got: list[FunctionCallParams] = []

    @registry.function(rich=True)
    async def lookup_order(p: FunctionCallParams) -> str:
        got.append(p)
        await p.push_frame(
            TextFrame(text=f"looking up {p.arguments['order_id']}"), FrameDirection.DOWNSTREAM
        )
        await trio.sleep(0.2)
        return f"order {p.arguments['order_id']} shipped"

    server.add_reply(ToolCallReply([call("lookup_order", {"order_id": 42, "verbose": True}, "c1")]))
    server.add_reply(TextReply(["Shipped."]))
    context = user_context("Where is my order 42?")
    llm = OpenAILLMHandler.with_registry(make_config(server), registry).into_processor()
    result = await one_turn(llm, context)

    (p,) = got
    assert p.function_name == "lookup_order"
    assert p.tool_call_id == "c1"
    assert p.arguments == {"order_id": 42, "verbose": True}
    assert json.loads(p.raw_arguments) == {"order_id": 42, "verbose": True}
    assert p.context is context  # the live context of the turn
    # The handler's own frame went downstream between the call's InProgress and Result.
    sequence = [
        type(f).__name__ if type(f) is not TextFrame else f"TextFrame:{f.text}"
        for f in result.downstream
        if isinstance(f, (TextFrame, *CALL_FRAMES)) and not isinstance(f, LLMText)
    ]
    assert sequence == [
        "FunctionCallInProgress",
        "TextFrame:looking up 42",
        "FunctionCallResult",
    ]
    _, tools = tool_round_messages(server.requests[1])
    assert tools[0]["content"] == "order 42 shipped"
    assert_context_sound(context)


async def test_sync_handlers_work(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("add", lambda args: str(sum(json.loads(args)["xs"])))

    def rich_sync(p: FunctionCallParams) -> ToolCallOutput:
        return ToolCallOutput(f"hello {p.arguments['name']}", raw={"greeted": p.arguments["name"]})

    registry.register("greet", rich_sync, rich=True)
    server.add_reply(
        ToolCallReply([call("add", {"xs": [1, 2, 3]}, "a"), call("greet", {"name": "Ada"}, "g")])
    )
    server.add_reply(TextReply(["ok"]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    _, tools = tool_round_messages(server.requests[1])
    assert [(t["tool_call_id"], t["content"]) for t in tools] == [("a", "6"), ("g", "hello Ada")]
    (raw,) = result.downstream_of(FunctionCallRawResult)
    assert raw.raw == {"greeted": "Ada"}
    assert errors(result) == []


async def test_a_bad_return_type_is_reported_and_the_model_told(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()

    async def returns_dict(args: str) -> Any:
        await trio.lowlevel.checkpoint()
        return {"temp": 18}

    registry.register("get_weather", returns_dict)
    server.add_reply(ToolCallReply([call("get_weather", {"city": "Paris"}, "c1")]))
    server.add_reply(TextReply(["Sorry."]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )

    (error,) = errors(result)
    assert "'get_weather'" in error and "dict" in error and "str or ToolCallOutput" in error
    (res,) = result.downstream_of(FunctionCallResult)
    assert res.result.startswith("Error:") and "get_weather" in res.result
    assert text_of(result.downstream) == "Sorry."
    assert_context_sound(context)


async def test_replacing_a_registration_takes_effect_and_warns(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda args: "old")
    with pytest.warns(RegistryWarning):
        registry.register("f", lambda args: "new")
    server.add_reply(ToolCallReply([call("f", "{}", "c1")]))
    server.add_reply(TextReply(["ok"]))
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(),
        user_context(),
    )
    assert [r.result for r in result.downstream_of(FunctionCallResult)] == ["new"]


class OrdersTool(BuiltinTool):
    """A small built-in tool with two functions and recorded lifecycle."""

    name = "orders"

    def __init__(self, log: Log | None = None) -> None:
        self.log = log or Log()

    def tool_schemas(self) -> Sequence[FunctionSchema]:
        return [
            FunctionSchema(name="lookup_order", description="Find an order by id."),
            FunctionSchema(name="cancel_order", description="Cancel an order by id."),
        ]

    def register_all(self, registry: FunctionRegistry) -> None:
        registry.register("lookup_order", self.lookup, rich=True)
        registry.register("cancel_order", self.cancel, rich=True)

    async def lookup(self, p: FunctionCallParams) -> ToolCallOutput:
        self.log.add(f"lookup {p.arguments.get('id')}")
        await trio.sleep(0.1)
        return ToolCallOutput(
            f"order {p.arguments.get('id')}: shipped", raw={"id": p.arguments.get("id")}
        )

    async def cancel(self, p: FunctionCallParams) -> str:
        await trio.sleep(0.1)
        return "cancelled"

    async def on_start(self) -> None:
        self.log.add("start")

    async def on_stop(self) -> None:
        self.log.add("stop")


async def test_add_tool_registers_handlers_and_offers_schemas_without_touching_the_context(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    tool = OrdersTool()
    handler = OpenAILLMHandler(make_config(server))
    assert handler.add_tool(tool) is handler
    assert handler.registry.names() == ["lookup_order", "cancel_order"]
    with pytest.raises(ValueError, match="already added"):
        handler.add_tool(OrdersTool())

    server.add_reply(ToolCallReply([call("lookup_order", {"id": 7}, "c1")]))
    server.add_reply(TextReply(["Order 7 shipped."]))
    context = user_context("Where is order 7?", tools=[WEATHER])
    result = await one_turn(handler.into_processor(), context)

    for request in server.requests:
        # The context's tools first, then the tool's schemas, each once.
        assert tool_names(request) == ["get_weather", "lookup_order", "cancel_order"]
        lookup = request.json["tools"][1]
        assert lookup == {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order by id.",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    assert context.tool_names() == ["get_weather"]  # not copied into the context
    assert tool.log.names() == ["start", "lookup 7", "stop"]
    assert text_of(result.downstream) == "Order 7 shipped."
    assert_context_sound(context)


def test_the_handler_has_one_way_to_set_each_thing() -> None:
    config = OpenAILLMConfig(api_key="k")
    registry = FunctionRegistry()
    # The registry comes from with_registry (or is the handler's own empty one) ...
    with pytest.raises(TypeError):
        OpenAILLMHandler(config, registry)  # type: ignore[misc]
    with pytest.raises(TypeError, match="FunctionRegistry"):
        OpenAILLMHandler.with_registry(config, {"f": print})  # type: ignore[arg-type]
    handler = OpenAILLMHandler.with_registry(config, registry)
    assert handler.registry is registry
    assert isinstance(OpenAILLMHandler(config).registry, FunctionRegistry)
    # ... and is not replaced afterwards; tools and the hook have their one method each.
    with pytest.raises(AttributeError):
        handler.registry = FunctionRegistry()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        handler.transition_hook = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        handler.tools.append(OrdersTool())  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="BuiltinTool"):
        handler.add_tool("OrdersTool")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        handler.set_transition_hook("next_node")  # type: ignore[arg-type]
    tool = OrdersTool()
    processor = handler.into_processor()
    # The processor offers the same two methods, delegating to its handler.
    assert processor.add_tool(tool) is processor
    assert handler.tools == (tool,)

    def hook(_context: LLMContext) -> None:
        return None

    assert processor.set_transition_hook(hook) is processor
    assert handler.transition_hook is hook
    assert processor.set_transition_hook(None) is processor
    assert handler.transition_hook is None
    with pytest.raises(TypeError, match="OpenAILLMHandler"):
        OpenAILLMProcessor(config)  # type: ignore[arg-type]


def test_builtin_tool_is_importable_from_the_tools_package() -> None:
    import rustvani_trio.tools as tools_package

    assert tools_package.BuiltinTool is BuiltinTool
    assert tools_package.__file__ is not None  # a regular package, not a namespace package


def test_the_processor_is_named_like_every_other_processor() -> None:
    handler = OpenAILLMHandler(OpenAILLMConfig(api_key="k"))
    first, second = handler.into_processor(), handler.into_processor()
    for processor in (first, second):
        prefix, _, number = processor.name.partition("#")
        assert prefix == "OpenAILLMProcessor" and number.isdigit(), processor.name
    assert first.name != second.name
    assert handler.into_processor(name="llm").name == "llm"


async def test_registry_schemas_are_offered_and_context_tools_win_by_name(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("get_time", lambda a: "noon", schema=FunctionSchema(name="get_time"))
    other_weather = FunctionSchema(name="get_weather", description="registry's copy")
    registry.register("get_weather", lambda a: "sunny", schema=other_weather)
    server.add_reply(TextReply(["hi"]))
    context = user_context(tools=[WEATHER])
    await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    (request,) = server.requests
    assert tool_names(request) == ["get_weather", "get_time"]
    assert request.json["tools"][0]["function"]["description"] == WEATHER.description
    assert context.tool_names() == ["get_weather"]


async def test_no_tools_means_no_tools_field(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda a: "x")  # no schema: not offered
    server.add_reply(TextReply(["hi"]))
    await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(),
        user_context(),
    )
    assert "tools" not in server.requests[0].json
    assert "tool_choice" not in server.requests[0].json


# --------------------------------------------------------------------------- 2. parallel calls


async def test_parallel_calls_run_concurrently_and_commit_in_call_order(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    # The first call is the slower one: it finishes second.
    registry.register("slow", sleeper(log, "slow", 1.0, "slow result"))
    registry.register("fast", sleeper(log, "fast", 0.5, "fast result"))
    server.add_reply(
        ToolCallReply(
            [
                call("slow", {"city": "Paris"}, "call_slow"),
                call("fast", {"city": "Rome"}, "call_fast"),
            ],
            text_tokens=["Let me ", "check both."],
        )
    )
    server.add_reply(TextReply(["Paris and Rome: fine."]))
    context = user_context()
    t0 = trio.current_time()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    elapsed = trio.current_time() - t0

    # Both started at once; the whole turn took the longest call, not the sum.
    assert log.at("slow start") == log.at("fast start") == t0
    assert log.at("fast end") - t0 == pytest.approx(0.5)
    assert log.at("slow end") - t0 == pytest.approx(1.0)
    assert elapsed == pytest.approx(1.0, abs=0.05)

    # Frames of each call go out from the call's own task, but reported in the model's call
    # order: the fast call's Result waits for the slow one's. The context (and the next
    # request) follow the model's call order too.
    assert [(f.tool_call_id, f.result) for f in result.downstream_of(FunctionCallResult)] == [
        ("call_slow", "slow result"),
        ("call_fast", "fast result"),
    ]
    assert [f.tool_call_id for f in result.downstream_of(FunctionCallInProgress)] == [
        "call_slow",
        "call_fast",
    ]
    (start,) = result.downstream_of(FunctionCallStart)
    assert [c.tool_call_id for c in start.calls] == ["call_slow", "call_fast"]

    second = server.requests[1]
    assistant, tools = tool_round_messages(second)
    assert assistant["content"] == "Let me check both."  # text streamed before the calls kept
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_slow", "call_fast"]
    assert [c["function"] for c in assistant["tool_calls"]] == [
        {"name": "slow", "arguments": '{"city": "Paris"}'},
        {"name": "fast", "arguments": '{"city": "Rome"}'},
    ]
    assert all(c["type"] == "function" for c in assistant["tool_calls"])
    assert [(t["tool_call_id"], t["content"]) for t in tools] == [
        ("call_slow", "slow result"),
        ("call_fast", "fast result"),
    ]
    # The tool messages are the last messages of the re-invocation.
    assert second.messages[-2:] == tools
    assert second.messages[:2] == server.requests[0].messages
    assert text_of(result.downstream) == "Let me check both.Paris and Rome: fine."
    assert_context_sound(context)
    assert context.messages[2:] == second.messages[2:]


async def test_three_parallel_calls_with_equal_durations(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    registry.register("wait", sleeper(log, "w", 1.0))
    server.add_reply(ToolCallReply([call("wait", {"i": i}, f"c{i}") for i in range(3)]))
    server.add_reply(TextReply(["done"]))
    t0 = trio.current_time()
    context = user_context()
    await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    assert trio.current_time() - t0 == pytest.approx(1.0, abs=0.05)
    _, tools = tool_round_messages(server.requests[1])
    assert [t["tool_call_id"] for t in tools] == ["c0", "c1", "c2"]
    assert_context_sound(context)


# --------------------------------------------------------------------------- 3. frames per call


async def test_frames_of_each_call_in_order_and_raw_never_reaches_the_model(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    secret_rows = [{"ssn": "RAW-ONLY-123-45-6789"}]
    registry = FunctionRegistry()

    async def with_raw(args: str) -> ToolCallOutput:
        await trio.sleep(0.3)
        return ToolCallOutput("1 row", raw=secret_rows)

    async def plain(args: str) -> str:
        await trio.sleep(0.1)
        return "plain result"

    registry.register("query", with_raw)
    registry.register("plain", plain)
    server.add_reply(ToolCallReply([call("query", "{}", "q"), call("plain", "{}", "p")]))
    server.add_reply(TextReply(["Done."]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )

    turn = kinds(
        result.downstream,
        (
            LLMFullResponseStart,
            FunctionCallStart,
            *CALL_FRAMES,
            FunctionCallEnd,
            LLMFullResponseEnd,
        ),
    )
    assert turn[0] == "LLMFullResponseStart"
    assert turn[1] == "FunctionCallStart"
    assert turn[-2:] == ["FunctionCallEnd", "LLMFullResponseEnd"]
    assert per_call(result.downstream) == {
        "q": ["FunctionCallInProgress", "FunctionCallRawResult", "FunctionCallResult"],
        "p": ["FunctionCallInProgress", "FunctionCallResult"],
    }
    (raw,) = result.downstream_of(FunctionCallRawResult)
    assert raw.raw is secret_rows and raw.function_name == "query" and raw.tool_call_id == "q"
    (start,) = result.downstream_of(FunctionCallStart)
    (end,) = result.downstream_of(FunctionCallEnd)
    assert start.round == end.round == 1
    for f in result.downstream_of(FunctionCallInProgress):
        assert f.arguments == "{}"
    # The raw data is in no request body, and not in the context.
    for request in server.requests:
        assert b"RAW-ONLY" not in request.body
    assert "RAW-ONLY" not in json.dumps(context.messages)
    _, tools = tool_round_messages(server.requests[1])
    assert [t["content"] for t in tools] == ["1 row", "plain result"]


async def test_two_rounds_number_their_frames(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")
    server.add_replies(
        [
            ToolCallReply([call("f", "{}", "a")]),
            ToolCallReply([call("f", "{}", "b"), call("f", "{}", "c")]),
            TextReply(["done"]),
        ]
    )
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    assert [f.round for f in result.downstream_of(FunctionCallStart)] == [1, 2]
    assert [f.round for f in result.downstream_of(FunctionCallEnd)] == [1, 2]
    assert kinds(result.downstream, (LLMFullResponseStart, LLMFullResponseEnd)) == [
        "LLMFullResponseStart",
        "LLMFullResponseEnd",
    ]
    assert len(server.requests) == 3
    # The third request carries both rounds.
    roles = [m["role"] for m in server.requests[2].messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "tool"]
    assert_context_sound(context)


# --------------------------------------------------------------------------- 4. fixture corpus


def _tool_fixtures() -> list[Any]:
    expected_path = FIXTURES / "expected.json"
    if not expected_path.is_file():
        return [
            pytest.param(
                None,
                None,
                marks=pytest.mark.skip(reason=f"fixture corpus not found at {FIXTURES}"),
                id="no-corpus",
            )
        ]
    expected = json.loads(expected_path.read_text())
    return [
        pytest.param(name, case, id=name.removesuffix(".sse"))
        for name, case in sorted(expected.items())
        if case.get("tool_calls")
    ]


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "7-byte-chunks"])
@pytest.mark.parametrize(("fixture", "expected"), _tool_fixtures())
async def test_fixture_tool_call_streams_run_their_calls_and_reinvoke(
    server: ScriptedServer,
    autojump_clock: trio.testing.MockClock,
    fixture: str,
    expected: dict[str, Any],
    chunked: bool,
) -> None:
    body = (FIXTURES / fixture).read_bytes()
    calls = expected["tool_calls"]
    executed: list[tuple[str, str, str]] = []
    registry = FunctionRegistry()

    async def record(p: FunctionCallParams) -> str:
        executed.append((p.function_name, p.tool_call_id, p.raw_arguments))
        await trio.sleep(0.05)
        return f"result of {p.tool_call_id}"

    for name in {c["name"] for c in calls}:
        registry.register(name, record, rich=True)
    sizes = [7] * (len(body) // 7) if chunked else None
    server.add_reply(RawReply(body, chunk_sizes=sizes))
    server.add_reply(TextReply(["All done."]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )

    (start,) = result.downstream_of(FunctionCallStart)
    assert [(c.function_name, c.arguments, c.tool_call_id) for c in start.calls] == [
        (c["name"], c["arguments"], c["id"]) for c in calls
    ]
    assert sorted(executed) == sorted((c["name"], c["id"], c["arguments"]) for c in calls)
    assert len(server.requests) == 2
    assistant, tools = tool_round_messages(server.requests[1])
    assert assistant["content"] == (expected["text"] or None)
    assert [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in assistant["tool_calls"]
    ] == [(c["id"], c["name"], c["arguments"]) for c in calls]
    assert [(t["tool_call_id"], t["content"]) for t in tools] == [
        (c["id"], f"result of {c['id']}") for c in calls
    ]
    assert text_of(result.downstream) == expected["text"] + "All done."
    assert errors(result) == []
    assert_context_sound(context)


def sse(*chunks: dict[str, Any]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def test_missing_call_ids_are_generated_unique_and_consistent(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    body = sse(
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"n": 1}'},
                    }
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"n": 2}'},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
    )
    registry = FunctionRegistry()
    ids: list[str] = []

    async def f(p: FunctionCallParams) -> str:
        ids.append(p.tool_call_id)
        await trio.lowlevel.checkpoint()
        return f"n={p.arguments['n']}"

    registry.register("f", f, rich=True)
    server.add_reply(RawReply(body))
    server.add_reply(TextReply(["ok"]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )

    (start,) = result.downstream_of(FunctionCallStart)
    generated = [c.tool_call_id for c in start.calls]
    assert all(generated) and len(set(generated)) == 2
    assert sorted(ids) == sorted(generated)
    assistant, tools = tool_round_messages(server.requests[1])
    assert [c["id"] for c in assistant["tool_calls"]] == generated
    assert [(t["tool_call_id"], t["content"]) for t in tools] == [
        (generated[0], "n=1"),
        (generated[1], "n=2"),
    ]
    assert_context_sound(context)


async def test_a_repeated_call_id_is_made_unique(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    body = sse(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "same",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "same",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
    )
    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")
    server.add_reply(RawReply(body))
    server.add_reply(TextReply(["ok"]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    (start,) = result.downstream_of(FunctionCallStart)
    ids = [c.tool_call_id for c in start.calls]
    assert len(ids) == 2 and len(set(ids)) == 2 and ids[0] == "same"
    assert len(result.downstream_of(FunctionCallResult)) == 2
    assert_context_sound(context)


# --------------------------------------------------------------------------- 5. failures


async def test_each_failure_kind_yields_a_short_readable_result_and_the_loop_goes_on(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    log = Log()
    args_seen: dict[str, Any] = {}

    async def fine(p: FunctionCallParams) -> str:
        args_seen[p.tool_call_id] = (p.arguments, p.raw_arguments)
        await trio.sleep(0.1)
        return "fine"

    async def explodes(args: str) -> str:
        await trio.sleep(0.2)
        raise RuntimeError("password=hunter2 connection refused at 10.0.0.7")

    registry.register("fine", fine, rich=True)
    registry.register("explodes", explodes)
    registry.register("slow_override", sleeper(log, "override", 100.0), timeout=0.5)
    registry.register("slow_default", sleeper(log, "default", 100.0))
    server.add_reply(
        ToolCallReply(
            [
                call("no_such_function", "{}", "unknown"),
                call("fine", '{"city": "Par', "badjson"),
                call("fine", "", "empty"),
                call("fine", "[1, 2]", "notobject"),
                call("explodes", "{}", "raises"),
                call("slow_override", "{}", "t_override"),
                call("slow_default", "{}", "t_default"),
            ]
        )
    )
    server.add_reply(TextReply(["Some tools failed."]))
    context = user_context()
    t0 = trio.current_time()
    result = await one_turn(
        OpenAILLMHandler.with_registry(
            make_config(server, tool_timeout=2.0), registry
        ).into_processor(),
        context,
    )

    # Timeouts: the per-function override (0.5 s) and the config's tool_timeout (2 s).
    assert log.at("override cancelled") - t0 == pytest.approx(0.5)
    assert log.at("default cancelled") - t0 == pytest.approx(2.0)
    assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.05)
    assert "override end" not in log.names() and "default end" not in log.names()

    results = {f.tool_call_id: f.result for f in result.downstream_of(FunctionCallResult)}
    assert set(results) == {
        "unknown",
        "badjson",
        "empty",
        "notobject",
        "raises",
        "t_override",
        "t_default",
    }
    for call_id, text in results.items():
        if call_id != "empty":
            assert text.startswith("Error"), (call_id, text)
        assert len(text) < 300, (call_id, text)
        assert "\n" not in text and "Traceback" not in text
    assert "no_such_function" in results["unknown"]
    assert "fine" in results["unknown"]  # the available functions are named
    assert "JSON" in results["badjson"]
    assert results["empty"] == "fine"  # empty arguments mean {}
    assert args_seen["empty"] == ({}, "{}")
    assert "object" in results["notobject"]
    assert "explodes" in results["raises"] and "hunter2" not in results["raises"]
    assert "timed out" in results["t_override"] and "0.5" in results["t_override"]
    assert "timed out" in results["t_default"] and "2" in results["t_default"]
    assert "badjson" not in args_seen and "notobject" not in args_seen  # handler never called

    # The exception is reported upstream (with its text), never told to the model.
    raised = [f for f in result.upstream_of(ErrorFrame) if "explodes" in f.error]
    assert len(raised) == 1
    assert "hunter2" in raised[0].error and isinstance(raised[0].exception, RuntimeError)
    assert not raised[0].fatal
    assert any("timed out" in e for e in errors(result))
    for request in server.requests:
        assert b"hunter2" not in request.body
    assert "hunter2" not in json.dumps(context.messages)

    # The loop went on: the model was asked again with every result, and answered.
    assert len(server.requests) == 2
    assistant, tools = tool_round_messages(server.requests[1])
    assert [t["tool_call_id"] for t in tools] == [c["id"] for c in assistant["tool_calls"]]
    assert [t["content"] for t in tools] == [results[t["tool_call_id"]] for t in tools]
    # Empty arguments are sent back to the model as "{}", a valid JSON object.
    empty = next(c for c in assistant["tool_calls"] if c["id"] == "empty")
    assert empty["function"]["arguments"] == "{}"
    assert text_of(result.downstream) == "Some tools failed."
    assert kinds(result.downstream, (LLMFullResponseEnd,)) == ["LLMFullResponseEnd"]
    assert_context_sound(context)


@pytest.mark.parametrize("kind", ["unknown", "badjson", "raises", "timeout"])
async def test_a_single_failing_call_still_leaves_a_valid_context(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    registry = FunctionRegistry()

    async def handler(args: str) -> str:
        if kind == "raises":
            raise ValueError("boom")
        await trio.sleep(10)
        return "never"

    registry.register("h", handler, timeout=1.0)
    name = "other" if kind == "unknown" else "h"
    args = "{not json" if kind == "badjson" else "{}"
    server.add_reply(ToolCallReply([call(name, args, "c1")]))
    server.add_reply(TextReply(["answer"]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    (res,) = result.downstream_of(FunctionCallResult)
    assert res.result.startswith("Error")
    assert per_call(result.downstream) == {"c1": ["FunctionCallInProgress", "FunctionCallResult"]}
    assert text_of(result.downstream) == "answer"
    assert_context_sound(context)


# --------------------------------------------------------------------------- 6. max_tool_rounds


def insistent_model(final: Reply) -> Callable[[RecordedRequest], Reply]:
    """A model that asks for a tool whenever it may; with tool_choice 'none' it plays ``final``."""
    counter = iter(range(1, 1000))

    def reply(request: RecordedRequest) -> Reply:
        if request.json.get("tool_choice") == "none":
            return final
        n = next(counter)
        return ToolCallReply([call("get_weather", {"city": f"city{n}"}, f"call_{n}")])

    return reply


async def test_max_tool_rounds_ends_with_a_final_answer_without_tools(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    server.default_reply = insistent_model(TextReply(["Final ", "answer."]))
    registry = FunctionRegistry()
    registry.register("get_weather", lambda a: "sunny")
    context = user_context(tools=[WEATHER])
    result = await one_turn(
        OpenAILLMHandler.with_registry(
            make_config(server, max_tool_rounds=3), registry
        ).into_processor(),
        context,
    )

    assert len(server.requests) == 4  # three tool rounds, then the last request
    for request in server.requests[:3]:
        assert "tool_choice" not in request.json
    last = server.requests[-1].json
    assert last["tool_choice"] == "none"
    assert [t["function"]["name"] for t in last["tools"]] == ["get_weather"]
    assert len(result.downstream_of(FunctionCallStart)) == 3
    assert text_of(result.downstream) == "Final answer."
    assert kinds(result.downstream)[-2:] == ["LLMFullResponseEnd", "EndFrame"]
    assert any("max_tool_rounds=3" in e for e in errors(result))
    # The last request carries the three committed rounds.
    assert [m["role"] for m in server.requests[-1].messages].count("tool") == 3
    assert_context_sound(context)


async def test_max_tool_rounds_when_the_model_ignores_tool_choice_none(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # A model that keeps calling tools even when told not to: the calls are not run, not
    # staged, and the turn still ends.
    server.default_reply = insistent_model(
        ToolCallReply([call("get_weather", "{}", "ignored")], text_tokens=["Hmm."])
    )
    ran: list[str] = []
    registry = FunctionRegistry()

    async def get_weather(p: FunctionCallParams) -> str:
        ran.append(p.tool_call_id)
        await trio.lowlevel.checkpoint()
        return "sunny"

    registry.register("get_weather", get_weather, rich=True)
    context = user_context(tools=[WEATHER])
    result = await one_turn(
        OpenAILLMHandler.with_registry(
            make_config(server, max_tool_rounds=1), registry
        ).into_processor(),
        context,
    )
    assert len(server.requests) == 2
    assert server.requests[1].json["tool_choice"] == "none"
    assert ran == ["call_1"]
    assert any("still asked for tools" in e for e in errors(result))
    assert "ignored" not in json.dumps(context.messages)
    assert kinds(result.downstream)[-2:] == ["LLMFullResponseEnd", "EndFrame"]
    assert_context_sound(context)


async def test_context_tool_choice_is_sent_until_the_last_request_forces_none(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    server.default_reply = insistent_model(TextReply(["done"]))
    registry = FunctionRegistry()
    registry.register("get_weather", lambda a: "sunny")
    context = user_context(tools=[WEATHER], tool_choice="required")
    await one_turn(
        OpenAILLMHandler.with_registry(
            make_config(server, max_tool_rounds=2), registry
        ).into_processor(),
        context,
    )
    assert [r.json.get("tool_choice") for r in server.requests] == ["required", "required", "none"]
    assert context.tool_choice == "required"  # the forced "none" does not stick


# --------------------------------------------------------------------------- 7. transition hook


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_transition_hook_changes_reach_the_next_request(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock, flavour: str
) -> None:
    registry = FunctionRegistry()
    registry.register("start_checkout", lambda a: "checkout started")
    calls_seen: list[tuple[int, list[str], int]] = []

    def pay(args: str) -> str:
        return "paid"

    pay_schema = FunctionSchema(name="pay", description="Pay for the cart.")

    def change(context: LLMContext) -> None:
        # What the hook sees: the committed round, and no new request yet.
        roles = [m["role"] for m in context.messages]
        calls_seen.append((len(server.requests), roles, len(context.messages)))
        if len(calls_seen) == 1:
            context.system_prompt = "You are now in the checkout stage."
            context.set_tools([pay_schema])
            context.set_tool_choice({"type": "function", "function": {"name": "pay"}})
            registry.unregister("start_checkout")
            registry.register("pay", pay)
        else:
            context.system_prompt = "Checkout done."
            context.set_tools(None)
            context.set_tool_choice(None)

    if flavour == "sync":
        hook: Any = change
    else:

        async def hook(context: LLMContext) -> None:
            await trio.sleep(0.25)
            change(context)

    server.add_replies(
        [
            ToolCallReply([call("start_checkout", "{}", "c1")]),
            ToolCallReply([call("pay", "{}", "c2")]),
            TextReply(["Paid, thanks."]),
        ]
    )
    handler = OpenAILLMHandler.with_registry(make_config(server), registry)
    assert handler.set_transition_hook(hook) is handler
    context = user_context("Buy it.", tools=[FunctionSchema(name="start_checkout")])
    result = await one_turn(handler.into_processor(), context)

    assert len(server.requests) == 3
    first, second, third = (r.json for r in server.requests)
    assert first["messages"][0]["content"] == "You are terse."
    assert tool_names(server.requests[0]) == ["start_checkout"]
    assert "tool_choice" not in first
    assert second["messages"][0] == {
        "role": "system",
        "content": "You are now in the checkout stage.",
    }
    assert tool_names(server.requests[1]) == ["pay"]
    assert second["tool_choice"] == {"type": "function", "function": {"name": "pay"}}
    assert third["messages"][0]["content"] == "Checkout done."
    assert "tools" not in third and "tool_choice" not in third
    # The hook ran once per committed round, before the next request.
    assert calls_seen == [
        (1, ["system", "user", "assistant", "tool"], 4),
        (2, ["system", "user", "assistant", "tool", "assistant", "tool"], 6),
    ]
    # The registry change took effect: "pay" ran.
    assert [r.result for r in result.downstream_of(FunctionCallResult)] == [
        "checkout started",
        "paid",
    ]
    assert text_of(result.downstream) == "Paid, thanks."
    assert errors(result) == []
    assert_context_sound(context)


async def test_the_hook_runs_after_function_call_end(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    order: list[str] = []

    class Spy(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, FunctionCallEnd | FunctionCallResult | LLMFullResponseEnd):
                order.append(type(frame).__name__)
            await self.push_frame(frame, direction)

    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")

    async def hook(context: LLMContext) -> None:
        await trio.sleep(0.1)  # let frames already pushed arrive
        order.append("hook")

    server.add_replies([ToolCallReply([call("f", "{}", "c1")]), TextReply(["ok"])])
    handler = OpenAILLMHandler.with_registry(make_config(server), registry).set_transition_hook(
        hook
    )
    await one_turn([handler.into_processor(), Spy()], user_context())
    assert order == ["FunctionCallResult", "FunctionCallEnd", "hook", "LLMFullResponseEnd"]


async def test_a_failing_hook_is_reported_and_the_turn_is_still_closed(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")

    def hook(context: LLMContext) -> None:
        raise RuntimeError("hook bug")

    server.add_replies([ToolCallReply([call("f", "{}", "c1")]), TextReply(["ok"])])
    handler = OpenAILLMHandler.with_registry(make_config(server), registry).set_transition_hook(
        hook
    )
    context = user_context()
    result = await one_turn(handler.into_processor(), context)
    assert any("hook bug" in e for e in errors(result))
    # The turn that failed is closed (LLMFullResponseEnd "also closes a failed turn").
    assert kinds(result.downstream, (LLMFullResponseStart, LLMFullResponseEnd)) == [
        "LLMFullResponseStart",
        "LLMFullResponseEnd",
    ]
    assert_context_sound(context)


# --------------------------------------------------------------------------- live pipelines


@attrs.define(eq=False)
class Live:
    """A running PipelineTask whose frames at either end are recorded as they arrive."""

    task: PipelineTask
    down: list[Frame] = attrs.Factory(list)
    up: list[Frame] = attrs.Factory(list)
    times: dict[int, float] = attrs.Factory(dict)
    _lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)

    def record(self, frames: list[Frame], frame: Frame) -> None:
        frames.append(frame)
        self.times[id(frame)] = trio.current_time()
        self._lot.unpark_all()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._lot.park()

    def down_of(self, kind: type[Any]) -> list[Any]:
        return [f for f in self.down if isinstance(f, kind)]

    async def wait_down(self, kind: type[Any], count: int = 1) -> Any:
        await self.wait_until(lambda: len(self.down_of(kind)) >= count)
        return self.down_of(kind)[count - 1]

    async def send(self, frame: Frame) -> None:
        await self.task.queue_frame(frame)


@asynccontextmanager
async def live_pipeline(
    processors: Sequence[FrameProcessor], *, params: PipelineParams | None = None
) -> AsyncIterator[Live]:
    """Run ``processors``; on leaving the block, end the run with an EndFrame (unless it has
    already ended or is being cancelled) and wait for it."""
    task = PipelineTask(Pipeline(list(processors)), params=params)
    lv = Live(task)
    task.add_event_handler("on_frame_reached_downstream", lambda _t, f: lv.record(lv.down, f))
    task.add_event_handler("on_frame_reached_upstream", lambda _t, f: lv.record(lv.up, f))
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            yield lv
            if not task.has_finished and not task._cancelling:
                await task.queue_frame(EndFrame())


async def test_an_interruption_at_the_instant_a_call_ends_leaves_frames_and_context_agreeing(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # The call's end and the interruption fall on the same virtual instant; trio runs the
    # tasks woken together in either order. Whichever wins, a round is in the context only
    # if its FunctionCallResult reached the end of the pipeline.
    for attempt in range(20):
        await _interrupt_as_the_call_ends(server, f"c{attempt}")


async def _interrupt_as_the_call_ends(server: ScriptedServer, call_id: str) -> None:
    started = trio.Event()
    ends: list[float] = []

    async def f(_args: str) -> str:
        ends.append(trio.current_time() + 1.0)
        started.set()
        await trio.sleep(1.0)
        return "done"

    registry = FunctionRegistry()
    registry.register("f", f)
    server.add_reply(ToolCallReply([call("f", "{}", call_id)]))
    context = user_context()
    llm = OpenAILLMHandler.with_registry(make_config(server), registry).into_processor()
    async with live_pipeline([llm]) as lv:
        await lv.send(LLMContextFrame(context=context))
        await started.wait()
        await trio.sleep_until(ends[0])
        await lv.send(InterruptionFrame())
        await lv.wait_down(InterruptionFrame)
    server.clear_replies()
    reported = {f.tool_call_id for f in lv.down_of(FunctionCallResult)}
    committed = {m["tool_call_id"] for m in context.messages if m["role"] == "tool"}
    assert committed <= reported, (call_id, committed, reported)
    assert_context_sound(context)


# --------------------------------------------------------------------------- 8. built-in tools


@attrs.define(eq=False)
class LifecycleTool(BuiltinTool):
    """A BuiltinTool that records its lifecycle; ``start`` is "ok", "raise" or "hang"."""

    name: str
    log: Log
    is_cacheable: bool = True
    start_delay: float = 0.0
    start: str = "ok"
    stop_raises: bool = False
    call_seconds: float = 0.0
    cleanup_seconds: float = 0.0
    functions: tuple[str, ...] = ("run",)

    def tool_schemas(self) -> Sequence[FunctionSchema]:
        return [FunctionSchema(name=f"{self.name}_{fn}") for fn in self.functions]

    def register_all(self, registry: FunctionRegistry) -> None:
        for schema in self.tool_schemas():
            registry.register(schema.name, self._call, rich=True)

    async def _call(self, p: FunctionCallParams) -> str:
        self.log.add(f"{self.name} call {p.tool_call_id}")
        try:
            await trio.sleep(self.call_seconds)
        finally:
            if self.cleanup_seconds:
                # E.g. rolling back a transaction on a pooled connection: shielded cleanup.
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.cleanup_seconds)
            self.log.add(f"{self.name} call {p.tool_call_id} finally")
        return f"{self.name} ok"

    async def on_start(self) -> None:
        self.log.add(f"{self.name} start begin")
        try:
            await trio.sleep(self.start_delay)
            if self.start == "raise":
                raise ConnectionError(f"{self.name}: database unreachable")
            if self.start == "hang":
                await trio.sleep_forever()
        except trio.Cancelled:
            self.log.add(f"{self.name} start cancelled")
            raise
        self.log.add(f"{self.name} started")

    async def on_stop(self) -> None:
        self.log.add(f"{self.name} stop")
        if self.stop_raises:
            raise OSError(f"{self.name}: close failed")


@attrs.define(eq=False)
class CancellableTool(LifecycleTool):
    async def on_cancel(self) -> None:
        self.log.add(f"{self.name} on_cancel")


async def test_cacheable_tools_start_concurrently_bounded_and_a_failure_does_not_stop_others(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    a = LifecycleTool("a", log, start_delay=1.0)
    b = LifecycleTool("b", log, start_delay=1.0, stop_raises=True)
    c = LifecycleTool("c", log, start_delay=0.5, start="raise")
    d = LifecycleTool("d", log, start="hang")
    lazy = LifecycleTool("lazy", log, is_cacheable=False)
    handler = OpenAILLMHandler(make_config(server, tool_start_timeout=3.0))
    for tool in (a, b, c, d, lazy):
        handler.add_tool(tool)
    server.add_reply(ToolCallReply([call("a_run", "{}", "x1"), call("b_run", "{}", "x2")]))
    server.add_reply(TextReply(["ok"]))
    context = user_context()
    t0 = trio.current_time()
    result = await one_turn(handler.into_processor(), context)

    # All four cacheable tools began at once; the lazy one did not start at all.
    for name in "abcd":
        assert log.at(f"{name} start begin") == t0
    assert "lazy start begin" not in log.names()
    assert log.at("a started") - t0 == pytest.approx(1.0)
    assert log.at("b started") - t0 == pytest.approx(1.0)
    # The hanging one was cut off at tool_start_timeout, and the run went on.
    assert log.at("d start cancelled") - t0 == pytest.approx(3.0)
    assert server.requests[0] is not None
    reported = errors(result)
    assert any(
        "'c'" in e and "failed to start" in e and "database unreachable" in e for e in reported
    )
    assert any("'d'" in e and "did not start within 3" in e for e in reported)
    # The started tools work and are stopped at the end; a failing on_stop is reported and
    # does not keep the other tools from stopping.
    assert sorted(r.result for r in result.downstream_of(FunctionCallResult)) == ["a ok", "b ok"]
    assert log.names().count("a stop") == 1 and log.names().count("b stop") == 1
    assert any("'b'" in e and "failed to stop" in e for e in reported)
    assert "c stop" not in log.names() and "d stop" not in log.names()
    assert "lazy stop" not in log.names()
    assert text_of(result.downstream) == "ok"
    assert_context_sound(context)


async def test_tools_start_before_the_first_request(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    handler = OpenAILLMHandler(make_config(server)).add_tool(
        LifecycleTool("pg", log, start_delay=2.0)
    )
    server.add_reply(lambda request: (log.add("request"), TextReply(["hi"]))[1])
    await one_turn(handler.into_processor(), user_context())
    assert log.names() == ["pg start begin", "pg started", "request", "pg stop"]


async def test_a_non_cacheable_tool_starts_before_its_first_call_and_stops_at_the_end(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    lazy = LifecycleTool("lazy", log, is_cacheable=False, start_delay=0.5)
    handler = OpenAILLMHandler(make_config(server)).add_tool(lazy)
    server.add_replies(
        [
            TextReply(["no tools needed"]),
        ]
    )
    async with live_pipeline([handler.into_processor()]) as lv:
        context = user_context()
        await lv.send(LLMContextFrame(context=context))
        await lv.wait_down(LLMFullResponseEnd)
        assert "lazy start begin" not in log.names()
        server.add_replies([ToolCallReply([call("lazy_run", "{}", "c1")]), TextReply(["ok"])])
        context.add_user_message("now use it")
        await lv.send(LLMContextFrame(context=context))
        await lv.wait_down(LLMFullResponseEnd, 2)
    assert log.names() == [
        "lazy start begin",
        "lazy started",
        "lazy call c1",
        "lazy call c1 finally",
        "lazy stop",
    ]


async def test_a_non_cacheable_tool_is_started_once_for_parallel_calls(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    lazy = LifecycleTool(
        "lazy", log, is_cacheable=False, start_delay=0.5, functions=("read", "write")
    )
    handler = OpenAILLMHandler(make_config(server)).add_tool(lazy)
    server.add_replies(
        [
            ToolCallReply([call("lazy_read", "{}", "c1"), call("lazy_write", "{}", "c2")]),
            TextReply(["ok"]),
        ]
    )
    result = await one_turn(handler.into_processor(), user_context())
    assert [r.result for r in result.downstream_of(FunctionCallResult)] == ["lazy ok", "lazy ok"]
    assert log.names().count("lazy start begin") == 1
    assert log.names().count("lazy stop") == 1


async def test_cancel_frame_cancels_in_flight_calls_and_runs_on_cancel(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    custom = CancellableTool("db", log, call_seconds=10.0)
    default = LifecycleTool("cache", log)  # default on_cancel: on_stop
    handler = OpenAILLMHandler(make_config(server)).add_tool(custom).add_tool(default)
    server.add_reply(ToolCallReply([call("db_run", "{}", "c1")]))
    async with live_pipeline([handler.into_processor()]) as lv:
        await lv.send(LLMContextFrame(context=user_context()))
        await lv.wait_down(FunctionCallInProgress)
        await trio.sleep(0.5)
        t_cancel = trio.current_time()
        await lv.task.cancel("user hung up")
    assert lv.task.finish_reason == "cancel: user hung up"
    assert log.at("db call c1 finally") == t_cancel  # cancelled at once
    assert "db on_cancel" in log.names()
    assert "db stop" not in log.names()  # on_cancel overridden: on_stop not called
    assert "cache stop" in log.names()  # the default on_cancel is on_stop
    assert lv.down_of(FunctionCallResult) == []
    assert lv.down_of(FunctionCallEnd) == []
    assert len(server.requests) == 1


async def test_on_cancel_runs_after_the_cancelled_calls_have_unwound(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # tools/base.py: "on_cancel() on CancelFrame, after in-flight calls were cancelled". A call
    # whose cleanup still uses the tool (shielded rollback on a pooled connection) must be done
    # before the tool releases its resources.
    log = Log()
    tool = CancellableTool("db", log, call_seconds=10.0, cleanup_seconds=0.2)
    handler = OpenAILLMHandler(make_config(server)).add_tool(tool)
    server.add_reply(ToolCallReply([call("db_run", "{}", "c1")]))
    async with live_pipeline([handler.into_processor()]) as lv:
        await lv.send(LLMContextFrame(context=user_context()))
        await lv.wait_down(FunctionCallInProgress)
        await lv.task.cancel()
    names = log.names()
    assert names.index("db call c1 finally") < names.index("db on_cancel")


# --------------------------------------------------------------------------- 9. interruptions


async def test_interrupting_a_slow_tool_cancels_it_and_the_next_turn_works(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    registry.register("slow", sleeper(log, "slow", 10.0))
    registry.register("quick", sleeper(log, "quick", 0.1))
    server.add_reply(
        ToolCallReply(
            [call("quick", "{}", "q1"), call("slow", "{}", "s1")], text_tokens=["Checking..."]
        )
    )
    context = user_context()
    llm = OpenAILLMHandler.with_registry(
        make_config(server, tool_timeout=60.0), registry
    ).into_processor()
    async with live_pipeline([llm]) as lv:
        await lv.send(LLMContextFrame(context=context))
        await lv.wait_down(FunctionCallInProgress, 2)
        await trio.sleep(0.5)
        t_int = trio.current_time()
        await lv.send(InterruptionFrame())
        await lv.wait_down(InterruptionFrame)
        # Much later, still nothing from the cancelled call.
        await trio.sleep(20)
        assert log.at("slow cancelled") == t_int  # promptly: at the interruption
        assert log.at("slow finally") == t_int
        assert "slow end" not in log.names()
        assert [f.tool_call_id for f in lv.down_of(FunctionCallResult)] == ["q1"]
        assert lv.down_of(FunctionCallEnd) == []
        assert lv.down_of(LLMFullResponseEnd) == []  # the interruption closed the turn
        # The staged round was rolled back: no orphan call, no half round.
        assert_context_sound(context)
        assert [m["role"] for m in context.messages] == ["system", "user"]
        assert len(server.requests) == 1

        # The next turn works.
        server.add_reply(TextReply(["Sure, ", "here it is."]))
        context.add_user_message("Never mind, just say hi.")
        n = len(lv.down)
        await lv.send(LLMContextFrame(context=context))
        await lv.wait_down(LLMFullResponseEnd)
        after = lv.down[n:]
    assert kinds(after, (LLMFullResponseStart, LLMText, LLMFullResponseEnd)) == [
        "LLMFullResponseStart",
        "LLMText",
        "LLMText",
        "LLMFullResponseEnd",
    ]
    assert text_of(after) == "Sure, here it is."
    second = server.requests[1]
    assert [m["role"] for m in second.messages] == ["system", "user", "user"]
    assert not any(m.get("tool_calls") or m["role"] == "tool" for m in second.messages)
    assert_context_sound(context)


async def test_interruption_through_the_aggregators_in_text_mode(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    registry.register("get_weather", sleeper(log, "weather", 10.0))
    server.add_reply(
        ToolCallReply([call("get_weather", {"city": "Paris"}, "w1")], text_tokens=["Let me look."])
    )
    server.add_reply(TextReply(["Why did the chicken..."]))
    context = user_context("unused")
    context.set_messages([{"role": "system", "content": "You are terse."}])
    user, assistant = create_context_aggregators(context, text_mode=True)
    llm = OpenAILLMHandler.with_registry(make_config(server), registry).into_processor()
    async with live_pipeline([user, llm, assistant]) as lv:
        await lv.send(TextFrame(text="Weather in Paris?"))
        await lv.wait_down(FunctionCallInProgress)
        await trio.sleep(0.5)
        t_int = trio.current_time()
        await lv.send(TextFrame(text="Never mind, tell me a joke."))
        await lv.wait_down(LLMFullResponseEnd)
    assert log.at("weather cancelled") == t_int
    assert lv.down_of(FunctionCallResult) == []
    assert len(lv.down_of(InterruptionFrame)) == 1
    assert_context_sound(context)
    # The round was rolled back, but the text the user already saw stays, marked interrupted.
    assert [(m["role"], m.get("content")) for m in context.messages] == [
        ("system", "You are terse."),
        ("user", "Weather in Paris?"),
        ("assistant", "Let me look."),
        ("user", "Never mind, tell me a joke."),
        ("assistant", "Why did the chicken..."),
    ]
    assert context.is_interrupted(2) and not context.is_interrupted(4)
    second = server.requests[1]
    assert not any(m.get("tool_calls") or m["role"] == "tool" for m in second.messages)


async def test_interrupting_while_tool_calls_stream_starts_no_call(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    registry.register("f", sleeper(log, "f", 0.1))
    server.add_reply(
        ToolCallReply(
            [call("f", {"text": "x" * 200}, "c1")], args_fragment_size=10, token_delay=0.1
        )
    )
    context = user_context()
    async with live_pipeline(
        [OpenAILLMHandler.with_registry(make_config(server), registry).into_processor()]
    ) as lv:
        await lv.send(LLMContextFrame(context=context))
        (request,) = await server.wait_for_requests(1)
        await trio.sleep(0.55)
        await lv.send(InterruptionFrame())
        with trio.fail_after(5):
            await request.disconnected.wait()  # the HTTP response was closed
        await trio.sleep(10)
    assert log.names() == []
    assert lv.down_of(FunctionCallStart) == [] and lv.down_of(FunctionCallInProgress) == []
    assert not request.completed.is_set()
    assert_context_sound(context)
    assert len(context.messages) == 2


# --------------------------------------------------------------------------- 10. property test


@attrs.frozen
class CallSpec:
    outcome: str  # "ok" | "raw" | "raise" | "timeout"
    seconds: float


@attrs.frozen
class RoundSpec:
    calls: tuple[CallSpec, ...]
    text_before: bool


call_specs = st.builds(
    CallSpec,
    st.sampled_from(["ok", "raw", "raise", "timeout"]),
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5]),
)
round_specs = st.builds(
    RoundSpec, st.lists(call_specs, min_size=1, max_size=3).map(tuple), st.booleans()
)
PROPERTY_TOOL_TIMEOUT = 2.0
SECRET = "s3cr3t-in-exception"


def run_virtual(fn: Callable[[], Any]) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rounds=st.lists(round_specs, max_size=3),
    interrupt=st.integers(0, 30),
)
def test_random_tool_rounds_failures_and_interruptions(
    rounds: list[RoundSpec], interrupt: int
) -> None:
    # interrupt: 0 = no interruption, else at interrupt/30 of the turn's expected length
    # (each round streams for a few 0.05 s deltas, then runs as long as its longest call).
    expected = 0.3 + sum(
        0.3 + max(PROPERTY_TOOL_TIMEOUT if c.outcome == "timeout" else c.seconds for c in r.calls)
        for r in rounds
    )
    interrupt_at = None if interrupt == 0 else round(expected * interrupt / 30, 2)
    specs = {f"r{k}c{j}": c for k, r in enumerate(rounds) for j, c in enumerate(r.calls)}
    log = Log()
    active: set[str] = set()

    async def handler(p: FunctionCallParams) -> str | ToolCallOutput:
        call_id = p.tool_call_id
        spec = specs[call_id]
        assert p.function_name == spec.outcome and p.arguments == {"s": spec.seconds}
        active.add(call_id)
        log.add(f"start {call_id}")
        try:
            await trio.sleep(100.0 if spec.outcome == "timeout" else spec.seconds)
        finally:
            active.discard(call_id)
            log.add(f"finally {call_id}")
        if spec.outcome == "raise":
            raise RuntimeError(SECRET)
        if spec.outcome == "raw":
            return ToolCallOutput(f"summary {call_id}", raw={"id": call_id})
        return f"ok {call_id}"

    registry = FunctionRegistry()
    for outcome in ("ok", "raw", "raise", "timeout"):
        registry.register(outcome, handler, rich=True)

    def reply(request: RecordedRequest) -> Reply:
        messages = request.messages
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        if messages[last_user]["content"] == "second turn":
            return TextReply(["after ", "interrupt"], token_delay=0.05)
        k = sum(1 for m in messages[last_user:] if m["role"] == "assistant" and m.get("tool_calls"))
        if k < len(rounds):
            return ToolCallReply(
                [
                    call(c.outcome, {"s": c.seconds}, f"r{k}c{j}")
                    for j, c in enumerate(rounds[k].calls)
                ],
                text_tokens=["thinking ", "aloud "] if rounds[k].text_before else (),
                token_delay=0.05,
            )
        return TextReply(["final ", "answer"], token_delay=0.1)

    async def main() -> None:
        async with open_scripted_server(default_reply=reply) as server:
            config = make_config(server, tool_timeout=PROPERTY_TOOL_TIMEOUT, max_tool_rounds=5)
            llm = OpenAILLMHandler.with_registry(config, registry).into_processor()
            context = user_context("first turn")
            interrupted_at: float | None = None
            async with live_pipeline([llm]) as lv:
                await lv.send(LLMContextFrame(context=context))
                with trio.move_on_after(math.inf if interrupt_at is None else interrupt_at):
                    await lv.wait_down(LLMFullResponseEnd)
                if not lv.down_of(LLMFullResponseEnd):
                    interrupted_at = trio.current_time()
                    await lv.send(InterruptionFrame())
                    await lv.wait_down(InterruptionFrame)
                    await trio.sleep(0.01)  # every task has run: the turn has unwound
                    assert not active, active
                first_turn = list(lv.down)
                assert_context_sound(context)
                context.add_user_message("second turn")
                await lv.send(LLMContextFrame(context=context))
                await lv.wait_until(
                    lambda: (
                        text_of(lv.down[len(first_turn) :]) == "after interrupt"
                        and isinstance(lv.down[-1], LLMFullResponseEnd)
                    )
                )
            check(server, context, lv, first_turn, interrupted_at)

    def check(
        server: ScriptedServer,
        context: LLMContext,
        lv: Live,
        first_turn: list[Frame],
        interrupted_at: float | None,
    ) -> None:
        interrupted = interrupted_at is not None
        # Frames of each call, in order; every InProgress followed by exactly one Result,
        # unless the turn was interrupted.
        sequences = per_call(first_turn)
        for call_id, seq in sequences.items():
            raw = specs[call_id].outcome == "raw"
            full = (
                ["FunctionCallInProgress", "FunctionCallRawResult", "FunctionCallResult"]
                if raw
                else ["FunctionCallInProgress", "FunctionCallResult"]
            )
            if interrupted and seq != full:
                assert seq == full[: len(seq)], (call_id, seq)
            else:
                assert seq == full, (call_id, seq)
        started = {
            c.tool_call_id for f in first_turn if isinstance(f, FunctionCallStart) for c in f.calls
        }
        assert set(sequences) <= started
        results = {f.tool_call_id: f for f in first_turn if isinstance(f, FunctionCallResult)}
        # Calls of a round run concurrently but report in the model's call order, so call i's
        # Result comes when calls 0..i have all finished.
        round_of: dict[str, list[str]] = {}
        for f in first_turn:
            if isinstance(f, FunctionCallStart):
                ids = [c.tool_call_id for c in f.calls]
                for c in ids:
                    round_of[c] = ids
                reported = [c for c in (r.tool_call_id for r in results.values()) if c in ids]
                assert reported == ids[: len(reported)]

        def duration(call_id: str) -> float:
            spec = specs[call_id]
            return PROPERTY_TOOL_TIMEOUT if spec.outcome == "timeout" else spec.seconds

        for call_id, frame in results.items():
            spec = specs[call_id]
            in_progress = next(
                f
                for f in first_turn
                if isinstance(f, FunctionCallInProgress) and f.tool_call_id == call_id
            )
            took = lv.times[id(frame)] - lv.times[id(in_progress)]
            ids = round_of[call_id]
            expected = max(duration(c) for c in ids[: ids.index(call_id) + 1])
            assert took == pytest.approx(expected, abs=0.01)
            if spec.outcome == "timeout":
                assert "timed out" in frame.result
            if spec.outcome == "raise":
                assert frame.result.startswith("Error") and SECRET not in frame.result
            elif spec.outcome == "raw":
                assert frame.result == f"summary {call_id}"
            elif spec.outcome == "ok":
                assert frame.result == f"ok {call_id}"
        # No call of the interrupted generation ran on, or started, after the interruption.
        if interrupted:
            assert interrupted_at is not None
            # (Cancelled calls were cancelled promptly: their cleanup ran at the interruption.)
            for t, _what in log.events:
                assert t <= interrupted_at
            in_round = any(seq[-1] != "FunctionCallResult" for seq in sequences.values())
            event("interrupted during a tool call" if in_round else "interrupted elsewhere")
        else:
            assert kinds(first_turn, (LLMFullResponseStart, LLMFullResponseEnd)) == [
                "LLMFullResponseStart",
                "LLMFullResponseEnd",
            ]
            assert len([f for f in first_turn if isinstance(f, FunctionCallEnd)]) == len(rounds)
            assert set(results) == set(specs)
            assert text_of(first_turn).endswith("final answer")
        assert not active
        assert {w.split()[1] for _, w in log.events if w.startswith("start ")} == {
            w.split()[1] for _, w in log.events if w.startswith("finally ")
        }
        # The context is valid; each committed call has the result the frames announced, and
        # every round announced as ended was committed.
        assert_context_sound(context)
        committed = {
            m["tool_call_id"]: m["content"] for m in context.messages if m["role"] == "tool"
        }
        for call_id, content in committed.items():
            assert results[call_id].result == content
        ended = {f.round for f in first_turn if isinstance(f, FunctionCallEnd)}
        for k in ended:
            assert all(f"r{k - 1}c{j}" in committed for j in range(len(rounds[k - 1].calls)))
        for request in server.requests:
            assert SECRET.encode() not in request.body
        assert context.messages[-1] == {"role": "user", "content": "second turn"}

    run_virtual(main)


# --------------------------------------------------------------------------- more edges


async def test_full_chain_keeps_pre_call_text_once_in_the_context(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("get_weather", lambda a: "18C")
    server.add_reply(
        ToolCallReply(
            [call("get_weather", {"city": "Paris"}, "w1")], text_tokens=["Let me ", "check."]
        )
    )
    server.add_reply(TextReply(["It is ", "18C."]))
    context = LLMContext([{"role": "system", "content": "You are terse."}], tools=[WEATHER])
    user, assistant = create_context_aggregators(context, text_mode=True)
    llm = OpenAILLMHandler.with_registry(make_config(server), registry).into_processor()
    await run_test([user, llm, assistant], [TextFrame(text="Weather in Paris?")])
    assert [(m["role"], m.get("content")) for m in context.messages] == [
        ("system", "You are terse."),
        ("user", "Weather in Paris?"),
        ("assistant", "Let me check."),
        ("tool", "18C"),
        ("assistant", "It is 18C."),
    ]
    assert_context_sound(context)


async def test_a_failed_reinvocation_closes_the_turn_with_a_valid_context(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("get_weather", lambda a: "18C")
    server.add_reply(ToolCallReply([call("get_weather", "{}", "w1")]))
    server.add_reply(ErrorReply(500, "upstream overloaded"))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    assert any("upstream overloaded" in e for e in errors(result))
    assert kinds(result.downstream)[-2:] == ["LLMFullResponseEnd", "EndFrame"]
    assert_context_sound(context)
    assert [m["role"] for m in context.messages] == ["system", "user", "assistant", "tool"]


async def test_a_per_function_timeout_may_be_longer_than_the_default(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    registry.register("report", sleeper(log, "report", 3.0, "report ready"), timeout=5.0)
    registry.register("quick", sleeper(log, "quick", 3.0, "never"))
    server.add_reply(ToolCallReply([call("report", "{}", "r"), call("quick", "{}", "q")]))
    server.add_reply(TextReply(["ok"]))
    result = await one_turn(
        OpenAILLMHandler.with_registry(
            make_config(server, tool_timeout=1.0), registry
        ).into_processor(),
        user_context(),
    )
    results = {f.tool_call_id: f.result for f in result.downstream_of(FunctionCallResult)}
    assert results["r"] == "report ready"
    assert "timed out after 1 seconds" in results["q"]


async def test_interrupting_the_transition_hook_keeps_the_committed_round(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log = Log()
    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")

    async def hook(context: LLMContext) -> None:
        log.add("hook start")
        try:
            await trio.sleep(5)
        finally:
            log.add("hook finally")
        log.add("hook end")

    server.add_reply(ToolCallReply([call("f", "{}", "c1")]))
    context = user_context()
    handler = OpenAILLMHandler.with_registry(make_config(server), registry).set_transition_hook(
        hook
    )
    async with live_pipeline([handler.into_processor()]) as lv:
        await lv.send(LLMContextFrame(context=context))
        await lv.wait_down(FunctionCallEnd)
        await trio.sleep(1)
        await lv.send(InterruptionFrame())
        await trio.sleep(1)
        assert log.names() == ["hook start", "hook finally"]
        assert len(server.requests) == 1  # no re-invocation after the interruption
        assert_context_sound(context)
        assert [m["role"] for m in context.messages] == ["system", "user", "assistant", "tool"]
        server.add_reply(TextReply(["fresh"]))
        context.add_user_message("again")
        await lv.send(LLMContextFrame(context=context))
        await lv.wait_down(LLMFullResponseEnd)
    assert text_of(lv.down) == "fresh"


async def test_a_tool_call_output_with_a_non_string_summary_is_a_bad_return(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()

    async def bad(args: str) -> ToolCallOutput:
        await trio.lowlevel.checkpoint()
        return ToolCallOutput({"temp": 18})  # type: ignore[arg-type]

    registry.register("get_weather", bad)
    server.add_reply(ToolCallReply([call("get_weather", "{}", "c1")]))
    server.add_reply(TextReply(["Sorry."]))
    context = user_context()
    result = await one_turn(
        OpenAILLMHandler.with_registry(make_config(server), registry).into_processor(), context
    )
    assert any("get_weather" in e for e in errors(result))
    (res,) = result.downstream_of(FunctionCallResult)
    assert res.result.startswith("Error")
    assert text_of(result.downstream) == "Sorry."
    assert kinds(result.downstream)[-2:] == ["LLMFullResponseEnd", "EndFrame"]
    assert_context_sound(context)


async def test_a_tool_call_without_a_name_is_answered_and_the_turn_ends(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    body = sse(
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "type": "function", "function": {"arguments": "{}"}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
    )
    server.add_reply(RawReply(body))
    server.add_reply(TextReply(["Recovered."]))
    context = user_context()
    result = await one_turn(OpenAILLMHandler(make_config(server)).into_processor(), context)
    assert kinds(result.downstream)[-2:] == ["LLMFullResponseEnd", "EndFrame"]
    assert errors(result)
    assert_context_sound(context)


async def test_a_hook_returning_end_turn_closes_the_turn_without_asking_again(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")
    server.add_replies([ToolCallReply([call("f", "{}", "c1")]), TextReply(["never asked"])])
    handler = OpenAILLMHandler.with_registry(make_config(server), registry).set_transition_hook(
        lambda context: AfterRound.END_TURN
    )
    context = user_context()
    result = await one_turn(handler.into_processor(), context)
    assert len(server.requests) == 1
    assert errors(result) == []
    assert [m["role"] for m in context.messages][-2:] == ["assistant", "tool"]
    assert kinds(result.downstream, (LLMFullResponseStart, LLMFullResponseEnd)) == [
        "LLMFullResponseStart",
        "LLMFullResponseEnd",
    ]


async def test_a_hook_returning_something_else_is_reported(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda a: "r")
    server.add_replies([ToolCallReply([call("f", "{}", "c1")]), TextReply(["ok"])])
    handler = OpenAILLMHandler.with_registry(make_config(server), registry).set_transition_hook(
        lambda context: "stop"
    )
    result = await one_turn(handler.into_processor(), user_context())
    assert any("must return None or an AfterRound" in e for e in errors(result))
