"""Unit tests of FunctionRegistry, FunctionEntry and ToolCallOutput (no pipeline, no HTTP).

The end-to-end behaviour (handlers called by the LLM processor over real HTTP) is in
``test_tools.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import trio

from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.frames import ErrorFrame, Frame, FrameDirection
from rustvani_trio.services.llm.function_registry import (
    FunctionCallParams,
    FunctionEntry,
    FunctionRegistry,
    RegistryWarning,
    ToolCallOutput,
)


async def _no_push(frame: Frame, direction: FrameDirection) -> None:
    await trio.lowlevel.checkpoint()


def params(name: str = "f", raw: str = '{"a": 1}', **args: Any) -> FunctionCallParams:
    return FunctionCallParams(
        function_name=name,
        tool_call_id="call_1",
        arguments=args or {"a": 1},
        raw_arguments=raw,
        context=LLMContext(),
        push_frame=_no_push,
    )


async def echo(args: str) -> str:
    await trio.lowlevel.checkpoint()
    return f"echo {args}"


# --------------------------------------------------------------------------- registration


def test_register_get_names_unregister() -> None:
    registry = FunctionRegistry()
    assert registry.names() == []
    assert len(registry) == 0
    registry.register("get_weather", echo)
    registry.register("get_time", echo, timeout=2.5)
    assert registry.names() == ["get_weather", "get_time"]
    assert "get_weather" in registry
    assert "nope" not in registry
    assert len(registry) == 2
    entry = registry.get("get_time")
    assert isinstance(entry, FunctionEntry)
    assert entry.name == "get_time"
    assert entry.handler is echo
    assert entry.timeout == 2.5
    assert entry.rich is False
    assert registry.get("missing") is None
    registry.unregister("get_weather")
    assert registry.names() == ["get_time"]
    assert registry.get("get_weather") is None
    with pytest.raises(KeyError, match="not registered"):
        registry.unregister("get_weather")


def test_register_twice_replaces_with_a_warning() -> None:
    registry = FunctionRegistry()

    def first(args: str) -> str:
        return "first"

    def second(args: str) -> str:
        return "second"

    registry.register("f", first)
    with pytest.warns(RegistryWarning, match="'f' was already registered"):
        registry.register("f", second)
    entry = registry.get("f")
    assert entry is not None
    assert entry.handler is second
    assert registry.names() == ["f"]


def test_first_registration_does_not_warn() -> None:
    registry = FunctionRegistry()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.register("f", echo)
        registry.register("g", echo)


def test_registry_warning_is_a_user_warning() -> None:
    assert issubclass(RegistryWarning, UserWarning)


def test_decorator_form_registers_under_the_function_name() -> None:
    registry = FunctionRegistry()

    @registry.function()
    async def lookup_order(args: str) -> str:
        await trio.lowlevel.checkpoint()
        return "ok"

    @registry.function("renamed", rich=True, timeout=3.0)
    def plain(p: FunctionCallParams) -> str:
        return "ok"

    # The decorator returns the function unchanged, so it stays directly callable.
    assert lookup_order.__name__ == "lookup_order"
    assert plain(params()) == "ok"
    assert registry.names() == ["lookup_order", "renamed"]
    entry = registry.get("renamed")
    assert entry is not None
    assert entry.rich and entry.timeout == 3.0 and entry.handler is plain


def test_decorator_form_warns_on_replacement_too() -> None:
    registry = FunctionRegistry()
    registry.register("f", echo)
    with pytest.warns(RegistryWarning):

        @registry.function("f")
        def f(args: str) -> str:
            return "new"

    entry = registry.get("f")
    assert entry is not None and entry.handler is f


@pytest.mark.parametrize(
    ("name", "handler", "kwargs", "error", "match"),
    [
        ("", echo, {}, ValueError, "non-empty string"),
        (None, echo, {}, ValueError, "non-empty string"),
        ("f", "not callable", {}, TypeError, "not callable"),
        ("f", echo, {"timeout": 0}, ValueError, "positive"),
        ("f", echo, {"timeout": -1.0}, ValueError, "positive"),
        ("f", echo, {"schema": FunctionSchema(name="g")}, ValueError, "does not match"),
    ],
)
def test_register_rejects_bad_input(
    name: Any, handler: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    registry = FunctionRegistry()
    with pytest.raises(error, match=match):
        registry.register(name, handler, **kwargs)
    assert registry.names() == []


def test_schemas_lists_only_functions_registered_with_a_schema() -> None:
    registry = FunctionRegistry()
    schema = FunctionSchema(name="get_weather", description="Weather by city")
    registry.register("get_weather", echo, schema=schema)
    registry.register("no_schema", echo)
    assert registry.schemas() == [schema]
    registry.unregister("get_weather")
    assert registry.schemas() == []


# --------------------------------------------------------------------------- calling


async def test_simple_async_handler_gets_the_raw_arguments() -> None:
    registry = FunctionRegistry()
    registry.register("f", echo)
    entry = registry.get("f")
    assert entry is not None
    out = await entry.call(params(raw='{"city": "Paris"}'))
    assert out == ToolCallOutput('echo {"city": "Paris"}')
    assert out.raw is None


async def test_sync_handler_works() -> None:
    seen: list[str] = []

    def sync_handler(args: str) -> str:
        seen.append(args)
        return "sync result"

    entry = FunctionEntry(name="f", handler=sync_handler)
    assert await entry.call(params(raw="{}")) == ToolCallOutput("sync result")
    assert seen == ["{}"]


async def test_handler_may_return_a_tool_call_output_with_raw() -> None:
    raw = {"rows": [1, 2, 3]}

    async def handler(args: str) -> ToolCallOutput:
        await trio.lowlevel.checkpoint()
        return ToolCallOutput("3 rows", raw)

    out = await FunctionEntry(name="f", handler=handler).call(params())
    assert out.summary == "3 rows"
    assert out.raw is raw


async def test_rich_handler_gets_the_call_params() -> None:
    got: list[FunctionCallParams] = []

    async def rich(p: FunctionCallParams) -> str:
        got.append(p)
        await trio.lowlevel.checkpoint()
        return str(p.arguments["a"])

    p = params()
    assert await FunctionEntry(name="f", handler=rich, rich=True).call(p) == ToolCallOutput("1")
    assert got == [p]


@pytest.mark.parametrize("bad", [42, None, {"a": 1}, b"bytes", ["x"]])
async def test_a_bad_return_type_raises_a_clear_type_error(bad: Any) -> None:
    async def handler(args: str) -> Any:
        await trio.lowlevel.checkpoint()
        return bad

    def sync_handler(args: str) -> Any:
        return bad

    for h in (handler, sync_handler):
        with pytest.raises(TypeError, match=r"function 'f' returned .*str or ToolCallOutput"):
            await FunctionEntry(name="f", handler=h).call(params())


async def test_handler_exceptions_propagate_to_the_caller() -> None:
    async def boom(args: str) -> str:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        await FunctionEntry(name="f", handler=boom).call(params())


def test_tool_call_output_defaults() -> None:
    out = ToolCallOutput("summary")
    assert out.summary == "summary"
    assert out.raw is None
    assert ToolCallOutput("s", [1]) == ToolCallOutput("s", [1])


async def test_push_error_names_the_processor_the_function_and_the_call() -> None:
    pushed: list[tuple[Frame, FrameDirection]] = []

    async def push(frame: Frame, direction: FrameDirection) -> None:
        pushed.append((frame, direction))

    p = FunctionCallParams(
        function_name="lookup",
        tool_call_id="call_9",
        arguments={},
        raw_arguments="{}",
        context=LLMContext(),
        push_frame=push,
        processor_name="llm#1",
    )
    cause = ValueError("row 3 is bad")
    await p.push_error("the cache is stale\nsecond line", exception=cause)
    ((frame, direction),) = pushed
    assert direction is FrameDirection.UPSTREAM
    assert isinstance(frame, ErrorFrame)
    assert frame.error == "function 'lookup' (call call_9): the cache is stale\\nsecond line"
    assert frame.processor == "llm#1" and frame.exception is cause and not frame.fatal
    assert params().processor_name is None  # built outside a processor
