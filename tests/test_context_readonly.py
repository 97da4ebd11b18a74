"""Issue 9, item 19: a change to what the context hands out is refused, never lost.

``context.messages`` and ``context.tools`` used to return copies, so ``context.messages
.insert(...)`` in a transition hook did nothing, silently. They are now read-only snapshots
(still ``list``/``dict`` subclasses: JSON-serialisable and equal to plain values) whose
mutating methods raise a :class:`TypeError` naming the method to call instead, and the
context has methods to edit messages in place (insert, replace, remove).
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import trio.testing

from rustvani_trio.context import FunctionSchema, InvalidMessageError, LLMContext
from rustvani_trio.frames import ErrorFrame, LLMContextFrame, LLMFullResponseEnd
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
PARTS = {"role": "user", "content": [{"type": "text", "text": "look"}]}
CALLS = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
TOOL = {"type": "function", "function": {"name": "raw", "parameters": {"type": "object"}}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def make() -> LLMContext:
    return LLMContext(
        [SYSTEM, PARTS, CALLS, RESULT],
        tools=[TOOL, FunctionSchema(name="f", parameters={"type": "object"})],
        tool_choice={"type": "function", "function": {"name": "f"}},
    )


Mutation = Callable[[Any], object]


def _setitem(m: Any) -> None:
    m[0] = user("x")


def _delitem(m: Any) -> None:
    del m[0]


def _iadd(m: Any) -> None:
    m += [user("x")]


def _imul(m: Any) -> None:
    m *= 2


LIST_MUTATIONS: list[tuple[str, Mutation, str]] = [
    ("append", lambda m: m.append(user("x")), r"context\.add_message\(message\)"),
    ("extend", lambda m: m.extend([user("x")]), r"context\.add_messages\(messages\)"),
    ("+=", _iadd, r"context\.add_messages\(messages\)"),
    ("insert", lambda m: m.insert(1, user("x")), r"context\.insert_message\(index, message\)"),
    ("item assignment", _setitem, r"context\.replace_message\(index"),
    ("item deletion", _delitem, r"context\.remove_message\(index\)"),
    ("pop", lambda m: m.pop(), r"context\.remove_message\(index\)"),
    ("remove", lambda m: m.remove(SYSTEM), r"context\.remove_message\(index\)"),
    ("clear", lambda m: m.clear(), r"context\.set_messages\(\[\]\)"),
    ("sort", lambda m: m.sort(key=str), r"context\.set_messages\(new_list\)"),
    ("reverse", lambda m: m.reverse(), r"context\.set_messages\(new_list\)"),
    ("*=", _imul, r"context\.set_messages\(new_list\)"),
]


@pytest.mark.parametrize(("operation", "mutate", "instead"), LIST_MUTATIONS)
def test_changing_messages_is_refused_with_the_method_to_use(
    operation: str, mutate: Mutation, instead: str
) -> None:
    ctx = make()
    before = list(ctx.messages)
    messages = ctx.messages
    with pytest.raises(TypeError, match=instead) as info:
        mutate(messages)
    assert str(info.value).startswith(
        f"context.messages (a snapshot of the committed messages) is read-only: {operation}"
    )
    assert ctx.messages == before == messages


DICT_MUTATIONS: list[tuple[str, Mutation]] = [
    ("item assignment", lambda d: d.__setitem__("content", "x")),
    ("item deletion", lambda d: d.__delitem__("content")),
    ("|=", lambda d: d.__ior__({"content": "x"})),
    ("update", lambda d: d.update(content="x")),
    ("pop", lambda d: d.pop("content")),
    ("popitem", lambda d: d.popitem()),
    ("setdefault", lambda d: d.setdefault("name", "x")),
    ("clear", lambda d: d.clear()),
]


@pytest.mark.parametrize(("operation", "mutate"), DICT_MUTATIONS)
def test_changing_a_message_is_refused(operation: str, mutate: Mutation) -> None:
    ctx = make()
    with pytest.raises(TypeError, match=rf"read-only: {operation}.*replace_message") as info:
        mutate(ctx.messages[1])
    assert str(info.value).startswith("a message held by an LLMContext")
    assert ctx.messages[1] == PARTS


@pytest.mark.parametrize(
    "mutate",
    [
        lambda ctx: ctx.messages[1]["content"].append({"type": "text", "text": "more"}),
        lambda ctx: ctx.messages[1]["content"][0].update(text="changed"),
        lambda ctx: ctx.messages[2]["tool_calls"][0]["function"].__setitem__("name", "g"),
        lambda ctx: ctx.messages[2]["tool_calls"].pop(),
        lambda ctx: ctx.tools[0]["function"].__setitem__("name", "other"),
        lambda ctx: ctx.tools[1].parameters.__setitem__("type", "array"),
        lambda ctx: ctx.tool_choice["function"].__setitem__("name", "raw"),
    ],
)
def test_nested_values_are_read_only_too(mutate: Callable[[LLMContext], object]) -> None:
    ctx = make()
    request = ctx.to_request_messages()
    with pytest.raises(TypeError, match="is read-only"):
        mutate(ctx)
    assert ctx.to_request_messages() == request
    assert ctx.tool_names() == ["raw", "f"]
    assert ctx.tool_choice == {"type": "function", "function": {"name": "f"}}
    assert ctx.tools[1] == FunctionSchema(name="f", parameters={"type": "object"})


@pytest.mark.parametrize(
    ("mutate", "instead"),
    [
        (lambda t: t.append(TOOL), r"context\.add_tools\(\[tool\]\)"),
        (lambda t: t.__setitem__(0, TOOL), r"context\.add_tools\(\[tool\]\) \(it replaces"),
        (lambda t: t.__delitem__(0), r"context\.remove_tool\(name\)"),
        (lambda t: t.clear(), r"context\.set_tools\(None\)"),
        (lambda t: t.sort(key=str), r"context\.set_tools\(tools\)"),
    ],
)
def test_changing_tools_is_refused_with_the_method_to_use(mutate: Mutation, instead: str) -> None:
    ctx = make()
    with pytest.raises(TypeError, match=instead):
        mutate(ctx.tools)
    assert ctx.tool_names() == ["raw", "f"]


def test_a_staged_rounds_calls_are_read_only() -> None:
    ctx = LLMContext([user("q")])
    with ctx.begin_round() as staged:
        staged.set_assistant(None, CALLS["tool_calls"])
        with pytest.raises(TypeError, match="is read-only"):
            staged.tool_calls[0]["id"] = "c2"  # type: ignore[index]
        assert staged.pending_ids == ("c1",)


def test_read_only_values_still_behave_like_plain_ones() -> None:
    ctx = make()
    messages = ctx.messages
    assert isinstance(messages, list)
    assert all(isinstance(m, dict) for m in messages)
    assert messages == [SYSTEM, PARTS, CALLS, RESULT]
    assert json.dumps(messages) == json.dumps([SYSTEM, PARTS, CALLS, RESULT])
    assert json.loads(json.dumps(ctx.tools[0])) == TOOL
    # Immutable through and through: copying gives the same object, as for a tuple.
    assert copy.copy(messages) is messages
    assert copy.deepcopy(messages) is messages
    twin = ctx.copy()
    assert twin.messages == messages
    # Pickling keeps the value and its protection.
    thawed = pickle.loads(pickle.dumps(messages))
    assert thawed == messages
    with pytest.raises(TypeError, match="read-only"):
        thawed[1]["content"].append("x")
    # The plain constructors make editable copies, and the context takes them back.
    editable = list(messages)
    editable.insert(1, user("inserted"))
    changed = {**messages[1], "content": "plain text"}
    editable[2] = changed
    ctx.set_messages(editable)
    assert ctx.messages[1:3] == [user("inserted"), user("plain text")]
    with pytest.raises(TypeError, match="made by LLMContext"):
        type(messages)([SYSTEM])


def _pickled(protocol: int) -> Callable[[LLMContext], LLMContext]:
    def round_trip(ctx: LLMContext) -> LLMContext:
        twin = pickle.loads(pickle.dumps(ctx, protocol=protocol))
        assert isinstance(twin, LLMContext)
        return twin

    return round_trip


@pytest.mark.parametrize(
    "make_copy",
    [
        LLMContext.copy,
        copy.copy,  # shared the message history, the tool list and the open round
        copy.deepcopy,
        *(_pickled(p) for p in range(pickle.HIGHEST_PROTOCOL + 1)),  # 0 and 1 failed
    ],
)
def test_every_copy_of_a_context_is_independent(
    make_copy: Callable[[LLMContext], LLMContext],
) -> None:
    ctx = make()
    ctx.add_assistant_message("cut", interrupted=True)
    ctx.calibrate(150, 100)
    ctx.begin_round()
    twin = make_copy(ctx)
    assert twin.messages == ctx.messages
    assert twin.tools == ctx.tools
    assert twin.tool_choice == ctx.tool_choice
    assert twin.interrupted_indices() == [4]
    assert twin.calibration_factor == 1.5
    assert twin.estimate_tokens() == ctx.estimate_tokens()
    assert twin.open_round is None  # a round belongs to the context that began it
    twin.add_user_message("twin only")
    twin.add_tools([FunctionSchema(name="g")])
    twin.replace_message(0, user("twin prompt"), interrupted=True)
    twin.begin_round()
    assert ctx.messages[0] == SYSTEM
    assert ctx.message_count == 5
    assert ctx.tool_names() == ["raw", "f"]
    assert ctx.interrupted_indices() == [4]


class _Tagged(LLMContext):
    pass


def test_a_subclass_copies_and_pickles_as_itself() -> None:
    ctx = _Tagged([SYSTEM])
    ctx.tag = "mine"  # type: ignore[attr-defined]
    for twin in (copy.copy(ctx), pickle.loads(pickle.dumps(ctx))):
        assert type(twin) is _Tagged
        assert twin.tag == "mine"  # type: ignore[attr-defined]
        assert twin.messages == [SYSTEM]


def test_reading_messages_is_cheap_and_a_snapshot() -> None:
    ctx = LLMContext([SYSTEM, user("a")])
    first = ctx.messages
    assert ctx.messages is first  # no copy per read
    changes: list[Callable[[], object]] = [
        lambda: ctx.add_user_message("b"),
        lambda: ctx.add_assistant_message("c", interrupted=True),
        lambda: ctx.add_messages([user("d")]),
        lambda: ctx.insert_message(1, user("e")),
        lambda: ctx.replace_message(1, user("f")),
        lambda: ctx.remove_message(1),
        lambda: setattr(ctx, "system_prompt", "new prompt"),
        lambda: setattr(ctx, "system_prompt", None),
        lambda: ctx.trim(20, budget=1.0),
        lambda: ctx.set_messages([user("g")]),
    ]
    seen = [list(first)]
    for change in changes:
        before = ctx.messages
        frozen = list(before)
        change()
        assert before == frozen  # an earlier snapshot never changes
        assert ctx.messages is not before
        seen.append(list(ctx.messages))
    assert seen[-1] == [user("g")]


# --------------------------------------------------------------------------- editing


def test_insert_replace_and_remove_messages() -> None:
    ctx = LLMContext([SYSTEM, user("a")])
    ctx.add_assistant_message("cut off", interrupted=True)
    ctx.insert_message(1, user("inserted"))
    ctx.insert_message(-1, user("before the last"))
    ctx.insert_message(ctx.message_count, user("at the end"))
    assert [m["content"] for m in ctx.messages] == [
        "You are terse.",
        "inserted",
        "a",
        "before the last",
        "cut off",
        "at the end",
    ]
    assert ctx.interrupted_indices() == [4]  # the mark moved with its message
    ctx.replace_message(4, {"role": "assistant", "content": "cut"})
    assert ctx.is_interrupted(4)  # kept by default
    ctx.replace_message(-2, {**ctx.messages[-2], "content": "cut."}, interrupted=False)
    assert ctx.interrupted_indices() == []
    removed = ctx.remove_message(-1)
    assert removed == user("at the end")
    assert ctx.remove_message(0) == SYSTEM
    assert ctx.system_prompt is None
    assert ctx.messages == [
        user("inserted"),
        user("a"),
        user("before the last"),
        {
            "role": "assistant",
            "content": "cut.",
        },
    ]


def test_editing_checks_its_arguments_and_changes_nothing_on_error() -> None:
    ctx = LLMContext([SYSTEM, user("a")])
    before = ctx.messages
    with pytest.raises(IndexError, match=r"message index 3 is out of range .*2 messages"):
        ctx.insert_message(3, user("x"))
    with pytest.raises(IndexError, match="out of range"):
        ctx.insert_message(-3, user("x"))
    with pytest.raises(IndexError, match="out of range"):
        ctx.replace_message(2, user("x"))
    with pytest.raises(IndexError, match="out of range"):
        ctx.remove_message(-3)
    with pytest.raises(TypeError, match="must be an int, got bool"):
        ctx.remove_message(True)
    with pytest.raises(TypeError, match="must be an int, got str"):
        ctx.insert_message("0", user("x"))  # type: ignore[arg-type]
    with pytest.raises(InvalidMessageError, match="message 1: unknown role 'bot'"):
        ctx.insert_message(1, {"role": "bot", "content": "x"})
    with pytest.raises(InvalidMessageError, match=r"message 1 \(role 'user'\): missing 'content'"):
        ctx.replace_message(1, {"role": "user"})
    assert ctx.messages is before


# --------------------------------------------------------------------------- transition hooks


def handler_for(base_url: str, hook: Any) -> OpenAILLMHandler:
    registry = FunctionRegistry()
    registry.register("f", lambda _args: "sunny")
    config = OpenAILLMConfig(
        api_key="sk-test", base_url=base_url, model="gpt-test", retry=RetryPolicy(max_attempts=1)
    )
    return OpenAILLMHandler.with_registry(config, registry).set_transition_hook(hook)


def add_stage_note(context: LLMContext) -> None:
    """The README's transition hook: edit the conversation through the context's methods."""
    context.insert_message(1, {"role": "system", "content": "Stage: checkout."})
    last = context.messages[-1]  # the result of the round that just ended
    if last["role"] == "tool":
        context.replace_message(-1, {**last, "content": f"{last['content']} (checked)"})
    context.set_tool_choice("none")


async def test_a_transition_hook_edits_the_next_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    context = LLMContext([SYSTEM, user("weather?")], tools=[FunctionSchema(name="f")])
    async with open_scripted_server() as server:
        server.add_replies([ToolCallReply([ScriptedToolCall("f", "{}", "c1")]), TextReply(["ok"])])
        llm = handler_for(server.base_url, add_stage_note).into_processor()
        result = await run_test(llm, [LLMContextFrame(context=context)])
    assert result.upstream_of(ErrorFrame) == []
    second = server.requests[1]
    assert second.messages[:2] == [SYSTEM, {"role": "system", "content": "Stage: checkout."}]
    assert second.messages[-1] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": "sunny (checked)",
    }
    assert second.json["tool_choice"] == "none"


async def test_a_hook_that_mutates_a_snapshot_fails_loudly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def mistaken(context: LLMContext) -> None:
        context.messages.insert(1, {"role": "system", "content": "lost?"})  # type: ignore[attr-defined]

    context = LLMContext([SYSTEM, user("weather?")])
    async with open_scripted_server() as server:
        server.add_replies([ToolCallReply([ScriptedToolCall("f", "{}", "c1")]), TextReply(["ok"])])
        llm = handler_for(server.base_url, mistaken).into_processor()
        result = await run_test(llm, [LLMContextFrame(context=context)])
    (error,) = result.upstream_of(ErrorFrame)
    assert "TypeError" in error.error
    assert "context.insert_message(index, message)" in error.error
    assert len(result.downstream_of(LLMFullResponseEnd)) == 1


def test_interruption_marks_are_bools_and_indices_are_checked() -> None:
    ctx = LLMContext([SYSTEM, user("a")])
    with pytest.raises(TypeError, match="interrupted must be a bool, got str"):
        ctx.add_assistant_message("cut", interrupted="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="interrupted must be a bool, got int"):
        ctx.replace_message(1, user("b"), interrupted=1)  # type: ignore[arg-type]
    assert ctx.messages == [SYSTEM, user("a")]  # nothing added or replaced
    assert ctx.interrupted_indices() == []
    with pytest.raises(TypeError, match="must be an int, got str"):
        ctx.is_interrupted("0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an int, got slice"):
        ctx.is_interrupted(slice(0, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an int, got bool"):
        ctx.is_interrupted(True)
    with pytest.raises(IndexError, match="message index 2 is out of range"):
        ctx.is_interrupted(2)
    assert ctx.is_interrupted(-1) is False


def test_a_round_made_by_hand_cannot_commit() -> None:
    from rustvani_trio.context import ContextRound, RoundStateError

    ctx = LLMContext([user("q")])
    stray = ContextRound(ctx)
    stray.set_assistant(None, CALLS["tool_calls"])
    stray.add_tool_result("c1", "r")
    with pytest.raises(RoundStateError, match=r"begin rounds with context\.begin_round\(\)"):
        stray.commit()  # an assert (gone under python -O) guarded this
    assert ctx.messages == [user("q")]
    stray.rollback()


def test_reading_and_adding_cost_stays_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: what each read and each added message costs."""
    from rustvani_trio._context import history, readonly

    snapshots: list[int] = []  # the size of every snapshot built
    estimated: list[int] = []  # one per message whose tokens were estimated
    make_snapshot = readonly.ReadOnlyList._of.__func__  # type: ignore[attr-defined]

    def counting_of(cls: Any, items: Any) -> Any:
        made = make_snapshot(cls, items)
        if cls in (readonly.MessageList, readonly.ToolList):
            snapshots.append(len(made))
        return made

    def counting_tokens(message: Any) -> int:
        estimated.append(1)
        return message_tokens(message)

    message_tokens = history.message_tokens
    monkeypatch.setattr(readonly.ReadOnlyList, "_of", classmethod(counting_of))
    monkeypatch.setattr(history, "message_tokens", counting_tokens)
    n = 2000
    ctx = LLMContext([SYSTEM], tools=[FunctionSchema(name="f")])
    for i in range(n):
        ctx.add_user_message(f"message {i}")
    assert snapshots == []  # adding builds no snapshot
    assert len(estimated) == n + 1  # each message is estimated once, when it comes in
    for _ in range(n):  # reads: one snapshot each for messages and tools, for all of them
        assert len(ctx.messages) == n + 1
        assert len(ctx.tools) == 1
        ctx.estimate_tokens()
        ctx.trim(10**9)
        assert ctx.system_prompt == SYSTEM["content"]
    assert snapshots == [n + 1, 1]
    assert len(estimated) == n + 1
    ctx.add_messages([user("x")] * n)
    assert len(estimated) == 2 * n + 1
    assert ctx.messages[-1] == user("x")
    assert snapshots == [n + 1, 1, 2 * n + 1]


def test_assigning_or_augmenting_the_attributes_says_what_to_call() -> None:
    ctx = make()
    before = (ctx.messages, ctx.tools, ctx.tool_choice)
    # ``ctx.messages += x`` is ``ctx.messages = ctx.messages.__iadd__(x)``: the snapshot refuses
    # before the assignment is tried, so the cached snapshot cannot be changed in place.
    with pytest.raises(TypeError, match=r"\+= would change nothing; use context\.add_messages"):
        ctx.messages += [user("x")]  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"\+= would change nothing; use context\.add_tools"):
        ctx.tools += [TOOL]  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"\|= would change nothing"):
        ctx.tool_choice |= {"type": "function"}  # type: ignore[operator]
    with pytest.raises(AttributeError, match=r"use context\.set_messages\(messages\)"):
        ctx.messages = [user("x")]  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"use context\.set_tools\(tools\)"):
        ctx.tools = []  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"use context\.set_tool_choice\(choice\)"):
        ctx.tool_choice = "auto"  # type: ignore[misc]
    assert (ctx.messages, ctx.tools, ctx.tool_choice) == before
    assert ctx.messages is before[0]


def test_a_slice_is_read_only_too() -> None:
    ctx = make()
    last_two = ctx.messages[-2:]
    with pytest.raises(TypeError, match=r"use context\.add_message\(message\)"):
        last_two.append(user("lost?"))  # changed a throwaway copy before
    with pytest.raises(TypeError, match="read-only"):
        ctx.messages[1]["content"][:1].append({"type": "text", "text": "lost?"})
    with pytest.raises(TypeError, match=r"context\.add_tools"):
        ctx.tools[:].append(TOOL)
    assert last_two == [CALLS, RESULT]
    assert ctx.messages[::-1][0] == RESULT
    editable = list(ctx.messages[-2:])  # explicit copies are editable
    editable.append(user("mine"))
    assert ctx.messages.copy()[-1] == RESULT
    assert ctx.message_count == 4


def test_the_context_pages_examples_run() -> None:
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "context.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    assert blocks
    for index, code in enumerate(blocks):
        exec(compile(code, f"docs/context.md example {index}", "exec"), {"__name__": "example"})
