"""Regression tests from a hostile review of Dhara: races, misuse and hostile input, one test
per bug found (each failed before its fix).

Clocks: pytest-trio's ``autojump_clock`` for pipeline tests (the scripted model runs in the
same trio run).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dhara_support import Stall, calls, config, conversation, fine_server, node, poll

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.dhara import (
    ContextStrategy,
    Dhara,
    DharaContext,
    DharaError,
    DharaFlow,
    DharaFunction,
    DharaManager,
    DharaNodeChanged,
    FlowState,
    FlowValidationError,
    HandlerResult,
    InMemorySessionStore,
    NodeAction,
    NodeConfig,
    OpenAISummarizer,
    StateField,
    SummaryError,
    TransitionResult,
    validate_flow,
)
from rustvani_trio.dhara.node import as_result
from rustvani_trio.frames import (
    EndFrame,
    EndTaskFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
    FunctionCallInProgress,
    LLMText,
    TextFrame,
    TranscriptionFrame,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.services.llm.function_registry import FunctionCallParams, FunctionRegistry
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from rustvani_trio.task import PipelineFatalError, PipelineTask
from rustvani_trio.testing import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    TextReply,
    open_scripted_server,
)


@pytest.fixture
async def server() -> Any:
    async with fine_server() as srv:
        yield srv


# ----------------------------------------------------------------- races


async def test_a_user_message_sent_while_the_summary_runs_is_kept_after_the_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.Event()

    async def slow_summary(messages: Any, instruction: str) -> str:
        started.set()
        await trio.sleep(5.0)
        return "They said hello."

    def model(request: RecordedRequest) -> Reply:
        last = request.json["messages"][-1]
        if last == {"role": "user", "content": "go"}:
            return calls(("go", "c1"))
        return TextReply(["fine"])

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry, summarizer=slow_summary)
        dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "B")])
        strategy = ContextStrategy.RESET_WITH_SUMMARY
        dhara.register_node_no_tools("B", node("B", context_strategy=strategy))
        dhara.set_initial_node("A")
        return dhara

    async with (
        open_scripted_server(default_reply=model) as server,
        conversation(server, build) as conv,
    ):
        await conv.say("hello")
        await conv.task.queue_frame(TranscriptionFrame(text="go"))
        await started.wait()
        await conv.say("wait, one more thing")
    assert conv.dhara.current_node == "B"
    last = server.requests[-1].json["messages"]
    assert last[-1] == {"role": "user", "content": "wait, one more thing"}
    assert last[0] == {"role": "system", "content": "You are node B."}
    assert {"role": "user", "content": "hello"} not in last  # the reset happened


async def test_a_transition_settled_after_an_interruption_keeps_the_users_message_on_reset(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "B")])
        b = node("B", context_strategy=ContextStrategy.RESET)
        dhara.register_node_no_tools("B", b)
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["now in B"])])
    async with conversation(server, build, after_llm=[Stall(FunctionCallInProgress)]) as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="go"))
        await poll(lambda: any(m["role"] == "tool" for m in conv.context.messages))
        await trio.sleep(1.0)
        await conv.interrupt()
        await trio.sleep(1.0)
        await conv.say("and now?")
    assert conv.nodes() == ["A", "B"]
    assert server.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are node B."},
        {"role": "system", "content": "Task of B."},
        {"role": "user", "content": "and now?"},
    ]


@pytest.mark.parametrize("lines", [1, 2])
async def test_post_actions_of_a_node_entered_while_interrupted_still_run(
    lines: int, server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # The farewell node's second pre action line (or, with one line, its announcement)
    # waits for room behind a slow consumer when the user interrupts: the node is applied
    # and its end_conversation must not be lost (it runs after the node's next answer).
    reached = trio.Event()

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["bye"]), [DharaFunction.goto("bye", "end")])
        end = node(
            "end",
            respond_immediately=True,
            pre_actions=[
                NodeAction.function(lambda ctx: reached.set()),
                *[NodeAction.say(f"line {i}") for i in range(lines)],
            ],
            post_actions=[NodeAction.end_conversation()],
        )
        dhara.register_node_no_tools("end", end)
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("bye", "c1")), TextReply(["Goodbye!"])])
    async with conversation(
        server, build, after_llm=[Stall(FunctionCallEnd)], expect_end=True
    ) as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="bye"))
        await reached.wait()
        await trio.sleep(1.0)
        # Waiting: the second line's push (the node is not applied yet), or the
        # announcement's (applied).
        assert conv.dhara.current_node == ("A" if lines == 2 else "end")
        await conv.interrupt()
        await trio.sleep(1.0)
        assert conv.dhara.current_node == "end"
        await conv.say("are you still there?")
    assert conv.task.has_finished
    assert conv.context.messages[-1] == {"role": "assistant", "content": "Goodbye!"}


# ----------------------------------------------------------------- cancellation, unit level


def _params(context: LLMContext, name: str, call_id: str, out: list[Frame]) -> FunctionCallParams:
    async def push(frame: Frame, direction: FrameDirection) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()  # as FrameProcessor.push_frame
        out.append(frame)

    return FunctionCallParams(
        function_name=name,
        tool_call_id=call_id,
        arguments={},
        raw_arguments="{}",
        context=context,
        push_frame=push,
    )


def conflict_flow() -> DharaManager:
    dhara = DharaManager(LLMContext())
    dhara.register_node(
        "A",
        node("A", ["to_b", "to_c"]),
        [DharaFunction.goto("to_b", "B"), DharaFunction.goto("to_c", "C")],
    )
    dhara.register_node_no_tools("B", node("B"))
    dhara.register_node_no_tools("C", node("C"))
    dhara.set_initial_node("A")
    return dhara


async def run_round(dhara: DharaManager, out: list[Frame], *names: str) -> None:
    """One committed tool round calling ``names`` through the registry, as the LLM does."""
    context = dhara.context
    staged = context.begin_round()
    ids = [f"c{i}" for i in range(len(names))]
    staged.set_assistant(
        None,
        [
            {"id": i, "type": "function", "function": {"name": n, "arguments": "{}"}}
            for n, i in zip(names, ids, strict=True)
        ],
    )
    for name, call_id in zip(names, ids, strict=True):
        entry = dhara.registry.get(name)
        assert entry is not None
        result = await entry.call(_params(context, name, call_id, out))
        staged.add_tool_result(call_id, result.summary)
    staged.commit()


async def test_an_interruption_at_the_conflict_report_still_applies_the_committed_round() -> None:
    dhara = conflict_flow()
    out: list[Frame] = []
    await run_round(dhara, out, "to_b", "to_c")
    hook = dhara.create_transition_hook()
    with trio.CancelScope() as scope:
        scope.cancel()
        await hook(dhara.context)  # type: ignore[misc]
    assert dhara.current_node == "B"
    assert dhara.context.system_prompt == "You are node B."
    queued = [f for f, _ in dhara._outbox]
    assert [f.current for f in queued if isinstance(f, DharaNodeChanged)] == ["B"]
    assert any(isinstance(f, ErrorFrame) and "conflicting" in f.error for f in queued)


async def test_an_announcement_waiting_for_a_way_out_survives_an_interrupted_flush() -> None:
    dhara = conflict_flow()
    out: list[Frame] = []
    entry = dhara.registry.get("to_b")
    assert entry is not None
    with trio.CancelScope() as scope:
        scope.cancel()
        await entry.call(_params(dhara.context, "to_b", "c1", out))
    assert out == []
    await entry.call(_params(dhara.context, "to_b", "c2", out))
    assert [f.current for f in out if isinstance(f, DharaNodeChanged)] == ["A"]


# ----------------------------------------------------------------- wiring mistakes


def greeting_flow(context: LLMContext, registry: FunctionRegistry | None = None) -> DharaManager:
    dhara = DharaManager(context, registry)
    browse = lambda args: TransitionResult.transition("the menu", "menu")  # noqa: E731
    dhara.register_node(
        "greeting",
        node("greeting", ["browse_menu"], respond_immediately=True),
        [("browse_menu", browse)],
    )
    dhara.register_node_no_tools("menu", node("menu"))
    dhara.set_initial_node("greeting")
    return dhara


async def run_pipeline(
    server: ScriptedServer, dhara: DharaManager, llm: OpenAILLMHandler, *, processor: bool
) -> list[str]:
    """User turn "menu please" and the end; returns the errors that reached the source."""
    user, assistant = create_context_aggregators(dhara.context, text_mode=True)
    middle = [dhara.processor()] if processor else []
    task = PipelineTask(Pipeline([user, *middle, llm.into_processor(), assistant]))
    errors: list[str] = []
    task.add_event_handler("on_error", lambda _t, f: errors.append(f.error))
    await task.queue_frames([TranscriptionFrame(text="menu please"), EndFrame()])
    await task.run()
    return errors


async def test_the_seeds_lines_without_the_processor_work_as_written(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # DharaManager(context, registry) + OpenAILLMHandler(config) (a registry of its own) and
    # no processor: setting the hook calls the hook's attach_to_handler, which tells Dhara the
    # handler, whose registry it adopts, so the model's call reaches Dhara's function (before,
    # the model was told it did not exist).
    context = LLMContext()
    dhara = greeting_flow(context, FunctionRegistry())
    llm = OpenAILLMHandler(config(server))
    llm.set_transition_hook(dhara.create_transition_hook())
    server.add_replies([calls(("browse_menu", "c1")), TextReply(["ok"])])
    errors = await run_pipeline(server, dhara, llm, processor=False)
    assert not any("no function named" in e for e in errors), errors
    assert dhara.current_node == "menu"
    assert dhara.registry is llm.registry
    assert [e for e in errors if "did not speak first" not in e] == []


async def test_without_the_processor_a_skipped_opening_line_is_reported(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    context = LLMContext()
    dhara = greeting_flow(context)
    llm = OpenAILLMHandler.with_registry(config(server), dhara.registry)
    llm.set_transition_hook(dhara.create_transition_hook())
    server.add_replies([calls(("browse_menu", "c1")), TextReply(["ok"])])
    errors = await run_pipeline(server, dhara, llm, processor=False)
    assert dhara.current_node == "menu"  # the hook alone transitions
    (error,) = errors
    assert "did not speak first" in error and "dhara.processor()" in error


async def test_a_processor_whose_llm_has_no_transition_hook_is_a_fatal_error_at_start(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    dhara = greeting_flow(LLMContext())
    llm = OpenAILLMHandler.with_registry(
        config(server), dhara.registry
    )  # set_transition_hook forgotten
    with pytest.raises(PipelineFatalError, match="set_transition_hook"):
        await run_pipeline(server, dhara, llm, processor=True)
    assert server.requests == []


async def test_one_manager_in_two_running_pipelines_is_refused(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    dhara = greeting_flow(LLMContext())
    llm = OpenAILLMHandler.with_registry(config(server), dhara.registry)
    llm.set_transition_hook(dhara.create_transition_hook())
    user, assistant = create_context_aggregators(dhara.context, text_mode=True)
    first = PipelineTask(Pipeline([user, dhara.processor(), llm.into_processor(), assistant]))
    llm2 = OpenAILLMHandler.with_registry(config(server), dhara.registry)
    llm2.set_transition_hook(dhara.create_transition_hook())
    user2, assistant2 = create_context_aggregators(dhara.context, text_mode=True)
    second = PipelineTask(Pipeline([user2, dhara.processor(), llm2.into_processor(), assistant2]))
    started = trio.Event()
    first.add_event_handler("on_pipeline_started", lambda _task: started.set())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await started.wait()  # the first pipeline's Dhara processor has started
            with pytest.raises(PipelineFatalError, match="one manager per conversation"):
                await second.run()
            await first.queue_frame(EndFrame())


# ----------------------------------------------------------------- state and snapshots


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "nan is not a JSON number"),
        ({"x": [math.inf]}, "inf is not a JSON number"),
        ({1: "a"}, "the key 1 is not a string"),
        ({"when": {2, 3}}, "a value of type set is not JSON"),
    ],
)
def test_state_takes_only_strict_json(value: Any, message: str) -> None:
    # json.dumps writes NaN (which jsonb refuses) and turns int keys into strings (so a
    # snapshot would not restore what was saved): both were accepted.
    state = FlowState({"total": StateField("number", 0)})
    with pytest.raises(TypeError, match=message):
        state["total" if value is math.nan else "other"] = value
    assert dict(state) == {"total": 0}
    deep: Any = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper"):
        state["deep"] = deep
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(TypeError, match="nested deeper"):
        state["cyclic"] = cyclic


def two_nodes(flow_id: str = "dhara", version: str = "1") -> DharaManager:
    dhara = DharaManager(LLMContext(), flow_id=flow_id, flow_version=version)
    dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "B")])
    dhara.register_node_no_tools("B", node("B"))
    dhara.set_initial_node("A")
    return dhara


def test_a_snapshot_round_trips_exactly_through_json() -> None:
    one = two_nodes()
    one.state["order"] = {"items": [{"size": "large", "price": 15.99}], "notes": None}
    one.context.add_user_message("hello")
    snapshot = one.snapshot()
    text = json.dumps(snapshot, allow_nan=False)
    two = two_nodes()
    two.restore(json.loads(text))
    assert two.snapshot() == snapshot


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": [1, 2]}, "state is not an object"),
        ({"state": {"x": math.nan}}, "state is invalid"),
        ({"node": ["A"]}, "node \\['A'\\] is not registered"),
        ({"revision": -1}, "revision -1"),
    ],
)
def test_a_malformed_snapshot_is_refused_with_a_dhara_error(
    change: dict[str, Any], message: str
) -> None:
    dhara = two_nodes()
    good = dhara.snapshot()
    before = (dhara.current_node, dhara.context.messages)
    with pytest.raises(DharaError, match=message):
        dhara.restore({**good, **change})
    assert (dhara.current_node, dhara.context.messages) == before


def test_a_snapshot_of_another_flow_or_version_is_refused() -> None:
    snapshot = two_nodes("pizza", "2").snapshot()
    for flow_id, version in (("pizza", "3"), ("tacos", "2")):
        with pytest.raises(DharaError, match="the snapshot is of flow 'pizza' version '2'"):
            two_nodes(flow_id, version).restore(snapshot)


async def test_restore_and_set_initial_node_are_refused_while_a_turn_runs(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # A restore in the middle of a tool round put the old conversation's round on top of
    # the restored messages (the context appends an open round at commit).
    gate = trio.Event()
    seen: list[BaseException] = []

    async def go(args: str, ctx: DharaContext) -> TransitionResult:
        for attempt in (
            lambda: ctx.manager.restore(snapshot),
            lambda: ctx.manager.set_initial_node("B"),
        ):
            try:
                attempt()
            except DharaError as exc:
                seen.append(exc)
        gate.set()
        return TransitionResult.transition("moving", "B")

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [("go", go)])
        dhara.register_node_no_tools("B", node("B"))
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("go", "c1")), TextReply(["in B"])])
    async with conversation(server, build) as conv:
        snapshot = conv.dhara.snapshot()
        await conv.say("go")
        assert gate.is_set()
        with pytest.raises(DharaError, match="before the pipeline starts"):
            conv.dhara.set_initial_node("A")
        await trio.sleep(1.0)  # the turn's end marker leaves the pipeline
        conv.dhara.restore(snapshot)  # between turns: fine
        assert conv.dhara.current_node == "A"
    assert [str(e) for e in seen] == [
        "restore() while a turn is running would mix two conversations; call it before the "
        "pipeline starts (or between turns)",
        "set_initial_node() is for before the pipeline starts; in a conversation, nodes "
        "change through the functions' transitions",
    ]
    conv.context.validate()


async def test_the_session_is_saved_after_an_interrupted_turn_too(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # Saving on LLMFullResponseEnd skipped every interrupted turn, and an interruption that
    # reached the pipeline's end during a save cancelled it.
    store = InMemorySessionStore()

    async def go(args: str) -> TransitionResult:
        return TransitionResult.transition("moving", "B")

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [("go", go)])
        dhara.register_node_no_tools("B", node("B", respond_immediately=True))
        dhara.set_initial_node("A")
        return dhara

    def model(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1] == {"role": "user", "content": "go"}:
            return calls(("go", "c1"))
        return TextReply(["a", "long", "answer"], first_token_delay=5.0)

    server.default_reply = model
    async with conversation(server, build, store=store, session_id="s1") as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="go"))
        await conv.wait_until(lambda: conv.dhara.current_node == "B")
        await conv.interrupt()  # B's answer never comes
        await poll(lambda: "s1" in store.session_ids())
        saved = await store.load("s1")
    assert saved is not None and saved["node"] == "B" and saved["revision"] == 1


# ----------------------------------------------------------------- hostile flow files

SEED_FLOW = """{
  "id": "interview",
  "version": "0.3",
  "system_prompt": "You are a friendly interviewer.",
  "initial_node": "welcome",
  "nodes": {
    "welcome": {
      "task_messages": [{"role": "system", "content": "Greet the candidate."}],
      "functions": ["begin_interview"]
    },
    "questions": {
      "system_prompt_override": "You are a strict interviewer.",
      "context_strategy": "Reset",
      "respond_immediately": true,
      "task_messages": [{"role": "user", "content": "I am ready."}],
      "functions": ["record_answer", "finish"]
    },
    "goodbye": {"context_strategy": "Append", "functions": []}
  },
  "functions": {
    "begin_interview": {"description": "Start", "parameters": {"type": "object",
      "properties": {}}, "transitions": {"default": "questions"}},
    "record_answer": {"description": "Record an answer", "parameters": {"type": "object",
      "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
      "transitions": {}},
    "finish": {"description": "Finish", "parameters": {"type": "object", "properties": {}},
      "transitions": {"done": "goodbye", "default": "questions"}},
    "unused_helper": {"description": "Never offered", "parameters": {"type": "object",
      "properties": {}}, "transitions": {}}
  }
}"""


def test_a_seed_flow_file_loads_unchanged_and_runs_its_transitions(tmp_path: Path) -> None:
    # rustvani's dhara.json: a function without transitions (the seed warns, stays) and one
    # no node offers (the seed warns) are fine; Rust-style strategy names.
    (tmp_path / "dhara.json").write_text(SEED_FLOW)
    handlers = {
        "begin_interview": lambda args: HandlerResult.ok("started"),
        "record_answer": lambda args: HandlerResult.ok("recorded"),
        "finish": lambda args: HandlerResult.with_status("bye", "done"),
        "unused_helper": lambda args: "",
    }
    dhara = Dhara.load(tmp_path, handlers).build(handlers)
    assert dhara.current_node == "welcome"
    assert dhara.context.messages == [
        {"role": "system", "content": "You are a friendly interviewer."},
        {"role": "system", "content": "Greet the candidate."},
    ]
    assert dhara.node("questions").context_strategy.strategy is ContextStrategy.RESET
    assert dhara.function_names("questions") == ["record_answer", "finish"]


def deep_json(levels: int) -> str:
    return '{"id": "f", "x-deep": ' + "[" * levels + "]" * levels + "}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (deep_json(100_000), "not valid JSON: nested too deeply"),
        (deep_json(100), "/x-deep/0/0/0"),
        ('{"id": "a", "id": "b", "initial_node": "n", "nodes": {"n": {}}}', "/id: 'id' is given"),
        (
            '{"id": "f", "initial_node": "n", "nodes": {"n": {}},'
            ' "state": {"x": {"type": "number", "default": NaN}}}',
            "/state/x/default: nan is not a JSON number",
        ),
    ],
)
def test_hostile_json_is_a_validation_error_not_a_crash(text: str, message: str) -> None:
    # A deep document raised RecursionError; a key given twice silently kept the last.
    with pytest.raises(FlowValidationError, match=re.escape(message)):
        DharaFlow.from_json(text)


def test_hostile_python_definitions_are_validation_errors_with_paths() -> None:
    # Non-string keys, cycles and deep nesting raised ValueError or RecursionError (some at
    # build time, or at the first request), or were accepted.
    cyclic: dict[str, Any] = {"type": "object"}
    cyclic["properties"] = {"x": cyclic}
    data: dict[Any, Any] = {
        "id": "f",
        "initial_node": "a",
        "nodes": {"a": {"functions": ["go", "ask"]}, "b": {}},
        "functions": {
            "go": {"transitions": {"default": "b", 2: "a"}},
            "ask": {"parameters": cyclic, "transitions": {}},
            "bad name!": {"transitions": {}},
            "typed": {"parameters": {"type": "string"}},
        },
        "state": {"x": {"type": "object", "default": {"when": object()}}},
    }
    handlers = {name: (lambda args: "") for name in ("go", "ask", "bad name!", "typed")}
    with pytest.raises(FlowValidationError) as info:
        DharaFlow.from_dict(data, handlers)
    errors = {e.path.split("/x/properties")[0]: e.message for e in info.value.errors}
    assert errors["/functions/go/transitions"] == "the key 2 is not a string"
    assert errors["/functions/ask/parameters/properties"].startswith("nested deeper than 64")
    assert "1 to 64 letters" in errors["/functions/bad name!"]
    assert "type 'object'" in errors["/functions/typed/parameters/type"]
    assert "type object is not JSON" in errors["/state/x/default/when"]


def test_handlers_that_cannot_be_called_are_validation_errors() -> None:
    data = json.loads(SEED_FLOW)
    handlers: dict[str, Any] = {
        "begin_interview": "not a function",
        "record_answer": lambda: "no arguments",
        "finish": lambda args: "",
        "unused_helper": lambda args: "",
    }
    with pytest.raises(FlowValidationError) as info:
        DharaFlow.from_dict(data, handlers)
    assert [e.path for e in info.value.errors] == [
        "/functions/begin_interview",
        "/functions/record_answer",
    ]
    with pytest.raises(TypeError, match="handlers map function names"):
        DharaFlow.from_dict(data, ["finish"])  # type: ignore[arg-type]


def test_a_huge_flow_is_refused_early_and_a_long_error_list_stays_readable(
    tmp_path: Path,
) -> None:
    huge = tmp_path / "huge.json"
    huge.write_text('{"id": "f", "x-pad": "' + "x" * 2000 + '"}')
    with pytest.raises(FlowValidationError, match="more than the limit of 1000"):
        DharaFlow.load(huge, max_bytes=1000)
    many = {"id": "f", "initial_node": "n0", "nodes": {f"n{i}": {} for i in range(5000)}}
    with pytest.raises(FlowValidationError) as info:
        DharaFlow.from_dict(many)
    assert len(info.value.errors) == 4999
    assert len(str(info.value)) < 10_000
    assert str(info.value).endswith("... and 4949 more (all of them in .errors)")


# ----------------------------------------------------------------- handlers and templates


async def test_a_pipecat_flows_style_result_pair_transitions_instead_of_being_sent_as_json(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # pipecat-flows handlers return (result, next_node): it was sent to the model as a JSON
    # array ['...', 'B'] and the flow silently stayed.
    async def go(args: str, ctx: DharaContext) -> Any:
        return {"status": "done"}, "B"

    async def stay(args: str, ctx: DharaContext) -> Any:
        return {"status": "still here"}, None

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go", "stay"]), [("go", go), ("stay", stay)])
        dhara.register_node_no_tools("B", node("B"))
        dhara.set_initial_node("A")
        return dhara

    server.add_replies([calls(("stay", "c1")), TextReply(["ok"]), calls(("go", "c2"))])
    async with conversation(server, build) as conv:
        await conv.say("stay")
        assert conv.dhara.current_node == "A"
        await conv.say("go")
    assert conv.dhara.current_node == "B"
    results = [m["content"] for m in conv.context.messages if m["role"] == "tool"]
    assert results == ['{"status": "still here"}', '{"status": "done"}']
    with pytest.raises(TypeError, match="not \\(result, next_node_name\\)"):
        as_result(({"x": 1}, NodeConfig("B")))


def test_templates_never_evaluate_and_state_values_are_not_templates() -> None:
    # A user-provided value that looks like a template (or code) is inserted as text, once.
    dhara = DharaManager(LLMContext())
    dhara.state["name"] = "{{state.secret}} {{ state.name }} {__import__('os')}"
    dhara.state["secret"] = "s3cret"
    dhara.state["order"] = {"items": [{"size": "large"}]}
    prompt = (
        "Hi {{state.name}}; {{state.order.items.0.size}}; {{state.name.__class__}}; "
        "{{state.order.__class__.__init__}}; {{ state.missing }}; {{state.secret|upper}}"
    )
    dhara.register_node_no_tools("A", NodeConfig(system_prompt=prompt))
    dhara.set_initial_node("A")
    assert dhara.context.system_prompt == (
        "Hi {{state.secret}} {{ state.name }} {__import__('os')}; large; ; ; ; "
        "{{state.secret|upper}}"
    )


async def test_end_conversation_ends_the_run_while_the_user_keeps_talking(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["bye"]), [DharaFunction.goto("bye", "end")])
        end = node("end", respond_immediately=True, post_actions=[NodeAction.end_conversation()])
        dhara.register_node_no_tools("end", end)
        dhara.set_initial_node("A")
        return dhara

    def model(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1] == {"role": "user", "content": "bye"}:
            return calls(("bye", "c1"))
        return TextReply(["Good", "bye"], first_token_delay=0.3, token_delay=0.3)

    server.default_reply = model
    async with conversation(server, build, expect_end=True) as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="bye"))
        for i in range(100):  # a user who never stops talking
            await trio.sleep(0.25)
            if conv.task.has_finished:
                break
            await conv.task.queue_frame(TranscriptionFrame(text=f"wait {i}"))
    assert conv.task.has_finished and conv.task.finish_reason == "end"
    assert i < 20
    assert conv.dhara.current_node == "end"
    # What the user said after the EndFrame is dropped, and said so (never a hang).
    assert all("after EndFrame" in e for e in conv.errors())


# ----------------------------------------------------------------- an interruption at every await


@pytest.mark.parametrize("at", range(8))
async def test_an_interruption_at_any_await_of_a_transition_leaves_one_whole_node(at: int) -> None:
    # Every await of applying a node, in order: the conflict report, two pre action lines,
    # a function pre action, the summary request, the announcement, the post action's
    # EndTaskFrame (no processor). The interruption comes at await number ``at`` (7: none).
    ticks = [0]
    scope = trio.CancelScope()

    async def tick() -> None:
        ticks[0] += 1
        if ticks[0] == at + 1:
            scope.cancel()
        await trio.lowlevel.checkpoint()

    async def summarize(messages: Any, instruction: str) -> str:
        await tick()
        return "a summary"

    async def action(ctx: DharaContext) -> None:
        await tick()

    dhara = DharaManager(LLMContext(), summarizer=summarize)
    dhara.register_node(
        "A",
        node("A", ["to_b", "to_c"]),
        [DharaFunction.goto("to_b", "B"), DharaFunction.goto("to_c", "C")],
    )
    b = node(
        "B",
        ["b"],
        respond_immediately=True,
        context_strategy=ContextStrategy.RESET_WITH_SUMMARY,
        pre_actions=[NodeAction.say("one"), NodeAction.say("two"), NodeAction.function(action)],
        post_actions=[NodeAction.end_conversation()],
    )
    dhara.register_node("B", b, [("b", lambda a: "")])
    dhara.register_node_no_tools("C", node("C"))
    dhara.set_initial_node("A")
    out: list[Frame] = []
    await run_round(dhara, out, "to_b", "to_c")
    out.clear()
    params = _params(dhara.context, "x", "x", out)

    async def push(frame: Frame, direction: FrameDirection) -> None:
        await tick()
        await params.push_frame(frame, direction)

    for request in dhara._pending.values():
        request.push = push
    with scope:
        await dhara.create_transition_hook()(dhara.context)  # type: ignore[misc]
    assert scope.cancelled_caught == (at < 7)
    # One node, whole: B's prompt, tools and functions.
    assert dhara.current_node == "B"
    assert dhara.context.system_prompt == "You are node B."
    assert dhara.context.tool_names() == ["b"] and dhara.registry.names() == ["b"]
    dhara.context.validate()
    # Everything said is said once, and nothing is lost.
    sent = out + [f for f, _ in dhara._outbox]
    assert [f.current for f in sent if isinstance(f, DharaNodeChanged)] == ["B"]
    errors = [f.error for f in sent if isinstance(f, ErrorFrame)]
    assert sum("conflicting" in e for e in errors) == 1
    ends = sum(isinstance(f, EndTaskFrame) for f in sent)
    assert ends + sum("post actions" in e for e in errors) == 1
    said = [m["content"] for m in dhara.context.messages if m["role"] == "assistant"]
    lines = [f.text for f in sent if type(f) is TextFrame]
    assert said == lines  # the lines pushed are exactly the lines recorded


async def test_a_failed_summary_never_shows_credentials_of_the_base_url() -> None:
    # The error quoted base_url whole: https://user:password@proxy/v1 showed the password.
    summarizer = OpenAISummarizer(
        OpenAILLMConfig(
            api_key="sk-secret",
            auth_header="api-key",  # (a Bearer key beside URL credentials is refused)
            base_url="http://app:pa55w0rd@127.0.0.1:1/v1",
        )
    )
    with pytest.raises(SummaryError) as info:
        await summarizer([{"role": "user", "content": "hi"}], "Summarise.")
    assert "pa55w0rd" not in str(info.value) and "sk-secret" not in str(info.value)
    assert "http://127.0.0.1:1/v1" in str(info.value)


# ----------------------------------------------------------------- properties of hostile input

_KEYS = st.sampled_from(
    [
        "id",
        "initial_node",
        "nodes",
        "functions",
        "state",
        "a",
        "go",
        "type",
        "default",
        "transitions",
        "task_messages",
        "role",
        "content",
        "pre_actions",
        "handler",
        "text",
        "parameters",
        "transition_on",
        "context_strategy",
        "x-a",
    ]
) | st.integers(0, 2)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(["a", "go", "default", "system", "object", "reset", "tts_say", "function"])
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=15,
)


def test_an_unhashable_context_strategy_or_role_is_an_error_not_a_crash() -> None:
    # Found by the property below: a list where a name was expected raised TypeError.
    data = {
        "id": "f",
        "initial_node": "a",
        "nodes": {"a": {"context_strategy": [], "task_messages": [{"role": [], "content": ""}]}},
    }
    paths = [e.path for e in validate_flow(data)]
    assert paths == ["/nodes/a/context_strategy", "/nodes/a/task_messages/0/role"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    document=st.fixed_dictionaries(
        {"id": _VALUES, "initial_node": _VALUES, "nodes": _VALUES},
        optional={"functions": _VALUES, "state": _VALUES, "global_functions": _VALUES},
    ),
    bind=st.booleans(),
)
def test_any_document_is_loaded_or_rejected_with_errors_never_a_crash(
    document: dict[str, Any], bind: bool
) -> None:
    handlers = {"go": lambda args: "", "a": lambda args, ctx: ""} if bind else None
    try:
        flow = DharaFlow.from_dict(document, handlers)
    except FlowValidationError as exc:
        assert exc.errors
        return
    if handlers is not None:
        flow.build(handlers)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    change=st.dictionaries(
        st.sampled_from(["format", "flow_id", "flow_version", "node", "state", "messages"]),
        _VALUES,
        max_size=6,
    )
)
def test_any_snapshot_is_restored_or_refused_with_a_dhara_error_changing_nothing(
    change: dict[str, Any],
) -> None:
    dhara = two_nodes()
    snapshot = {**dhara.snapshot(), **change}
    before = (dhara.current_node, dhara.context.messages, dict(dhara.state))
    try:
        dhara.restore(snapshot)
    except DharaError:
        assert (dhara.current_node, dhara.context.messages, dict(dhara.state)) == before


async def test_a_post_action_line_is_recorded_only_if_it_went_out(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # The node's answer is interrupted while its post action line waits behind it: the line
    # was dropped by the interruption but still recorded as said by the assistant. Now the
    # line, like the post actions' marker, survives the interruption: what is recorded is
    # what went out.
    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        dhara.register_node("A", node("A", ["go"]), [DharaFunction.goto("go", "B")])
        b = node("B", respond_immediately=True, post_actions=[NodeAction.say("Anything else?")])
        dhara.register_node_no_tools("B", b)
        dhara.set_initial_node("A")
        return dhara

    def model(request: RecordedRequest) -> Reply:
        if request.json["messages"][-1] == {"role": "user", "content": "go"}:
            return calls(("go", "c1"))
        return TextReply(["I", "am", "B"], first_token_delay=1.0, token_delay=1.0)

    server.default_reply = model
    async with conversation(server, build) as conv:
        await conv.task.queue_frame(TranscriptionFrame(text="go"))
        await conv.wait_until(lambda: any(isinstance(f, LLMText) for f in conv.down))
        await conv.interrupt()
        await trio.sleep(5.0)
    lines = [f.text for f in conv.down if isinstance(f, TextFrame) and not isinstance(f, LLMText)]
    recorded = [m["content"] for m in conv.context.messages if m["role"] == "assistant"]
    assert lines == ["Anything else?"]
    assert recorded[-1] == "Anything else?"


async def test_a_user_turn_waits_for_the_initial_nodes_pre_actions(
    server: ScriptedServer, autojump_clock: trio.testing.MockClock
) -> None:
    # Pre actions run before the node's first request; a user turn that got in before the
    # initial node's (slow) pre actions finished was answered while they still ran.
    seen: list[Any] = []
    manager: list[DharaManager] = []

    async def load_customer(ctx: DharaContext) -> None:
        await trio.sleep(2.0)
        ctx.state["name"] = "Ann"

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        dhara = DharaManager(context, registry)
        a = node("A", pre_actions=[NodeAction.function(load_customer), NodeAction.say("Hello!")])
        dhara.register_node_no_tools("A", a)
        dhara.set_initial_node("A")
        manager.append(dhara)
        return dhara

    def model(request: RecordedRequest) -> Reply:
        seen.append((manager[0].state.get("name"), request.json["messages"][-2:]))
        return TextReply(["hi"])

    server.default_reply = model
    async with conversation(
        server, build, wait_first_turn=False, queued=[TranscriptionFrame(text="I was first")]
    ) as conv:
        await conv.turns(1)
    assert [name for name, _ in seen] == ["Ann"]
    assert seen[0][1] == [
        {"role": "user", "content": "I was first"},
        {"role": "assistant", "content": "Hello!"},
    ]


def test_a_global_function_added_mid_conversation_never_replaces_another_function() -> None:
    # It replaced (with only a RegistryWarning) a built-in tool's function of the same name,
    # and the current node's own function, whose schema the model still saw.
    dhara = two_nodes()
    dhara.registry.register("clock_now", lambda args: "12:00")
    with pytest.raises(DharaError, match="clashes with a function registered outside Dhara"):
        dhara.register_global_function(DharaFunction.goto("clock_now", "B"))
    assert dhara.registry.get("clock_now") is not None and "clock_now" not in dhara._globals
    mine = dhara.registry.get("go")
    dhara.register_global_function(DharaFunction.goto("go", "A", description="global go"))
    assert dhara.registry.get("go") is mine  # node A's own go still runs
    dhara.register_global_function(DharaFunction.goto("help", "A"))
    assert "help" in dhara.registry and dhara.context.tool_names() == ["go", "help"]
