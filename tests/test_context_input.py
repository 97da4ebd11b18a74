"""Issue 9, item 16: a value a request cannot carry is refused where it enters the context.

A lone surrogate in a transcript (or NaN, bytes, a non-str key, a cycle...) used to be
accepted, and then every later turn failed before its request was sent. Each door of the
context now refuses such values with an :class:`InvalidMessageError` (or
:class:`InvalidToolError`) naming where the value is and what is wrong, in a short message.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import (
    ContextInvariantError,
    FunctionSchema,
    InvalidMessageError,
    InvalidToolError,
    LLMContext,
)
from rustvani_trio.frames import ErrorFrame, LLMContextFrame, LLMFullResponseEnd, TextFrame
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler, RetryPolicy
from rustvani_trio.testing import (
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
    run_test,
)

SYSTEM = {"role": "system", "content": "You are terse."}
LONE = "\ud800"


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def call(call_id: Any = "c1", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": arguments}}


def part(**fields: Any) -> list[dict[str, Any]]:
    return [{"type": "input_x", **fields}]


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def strict_json(value: Any) -> bytes:
    """Encode as httpx does for ``json=`` (no NaN, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")


# (message, where the error points, what it says)
BAD_MESSAGES: list[tuple[dict[str, Any], str, str]] = [
    (user(f"bad {LONE} text"), "at content", r"a lone surrogate '\ud800' at index 4"),
    (user(part(text=f"x{LONE}")), "at content[0].text", "lone surrogate"),
    (user(part(detail=math.nan)), "at content[0].detail", "nan is not a JSON number"),
    (user(part(detail=math.inf)), "at content[0].detail", "inf is not a JSON number"),
    (user(part(detail=-math.inf)), "at content[0].detail", "-inf is not a JSON number"),
    (user(part(data=b"\x00\x01")), "at content[0].data", "bytes is not a JSON value (decode"),
    (user(part(data={1: "one"})), "at content[0].data", "a key must be a string, got int 1"),
    (user(part(data={None: 1})), "at content[0].data", "got NoneType None"),
    (user(part(data={f"k{LONE}": 1})), "at content[0].data", "lone surrogate"),
    (user(part(data={1, 2})), "at content[0].data", "set is not a JSON value"),
    (user(part(data=Decimal("1.5"))), "at content[0].data", "Decimal is not a JSON value"),
    (user(part(data=object())), "at content[0].data", "object is not a JSON value"),
    (user(part(data=10**5000)), "at content[0].data", "too large for JSON"),
    (user(part(data=nested(200))), "at content[0].data[0]", "nest more than 64 levels"),
    (user(part(data=cycle())), "at content[0].data[0]", "nest more than 64 levels"),
    ({**user("x"), "name": b"bob"}, "at name", "bytes is not a JSON value"),
    ({**user("x"), "my key": math.nan}, "at ['my key']", "nan"),
    (
        {"role": "assistant", "content": None, "tool_calls": [call(arguments=f"{{{LONE}}}")]},
        "at tool_calls[0].function.arguments",
        "lone surrogate",
    ),
    (
        {"role": "assistant", "content": None, "tool_calls": [call(call_id=3)]},
        "tool call 0",
        "'id' must be a string, got int 3",
    ),
    (
        {"role": "tool", "tool_call_id": 7, "content": "r"},
        "message 1 (role 'tool')",
        "'tool_call_id' must be a string, got int 7",
    ),
    ({"role": "tool", "tool_call_id": "c1", "content": LONE}, "at content", "lone surrogate"),
]


@pytest.mark.parametrize(("message", "where", "what"), BAD_MESSAGES)
def test_add_message_refuses_values_a_request_cannot_carry(
    message: dict[str, Any], where: str, what: str
) -> None:
    ctx = LLMContext([SYSTEM])
    with pytest.raises(InvalidMessageError) as info:
        ctx.add_message(message)
    text = str(info.value)
    assert text.startswith("message 1")
    assert where in text, text
    assert what in text, text
    assert ctx.messages == [SYSTEM]
    strict_json(ctx.to_request_messages())  # the conversation goes on


def test_every_door_of_the_context_refuses() -> None:
    bad = f"hello {LONE}"
    ctx = LLMContext([SYSTEM, user("hi")])
    attempts = [
        lambda: ctx.add_user_message(bad),
        lambda: ctx.add_assistant_message(bad, interrupted=True),
        lambda: ctx.add_tool_message("c1", bad),
        lambda: ctx.add_messages([user("fine"), user(bad)]),
        lambda: ctx.set_messages([SYSTEM, user(bad)]),
        lambda: ctx.insert_message(1, user(bad)),
        lambda: ctx.replace_message(1, user(bad)),
        lambda: setattr(ctx, "system_prompt", bad),
        lambda: LLMContext([user(bad)]),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidMessageError, match="lone surrogate"):
            attempt()
    assert ctx.messages == [SYSTEM, user("hi")]
    assert ctx.system_prompt == SYSTEM["content"]


def test_a_tool_round_refuses_bad_text_results_and_ids() -> None:
    ctx = LLMContext([user("q")])
    with ctx.begin_round() as staged:
        with pytest.raises(InvalidMessageError, match="round: assistant text: a lone surrogate"):
            staged.set_assistant(LONE, [call()])
        with pytest.raises(InvalidMessageError, match=r"tool_calls\[0\].function.arguments"):
            staged.set_assistant(None, [call(arguments=LONE)])
        staged.set_assistant(None, [call("c1"), call("c2")])
        with pytest.raises(InvalidMessageError, match="tool_call_id must be a string, got int"):
            staged.add_tool_result(1, "r")  # type: ignore[arg-type]
        with pytest.raises(InvalidMessageError, match=r"result for 'c1'.*lone surrogate"):
            staged.add_tool_result("c1", f"rows: {LONE}")
        with pytest.raises(InvalidMessageError, match=r"at \[0\].value: nan"):
            staged.add_tool_result("c1", [{"type": "x", "value": math.nan}])
        assert staged.pending_ids == ("c1", "c2")
        staged.add_tool_result("c1", "ok")
        staged.add_tool_result("c2", "ok")
        staged.commit()
    ctx.validate()
    strict_json(ctx.to_request_messages())


def test_tools_and_the_tool_choice_refuse_non_json() -> None:
    with pytest.raises(InvalidToolError, match=r"parameters at properties.x.default: nan"):
        FunctionSchema(name="f", parameters={"properties": {"x": {"default": math.nan}}})
    with pytest.raises(InvalidToolError, match=r"FunctionSchema.description: a lone surrogate"):
        FunctionSchema(name="f", description=LONE)
    with pytest.raises(InvalidToolError, match=r"FunctionSchema.name: a lone surrogate"):
        FunctionSchema(name=LONE)
    raw = {"type": "function", "function": {"name": "g", "parameters": {"enum": [b"a"]}}}
    with pytest.raises(InvalidToolError, match=r"tool 'g' at function.parameters.enum\[0\]"):
        LLMContext(tools=[raw])
    with pytest.raises(InvalidToolError, match=r"tool_choice at function.name: a lone"):
        LLMContext(tool_choice={"type": "function", "function": {"name": LONE}})


def test_errors_never_echo_a_huge_value() -> None:
    ctx = LLMContext()
    huge = "x" * 5_000_000 + LONE
    with pytest.raises(InvalidMessageError) as info:
        ctx.add_user_message(huge)
    assert "at index 5,000,000 of 5,000,001 characters" in str(info.value)
    for message in (
        user(part(data={b"k" * 1_000_000: 1})),
        {"role": "x" * 1_000_000, "content": "y"},
        {"role": "assistant", "content": None, "tool_calls": [call(call_id=["i"] * 100_000)]},
    ):
        with pytest.raises(InvalidMessageError) as info:
            ctx.add_message(message)
        assert len(str(info.value)) < 400, str(info.value)[:400]
    with pytest.raises(InvalidToolError) as tool_info:
        ctx.set_tool_choice("z" * 1_000_000)  # type: ignore[arg-type]
    assert len(str(tool_info.value)) < 400


# Keys are strings here: json.dumps would turn other keys into strings (a change of the data,
# which the context refuses; see BAD_MESSAGES), so the two verdicts differ only there.
_json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010))
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@given(value=_json_like)
def test_refused_exactly_when_a_request_could_not_carry_it(value: Any) -> None:
    ctx = LLMContext([SYSTEM])
    try:
        strict_json(value)
    except (ValueError, TypeError):
        carried = False
    else:
        carried = True
    message = user(part(value=value))
    if carried:
        ctx.add_message(message)
        assert json.loads(strict_json(ctx.to_request_messages()))[1] == json.loads(
            strict_json(message)
        )
    else:
        with pytest.raises(InvalidMessageError, match=r"message 1 \(role 'user'\) at content"):
            ctx.add_message(message)
        assert ctx.messages == [SYSTEM]


# --------------------------------------------------------------------------- end to end


def chat(server_url: str, context: LLMContext, registry: FunctionRegistry | None = None) -> Any:
    user_side, assistant_side = create_context_aggregators(context, text_mode=True)
    config = OpenAILLMConfig(
        api_key="sk-test", base_url=server_url, model="gpt-test", retry=RetryPolicy(max_attempts=1)
    )
    handler = OpenAILLMHandler.with_registry(config, registry or FunctionRegistry())
    return [user_side, handler.into_processor(name="llm"), assistant_side]


async def test_a_bad_transcript_is_an_error_frame_and_the_conversation_goes_on() -> None:
    context = LLMContext([SYSTEM])
    async with open_scripted_server(default_reply=TextReply(["Hi!"])) as server:
        processors = chat(server.base_url, context)
        result = await run_test(
            processors, [TextFrame(text=f"garbled {LONE} words"), TextFrame(text="Hello")]
        )
    (error,) = result.upstream_of(ErrorFrame)
    assert error.processor == processors[0].name
    assert "InvalidMessageError" in error.error
    assert "lone surrogate" in error.error
    assert not error.fatal
    assert len(result.downstream_of(LLMFullResponseEnd)) == 1
    (request,) = server.requests
    assert request.messages == [SYSTEM, user("Hello")]
    assert context.messages == [SYSTEM, user("Hello"), {"role": "assistant", "content": "Hi!"}]


async def test_a_tool_result_that_is_not_valid_text_fails_its_turn_only() -> None:
    context = LLMContext([SYSTEM, user("look it up")])
    registry = FunctionRegistry()
    registry.register("f", lambda _args: f"rows: {LONE}")
    async with open_scripted_server() as server:
        server.add_replies(
            [ToolCallReply([ScriptedToolCall("f", "{}", "c1")]), TextReply(["fine"])]
        )
        (_, llm, _) = chat(server.base_url, context, registry)
        failed = await run_test(llm, [LLMContextFrame(context=context)])
        context.add_user_message("thanks")
        (_, llm, _) = chat(server.base_url, context, registry)
        second = await run_test(llm, [LLMContextFrame(context=context)])
    assert any("lone surrogate" in f.error for f in failed.upstream_of(ErrorFrame))
    assert len(failed.downstream_of(LLMFullResponseEnd)) == 1  # the failed turn is closed
    assert context.messages == [SYSTEM, user("look it up"), user("thanks")]
    assert second.upstream_of(ErrorFrame) == []
    assert server.requests[-1].messages == [SYSTEM, user("look it up"), user("thanks")]


# --------------------------------------------------------------------------- error messages


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr failed")


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


_HUGE_INT = 10**5000


@pytest.mark.parametrize(
    ("attempt", "error", "shown"),
    [
        # repr() of these raised RecursionError, the object's own error or ValueError (an int
        # too long to print) instead of the context's error
        (lambda ctx: ctx.set_tool_choice(_deep(5000)), InvalidToolError, "got [[[[...]]]]"),
        (lambda ctx: ctx.set_tool_choice(_ReprRaises()), InvalidToolError, "<_ReprRaises instance"),
        (lambda ctx: ctx.set_tool_choice(_HUGE_INT), InvalidToolError, "got <int of 16,610 bits>"),
        (lambda ctx: ctx.remove_tool(_deep(5000)), KeyError, "no tool named [[[[...]]]]"),
        (lambda ctx: ctx.remove_tool(b"f" * 10**6), KeyError, "...' (1,000,000 bytes)"),
        (lambda ctx: ctx.trim(_deep(5000)), ValueError, "got [[[[...]]]]"),
        (
            lambda ctx: ctx.add_message({"role": _deep(5000), "content": "x"}),
            InvalidMessageError,
            "message 1 at role[0][0][0][0]...(53 more)...[0]",
        ),
        (
            lambda ctx: ctx.add_message(
                {"role": "tool", "tool_call_id": _deep(5000), "content": "r"}
            ),
            InvalidMessageError,
            "nest more than 64 levels",
        ),
        (
            lambda ctx: ctx.add_message({"role": _ReprRaises(), "content": "x"}),
            InvalidMessageError,
            "at role: _ReprRaises is not a JSON value",
        ),
        (
            lambda ctx: ctx.add_message({"role": _HUGE_INT, "content": "x"}),
            InvalidMessageError,
            "16,610 bits is too large for JSON",
        ),
        # an unhashable role raised TypeError from the set lookup
        (
            lambda ctx: ctx.add_message({"role": ["user"], "content": "x"}),
            InvalidMessageError,
            "unknown role ['user']",
        ),
        (
            lambda ctx: ctx.add_message(
                {"role": "tool", "tool_call_id": ["x" * 10**6], "content": "r"}
            ),
            InvalidMessageError,
            "must be a string, got list ['xxxx",
        ),
    ],
)
def test_errors_name_any_value_briefly_and_never_fail_themselves(
    attempt: Any, error: type[Exception], shown: str
) -> None:
    ctx = LLMContext([SYSTEM])
    with pytest.raises(error) as info:
        attempt(ctx)
    assert shown in str(info.value)
    assert len(str(info.value)) < 300
    assert ctx.messages == [SYSTEM]


def test_ids_in_sequence_errors_are_cut_short() -> None:
    long_id = "i" * 100_000
    calls = [call(f"{long_id}{n}") for n in range(50)]
    ctx = LLMContext([user("q"), {"role": "assistant", "content": None, "tool_calls": calls}])
    with pytest.raises(ContextInvariantError, match="and 42 more") as info:
        ctx.validate()
    assert len(str(info.value)) < 1000
    ctx.add_tool_message("other" * 100_000, "r")
    with pytest.raises(ContextInvariantError) as info:
        ctx.validate()
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(
    "counts",
    [
        (math.nan, 10),  # made the factor NaN: every later estimate and trim raised
        (10, math.nan),
        (math.inf, 10),
        (10.5, 10),
        ("10", 10),
        (None, 10),
        (True, 1),
        (-1, 10),
    ],
)
def test_calibration_refuses_what_is_not_a_token_count(counts: tuple[Any, Any]) -> None:
    ctx = LLMContext([SYSTEM, user("hi")])
    ctx.calibrate(150, 100)
    with pytest.raises(ValueError, match="non-negative int token counts"):
        ctx.calibrate(*counts)
    if counts[0] != 10:
        with pytest.raises(ValueError, match="non-negative int token counts"):
            ctx.calibrate_from_usage(counts[0], [SYSTEM])
    assert ctx.calibration_factor == 1.5
    assert ctx.trim(10_000) == 0


def test_calibration_with_huge_counts_is_clamped() -> None:
    ctx = LLMContext([SYSTEM])
    assert ctx.calibrate(10**400, 3) == 4.0  # raised OverflowError
    assert ctx.calibrate(3, 10**400) == 0.25
    assert ctx.calibrate(10**400 + 10**399, 10**400) == 1.1


def test_read_only_values_nested_again_still_fit_the_depth_limit() -> None:
    # A value handed out by a context was taken back as checked, however deep it ended up:
    # nesting it again and again built a message too deep for json (RecursionError at every
    # later request).
    value: Any = _deep(50)
    for _ in range(300):
        try:
            ctx = LLMContext([user(part(data=value))])
        except InvalidMessageError as error:
            assert "nest more than 64 levels" in str(error)
            assert len(str(error)) < 300
            break
        strict_json(ctx.to_request_messages())  # RecursionError after about 240 rounds
        value = ctx.messages
    else:
        pytest.fail("never refused")
    ctx = LLMContext([SYSTEM])
    with ctx.begin_round() as staged:
        staged.set_assistant(None, [call("c1")])
        rows = value  # 50 levels deep at least
        for _ in range(14):
            rows = [rows]
        with pytest.raises(InvalidMessageError, match="nest more than 64"):
            staged.add_tool_result("c1", [{"type": "x", "rows": rows}])
    shallow = LLMContext([user(part(data=[1, {"a": [2]}]))])
    ctx.add_message(user(part(data=shallow.messages)))  # shallow enough: taken as is
    strict_json(ctx.to_request_messages())


class _Role(str):
    """A str subclass whose methods lie, and which carries state."""

    def isascii(self) -> bool:
        return True

    def __str__(self) -> str:
        return "assistant"


def test_subclasses_of_str_int_and_float_are_stored_as_plain_values() -> None:
    import enum

    class Level(enum.IntEnum):
        LOW = 1

    class Ratio(float):
        pass

    tag = _Role("user")
    tag.note = "kept?"  # type: ignore[attr-defined]
    ctx = LLMContext()
    ctx.add_message({_Role("role"): tag, "content": _Role("hi"), "n": Level.LOW, "r": Ratio(0.5)})
    (message,) = ctx.messages
    assert message == {"role": "user", "content": "hi", "n": 1, "r": 0.5}
    assert [type(k) for k in message] == [str, str, str, str]
    assert [type(v) for v in message.values()] == [str, str, int, float]
    with pytest.raises(InvalidMessageError, match="lone surrogate"):
        ctx.add_user_message(_Role(f"x{LONE}"))  # its isascii() said True


class _TwoFaced(dict[str, Any]):
    """A mapping whose get() and items() disagree (or one that changes while read)."""

    def get(self, key: str, default: Any = None) -> Any:
        return {"role": "user", "content": "fine"}.get(key, default)


def test_the_checked_copy_is_the_stored_copy() -> None:
    ctx = LLMContext([SYSTEM])
    with pytest.raises(InvalidMessageError, match="unknown role 'robot'"):
        ctx.add_message(_TwoFaced(role="robot", content="x"))
    with pytest.raises(InvalidMessageError, match="missing 'content'"):
        ctx.add_message(_TwoFaced(role="user"))
    assert ctx.messages == [SYSTEM]


@pytest.mark.parametrize("budget", ["0.5", None, True, math.nan, 0, 1.5])
def test_trim_refuses_a_budget_that_is_not_a_fraction(budget: Any) -> None:
    ctx = LLMContext([SYSTEM, user("a" * 400), user("b")])
    with pytest.raises(ValueError, match=r"budget must be in \(0, 1\]"):
        ctx.trim(10, budget=budget)  # "0.5" and None raised TypeError from '<'; True was 1.0
    assert ctx.message_count == 3


def test_the_system_prompt_and_function_schemas_store_plain_strings() -> None:
    ctx = LLMContext()
    ctx.system_prompt = _Role("be brief")
    schema = FunctionSchema(name=_Role("lookup"), description=_Role("looks up"))
    assert [type(ctx.system_prompt), type(schema.name), type(schema.description)] == [str] * 3
    assert ctx.system_prompt == "be brief"
    with pytest.raises(InvalidToolError, match="lone surrogate"):
        FunctionSchema(name=_Role(f"f{LONE}"))  # its isascii() says True


# --------------------------------------------------------------------------- every door, fuzzed


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


_KEYS = st.sampled_from(
    ["role", "content", "type", "text", "tool_calls", "tool_call_id", "id", "function", "name"]
)
_hostile_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=3)
    | st.sampled_from([LONE, math.nan, "user", "assistant", "tool", "function", "c1", "f"])
    | st.builds(_NoRepr)
    | st.builds(lambda: 10**5000)
    | st.frozensets(st.integers(), max_size=2)
)
_hostile = st.recursive(
    _hostile_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(_KEYS | st.text(max_size=2) | st.integers(), inner, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(door=st.integers(0, 14), a=_hostile, b=_hostile)
def test_every_door_accepts_or_refuses_cleanly_and_a_refusal_changes_nothing(
    door: int, a: Any, b: Any
) -> None:
    ctx = LLMContext([SYSTEM, user("u")], tools=[FunctionSchema(name="f")], tool_choice="auto")
    staged = ctx.begin_round()
    staged.set_assistant(None, [call("c1")])

    def state() -> tuple[Any, ...]:
        return (ctx.tools, ctx.tool_choice, ctx.estimate_tokens(), staged.pending_ids)

    before, messages = state(), ctx.messages
    doors = [
        lambda: ctx.add_message(a),
        lambda: ctx.add_messages([user("fine"), a]),
        lambda: ctx.insert_message(b, a),
        lambda: ctx.replace_message(b, a),
        lambda: ctx.remove_message(a),
        lambda: ctx.set_messages(a),
        lambda: setattr(ctx, "system_prompt", a),
        lambda: ctx.set_tools(a),
        lambda: ctx.add_tools([FunctionSchema(name="g"), a]),
        lambda: ctx.set_tool_choice(a),
        lambda: staged.add_tool_result(a, b),
        lambda: staged.add_tool_result("c1", a),
        lambda: ctx.calibrate(a, b),
        lambda: LLMContext(a, tools=b),
        lambda: FunctionSchema(name="f", parameters=a),
    ]
    try:
        doors[door]()
    except (ContextInvariantError, TypeError, ValueError, IndexError) as error:
        assert len(str(error)) < 1000
        assert ctx.messages is messages
        assert state() == before
        return
    # accepted: every request still encodes strictly
    strict_json(ctx.to_request_messages())
    strict_json(ctx.tools_for_request())
    strict_json(ctx.tool_choice)
