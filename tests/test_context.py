"""Tests for :mod:`rustvani_trio.context` (plain sync pytest + hypothesis)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from rustvani_trio.context import (
    MAX_CALIBRATION,
    MIN_CALIBRATION,
    ContextInvariantError,
    ContextRound,
    FunctionSchema,
    InvalidMessageError,
    InvalidToolError,
    LLMContext,
    RoundStateError,
)

# --------------------------------------------------------------------------- helpers


def call(call_id: str, name: str = "lookup", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str | None, *ids: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if ids:
        message["tool_calls"] = [call(i) for i in ids]
    return message


def tool(call_id: str, content: str = "ok") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


SYSTEM = {"role": "system", "content": "You are helpful."}


def raw_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


HEAD_ROLES = ("system", "developer")


def head_len(messages: list[dict[str, Any]]) -> int:
    n = 0
    while n < len(messages) and messages[n]["role"] in HEAD_ROLES:
        n += 1
    return n


def protected_start(body: list[dict[str, Any]]) -> int:
    """Independent statement of the tail trim() must keep, as an index into ``body``."""
    users = [i for i, m in enumerate(body) if m["role"] == "user"]
    if users:
        return users[-1]
    non_tool = [i for i, m in enumerate(body) if m["role"] != "tool"]
    return non_tool[-1] if non_tool else len(body)


def check_trim(ctx: LLMContext, max_tokens: int, budget: float) -> int:
    """Run trim() and assert every documented property; return the number removed."""
    before = ctx.messages
    marks_before = [ctx.is_interrupted(i) for i in range(len(before))]
    was_over = ctx.estimate_tokens() > max_tokens * budget
    removed = ctx.trim(max_tokens, budget=budget)
    after = ctx.messages
    limit = max_tokens * budget
    head = head_len(before)
    body = before[head:]

    assert removed >= 0
    assert len(after) == len(before) - removed  # never grows
    assert after[:head] == before[:head]  # leading system/developer kept, in place
    assert after[head:] == body[removed:]  # oldest removed first, order kept
    assert [ctx.is_interrupted(i) for i in range(len(after))] == (
        marks_before[:head] + marks_before[head + removed :]
    )
    if not was_over:
        assert removed == 0
        return 0
    keep = protected_start(body)
    assert removed <= keep  # the last user message (and what follows) survives
    if removed:
        # Never leaves the conversation starting with a tool message (an orphan result).
        assert removed == len(body) or body[removed]["role"] != "tool"
    # Within budget unless only the protected minimum is left.
    assert ctx.estimate_tokens() <= limit or removed == keep
    # Minimal: the previous legal cut would still have been over budget.
    if removed:
        previous = max(c for c in range(removed) if c == 0 or body[c]["role"] != "tool")
        assert ctx.estimate_tokens(before[:head] + body[previous:]) > limit
    return removed


def reference_valid(messages: list[dict[str, Any]]) -> bool:
    """Independent statement of validate()'s sequence rule (for well-formed messages).

    Every assistant message with tool calls is followed by a run of tool messages whose ids
    are exactly its call ids (each once, any order); tool messages appear nowhere else.
    """
    i = 0
    while i < len(messages):
        message = messages[i]
        if message["role"] == "tool":
            return False
        i += 1
        if message["role"] == "assistant" and "tool_calls" in message:
            ids = [c["id"] for c in message["tool_calls"]]
            answers = []
            while i < len(messages) and messages[i]["role"] == "tool":
                answers.append(messages[i]["tool_call_id"])
                i += 1
            if sorted(answers) != sorted(ids):
                return False
    return True


# --------------------------------------------------------------------------- FunctionSchema


def test_function_schema_defaults_and_to_openai() -> None:
    schema = FunctionSchema(name="get_weather")
    assert schema.description == ""
    assert schema.parameters == {"type": "object", "properties": {}}
    assert schema.to_openai() == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "",
            "parameters": {"type": "object", "properties": {}},
        },
    }


def test_function_schema_copies_parameters() -> None:
    params: dict[str, Any] = {"type": "object", "properties": {"city": {"type": "string"}}}
    schema = FunctionSchema(name="f", description="d", parameters=params)
    params["properties"]["city"]["type"] = "number"
    assert schema.parameters["properties"]["city"]["type"] == "string"
    exported = schema.to_openai()
    exported["function"]["parameters"]["properties"].clear()
    assert schema.parameters["properties"] == {"city": {"type": "string"}}


def test_function_schema_is_frozen_kw_only_and_comparable() -> None:
    schema = FunctionSchema(name="f")
    with pytest.raises(AttributeError):
        schema.name = "g"  # type: ignore[misc]
    with pytest.raises(TypeError):
        FunctionSchema("f")  # type: ignore[call-arg]
    assert FunctionSchema(name="f") == schema
    assert FunctionSchema(name="g") != schema
    other_parameters = FunctionSchema(name="f", parameters={"type": "object", "required": []})
    assert other_parameters != schema
    assert len({schema, FunctionSchema(name="f"), other_parameters}) == 2  # hashable, as documented


@pytest.mark.parametrize("name", ["", 3, None])
def test_function_schema_rejects_bad_name(name: Any) -> None:
    with pytest.raises(InvalidToolError, match="non-empty string"):
        FunctionSchema(name=name)


def test_function_schema_rejects_bad_description_and_parameters() -> None:
    with pytest.raises(TypeError):
        FunctionSchema(name="f", description=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a dict"):
        FunctionSchema(name="f", parameters=["x"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- construction


def test_empty_context() -> None:
    ctx = LLMContext()
    assert ctx.messages == []
    assert ctx.message_count == 0
    assert ctx.tools == []
    assert ctx.tool_choice is None
    assert ctx.system_prompt is None
    assert ctx.tools_for_request() is None
    assert ctx.open_round is None
    assert ctx.calibration_factor == 1.0
    ctx.validate()
    assert "messages=0" in repr(ctx)


def test_constructor_copies_and_checks() -> None:
    messages = [SYSTEM, user("hi")]
    ctx = LLMContext(messages, tools=[FunctionSchema(name="f")], tool_choice="auto")
    messages[1]["content"] = "changed"
    assert ctx.messages == [SYSTEM, user("hi")]
    assert ctx.tool_names() == ["f"]
    assert ctx.tool_choice == "auto"
    with pytest.raises(InvalidMessageError, match="message 1"):
        LLMContext([user("a"), {"role": "bot", "content": "x"}])
    with pytest.raises(InvalidToolError):
        LLMContext(tools=[{"type": "nope"}])
    with pytest.raises(InvalidToolError, match="tool_choice"):
        LLMContext(tool_choice="sometimes")  # type: ignore[arg-type]


def test_messages_property_is_a_read_only_snapshot() -> None:
    # Issue 9, item 19: a change to what ``messages`` returns used to be lost silently on a
    # copy; now it is refused, with the method to call instead.
    ctx = LLMContext([user("hi")])
    snapshot = ctx.messages
    with pytest.raises(TypeError, match=r"replace_message\(index"):
        snapshot[0]["content"] = "mutated"  # type: ignore[index]
    with pytest.raises(TypeError, match=r"add_message\(message\)"):
        snapshot.append(user("extra"))  # type: ignore[attr-defined]
    assert ctx.messages == [user("hi")]
    ctx.add_user_message("more")
    assert snapshot == [user("hi")]  # a snapshot: later changes do not reach it
    assert ctx.messages == [user("hi"), user("more")]


def test_added_message_is_copied() -> None:
    ctx = LLMContext()
    message = assistant("x", "c1")
    ctx.add_message(message)
    message["tool_calls"][0]["id"] = "other"
    assert ctx.messages[0]["tool_calls"][0]["id"] == "c1"


def test_tuples_become_lists() -> None:
    ctx = LLMContext()
    ctx.add_message({"role": "user", "content": ({"type": "text", "text": "hi"},)})
    assert ctx.messages[0]["content"] == [{"type": "text", "text": "hi"}]


# --------------------------------------------------------------------------- message checks


BAD_MESSAGES: list[tuple[Any, str]] = [
    ("not a dict", "must be a dict, got str"),
    ({"content": "x"}, "unknown role None"),
    ({"role": "bot", "content": "x"}, "unknown role 'bot'"),
    ({"role": "user"}, "missing 'content'"),
    ({"role": "system"}, "missing 'content'"),
    ({"role": "user", "content": 3}, "'content' must be a string or a list"),
    ({"role": "user", "content": [{"text": "no type"}]}, "content part 0"),
    ({"role": "user", "content": ["bare"]}, "content part 0"),
    ({"role": "tool", "content": "x"}, "missing 'tool_call_id'"),
    ({"role": "tool", "content": "x", "tool_call_id": ""}, "missing 'tool_call_id'"),
    ({"role": "tool", "tool_call_id": "a"}, "missing 'content'"),
    ({"role": "assistant"}, "needs 'content' or 'tool_calls'"),
    ({"role": "assistant", "content": None}, "needs 'content' or 'tool_calls'"),
    ({"role": "assistant", "content": None, "tool_calls": []}, "non-empty list"),
    ({"role": "assistant", "content": None, "tool_calls": "x"}, "non-empty list"),
    ({"role": "assistant", "content": None, "tool_calls": ["x"]}, "tool call 0 must be a dict"),
    (
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]},
        "tool call 0 has no id",
    ),
    (
        {"role": "assistant", "content": None, "tool_calls": [dict(call("a"), id="")]},
        "has no id",
    ),
    (
        {"role": "assistant", "content": None, "tool_calls": [call("a"), call("a")]},
        "tool call 1 repeats the id 'a'",
    ),
    (
        {"role": "assistant", "content": None, "tool_calls": [dict(call("a"), type="x")]},
        "'type' must be 'function'",
    ),
    (
        {"role": "assistant", "content": None, "tool_calls": [dict(call("a"), function=1)]},
        "'function' must be a dict",
    ),
    (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "a", "type": "function", "function": {"arguments": "{}"}}],
        },
        "'function.name'",
    ),
    (
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f"}}],
        },
        "'function.arguments' must be a string",
    ),
    ({"role": "user", "content": "x", "tool_calls": [call("a")]}, "only assistant messages"),
    ({"role": "user", "content": "x", "tool_call_id": "a"}, "only tool messages"),
]


@pytest.mark.parametrize(("message", "fragment"), BAD_MESSAGES)
def test_add_message_rejects_malformed(message: Any, fragment: str) -> None:
    ctx = LLMContext([user("first")])
    with pytest.raises(InvalidMessageError, match="message 1") as info:
        ctx.add_message(message)
    assert fragment in str(info.value)
    assert isinstance(info.value, ContextInvariantError)
    assert isinstance(info.value, ValueError)
    assert ctx.messages == [user("first")]


def test_accepts_every_role_and_content_parts() -> None:
    ctx = LLMContext()
    ctx.add_messages(
        [
            SYSTEM,
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": "hello", "name": "bot"},
            {"role": "assistant", "tool_calls": [call("c1")]},
            tool("c1", "result"),
        ]
    )
    assert ctx.message_count == 6
    ctx.validate()


def test_add_messages_is_all_or_nothing() -> None:
    ctx = LLMContext([user("a")])
    with pytest.raises(InvalidMessageError, match="message 2"):
        ctx.add_messages([user("b"), {"role": "user"}])
    assert ctx.messages == [user("a")]
    with pytest.raises(InvalidMessageError, match="single message dict"):
        ctx.add_messages(user("b"))  # type: ignore[arg-type]


def test_set_messages_replaces_all_or_nothing() -> None:
    ctx = LLMContext([user("a")])
    ctx.add_assistant_message("b", interrupted=True)
    with pytest.raises(InvalidMessageError):
        ctx.set_messages([user("x"), {"role": "nobody"}])
    assert ctx.messages == [user("a"), assistant("b")]
    ctx.set_messages([user("x")])
    assert ctx.messages == [user("x")]
    assert ctx.interrupted_indices() == []


def test_convenience_adders() -> None:
    ctx = LLMContext()
    ctx.add_user_message("hi")
    ctx.add_assistant_message("hello")
    ctx.add_message(assistant(None, "c1"))
    ctx.add_tool_message("c1", "42")
    assert ctx.messages == [user("hi"), assistant("hello"), assistant(None, "c1"), tool("c1", "42")]
    with pytest.raises(InvalidMessageError, match="missing 'tool_call_id'"):
        ctx.add_tool_message("", "x")
    with pytest.raises(InvalidMessageError):
        ctx.add_user_message(5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- interruption marks


def test_interrupted_marks_are_kept_outside_messages() -> None:
    ctx = LLMContext([user("hi")])
    ctx.add_assistant_message("Once upon a ti", interrupted=True)
    ctx.add_assistant_message("done")
    assert ctx.messages[1] == {"role": "assistant", "content": "Once upon a ti"}
    assert ctx.to_request_messages()[1] == {"role": "assistant", "content": "Once upon a ti"}
    assert [ctx.is_interrupted(i) for i in range(3)] == [False, True, False]
    assert ctx.is_interrupted(-2)
    assert ctx.interrupted_indices() == [1]
    with pytest.raises(IndexError):
        ctx.is_interrupted(3)


def test_interrupted_marks_follow_their_message() -> None:
    ctx = LLMContext([user("old" * 100), assistant("x" * 400)])
    ctx.add_user_message("q")
    ctx.add_assistant_message("partial", interrupted=True)
    ctx.system_prompt = "sys"  # inserts at 0: marks shift by one
    assert ctx.interrupted_indices() == [4]
    ctx.add_user_message("latest")
    removed = ctx.trim(60, budget=1.0)
    assert removed == 2
    assert ctx.messages[2] == assistant("partial")
    assert ctx.interrupted_indices() == [2]
    ctx.system_prompt = None
    assert ctx.interrupted_indices() == [1]
    assert ctx.copy().interrupted_indices() == [1]


# --------------------------------------------------------------------------- system prompt


def test_system_prompt_insert_replace_remove() -> None:
    ctx = LLMContext([user("hi")])
    ctx.system_prompt = "one"
    assert ctx.messages[0] == {"role": "system", "content": "one"}
    assert ctx.system_prompt == "one"
    ctx.system_prompt = "two"
    assert ctx.messages == [{"role": "system", "content": "two"}, user("hi")]
    ctx.system_prompt = None
    assert ctx.messages == [user("hi")]
    ctx.system_prompt = None  # removing when absent is a no-op
    assert ctx.messages == [user("hi")]
    with pytest.raises(InvalidMessageError, match="must be a string"):
        ctx.system_prompt = 3  # type: ignore[assignment]


def test_system_prompt_keeps_other_keys_and_reads_parts() -> None:
    ctx = LLMContext(
        [
            {
                "role": "system",
                "name": "rules",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert ctx.system_prompt == "ab"
    ctx.system_prompt = "c"
    assert ctx.messages == [{"role": "system", "name": "rules", "content": "c"}]


def test_system_prompt_only_counts_a_leading_system_message() -> None:
    ctx = LLMContext([{"role": "developer", "content": "dev"}, SYSTEM])
    assert ctx.system_prompt is None
    ctx.system_prompt = "first"
    assert [m["role"] for m in ctx.messages] == ["system", "developer", "system"]
    assert LLMContext([user("x"), SYSTEM]).system_prompt is None


# --------------------------------------------------------------------------- request form


def test_to_request_messages_is_a_fresh_serialisable_copy() -> None:
    ctx = LLMContext([SYSTEM, user("hi"), assistant(None, "c1"), tool("c1")])
    request = ctx.to_request_messages()
    assert request == ctx.messages
    json.dumps(request)
    request[2]["tool_calls"][0]["function"]["name"] = "hacked"
    assert ctx.messages[2]["tool_calls"][0]["function"]["name"] == "lookup"


def test_to_request_messages_excludes_open_round() -> None:
    ctx = LLMContext([user("hi")])
    round_ = ctx.begin_round()
    round_.set_assistant("thinking", [call("c1")])
    round_.add_tool_result("c1", "r")
    assert ctx.to_request_messages() == [user("hi")]
    assert ctx.messages == [user("hi")]


# --------------------------------------------------------------------------- tools


def test_set_tools_mixed_specs_and_request_form() -> None:
    ctx = LLMContext()
    ctx.set_tools([FunctionSchema(name="a", description="A"), raw_tool("b")])
    assert ctx.tool_names() == ["a", "b"]
    assert ctx.tools_for_request() == [
        FunctionSchema(name="a", description="A").to_openai(),
        raw_tool("b"),
    ]
    ctx.set_tools(None)
    assert ctx.tools_for_request() is None
    ctx.set_tools([raw_tool("c")])
    ctx.set_tools([])
    assert ctx.tools == []


def test_tools_are_copied_in_and_out() -> None:
    spec = raw_tool("b")
    ctx = LLMContext(tools=[spec])
    spec["function"]["name"] = "changed"
    assert ctx.tool_names() == ["b"]
    out = ctx.tools
    assert isinstance(out[0], dict)
    with pytest.raises(TypeError, match="read-only"):
        out[0]["function"]["name"] = "changed"
    with pytest.raises(TypeError, match=r"context.remove_tool\(name\)"):
        del out[0]  # type: ignore[attr-defined]
    request = ctx.tools_for_request()
    assert request is not None
    request[0]["function"]["name"] = "changed"
    assert ctx.tool_names() == ["b"]
    assert ctx.tools == [raw_tool("b")]
    schema = FunctionSchema(name="s")
    ctx.add_tools([schema])
    assert ctx.tools[1] is schema


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "retrieval"}, "needs 'type': 'function'"),
        ({"type": "function"}, "needs 'function'"),
        ({"type": "function", "function": {"name": ""}}, "needs 'function'"),
        ({"type": "function", "function": {"name": "f", "description": 1}}, "description"),
        ({"type": "function", "function": {"name": "f", "parameters": []}}, "parameters"),
        ("get_weather", "FunctionSchema or an OpenAI tool dict"),
    ],
)
def test_bad_tool_specs(spec: Any, fragment: str) -> None:
    ctx = LLMContext(tools=[raw_tool("keep")])
    with pytest.raises(InvalidToolError, match=fragment):
        ctx.set_tools([spec])
    with pytest.raises(InvalidToolError, match=fragment):
        ctx.add_tools([raw_tool("new"), spec])
    assert ctx.tool_names() == ["keep"]


def test_duplicate_tool_names_rejected() -> None:
    ctx = LLMContext()
    with pytest.raises(InvalidToolError, match="'a' appears more than once"):
        ctx.set_tools([raw_tool("a"), FunctionSchema(name="a")])
    with pytest.raises(InvalidToolError, match="more than once"):
        ctx.add_tools([raw_tool("a"), raw_tool("a")])
    with pytest.raises(InvalidToolError, match="single tool"):
        ctx.set_tools(raw_tool("a"))  # type: ignore[arg-type]
    with pytest.raises(InvalidToolError, match="single tool"):
        ctx.set_tools(FunctionSchema(name="a"))  # type: ignore[arg-type]
    assert ctx.tools == []


def test_add_tools_replaces_by_name_in_place() -> None:
    ctx = LLMContext(tools=[raw_tool("a"), raw_tool("b")])
    replacement = FunctionSchema(name="a", description="new a")
    ctx.add_tools([raw_tool("c"), replacement])
    assert ctx.tool_names() == ["a", "b", "c"]
    assert ctx.tools[0] == replacement


def test_remove_tool() -> None:
    ctx = LLMContext(tools=[raw_tool("a"), raw_tool("b")])
    assert ctx.remove_tool("a") is True
    assert ctx.tool_names() == ["b"]
    with pytest.raises(KeyError, match="no tool named 'zzz'"):
        ctx.remove_tool("zzz")
    assert ctx.remove_tool("zzz", missing_ok=True) is False
    assert ctx.tool_names() == ["b"]


@pytest.mark.parametrize(
    "choice",
    [None, "auto", "none", "required", {"type": "function", "function": {"name": "a"}}],
)
def test_valid_tool_choices(choice: Any) -> None:
    ctx = LLMContext(tools=[raw_tool("a")])
    ctx.set_tool_choice(choice)
    assert ctx.tool_choice == choice
    ctx.validate()


@pytest.mark.parametrize(
    "choice",
    [
        "any",
        3,
        {"type": "function"},
        {"type": "function", "function": {"name": ""}},
        {"type": "tool", "function": {"name": "a"}},
    ],
)
def test_invalid_tool_choices(choice: Any) -> None:
    ctx = LLMContext()
    with pytest.raises(InvalidToolError, match="tool_choice must be"):
        ctx.set_tool_choice(choice)
    assert ctx.tool_choice is None


def test_tool_choice_is_copied() -> None:
    choice: dict[str, Any] = {"type": "function", "function": {"name": "a"}}
    ctx = LLMContext(tools=[raw_tool("a")], tool_choice=choice)
    choice["function"]["name"] = "b"
    out = ctx.tool_choice
    assert isinstance(out, dict)
    with pytest.raises(TypeError, match=r"set_tool_choice\(\)"):
        out["function"]["name"] = "c"
    assert ctx.tool_choice == {"type": "function", "function": {"name": "a"}}


def test_validate_checks_tool_choice_against_tools() -> None:
    ctx = LLMContext(
        tools=[raw_tool("a")], tool_choice={"type": "function", "function": {"name": "a"}}
    )
    ctx.validate()
    ctx.remove_tool("a")
    with pytest.raises(ContextInvariantError, match="names function 'a', which is not among"):
        ctx.validate()
    ctx.set_tool_choice("required")
    with pytest.raises(ContextInvariantError, match="'required' but there are no tools"):
        ctx.validate()


# --------------------------------------------------------------------------- copy


def test_copy_is_independent() -> None:
    ctx = LLMContext([SYSTEM, user("hi")], tools=[raw_tool("a")], tool_choice="auto")
    ctx.add_assistant_message("cut", interrupted=True)
    ctx.calibrate(200, 100)
    twin = ctx.copy()
    assert twin.messages == ctx.messages
    assert twin.tools == ctx.tools
    assert twin.tool_choice == "auto"
    assert twin.interrupted_indices() == [2]
    assert twin.calibration_factor == 2.0
    twin.add_user_message("only in twin")
    twin.remove_tool("a")
    twin.set_tool_choice("none")
    twin.system_prompt = "other"
    assert ctx.message_count == 3
    assert ctx.tool_names() == ["a"]
    assert ctx.tool_choice == "auto"
    assert ctx.system_prompt == "You are helpful."


def test_copy_does_not_copy_open_round() -> None:
    ctx = LLMContext([user("hi")])
    round_ = ctx.begin_round()
    round_.set_assistant(None, [call("c1")])
    twin = ctx.copy()
    assert twin.open_round is None
    twin.validate()
    twin.begin_round().rollback()
    assert ctx.open_round is round_


# --------------------------------------------------------------------------- validate


def test_validate_accepts_results_in_any_order() -> None:
    ctx = LLMContext([SYSTEM, user("q"), assistant(None, "a", "b", "c"), tool("c"), tool("a")])
    ctx.add_tool_message("b", "x")
    ctx.add_assistant_message("done")
    ctx.validate()


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([user("q"), assistant(None, "a", "b"), tool("a")], "'b' of assistant message 1 are never"),
        (
            [user("q"), assistant(None, "a"), user("again")],
            "'a' of assistant message 1 are not answered before message 2 (user)",
        ),
        (
            [user("q"), assistant(None, "a"), assistant("hm")],
            "not answered before message 2 (assistant)",
        ),
        (
            [user("q"), assistant(None, "a"), SYSTEM, tool("a")],
            "not answered before message 2 (system)",
        ),
        (
            [user("q"), assistant(None, "a"), tool("zzz")],
            "message 2 (tool) answers unknown tool call 'zzz'; the assistant message 1 called 'a'",
        ),
        (
            [user("q"), assistant(None, "a", "b"), tool("a"), tool("a")],
            "message 3 (tool) answers tool call 'a', which was already answered",
        ),
        (
            [user("q"), assistant(None, "a"), tool("a"), user("x"), tool("a")],
            "which was already answered",
        ),
        ([tool("a")], "message 0 (tool) answers tool call 'a', but it does not follow"),
        ([user("q"), tool("a")], "does not follow an assistant message with tool calls"),
    ],
)
def test_validate_sequence_errors(messages: list[dict[str, Any]], fragment: str) -> None:
    ctx = LLMContext(messages)
    with pytest.raises(ContextInvariantError) as info:
        ctx.validate()
    assert fragment in str(info.value)
    assert not reference_valid(messages)


def test_validate_reports_open_round() -> None:
    ctx = LLMContext([user("q")])
    round_ = ctx.begin_round()
    with pytest.raises(ContextInvariantError, match="round is still open"):
        ctx.validate()
    round_.rollback()
    ctx.validate()


def test_validate_rechecks_message_shape() -> None:
    ctx = LLMContext([user("q"), assistant(None, "a"), tool("a")])
    # Reach into the private store to simulate corruption that add_message would refuse.
    # (The stored values are read-only, so the corruption needs dict's own method.)
    dict.__delitem__(ctx._entries[1].message["tool_calls"][0], "id")
    with pytest.raises(InvalidMessageError, match=r"message 1 .*tool call 0 has no id"):
        ctx.validate()


# --------------------------------------------------------------------------- rounds


def test_round_commit_appends_in_call_order() -> None:
    ctx = LLMContext([user("weather in Paris and Rome?")])
    round_ = ctx.begin_round()
    assert ctx.open_round is round_
    assert round_.is_open
    assert not round_.pending_ids
    calls = [call("p", "weather", '{"city":"Paris"}'), call("r", "weather", '{"city":"Rome"}')]
    round_.set_assistant("Checking.", calls)
    assert list(round_.pending_ids) == ["p", "r"]
    assert round_.tool_calls == calls
    round_.add_tool_result("r", "sunny")
    assert list(round_.pending_ids) == ["p"]
    round_.add_tool_result("p", [{"type": "text", "text": "rain"}])
    assert not round_.pending_ids
    round_.commit()
    assert not round_.is_open
    assert ctx.open_round is None
    assert ctx.messages[1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "p", "content": [{"type": "text", "text": "rain"}]},
        {"role": "tool", "tool_call_id": "r", "content": "sunny"},
    ]
    ctx.validate()
    assert "closed" in repr(round_)


def test_round_copies_its_inputs() -> None:
    ctx = LLMContext([user("q")])
    calls = [call("a")]
    content = [{"type": "text", "text": "r"}]
    with ctx.begin_round() as round_:
        round_.set_assistant(None, calls)
        round_.add_tool_result("a", content)
        calls[0]["id"] = "changed"
        content[0]["text"] = "changed"
        with pytest.raises(TypeError, match="read-only"):
            round_.tool_calls[0]["id"] = "changed"  # type: ignore[index]
        round_.commit()
    assert ctx.messages[1]["tool_calls"][0]["id"] == "a"
    assert ctx.messages[2]["content"] == [{"type": "text", "text": "r"}]


def test_round_keeps_extra_tool_call_keys() -> None:
    ctx = LLMContext([user("q")])
    extra = dict(call("a"), extra_content={"google": {"thought_signature": "sig"}})
    with ctx.begin_round() as round_:
        round_.set_assistant(None, [extra])
        round_.add_tool_result("a", "r")
        round_.commit()
    assert ctx.messages[1]["tool_calls"] == [extra]


def test_begin_round_twice_is_an_error() -> None:
    ctx = LLMContext()
    first = ctx.begin_round()
    with pytest.raises(RoundStateError, match="already open"):
        ctx.begin_round()
    first.rollback()
    ctx.begin_round().rollback()


def test_round_result_errors() -> None:
    ctx = LLMContext([user("q")])
    round_ = ctx.begin_round()
    with pytest.raises(RoundStateError, match="set_assistant\\(\\) before adding"):
        round_.add_tool_result("a", "r")
    round_.set_assistant(None, [call("a"), call("b")])
    with pytest.raises(ContextInvariantError, match=r"unknown tool_call_id 'zzz'; .* 'a', 'b'"):
        round_.add_tool_result("zzz", "r")
    round_.add_tool_result("a", "r")
    with pytest.raises(ContextInvariantError, match="'a' already has a result"):
        round_.add_tool_result("a", "again")
    with pytest.raises(InvalidMessageError, match="result for 'b'"):
        round_.add_tool_result("b", 42)  # type: ignore[arg-type]
    assert round_.pending_ids == ("b",)


def test_round_commit_errors_keep_round_open() -> None:
    ctx = LLMContext([user("q")])
    round_ = ctx.begin_round()
    with pytest.raises(RoundStateError, match="set_assistant\\(\\) before commit"):
        round_.commit()
    round_.set_assistant(None, [call("a"), call("b")])
    round_.add_tool_result("b", "r")
    with pytest.raises(ContextInvariantError, match="no result yet for tool call\\(s\\) 'a'"):
        round_.commit()
    assert round_.is_open
    assert ctx.messages == [user("q")]
    round_.add_tool_result("a", "r")
    round_.commit()
    ctx.validate()


def test_round_set_assistant_errors() -> None:
    ctx = LLMContext([user("q")])
    round_ = ctx.begin_round()
    with pytest.raises(InvalidMessageError, match="non-empty list"):
        round_.set_assistant("text", [])
    with pytest.raises(InvalidMessageError, match="tool call 1 has no id"):
        round_.set_assistant(None, [call("a"), {"type": "function", "function": {}}])
    with pytest.raises(InvalidMessageError, match="repeats the id"):
        round_.set_assistant(None, [call("a"), call("a")])
    with pytest.raises(InvalidMessageError, match="text must be a string or None"):
        round_.set_assistant(5, [call("a")])  # type: ignore[arg-type]
    assert round_.pending_ids == ()
    round_.set_assistant(None, [call("a")])
    with pytest.raises(RoundStateError, match="already called"):
        round_.set_assistant(None, [call("b")])


def test_closed_round_refuses_everything() -> None:
    ctx = LLMContext([user("q")])
    round_ = ctx.begin_round()
    round_.set_assistant(None, [call("a")])
    round_.add_tool_result("a", "r")
    round_.commit()
    for action in (
        round_.commit,
        round_.rollback,
        lambda: round_.add_tool_result("a", "r"),
        lambda: round_.set_assistant(None, [call("b")]),
    ):
        with pytest.raises(RoundStateError, match="already closed"):
            action()
    assert round_.pending_ids == ()
    assert ctx.message_count == 3


def test_rollback_discards_everything() -> None:
    ctx = LLMContext([SYSTEM, user("q")])
    before = ctx.messages
    round_ = ctx.begin_round()
    round_.set_assistant("x", [call("a"), call("b")])
    round_.add_tool_result("b", "r")
    round_.rollback()
    assert not round_.is_open
    assert round_.pending_ids == ()
    assert ctx.open_round is None
    assert ctx.messages == before
    ctx.validate()


class _Abort(BaseException):
    """Stands in for trio.Cancelled, which is a BaseException."""


def test_with_block_rolls_back_on_exception() -> None:
    ctx = LLMContext([user("q")])
    with pytest.raises(_Abort), ctx.begin_round() as round_:
        round_.set_assistant(None, [call("a")])
        round_.add_tool_result("a", "r")
        raise _Abort
    assert not round_.is_open
    assert ctx.messages == [user("q")]
    assert ctx.open_round is None


def test_with_block_rolls_back_when_not_committed() -> None:
    ctx = LLMContext([user("q")])
    with ctx.begin_round() as round_:
        round_.set_assistant(None, [call("a")])
        round_.add_tool_result("a", "r")
    assert not round_.is_open
    assert ctx.messages == [user("q")]


def test_with_block_keeps_explicit_commit_even_if_later_exception() -> None:
    ctx = LLMContext([user("q")])
    with pytest.raises(_Abort), ctx.begin_round() as round_:
        round_.set_assistant(None, [call("a")])
        round_.add_tool_result("a", "r")
        round_.commit()
        raise _Abort
    assert ctx.message_count == 3
    ctx.validate()


def test_messages_added_during_round_stay_before_it() -> None:
    ctx = LLMContext([user("q")])
    round_ = ctx.begin_round()
    round_.set_assistant(None, [call("a")])
    ctx.add_user_message("barge-in")
    round_.add_tool_result("a", "r")
    round_.commit()
    assert ctx.messages == [user("q"), user("barge-in"), assistant(None, "a"), tool("a", "r")]
    ctx.validate()


def test_context_round_type_is_exported() -> None:
    assert isinstance(LLMContext().begin_round(), ContextRound)


# --------------------------------------------------------------------------- estimates


def test_estimate_heuristic_is_pinned() -> None:
    ctx = LLMContext()
    assert ctx.estimate_tokens() == 3  # reply priming only
    ctx.add_user_message("abcd" * 10)  # 4 overhead + 40 chars / 4
    assert ctx.estimate_tokens() == 3 + 4 + 10
    assert ctx.estimate_tokens([user("abcde")]) == 3 + 4 + 2  # chars rounded up


def test_estimate_counts_every_part() -> None:
    ctx = LLMContext()
    base = ctx.estimate_tokens([user("")])
    assert ctx.estimate_tokens([user("x" * 400)]) == base + 100
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}]}
    assert ctx.estimate_tokens([image]) == base + 85
    with_call = assistant(None, "id")
    assert ctx.estimate_tokens([with_call]) > base + 3
    assert ctx.estimate_tokens([tool("x" * 40)]) > base
    assert ctx.estimate_tokens([user("a"), user("b")]) > ctx.estimate_tokens([user("a")])
    # Tolerates junk when estimating arbitrary lists.
    assert ctx.estimate_tokens([{"content": 3}, "junk", {"content": ["s"]}]) >= 3  # type: ignore[list-item]


def test_estimate_counts_tools_unless_excluded() -> None:
    ctx = LLMContext([user("hi")])
    without = ctx.estimate_tokens()
    ctx.set_tools([FunctionSchema(name="lookup", description="Look something up")])
    with_tools = ctx.estimate_tokens()
    assert with_tools > without + 8
    assert ctx.estimate_tokens(include_tools=False) == without
    assert ctx.estimate_tokens(ctx.messages) == with_tools


def test_calibrate_scales_estimates() -> None:
    ctx = LLMContext([user("x" * 396)])  # raw: 3 + 4 + 99 = 106
    raw = ctx.estimate_tokens(calibrated=False)
    assert raw == 106
    assert ctx.calibrate(212, raw) == 2.0
    assert ctx.calibration_factor == 2.0
    assert ctx.estimate_tokens() == 212
    assert ctx.estimate_tokens(calibrated=False) == 106
    assert ctx.calibrate(53, raw) == 0.5
    assert ctx.estimate_tokens() == 53
    ctx.reset_calibration()
    assert ctx.estimate_tokens() == 106


def test_calibrate_clamps_and_ignores_zero() -> None:
    ctx = LLMContext()
    assert ctx.calibrate(10_000, 10) == MAX_CALIBRATION
    assert ctx.calibrate(1, 10_000) == MIN_CALIBRATION
    assert ctx.calibrate(0, 100) == MIN_CALIBRATION  # no usage reported: unchanged
    assert ctx.calibrate(100, 0) == MIN_CALIBRATION
    with pytest.raises(ValueError, match="non-negative"):
        ctx.calibrate(-1, 10)
    with pytest.raises(ValueError, match="non-negative"):
        ctx.calibrate(10, -1)


def test_calibrate_from_usage() -> None:
    ctx = LLMContext([user("x" * 396)])
    with pytest.raises(ValueError, match="prior to_request_messages"):
        ctx.calibrate_from_usage(100)
    sent = ctx.to_request_messages()
    ctx.add_assistant_message("y" * 4000)  # the reply arrives before usage is processed
    assert ctx.calibrate_from_usage(159) == 1.5  # 159 / 106, from the remembered request
    assert ctx.calibrate_from_usage(212, sent) == 2.0
    assert ctx.calibrate_from_usage(0, sent) == 2.0


@given(
    texts=st.lists(st.text(max_size=200), max_size=8),
    prompt=st.integers(1, 100_000),
)
@settings(max_examples=50, deadline=None)
def test_calibration_is_clamped_and_monotone(texts: list[str], prompt: int) -> None:
    ctx = LLMContext([user(t) for t in texts])
    raw = ctx.estimate_tokens(calibrated=False)
    factor = ctx.calibrate(prompt, raw)
    assert MIN_CALIBRATION <= factor <= MAX_CALIBRATION
    assert factor == min(max(prompt / raw, MIN_CALIBRATION), MAX_CALIBRATION)
    assert ctx.estimate_tokens() == math.floor(raw * factor + 0.5)
    ctx.add_user_message("more")
    assert ctx.estimate_tokens() >= math.floor(raw * factor + 0.5)


# --------------------------------------------------------------------------- trim


def long_conversation() -> LLMContext:
    ctx = LLMContext([SYSTEM, {"role": "developer", "content": "dev rules"}])
    for i in range(5):
        ctx.add_user_message(f"question {i} " + "q" * 200)
        ctx.add_assistant_message(f"answer {i} " + "a" * 200)
    return ctx


def test_trim_noop_when_within_budget() -> None:
    ctx = long_conversation()
    before = ctx.messages
    assert ctx.trim(10_000) == 0
    assert ctx.messages == before


def test_trim_drops_oldest_and_keeps_head() -> None:
    ctx = long_conversation()
    estimate = ctx.estimate_tokens()
    removed = check_trim(ctx, estimate, budget=0.6)
    assert removed > 0
    messages = ctx.messages
    assert messages[0] == SYSTEM
    assert messages[1]["role"] == "developer"
    assert messages[-1]["content"].startswith("answer 4")
    assert ctx.estimate_tokens() <= estimate * 0.6


def test_trim_keeps_last_user_message_even_over_budget() -> None:
    ctx = long_conversation()
    removed = check_trim(ctx, 1, budget=1.0)
    assert removed == 8
    assert [m["role"] for m in ctx.messages] == ["system", "developer", "user", "assistant"]
    assert ctx.messages[2]["content"].startswith("question 4")
    assert ctx.trim(1) == 0  # already at the protected minimum


def test_trim_drops_tool_round_as_a_unit() -> None:
    ctx = LLMContext([SYSTEM, user("first"), assistant(None, "a", "b"), tool("a", "x" * 400)])
    ctx.add_tool_message("b", "y" * 400)
    ctx.add_assistant_message("summary")
    ctx.add_user_message("next")
    # Dropping "first" alone is not enough; the cut may not fall between the call and results.
    budget_tokens = ctx.estimate_tokens([SYSTEM, assistant("summary"), user("next")])
    removed = check_trim(ctx, budget_tokens, budget=1.0)
    assert removed == 4
    assert ctx.messages == [SYSTEM, assistant("summary"), user("next")]
    ctx.validate()


def test_trim_never_starts_with_tool_message() -> None:
    ctx = LLMContext([SYSTEM, tool("orphan", "z" * 400), user("q"), assistant("a")])
    removed = check_trim(ctx, ctx.estimate_tokens() - 1, budget=1.0)
    assert removed == 1
    assert ctx.messages == [SYSTEM, user("q"), assistant("a")]


def test_trim_does_not_cut_between_call_and_results_even_if_that_would_fit() -> None:
    big_call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call("a", arguments="x" * 800)],
    }
    ctx = LLMContext([user("q1"), big_call, tool("a", "short"), user("q2")])
    # Dropping q1 and the big call would fit, but it would orphan the tool result.
    limit = ctx.estimate_tokens([tool("a", "short"), user("q2")])
    removed = check_trim(ctx, limit, budget=1.0)
    assert removed == 3
    assert ctx.messages == [user("q2")]


def test_trim_keeps_open_tool_loop_after_last_user() -> None:
    ctx = LLMContext([user("old " * 100), user("q"), assistant(None, "a"), tool("a", "r" * 400)])
    removed = check_trim(ctx, 10, budget=1.0)
    assert removed == 1
    assert ctx.messages == [user("q"), assistant(None, "a"), tool("a", "r" * 400)]


def test_trim_without_user_keeps_last_non_tool_message() -> None:
    ctx = LLMContext([SYSTEM, assistant("x" * 400), assistant(None, "a"), tool("a")])
    assert check_trim(ctx, 1, budget=1.0) == 1
    assert ctx.messages == [SYSTEM, assistant(None, "a"), tool("a")]
    only_tools = LLMContext([SYSTEM, tool("a"), tool("b")])
    assert check_trim(only_tools, 1, budget=1.0) == 2
    assert only_tools.messages == [SYSTEM]


def test_trim_uses_calibration() -> None:
    plain = long_conversation()
    scaled = long_conversation()
    limit = plain.estimate_tokens()
    scaled.calibrate(2 * limit, limit)
    assert check_trim(plain, limit, budget=1.0) == 0
    assert check_trim(scaled, limit, budget=1.0) > 0


def test_trim_ignores_open_round() -> None:
    ctx = long_conversation()
    round_ = ctx.begin_round()
    round_.set_assistant(None, [call("a")])
    assert ctx.trim(1) == 8
    round_.add_tool_result("a", "r")
    round_.commit()
    ctx.validate()


@pytest.mark.parametrize(
    ("max_tokens", "budget", "fragment"),
    [
        (0, 0.8, "max_tokens must be a positive int"),
        (-5, 0.8, "max_tokens must be a positive int"),
        (1.5, 0.8, "max_tokens must be a positive int"),
        (True, 0.8, "max_tokens must be a positive int"),
        (100, 0.0, "budget must be in \\(0, 1\\]"),
        (100, 1.5, "budget must be in"),
        (100, float("nan"), "budget must be in"),
    ],
)
def test_trim_argument_errors(max_tokens: Any, budget: float, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        LLMContext([user("q")]).trim(max_tokens, budget=budget)


# --------------------------------------------------------------------------- property tests

_ids = st.sampled_from(["a", "b", "c", "d"])
_text = st.text(alphabet="abcxyz ", max_size=120)


@st.composite
def _segments(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A plausible-but-not-always-valid message sequence."""
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["system", "developer", "user", "assistant", "round", "tool"]))
        if kind in ("system", "developer", "user", "assistant"):
            messages.append({"role": kind, "content": draw(_text)})
        elif kind == "tool":
            messages.append(tool(draw(_ids), draw(_text)))
        else:
            ids = draw(st.lists(_ids, min_size=1, max_size=4, unique=True))
            messages.append(assistant(draw(st.none() | _text), *ids))
            answers = draw(st.permutations(ids))
            mutation = draw(st.sampled_from(["none", "none", "drop", "dup", "extra"]))
            if mutation == "drop":
                answers = answers[1:]
            elif mutation == "dup":
                answers = [*answers, answers[0]]
            elif mutation == "extra":
                answers = [*answers, "zzz"]
            messages.extend(tool(i, draw(_text)) for i in answers)
    return messages


@given(messages=_segments())
@settings(max_examples=200, deadline=None)
def test_validate_matches_reference(messages: list[dict[str, Any]]) -> None:
    ctx = LLMContext(messages)
    try:
        ctx.validate()
    except ContextInvariantError:
        assert not reference_valid(messages)
    else:
        assert reference_valid(messages)


@given(
    messages=_segments(),
    fraction=st.floats(0.01, 1.5),
    budget=st.floats(0.05, 1.0),
    factor=st.sampled_from([None, 0.5, 2.0]),
)
@settings(max_examples=200, deadline=None)
def test_trim_properties_on_arbitrary_sequences(
    messages: list[dict[str, Any]], fraction: float, budget: float, factor: float | None
) -> None:
    ctx = LLMContext(messages)
    if factor is not None:
        ctx.calibrate(round(factor * 1000), 1000)
    max_tokens = max(1, int(ctx.estimate_tokens() * fraction))
    was_valid = reference_valid(messages)
    check_trim(ctx, max_tokens, budget)
    if was_valid:
        ctx.validate()  # trimming a valid context keeps it valid


# --------------------------------------------------------------------------- state machine


class ContextMachine(RuleBasedStateMachine):
    """Random sequences of context operations against a simple model of the messages."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx = LLMContext()
        self.model: list[tuple[dict[str, Any], bool]] = []  # committed messages and marks
        self.round: ContextRound | None = None
        self.round_ids: list[str] = []
        self.round_text: str | None = None
        self.round_calls: list[dict[str, Any]] = []
        self.round_results: dict[str, str] = {}
        self.snapshot: list[dict[str, Any]] | None = None  # messages at begin_round
        self.counter = 0

    def _fresh_id(self) -> str:
        self.counter += 1
        return f"call_{self.counter}"

    def _model_messages(self) -> list[dict[str, Any]]:
        return [message for message, _ in self.model]

    def _touch(self) -> None:
        self.snapshot = None  # a committed mutation happened during the round

    # -- plain messages

    @rule(text=_text)
    def add_user(self, text: str) -> None:
        self.ctx.add_user_message(text)
        self.model.append((user(text), False))
        self._touch()

    @rule(text=_text, interrupted=st.booleans())
    def add_assistant(self, text: str, interrupted: bool) -> None:
        self.ctx.add_assistant_message(text, interrupted=interrupted)
        self.model.append((assistant(text), interrupted))
        self._touch()

    @rule(text=st.none() | _text)
    def set_system_prompt(self, text: str | None) -> None:
        self.ctx.system_prompt = text
        has_prompt = bool(self.model) and self.model[0][0]["role"] == "system"
        if text is None:
            if has_prompt:
                del self.model[0]
        elif has_prompt:
            self.model[0] = (dict(self.model[0][0], content=text), self.model[0][1])
        else:
            self.model.insert(0, ({"role": "system", "content": text}, False))
        self._touch()

    @rule(names=st.lists(st.sampled_from(["f", "g", "h"]), unique=True))
    def set_tools(self, names: list[str]) -> None:
        self.ctx.set_tools([FunctionSchema(name=n, description=n * 30) for n in names])

    # -- tool rounds, step by step

    @precondition(lambda self: self.round is None)
    @rule(n=st.integers(1, 4), text=st.none() | _text)
    def begin_round(self, n: int, text: str | None) -> None:
        self.snapshot = self.ctx.messages
        self.round = self.ctx.begin_round()
        self.round_ids = [self._fresh_id() for _ in range(n)]
        self.round_calls = [call(i, "f", json.dumps({"i": i})) for i in self.round_ids]
        self.round_text = text
        self.round_results = {}
        self.round.set_assistant(text, self.round_calls)

    @precondition(lambda self: self.round is not None)
    @rule(data=st.data())
    def add_result(self, data: st.DataObject) -> None:
        assert self.round is not None
        pending = [i for i in self.round_ids if i not in self.round_results]
        if not pending:
            return
        call_id = data.draw(st.sampled_from(pending))
        content = data.draw(_text)
        self.round.add_tool_result(call_id, content)
        self.round_results[call_id] = content
        assert list(self.round.pending_ids) == [i for i in pending if i != call_id]

    @precondition(lambda self: self.round is not None)
    @rule(data=st.data())
    def add_bad_result(self, data: st.DataObject) -> None:
        assert self.round is not None
        choices = ["unknown", *self.round_results]
        target = data.draw(st.sampled_from(choices))
        with pytest.raises(ContextInvariantError):
            self.round.add_tool_result("nope" if target == "unknown" else target, "x")

    @precondition(lambda self: self.round is not None)
    @rule()
    def commit(self) -> None:
        assert self.round is not None
        if len(self.round_results) < len(self.round_ids):
            with pytest.raises(ContextInvariantError, match="no result yet"):
                self.round.commit()
            assert self.round.is_open
            return
        self.round.commit()
        event("stepwise round committed")
        self._append_round_to_model()
        self.round = None

    @precondition(lambda self: self.round is not None)
    @rule()
    def rollback(self) -> None:
        assert self.round is not None
        self.round.rollback()
        if self.snapshot is not None:
            assert self.ctx.messages == self.snapshot
        self.round = None

    def _append_round_to_model(self) -> None:
        self.model.append(
            (
                {"role": "assistant", "content": self.round_text, "tool_calls": self.round_calls},
                False,
            )
        )
        for call_id in self.round_ids:  # the model's call order, not arrival order
            self.model.append((tool(call_id, self.round_results[call_id]), False))

    # -- a whole round inside a with-block

    @precondition(lambda self: self.round is None)
    @rule(data=st.data(), ending=st.sampled_from(["commit", "raise", "fall-through"]))
    def round_in_with_block(self, data: st.DataObject, ending: str) -> None:
        before = self.ctx.messages
        self.round_ids = [self._fresh_id() for _ in range(data.draw(st.integers(1, 4)))]
        self.round_calls = [call(i, "g") for i in self.round_ids]
        self.round_text = data.draw(st.none() | _text)
        order = data.draw(st.permutations(self.round_ids))
        self.round_results = {i: f"result of {i}" for i in order}
        try:
            with self.ctx.begin_round() as round_:
                round_.set_assistant(self.round_text, self.round_calls)
                for call_id in order:
                    round_.add_tool_result(call_id, self.round_results[call_id])
                if ending == "commit":
                    round_.commit()
                elif ending == "raise":
                    raise _Abort
        except _Abort:
            pass
        assert not round_.is_open
        assert self.ctx.open_round is None
        event(f"with-block round: {ending}")
        if ending == "commit":
            self._append_round_to_model()
        else:
            assert self.ctx.messages == before

    # -- budget

    @rule(data=st.data(), budget=st.floats(0.05, 1.0))
    def trim(self, data: st.DataObject, budget: float) -> None:
        estimate = self.ctx.estimate_tokens()
        max_tokens = data.draw(st.integers(1, max(1, 2 * estimate)))
        head = head_len(self._model_messages())
        removed = check_trim(self.ctx, max_tokens, budget)
        event("trim removed messages" if removed else "trim removed nothing")
        del self.model[head : head + removed]
        if removed:
            self._touch()

    @rule(ratio=st.floats(0.05, 8.0))
    def calibrate(self, ratio: float) -> None:
        raw = self.ctx.estimate_tokens(calibrated=False)
        prompt = max(1, round(raw * ratio))
        factor = self.ctx.calibrate(prompt, raw)
        assert factor == min(max(prompt / raw, MIN_CALIBRATION), MAX_CALIBRATION)

    @rule()
    def copy_is_equal_and_independent(self) -> None:
        twin = self.ctx.copy()
        assert twin.messages == self.ctx.messages
        assert twin.interrupted_indices() == self.ctx.interrupted_indices()
        assert twin.estimate_tokens() == self.ctx.estimate_tokens()
        twin.add_user_message("twin only")
        twin.system_prompt = "twin"
        assert self.ctx.messages == self._model_messages()

    # -- editing in place (insert, replace, remove), keeping the sequence valid

    def _is_plain(self, index: int) -> bool:
        message = self.model[index][0]
        return message["role"] == "user" or (
            message["role"] == "assistant" and "tool_calls" not in message
        )

    def _plain_indices(self) -> list[int]:
        return [i for i in range(len(self.model)) if self._is_plain(i)]

    def _as_index(self, data: st.DataObject, position: int, size: int) -> int:
        """``position`` as given to the context: as is, or counted from the end."""
        if position < size and data.draw(st.booleans()):
            return position - size
        return position

    @rule(data=st.data(), text=_text, role=st.sampled_from(["user", "assistant"]))
    def insert_plain(self, data: st.DataObject, text: str, role: str) -> None:
        size = len(self.model)
        has_prompt = bool(self.model) and self.model[0][0]["role"] == "system"
        positions = [
            p
            for p in range(size + 1)
            if (p == size or self.model[p][0]["role"] != "tool")  # not inside a tool round
            and not (p == 0 and has_prompt)  # the system prompt stays first
        ]
        position = data.draw(st.sampled_from(positions))
        message = {"role": role, "content": text}
        self.ctx.insert_message(self._as_index(data, position, size), message)
        self.model.insert(position, (message, False))
        self._touch()

    @precondition(lambda self: self._plain_indices())
    @rule(
        data=st.data(),
        text=_text,
        role=st.sampled_from(["user", "assistant"]),
        mark=st.none() | st.booleans(),
    )
    def replace_plain(self, data: st.DataObject, text: str, role: str, mark: bool | None) -> None:
        index = data.draw(st.sampled_from(self._plain_indices()))
        message = {"role": role, "content": text}
        size = len(self.model)
        self.ctx.replace_message(self._as_index(data, index, size), message, interrupted=mark)
        kept = self.model[index][1] if mark is None else mark
        self.model[index] = (message, kept)
        self._touch()

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove_one(self, data: st.DataObject) -> None:
        removable = self._plain_indices()
        if self.model[0][0]["role"] == "system":
            removable.append(0)
        if not removable:
            return
        index = data.draw(st.sampled_from(removable))
        removed = self.ctx.remove_message(self._as_index(data, index, len(self.model)))
        assert removed == self.model[index][0]
        del self.model[index]
        self._touch()

    @precondition(
        lambda self: any("tool_calls" in m for m, _ in self.model),
    )
    @rule(data=st.data())
    def remove_a_tool_round(self, data: st.DataObject) -> None:
        starts = [i for i, (m, _) in enumerate(self.model) if "tool_calls" in m]
        start = data.draw(st.sampled_from(starts))
        end = start + 1
        while end < len(self.model) and self.model[end][0]["role"] == "tool":
            end += 1
        for index in range(end - 1, start - 1, -1):  # results first, then the call
            self.ctx.remove_message(index)
        del self.model[start:end]
        self._touch()

    @rule(
        texts=st.lists(_text, max_size=3),
        bad_tail=st.sampled_from([None, "role", "surrogate", "nan", "bytes"]),
    )
    def add_messages_all_or_nothing(self, texts: list[str], bad_tail: str | None) -> None:
        batch: list[dict[str, Any]] = [user(t) for t in texts]
        if bad_tail is None:
            self.ctx.add_messages(batch)
            self.model.extend((m, False) for m in batch)
            self._touch()
            return
        tail = {
            "role": {"role": "robot", "content": "x"},
            "surrogate": user("\ud800"),
            "nan": {"role": "user", "content": [{"type": "x", "v": math.nan}]},
            "bytes": {"role": "user", "content": "x", "name": b"n"},
        }[bad_tail]
        before = self.ctx.messages
        with pytest.raises(InvalidMessageError):
            self.ctx.add_messages([*batch, tail])
        assert self.ctx.messages is before  # not even a new snapshot

    @rule(data=st.data())
    def refused_edits_change_nothing(self, data: st.DataObject) -> None:
        size = len(self.model)
        attempts: list[tuple[type[Exception], Any]] = [
            (TypeError, lambda: self.ctx.insert_message("0", user("x"))),
            (TypeError, lambda: self.ctx.insert_message(1.0, user("x"))),
            (TypeError, lambda: self.ctx.replace_message(None, user("x"))),
            (TypeError, lambda: self.ctx.remove_message(True)),
            (IndexError, lambda: self.ctx.insert_message(size + 1, user("x"))),
            (IndexError, lambda: self.ctx.replace_message(size, user("x"))),
            (IndexError, lambda: self.ctx.remove_message(-size - 1)),
            (InvalidMessageError, lambda: self.ctx.insert_message(0, {"role": "user"})),
            (InvalidMessageError, lambda: self.ctx.add_user_message("\udfff")),
            (InvalidMessageError, lambda: setattr(self.ctx, "system_prompt", "\ud800")),
            (TypeError, lambda: self.ctx.add_assistant_message("x", interrupted="no")),
        ]
        if size:
            attempts.append(
                (TypeError, lambda: self.ctx.replace_message(0, user("x"), interrupted=0))
            )
            attempts.append(
                (InvalidMessageError, lambda: self.ctx.replace_message(-1, user(["bad"])))
            )
        error, attempt = data.draw(st.sampled_from(attempts))
        before = self.ctx.messages
        estimate = self.ctx.estimate_tokens()
        with pytest.raises(error):
            attempt()
        assert self.ctx.messages is before
        assert self.ctx.estimate_tokens() == estimate

    @rule()
    def set_messages_to_its_own_snapshot(self) -> None:
        self.ctx.set_messages(self.ctx.messages)  # the same messages, marks cleared
        self.model = [(message, False) for message, _ in self.model]
        self._touch()

    @rule(name=st.sampled_from(["f", "g", "h"]), add=st.booleans())
    def add_or_remove_a_tool(self, name: str, add: bool) -> None:
        if add:
            self.ctx.add_tools([FunctionSchema(name=name, description=name * 40)])
        else:
            self.ctx.remove_tool(name, missing_ok=True)

    # -- invariants

    @invariant()
    def matches_model(self) -> None:
        assert self.ctx.messages == self._model_messages()
        assert self.ctx.interrupted_indices() == [i for i, (_, m) in enumerate(self.model) if m]
        assert self.ctx.open_round is self.round

    @invariant()
    def valid_when_no_round_is_open(self) -> None:
        if self.round is None:
            self.ctx.validate()
            assert reference_valid(self.ctx.messages)
        else:
            with pytest.raises(ContextInvariantError, match="still open"):
                self.ctx.validate()

    @invariant()
    def results_follow_calls_in_call_order(self) -> None:
        messages = self.ctx.messages
        for i, message in enumerate(messages):
            if message["role"] == "assistant" and "tool_calls" in message:
                ids = [c["id"] for c in message["tool_calls"]]
                following = messages[i + 1 : i + 1 + len(ids)]
                assert [m["role"] for m in following] == ["tool"] * len(ids)
                assert [m["tool_call_id"] for m in following] == ids
            if message["role"] == "tool":
                assert i > 0 and messages[i - 1]["role"] in ("assistant", "tool")

    @invariant()
    def system_prompt_stays_first(self) -> None:
        messages = self.ctx.messages
        if self.model and self.model[0][0]["role"] == "system":
            assert messages[0] == self.model[0][0]
            assert self.ctx.system_prompt == self.model[0][0]["content"]
        else:
            assert self.ctx.system_prompt is None
        assert all(m["role"] != "system" for m in messages[1:])

    @invariant()
    def cached_estimate_matches_fresh_estimate(self) -> None:
        assert self.ctx.estimate_tokens() == self.ctx.estimate_tokens(self.ctx.messages)


TestContextMachine = ContextMachine.TestCase
TestContextMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
