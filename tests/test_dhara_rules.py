"""Dhara's correctness rules, one test (or more) each, over real HTTP to the scripted model:

* a transition is applied once the whole round has settled; sibling calls run in the node
  they were called in; a rolled-back round leaves the old node; conflicts are reported and the
  first call in the model's order wins;
* a committed round whose turn was interrupted before the hook is settled before the next turn;
* applying a node is atomic (registry included); built-in tools and global functions survive;
* context strategies (append, reset, reset with a bounded summary and its fallbacks);
* respond_immediately never twice (the initial node's opening line included);
* every change is announced by DharaNodeChanged; pre and post actions;
* the seed's hook-only wiring (no processor) still transitions.

Clocks: pytest-trio's ``autojump_clock`` (handler sleeps and timeouts pass in virtual time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing
from test_dhara_support import Stall, calls, config, conversation, fine_server, fs, node, poll

from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.dhara import (
    ContextStrategy,
    DharaContext,
    DharaFunction,
    DharaManager,
    DharaNodeChanged,
    NodeAction,
    NodeConfig,
    OpenAISummarizer,
    TransitionResult,
)
from rustvani_trio.frames import (
    EndFrame,
    FunctionCallEnd,
    FunctionCallInProgress,
    FunctionCallResult,
    LLMFullResponseEnd,
    LLMText,
    TextFrame,
    TranscriptionFrame,
)
from rustvani_trio.services.llm.function_registry import FunctionCallParams, FunctionRegistry
from rustvani_trio.testing import (
    ErrorReply,
    RecordedRequest,
    Reply,
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
)
from rustvani_trio.tools.base import BuiltinTool


@pytest.fixture
async def server() -> Any:
    async with fine_server() as srv:
        yield srv


def prompt_and_tools(request: RecordedRequest) -> tuple[str, list[str]]:
    body = request.json
    return body["messages"][0]["content"], sorted(
        t["function"]["name"] for t in body.get("tools", [])
    )


# ----------------------------------------------------------------- settling a round


async def test_the_transition_waits_for_the_whole_round_and_siblings_keep_their_node(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    seen: dict[str, Any] = {}

    async def go(args: str, ctx: DharaContext) -> TransitionResult:
        await trio.sleep(0.1)
        return TransitionResult.transition("moving on", "B")

    async def slow(args: str, ctx: DharaContext) -> str:
        await trio.sleep(1.0)  # finishes after go asked for B
        seen["slow"] = (ctx.node, ctx.manager.current_node, ctx.manager.context.system_prompt)
        return "slow done"

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go", "slow"]), [("go", go), ("slow", slow)])
        dhara.register_node("B", node("B", ["b"], respond_immediately=True), [("b", lambda a: "")])
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1"), ("slow", "c2")), TextReply(["as B"])])
    async with conversation(server, build) as conv:
        await conv.say("hi")
    assert seen["slow"] == ("A", "A", "You are node A.")
    assert conv.nodes() == ["A", "B"]
    # The change comes after the round's end, and the re-invocation is B's.
    kinds = [type(f) for f in conv.down]
    changes = [i for i, k in enumerate(kinds) if k is DharaNodeChanged]
    assert kinds.index(FunctionCallEnd) < changes[1]
    first, second = server.requests
    assert prompt_and_tools(first) == ("You are node A.", ["go", "slow"])
    assert prompt_and_tools(second) == ("You are node B.", ["b"])
    roles = [m["role"] for m in second.json["messages"]]
    assert roles[-4:] == ["assistant", "tool", "tool", "system"]  # both results, then B's task
    assert conv.errors() == []


async def test_conflicting_transitions_are_reported_and_the_first_call_wins(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def to_b(args: str) -> TransitionResult:
        await trio.sleep(1.0)  # finishes last: timing must not decide
        return TransitionResult.transition("b", "B")

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node(
            "A",
            node("A", ["to_b", "to_c"]),
            [("to_b", to_b), ("to_c", lambda a: TransitionResult.transition("c", "C"))],
        )
        dhara.register_node_no_tools("B", node("B"))
        dhara.register_node_no_tools("C", node("C"))
        dhara.set_initial_node("A")
        return dhara

    server.add_reply(calls(("to_b", "c1"), ("to_c", "c2")))
    async with conversation(server, build) as conv:
        await conv.say("go")
    assert conv.nodes() == ["A", "B"]
    assert conv.dhara.current_node == "B"
    assert "first of conflicting" in conv.of(DharaNodeChanged)[-1].reason
    (error,) = conv.errors()
    assert "conflicting transitions" in error and "to_b -> B" in error and "to_c -> C" in error


async def test_an_interrupted_round_is_rolled_back_and_leaves_the_old_node(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def go(args: str) -> TransitionResult:
        await trio.sleep(5.0)
        return TransitionResult.transition("moving", "B")

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [("go", go)])
        dhara.register_node("B", node("B", ["b"]), [("b", lambda a: "")])
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["still A"])])
    async with conversation(server, build) as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="go"))
        await conv.wait_until(lambda: conv.count(FunctionCallInProgress) == 1)
        await trio.sleep(1.0)
        await conv.interrupt()
        await trio.sleep(10.0)  # go would have finished by now
        assert conv.dhara.current_node == "A"
        assert conv.dhara._pending == {}  # the request of the rolled-back round was dropped
        conv.context.validate()
        await conv.say("again")
    assert conv.nodes() == ["A"]
    assert prompt_and_tools(server.requests[-1]) == ("You are node A.", ["go"])
    assert "still A" in "".join(f.text for f in conv.of(LLMText))


async def test_a_committed_transition_whose_hook_was_interrupted_is_applied_before_the_next_turn(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        go = lambda a: TransitionResult.transition("moving", "B")  # noqa: E731
        dhara.register_node("A", node("A", ["go"]), [("go", go)])
        dhara.register_node("B", node("B", ["b"]), [("b", lambda a: "")])
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["now in B"])])
    async with conversation(server, build, after_llm=[Stall(FunctionCallInProgress)]) as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="go"))
        await poll(lambda: any(m["role"] == "tool" for m in conv.context.messages))
        await trio.sleep(1.0)
        assert conv.dhara.current_node == "A"  # committed, the hook has not run
        await conv.interrupt()
        await trio.sleep(1.0)
        # Still exactly one node, consistent with the context: A's prompt and tools.
        assert conv.dhara.current_node == "A"
        assert conv.context.tool_names() == ["go"]
        await conv.say("and now?")
    assert conv.nodes() == ["A", "B"]
    assert "settled after an interruption" in conv.of(DharaNodeChanged)[-1].reason
    assert prompt_and_tools(server.requests[-1]) == ("You are node B.", ["b"])
    assert len(server.requests) == 2


# ----------------------------------------------------------------- applying a node


class Clock(BuiltinTool):
    name = "clock"

    def tool_schemas(self) -> Sequence[FunctionSchema]:
        return [fs("clock_now")]

    def register_all(self, registry: FunctionRegistry) -> None:
        registry.register("clock_now", lambda args: "12:00")


async def test_builtin_tools_and_global_functions_survive_every_node_change(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    helped: list[str | None] = []

    def help_me(args: str, ctx: DharaContext) -> str:
        helped.append(ctx.node)
        return "help is on the way"

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(
            context,
            registry,
            global_functions=[DharaFunction(name="help_me", handler=help_me, schema=fs("help_me"))],
        )
        dhara.register_node("A", node("A", ["go"]), [("go", DharaFunction.goto("go", "B"))])
        dhara.register_node("B", node("B", ["back"]), [DharaFunction.goto("back", "A")])
        dhara.set_initial_node("A")
        return dhara

    server.add_replies(
        [
            calls(("clock_now", "c1"), ("help_me", "c2")),
            TextReply(["ok"]),
            calls(("go", "c3")),
            calls(("clock_now", "c4"), ("help_me", "c5")),
            TextReply(["ok"]),
            calls(("back", "c6")),
        ]
    )
    async with conversation(server, build, builtin_tools=[Clock()]) as conv:
        for line in ("time?", "to B", "time?", "back"):
            await conv.say(line)
        registry = conv.dhara.registry
        assert "clock_now" in registry and "help_me" in registry and "back" not in registry
    assert conv.nodes() == ["A", "B", "A"]
    results = [r.result for r in conv.of(FunctionCallResult)]
    assert results.count("12:00") == 2 and results.count("help is on the way") == 2
    assert helped == ["A", "B"]
    for request in server.requests:
        tools = prompt_and_tools(request)[1]
        assert "clock_now" in tools and "help_me" in tools
    assert prompt_and_tools(server.requests[3]) == (
        "You are node B.",
        ["back", "clock_now", "help_me"],
    )


async def test_a_node_that_cannot_be_applied_changes_nothing(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "C")])
        # C's function clashes with the built-in tool's: C cannot be entered.
        dhara.register_node("C", node("C", ["clock_now"]), [("clock_now", lambda a: "mine")])
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["still A"])])
    async with conversation(server, build, builtin_tools=[Clock()]) as conv:
        before = (conv.context.system_prompt, conv.context.tool_names())
        await conv.say("go")
        assert conv.dhara.current_node == "A"
        assert (conv.context.system_prompt, conv.context.tool_names()) == before
        assert conv.dhara.registry.get("go") is not None
        await conv.say("still there?")
    assert any("clash" in e for e in conv.errors())
    assert conv.nodes() == ["A"]
    assert prompt_and_tools(server.requests[-1])[0] == "You are node A."


# ----------------------------------------------------------------- context strategies


def strategy_flow(strategy: ContextStrategy, **kw: Any) -> Any:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry, **kw)
        dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "B")])
        dhara.register_node_no_tools(
            "B", node("B", context_strategy=strategy, respond_immediately=True)
        )
        dhara.set_initial_node("A")
        return dhara

    return build


def summary_model(summary: Reply) -> Any:
    def reply(request: RecordedRequest) -> Reply:
        if request.json.get("stream") is False:
            return summary
        messages = request.json["messages"]
        if messages[-1]["role"] == "user" and messages[-1]["content"] == "go":
            return calls(("go", "c1"))
        return TextReply(["fine"])

    return reply


async def test_reset_keeps_only_the_system_prompt(autojump_clock: trio.testing.MockClock) -> None:
    model = summary_model(TextReply(["-"]))
    async with (
        open_scripted_server(default_reply=model) as server,
        conversation(server, strategy_flow(ContextStrategy.RESET)) as conv,
    ):
        await conv.say("hello")
        await conv.say("go")
    assert server.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are node B."},
        {"role": "system", "content": "Task of B."},
    ]


async def test_reset_with_summary_adds_the_summary(autojump_clock: trio.testing.MockClock) -> None:
    model = summary_model(TextReply(["The user said hello."]))
    async with open_scripted_server(default_reply=model) as server:
        build = strategy_flow(
            ContextStrategy.RESET_WITH_SUMMARY, summarizer=OpenAISummarizer(config_for(server))
        )
        async with conversation(server, build) as conv:
            await conv.say("hello")
            await conv.say("go")
    summary_request = next(r for r in server.requests if r.json.get("stream") is False)
    assert "user: hello" in summary_request.json["messages"][1]["content"]
    assert server.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are node B."},
        {"role": "system", "content": "Summary of the conversation so far: The user said hello."},
        {"role": "system", "content": "Task of B."},
    ]
    assert conv.errors() == []


def config_for(server: ScriptedServer) -> Any:
    return config(server)


@pytest.mark.parametrize("failure", ["http", "raise", "timeout"])
async def test_a_failed_or_late_summary_falls_back_to_reset_and_is_reported(
    failure: str, autojump_clock: trio.testing.MockClock
) -> None:
    times: list[float] = []

    async def hanging(messages: Any, instruction: str) -> str:
        times.append(trio.current_time())
        try:
            await trio.sleep_forever()
        finally:
            times.append(trio.current_time())

    async def raising(messages: Any, instruction: str) -> str:
        raise RuntimeError("summary service down")

    model = summary_model(ErrorReply(500, "overloaded"))
    async with open_scripted_server(default_reply=model) as server:
        summarizer: Any = {
            "http": OpenAISummarizer(config(server)),
            "raise": raising,
            "timeout": hanging,
        }[failure]
        build = strategy_flow(
            ContextStrategy.RESET_WITH_SUMMARY, summarizer=summarizer, summary_timeout=3.0
        )
        async with conversation(server, build) as conv:
            await conv.say("hello")
            await conv.say("go")
    assert conv.dhara.current_node == "B"
    assert "no summary: plain reset" in conv.of(DharaNodeChanged)[-1].reason
    assert any("summary" in e for e in conv.errors())
    assert server.requests[-1].json["messages"][:1] == [
        {"role": "system", "content": "You are node B."}
    ]
    assert len(server.requests[-1].json["messages"]) == 2
    if failure == "timeout":
        assert times[1] - times[0] == pytest.approx(3.0)


async def test_an_interrupted_summary_still_applies_the_committed_transition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hanging(messages: Any, instruction: str) -> str:
        await trio.sleep_forever()
        raise AssertionError

    async with open_scripted_server(default_reply=summary_model(TextReply(["-"]))) as server:
        build = strategy_flow(ContextStrategy.RESET_WITH_SUMMARY, summarizer=hanging)
        async with conversation(server, build) as conv:
            await conv.task.queue_frame(TranscriptionFrame(text="go"))
            await conv.wait_until(lambda: conv.count(FunctionCallEnd) == 1)
            await trio.sleep(1.0)
            await conv.interrupt()
            await conv.wait_until(lambda: len(conv.nodes()) == 2)
            assert conv.dhara.current_node == "B"
            assert conv.context.system_prompt == "You are node B."
            await conv.say("hello B")
    assert "interrupted" in conv.of(DharaNodeChanged)[-1].reason
    assert prompt_and_tools(server.requests[-1])[0] == "You are node B."


# ----------------------------------------------------------------- respond_immediately


def immediate_flow(b_immediate: bool) -> Any:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node(
            "A", node("A", ["go"], respond_immediately=True), [DharaFunction.goto("go", "B")]
        )
        dhara.register_node_no_tools("B", node("B", respond_immediately=b_immediate))
        dhara.set_initial_node("A")
        return dhara

    return build


async def test_the_initial_node_speaks_first_exactly_once(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with conversation(server, immediate_flow(True)) as conv:
        await trio.sleep(5.0)
        assert len(server.requests) == 1  # the opening line, once
        assert [m["role"] for m in server.requests[0].json["messages"]] == ["system", "system"]
        await conv.say("hello")
    assert len(server.requests) == 2
    assert conv.nodes() == ["A"]


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.01])
async def test_a_user_turn_that_races_the_opening_line_never_makes_it_twice(
    delay: float, server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # pipecat's issue 5091: the opening line spoken twice when a user turn races it.
    def opening_then(request: RecordedRequest) -> Reply:
        return TextReply(["Welcome!"], first_token_delay=delay)

    server.default_reply = opening_then
    async with conversation(
        server,
        immediate_flow(True),
        wait_first_turn=False,
        queued=[TranscriptionFrame(text="I was first")],
    ) as conv:
        await conv.wait_until(lambda: conv.count(LLMFullResponseEnd) >= 1)
        await trio.sleep(5.0)
    last = [r.json["messages"][-1]["role"] for r in server.requests]
    assert last.count("system") <= 1  # the opening line (the request ends with A's task)
    assert last.count("user") == 1  # the user's message, answered once
    assert last in (["user"], ["system", "user"])  # nothing after the answer
    assert conv.context.messages[-1] == {"role": "assistant", "content": "Welcome!"}


async def test_frames_queued_with_an_end_frame_before_the_run_work(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with conversation(
        server,
        immediate_flow(True),
        wait_first_turn=False,
        expect_end=True,
        queued=[TranscriptionFrame(text="hello"), EndFrame()],
    ) as conv:
        pass
    assert conv.errors() == []
    assert conv.task.has_finished
    # The opening line, if it got in before the user's turn, then the answer: never twice.
    roles = [r.json["messages"][-1]["role"] for r in server.requests]
    assert roles in (["user"], ["system", "user"])


@pytest.mark.parametrize("immediate", [True, False])
async def test_a_transition_answers_as_the_new_node_once_or_waits_for_the_user(
    immediate: bool, server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with conversation(server, immediate_flow(immediate)) as conv:
        server.add_reply(calls(("go", "c1")))
        await conv.say("go")
        await trio.sleep(5.0)
        in_b = [r for r in server.requests if prompt_and_tools(r)[0] == "You are node B."]
        assert len(in_b) == (1 if immediate else 0)
        await conv.say("hello B")
    in_b = [r for r in server.requests if prompt_and_tools(r)[0] == "You are node B."]
    assert len(in_b) == (2 if immediate else 1)
    assert in_b[-1].json["messages"][-1] == {"role": "user", "content": "hello B"}


# ----------------------------------------------------------------- actions


async def test_pre_and_post_actions_run_around_the_nodes_answer(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[str] = []
    conv_ref: list[Any] = []

    def before(ctx: DharaContext) -> None:
        ctx.state["visits"] = ctx.state.get("visits", 0) + 1
        log.append(f"pre in {ctx.node}")

    async def after(ctx: DharaContext) -> None:
        answered = conv_ref[0].count(LLMFullResponseEnd)
        log.append(f"post after {answered} answers")

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "B")])
        b = node(
            "B",
            task_messages=["Visit {{state.visits}}."],
            respond_immediately=True,
            pre_actions=[NodeAction.function(before), NodeAction.say("One moment.")],
            post_actions=[NodeAction.say("Anything else?"), NodeAction.function(after)],
        )
        dhara.register_node_no_tools("B", b)
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["I am B."])])
    async with conversation(server, build) as conv:
        conv_ref.append(conv)
        await conv.say("go")
        await poll(lambda: len(log) == 2)
    assert log == ["pre in A", "post after 1 answers"]
    texts = [(type(f).__name__, f.text) for f in conv.down if isinstance(f, TextFrame)]
    assert texts == [
        ("TextFrame", "One moment."),
        ("LLMText", "I am B."),
        ("_SaidLine", "Anything else?"),  # a TextFrame no interruption drops
    ]
    messages = conv.context.messages
    assert [m["content"] for m in messages[-4:]] == [
        "Visit 1.",
        "One moment.",
        "I am B.",
        "Anything else?",
    ]
    assert server.requests[-1].json["messages"][-2:] == [
        {"role": "system", "content": "Visit 1."},
        {"role": "assistant", "content": "One moment."},
    ]


async def test_end_conversation_sends_end_frame_after_the_answer(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["bye"]), [DharaFunction.goto("bye", "end")])
        end = node("end", respond_immediately=True, post_actions=[NodeAction.end_conversation()])
        dhara.register_node_no_tools("end", end)
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("bye", "c1")), TextReply(["Good", "bye!"])])
    async with conversation(server, build, expect_end=True) as conv:
        await conv.say("bye")
    kinds = [type(f).__name__ for f in conv.down]
    assert kinds[-4:] == ["LLMFullResponseEnd", "_TurnDone", "_AfterAnswer", "EndFrame"]
    assert conv.context.messages[-1] == {"role": "assistant", "content": "Goodbye!"}
    assert conv.task.has_finished


# ----------------------------------------------------------------- the seed's wiring


async def test_hook_only_wiring_without_the_processor_still_transitions_and_announces(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node(
            "A", node("A", ["go"]), [("go", lambda a: TransitionResult.transition("ok", "B"))]
        )
        end = node("B", respond_immediately=True, post_actions=[NodeAction.end_conversation()])
        dhara.register_node_no_tools("B", end)
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["bye"])])
    async with conversation(server, build, processor=False, expect_end=True) as conv:
        await conv.say("go")
    assert conv.nodes() == ["A", "B"]  # the initial node announced with the first call
    assert isinstance(conv.down[-1], EndFrame)
    assert conv.errors() == []


async def test_a_handler_naming_an_unknown_node_is_reported_and_the_flow_stays(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node(
            "A", node("A", ["go"]), [("go", lambda a: TransitionResult.transition("x", "Nowhere"))]
        )
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["ok"])])
    async with conversation(server, build) as conv:
        await conv.say("go")
    assert conv.dhara.current_node == "A"
    assert any("'Nowhere'" in e and "not registered" in e for e in conv.errors())


async def test_the_seeds_wiring_works_as_written_with_the_handlers_own_registry(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    from rustvani_trio.aggregators import create_context_aggregators
    from rustvani_trio.pipeline import Pipeline
    from rustvani_trio.services.llm.openai import OpenAILLMHandler
    from rustvani_trio.task import PipelineTask

    context = LLMContext()
    registry = FunctionRegistry()
    dhara = DharaManager(context, registry)
    browse = lambda args: TransitionResult.transition("the menu", "menu")  # noqa: E731
    dhara.register_node("greeting", node("greeting", ["browse_menu"]), [("browse_menu", browse)])
    dhara.register_node_no_tools("menu", node("menu"))
    dhara.set_initial_node("greeting")
    llm = OpenAILLMHandler(config(server))  # as in the issue: the handler's own registry
    llm.set_transition_hook(dhara.create_transition_hook())
    user, assistant = create_context_aggregators(context, text_mode=True)
    task = PipelineTask(Pipeline([user, dhara.processor(), llm.into_processor(), assistant]))
    server.add_replies([calls(("browse_menu", "c1")), TextReply(["ok"])])
    await task.queue_frames([TranscriptionFrame(text="menu please"), EndFrame()])
    await task.run()
    assert dhara.current_node == "menu"
    assert dhara.registry is llm.registry and "browse_menu" not in registry
    assert prompt_and_tools(server.requests[0]) == ("You are node greeting.", ["browse_menu"])


async def test_a_dhara_processor_after_the_llm_is_a_clear_error_at_start(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    from rustvani_trio.pipeline import Pipeline
    from rustvani_trio.services.llm.openai import OpenAILLMHandler
    from rustvani_trio.task import PipelineFatalError, PipelineTask

    dhara = DharaManager(LLMContext())
    dhara.register_node_no_tools("A", node("A"))
    dhara.set_initial_node("A")
    llm = OpenAILLMHandler.with_registry(config(server), dhara.registry)
    llm.set_transition_hook(dhara.create_transition_hook())
    task = PipelineTask(Pipeline([llm.into_processor(), dhara.processor()]))
    with pytest.raises(PipelineFatalError, match="must come before"):
        await task.run()


def test_register_node_checks_tools_against_handlers() -> None:
    dhara = DharaManager(LLMContext())
    with pytest.raises(ValueError, match="no handler"):
        dhara.register_node("A", node("A", ["f", "g"]), [("f", lambda a: "")])
    with pytest.raises(ValueError, match="no schema"):
        dhara.register_node("A", node("A", ["f"]), [("f", lambda a: ""), ("g", lambda a: "")])
    with pytest.raises(ValueError, match="role"):
        NodeConfig("A", task_messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(Exception, match="not registered"):
        dhara.set_initial_node("nope")
    dhara.register_node("A", node("A", ["f"]), [("f", lambda a: "")])
    dhara.set_initial_node("A")
    assert dhara.current_node == "A"
    assert dhara.context.system_prompt == "You are node A."
    assert dhara.context.tool_names() == ["f"]
    assert dhara.registry.get("f") is not None


async def test_params_reach_a_two_argument_handler(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    got: list[Any] = []

    def handler(args: str, ctx: DharaContext) -> str:
        got.append((args, dict(ctx.arguments), ctx.function_name, ctx.tool_call_id, ctx.node))
        return "ok"

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["f"]), [("f", handler)])
        dhara.set_initial_node("A")
        return dhara

    server.add_replies(
        [
            ToolCallReply([ScriptedToolCall(name="f", arguments='{"x": 1}', id="c9")]),
            TextReply(["k"]),
        ]
    )
    async with conversation(server, build) as conv:
        await conv.say("call f")
    assert got == [('{"x": 1}', {"x": 1}, "f", "c9", "A")]
    assert isinstance(FunctionCallParams, type)
