"""A hypothesis test over random flows, random call sequences (several calls per round, calls
of functions the node does not offer, failing and slow handlers) and random interruption
points: every request carries the prompt and tools of ``current_node``; between turns the
context is valid; the announced node changes form one chain ending in ``current_node``.

Each example runs in its own ``trio.run`` under ``MockClock(autojump_threshold=0)``; the
scripted server is in the same run, so sleeps and interruption times are virtual.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_dhara_support import conversation

from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.dhara import (
    ContextStrategy,
    DharaContext,
    DharaFunction,
    DharaManager,
    NodeConfig,
    TransitionResult,
)
from rustvani_trio.frames import InterruptionFrame, LLMFullResponseEnd, TranscriptionFrame
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.testing import (
    RecordedRequest,
    Reply,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
)

NODES = ("N0", "N1", "N2")
OUTCOMES = ("ok", "raise", "slow")


@attrs.frozen
class NodeSpec:
    functions: tuple[str, ...]  # targets: "N1" means a function to_N1
    immediate: bool
    reset: bool


@attrs.frozen
class Call:
    function: str
    outcome: str


@attrs.frozen
class Turn:
    rounds: tuple[tuple[Call, ...], ...]
    interrupt_at: float | None


node_specs = st.builds(
    NodeSpec,
    st.lists(st.sampled_from(NODES), unique=True, min_size=1, max_size=2).map(tuple),
    st.booleans(),
    st.booleans(),
)
FUNCTIONS = (*tuple(f"to_{n}" for n in NODES), "stay", "g")
calls = st.builds(Call, st.sampled_from(FUNCTIONS), st.sampled_from(("ok", "ok", *OUTCOMES)))
turns = st.builds(
    Turn,
    st.lists(st.lists(calls, min_size=1, max_size=3).map(tuple), min_size=1, max_size=2).map(tuple),
    st.one_of(st.none(), st.sampled_from([0.05, 0.3, 0.7, 1.2, 2.5])),
)


def fs(name: str) -> FunctionSchema:
    return FunctionSchema(name=name, description=name)


async def run_call(outcome: str, result: Any) -> Any:
    if outcome == "slow":
        await trio.sleep(1.0)
    if outcome == "raise":
        raise RuntimeError("handler failed")
    return result


def build_flow(specs: tuple[NodeSpec, ...]) -> tuple[Any, dict[str, list[str]]]:
    expected: dict[str, list[str]] = {}
    outcomes: dict[str, str] = {}

    def handler(name: str, target: str | None) -> Any:
        async def call(args: str, ctx: DharaContext) -> Any:
            outcome = outcomes.get(ctx.tool_call_id, "ok")
            if target is None:
                return await run_call(outcome, TransitionResult.stay("stayed"))
            return await run_call(outcome, TransitionResult.transition("moving", target))

        return call

    for name, spec in zip(NODES, specs, strict=True):
        expected[name] = sorted([f"to_{t}" for t in spec.functions] + ["stay", "g"])

    def build(context: LLMContext, registry: FunctionRegistry) -> DharaManager:
        g = DharaFunction(name="g", handler=handler("g", None), schema=fs("g"))
        dhara = DharaManager(context, registry, global_functions=[g])
        for name, spec in zip(NODES, specs, strict=True):
            functions = [
                DharaFunction(name=f"to_{t}", handler=handler(f"to_{t}", t), schema=fs(f"to_{t}"))
                for t in spec.functions
            ]
            functions.append(
                DharaFunction(name="stay", handler=handler("stay", None), schema=fs("stay"))
            )
            config = NodeConfig(
                name,
                system_prompt=f"You are {name}.",
                task_messages=[f"Task of {name}."],
                respond_immediately=spec.immediate,
                context_strategy=ContextStrategy.RESET if spec.reset else ContextStrategy.APPEND,
            )
            dhara.register_node(name, config, functions)
        dhara.set_initial_node("N0")
        return dhara

    build.outcomes = outcomes  # type: ignore[attr-defined]
    return build, expected


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    specs=st.tuples(node_specs, node_specs, node_specs),
    script=st.lists(turns, min_size=1, max_size=4),
)
def test_current_node_always_matches_the_next_request_and_the_context_stays_valid(
    specs: tuple[NodeSpec, ...], script: list[Turn]
) -> None:
    build, expected = build_flow(specs)
    outcomes: dict[str, str] = build.outcomes
    violations: list[str] = []
    holder: dict[str, Any] = {"turn": -1, "replies": []}
    ids = iter(range(10_000))

    def model(request: RecordedRequest) -> Reply:
        dhara: DharaManager = holder["dhara"]
        body = request.json
        node = dhara.current_node or ""
        prompt = body["messages"][0]["content"]
        tools = sorted(t["function"]["name"] for t in body.get("tools", []))
        if prompt != f"You are {node}." or tools != expected[node]:
            violations.append(f"request {request.index} in {node}: {prompt!r} {tools}")
        replies: list[Reply] = holder["replies"]
        return replies.pop(0) if replies else TextReply(["done"], token_delay=0.05)

    async def main() -> None:
        async with (
            open_scripted_server(default_reply=model) as server,
            conversation(server, build, wait_first_turn=False) as conv,
        ):
            holder["dhara"] = conv.dhara
            await trio.sleep(1.0)  # the opening line, if N0 speaks first
            for turn in script:
                replies: list[Reply] = []
                for calls_ in turn.rounds:
                    scripted = []
                    for call in calls_:
                        call_id = f"c{next(ids)}"
                        outcomes[call_id] = call.outcome
                        scripted.append(ScriptedToolCall(name=call.function, id=call_id))
                    replies.append(ToolCallReply(scripted, token_delay=0.05))
                holder["replies"] = replies
                before = conv.count(LLMFullResponseEnd)
                await conv.task.queue_frame(TranscriptionFrame(text="next"))
                limit = math.inf if turn.interrupt_at is None else turn.interrupt_at
                with trio.move_on_after(limit):
                    await conv.turns(before + 1)
                if conv.count(LLMFullResponseEnd) == before:
                    await conv.task.queue_frame(InterruptionFrame())
                    await conv.wait_until(lambda: bool(conv.of(InterruptionFrame)))
                await trio.sleep(3.0)  # everything has settled
                conv.down = [f for f in conv.down if not isinstance(f, InterruptionFrame)]
                check_between_turns(conv)
            # One more turn: the flow still works after whatever happened.
            holder["replies"] = []
            await conv.say("still there?")
            check_between_turns(conv)

    def check_between_turns(conv: Any) -> None:
        dhara: DharaManager = conv.dhara
        assert conv.context.open_round is None
        conv.context.validate()
        node = dhara.current_node
        assert conv.context.system_prompt == f"You are {node}."
        assert sorted(conv.context.tool_names()) == expected[node]
        assert sorted(dhara.registry.names()) == expected[node]
        changes = [(c.previous, c.current) for c in conv.of(_changed())]
        assert changes[0] == (None, "N0")
        for (_, cur), (prev, _) in itertools.pairwise(changes):
            assert prev == cur
        assert changes[-1][1] == node
        assert [c.current for c in dhara.history] == [c for _, c in changes]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert violations == []
    reasons = [c.reason for c in holder["dhara"].history]
    event(f"node changes: {min(len(reasons) - 1, 3)}")
    event(f"settled after an interruption: {any('interruption' in r for r in reasons)}")
    event(f"interrupted turns: {sum(t.interrupt_at is not None for t in script) > 0}")


def _changed() -> type:
    from rustvani_trio.dhara import DharaNodeChanged

    return DharaNodeChanged
