"""Flow files: loading (JSON, TOML, a directory's dhara.json), validation with every error at
once and its JSON Pointer, the published JSON Schema, and a hypothesis test over random flow
graphs (every invalid graph rejected with all its errors, every valid one loads and builds)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rustvani_trio.context import LLMContext
from rustvani_trio.dhara import (
    DharaFlow,
    DharaFunctionRegistry,
    FlowValidationError,
    flow_json_schema,
    validate_flow,
)
from rustvani_trio.dhara.examples import pizza

SCHEMA = flow_json_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def schema_ok(data: Any) -> bool:
    return not list(VALIDATOR.iter_errors(data))


def pizza_definition() -> dict[str, Any]:
    return dict(json.loads(pizza.FLOW_PATH.read_text()))


def test_the_schema_is_a_valid_draft_2020_12_schema_and_accepts_the_example() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert schema_ok(pizza_definition())
    flow = pizza.load_flow()
    assert flow.id == "pizza-order" and flow.version == "1.0"
    assert flow.node_names() == ["greeting", "menu", "confirm", "farewell"]


def test_a_broken_flow_reports_every_error_with_its_path() -> None:
    data = pizza_definition()
    data["initial_node"] = "welcome"
    data["nodes"]["menu"]["functions"].append("apply_coupon")
    data["nodes"]["menu"]["task_messages"].append({"role": "robot", "content": "beep"})
    data["nodes"]["confirm"]["respond_immediatly"] = True
    data["functions"]["place_order"]["transitions"]["failed"] = "sorry"
    data["nodes"]["farewell"]["task_messages"][0]["content"] += " {{state.nickname}}"
    handlers = pizza.handlers()
    del handlers._handlers["view_order"]
    with pytest.raises(FlowValidationError) as info:
        DharaFlow.from_dict(data, handlers, source="pizza.json")
    paths = {e.path: e.message for e in info.value.errors}
    assert set(paths) == {
        "/initial_node",
        "/nodes/menu/functions/4",
        "/nodes/menu/task_messages/1/role",
        "/nodes/confirm/respond_immediatly",
        "/functions/place_order/transitions/failed",
        "/nodes/farewell/task_messages/0/content",
        "/functions/view_order",
    }
    assert "'welcome'" in paths["/initial_node"]
    assert "'apply_coupon' is not defined" in paths["/nodes/menu/functions/4"]
    assert "'robot'" in paths["/nodes/menu/task_messages/1/role"]
    assert "no handler" in paths["/functions/view_order"]
    text = str(info.value)
    assert text.startswith("pizza.json is invalid (7 errors):")
    assert "/functions/place_order/transitions/failed: transition 'failed'" in text


def test_unreachable_nodes_are_errors_and_unreferenced_functions_are_not() -> None:
    data = pizza_definition()
    data["nodes"]["survey"] = {"task_messages": [{"role": "system", "content": "Ask."}]}
    data["functions"]["unused"] = {"description": "never offered"}
    errors = validate_flow(data, pizza.handlers())
    assert [str(e) for e in errors] == [
        "/functions/unused: no handler is bound for function 'unused'",
        "/nodes/survey: node 'survey' is unreachable from the initial node 'greeting' (no "
        "function transitions to it)",
    ]


def test_json_and_toml_and_directories_load(tmp_path: Path) -> None:
    flow = pizza.load_flow()
    (tmp_path / "dhara.json").write_text(pizza.FLOW_PATH.read_text())
    assert DharaFlow.load(tmp_path, pizza.handlers()).definition == flow.definition
    toml = tmp_path / "mini.toml"
    toml.write_text(
        'id = "mini"\nversion = 2\ninitial_node = "a"\nsystem_prompt = "Be brief."\n'
        "[nodes.a]\nfunctions = []\n"
    )
    mini = DharaFlow.load(toml)
    assert (mini.id, mini.version, mini.node_names()) == ("mini", "2", ["a"])
    manager = mini.build({})
    assert manager.current_node == "a" and manager.context.system_prompt == "Be brief."
    with pytest.raises(FlowValidationError, match="not valid JSON"):
        DharaFlow.from_json("{nope")
    with pytest.raises(FlowValidationError, match="not valid TOML"):
        DharaFlow.from_toml("= 1")


def test_build_makes_independent_conversations() -> None:
    flow = pizza.load_flow()
    one = flow.build(pizza.handlers())
    two = flow.build(pizza.handlers(), context=LLMContext())
    one.state["total"] = 9.5
    assert two.state["total"] == 0
    assert one.context is not two.context and one.registry is not two.registry
    assert one.current_node == two.current_node == "greeting"
    with pytest.raises(FlowValidationError, match="no handler is bound"):
        flow.build(DharaFunctionRegistry())


def test_state_fields_are_typed() -> None:
    manager = pizza.build_from_file()
    with pytest.raises(TypeError, match="'total' is declared number"):
        manager.state["total"] = "a lot"
    with pytest.raises(TypeError, match="'extra' must be JSON"):
        manager.state["extra"] = object()
    manager.state["extra"] = {"fine": [1, 2]}
    data = pizza_definition()
    data["state"]["total"]["default"] = "zero"
    assert [e.path for e in validate_flow(data)] == ["/state/total/default"]


# ----------------------------------------------------------------- random flow graphs

NODE_KEYS = ("respond_immediately", "context_strategy", "task_messages")
STRATEGIES = ("append", "reset", "reset_with_summary", "Append", "ResetWithSummary", "RESET")


@st.composite
def valid_flows(draw: st.DrawFn) -> dict[str, Any]:
    """A valid flow: every node reachable (a spanning tree of transition functions), plus
    random extra functions, transitions, task messages, strategies and state templates."""
    n = draw(st.integers(1, 5))
    nodes: dict[str, Any] = {f"n{i}": {"functions": []} for i in range(n)}
    functions: dict[str, Any] = {}
    for i in range(1, n):
        parent = f"n{draw(st.integers(0, i - 1))}"
        only = draw(st.booleans())
        name = f"to_n{i}"
        functions[name] = {"description": f"go to n{i}", "transitions": {"default": f"n{i}"}}
        if only:
            functions[name]["transition_only"] = True
        nodes[parent]["functions"].append(name)
    for k in range(draw(st.integers(0, 4))):
        name = f"extra{k}"
        targets = draw(
            st.dictionaries(
                st.sampled_from(["ok", "err", "default"]),
                st.sampled_from(sorted(nodes)),
                max_size=2,
            )
        )
        functions[name] = {
            "description": "x",
            "parameters": {"type": "object"},
            "transitions": targets,
        }
        if draw(st.booleans()):
            functions[name]["transition_on"] = "status"
        for owner in draw(st.sets(st.sampled_from(sorted(nodes)), max_size=2)):
            nodes[owner]["functions"].append(name)
    state = {"count": {"type": "integer", "default": 0}, "who": {"type": "string"}}
    for name, spec in nodes.items():
        if draw(st.booleans()):
            spec["respond_immediately"] = draw(st.booleans())
        if draw(st.booleans()):
            spec["context_strategy"] = draw(st.sampled_from(STRATEGIES))
        spec["task_messages"] = [
            {"role": role, "content": f"{name} {role}" + (" {{state.count}}" if t else "")}
            for role, t in draw(
                st.lists(
                    st.tuples(st.sampled_from(["system", "user", "assistant"]), st.booleans()),
                    max_size=2,
                )
            )
        ]
    flow: dict[str, Any] = {
        "id": "random",
        "version": draw(st.sampled_from(["1", 2, "3.0"])),
        "system_prompt": "Hello {{state.who}}",
        "initial_node": "n0",
        "state": state,
        "nodes": nodes,
        "functions": functions,
    }
    if functions and draw(st.booleans()):
        flow["global_functions"] = [draw(st.sampled_from(sorted(functions)))]
    return flow


def handler_names(flow: dict[str, Any]) -> set[str]:
    return {name for name, f in flow["functions"].items() if not f.get("transition_only")}


MUTATIONS = (
    "bad_initial",
    "undefined_function",
    "bad_target",
    "unreachable",
    "bad_role",
    "missing_handler",
    "undeclared_state",
    "bad_type",
    "unknown_field",
)
STRUCTURAL = {"bad_role", "bad_type", "unknown_field"}


def mutate(
    flow: dict[str, Any], which: list[str], pick: st.DrawFn
) -> tuple[dict[str, Any], set[str], set[str]]:
    """Apply mutations; returns the flow, the handler names and the expected error paths."""
    flow = copy.deepcopy(flow)
    handlers = handler_names(flow)
    expected: set[str] = set()
    nodes = sorted(flow["nodes"])
    for kind in which:
        target = pick(st.sampled_from(nodes))
        spec = flow["nodes"][target]
        if kind == "bad_initial":
            flow["initial_node"] = "ghost"
            expected.add("/initial_node")
        elif kind == "undefined_function":
            spec["functions"].append("ghost_fn")
            expected.add(f"/nodes/{target}/functions/{len(spec['functions']) - 1}")
        elif kind == "bad_target":
            fname = "bad_target_fn"
            flow["functions"][fname] = {"transitions": {"oops": "ghost"}}
            handlers.add(fname)
            expected.add(f"/functions/{fname}/transitions/oops")
        elif kind == "unreachable":
            defined = flow["functions"]
            flow["nodes"]["island"] = {"functions": [f for f in spec["functions"] if f in defined]}
        elif kind == "bad_role":
            spec["task_messages"].append({"role": "robot", "content": "beep"})
            expected.add(f"/nodes/{target}/task_messages/{len(spec['task_messages']) - 1}/role")
        elif kind == "missing_handler":
            flow["functions"]["needs_handler"] = {"description": "x"}
            spec["functions"].append("needs_handler")
            expected.add("/functions/needs_handler")
        elif kind == "undeclared_state":
            spec["task_messages"].append({"role": "system", "content": "{{state.ghost}}"})
            expected.add(f"/nodes/{target}/task_messages/{len(spec['task_messages']) - 1}/content")
        elif kind == "bad_type":
            spec["respond_immediately"] = "yes"
            expected.add(f"/nodes/{target}/respond_immediately")
        elif kind == "unknown_field":
            spec["respond_immediatly"] = True
            expected.add(f"/nodes/{target}/respond_immediatly")
    if "unreachable" in which and "bad_initial" not in which:
        expected.add("/nodes/island")
    return flow, handlers, expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flow=valid_flows(),
    which=st.lists(st.sampled_from(MUTATIONS), unique=True, max_size=4),
    data=st.data(),
)
def test_random_flow_graphs_are_rejected_with_all_their_errors_or_load(
    flow: dict[str, Any], which: list[str], data: st.DataObject
) -> None:
    mutated, names, expected = mutate(flow, which, data.draw)
    handlers = {name: (lambda args: "ok") for name in names}
    errors = validate_flow(mutated, handlers)
    assert {e.path for e in errors} == expected, [str(e) for e in errors]
    assert len(errors) == len(expected)  # one error per problem, no cascades
    if expected:
        with pytest.raises(FlowValidationError) as info:
            DharaFlow.from_dict(mutated, handlers)
        assert {e.path for e in info.value.errors} == expected
    else:
        manager = DharaFlow.from_dict(mutated, handlers).build(handlers)
        assert manager.current_node == mutated["initial_node"]
        assert sorted(manager.node_names) == sorted(mutated["nodes"])
        assert manager.context.system_prompt == "Hello "  # {{state.who}} has no value yet
    # The published schema agrees on the document's structure.
    if set(which) & STRUCTURAL:
        assert not schema_ok(mutated)
    elif not set(which) & {"undefined_function"}:
        assert schema_ok(mutated)
