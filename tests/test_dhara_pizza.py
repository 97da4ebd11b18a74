"""The pizza-order flow end to end over real HTTP (the scripted model on loopback), built
with the seed's imperative API and from the shipped JSON file: every transition, including
going back from confirm to menu; the total; the EndFrame after the farewell; and the two
versions' requests, message by message.

Clocks: pytest-trio's ``autojump_clock``; the scripted server runs in the same trio run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from test_dhara_support import conversation

from rustvani_trio.dhara import DharaNodeChanged
from rustvani_trio.dhara.examples import pizza
from rustvani_trio.frames import EndFrame, FunctionCallResult, LLMFullResponseEnd, LLMText
from rustvani_trio.testing import ScriptedServer, open_scripted_server

LINES = (
    "Yes, show me the menu please",
    "A large Pepperoni with mushrooms and olives",
    "Also a small Margherita",
    "Please remove item 2",
    "What's in my order?",
    "That's all, confirm please",
    "Actually I want to change something",
    "Add a medium Hawaiian",
    "Now confirm",
    "Deliver to 12 MG Road, Pune",
)

BUILDS = {"imperative": pizza.build_imperative, "file": pizza.build_from_file}


async def run_pizza(server: ScriptedServer, build: Any) -> Any:
    # The farewell node's post action ends the run after its answer (expect_end).
    async with conversation(server, build, expect_end=True) as conv:
        for line in LINES:
            await conv.say(line)
    return conv


@pytest.mark.parametrize("which", list(BUILDS))
async def test_the_pizza_flow_runs_through_every_transition(
    which: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_scripted_server(default_reply=pizza.scripted_model) as server:
        conv = await run_pizza(server, BUILDS[which])
    assert conv.errors() == []
    assert conv.nodes() == ["greeting", "menu", "confirm", "menu", "confirm", "farewell"]
    changes = conv.of(DharaNodeChanged)
    assert [c.previous for c in changes] == [None, "greeting", "menu", "confirm", "menu", "confirm"]
    assert changes[0].reason == "initial"
    assert changes[3].reason == "function modify_order"
    assert conv.dhara.current_node == "farewell"
    state = conv.dhara.state
    # large Pepperoni + 2 toppings (15.99 + 3.00) and medium Hawaiian (12.99)
    assert [(i["size"], i["pizza"], i["price"]) for i in state["items"]] == [
        ("large", "Pepperoni", 18.99),
        ("medium", "Hawaiian", 12.99),
    ]
    assert state["total"] == pytest.approx(31.98)
    results = {r.function_name: r.result for r in conv.of(FunctionCallResult)}
    placed = json.loads(results["place_order"])
    assert placed["order_id"] == "DP-1001"
    assert placed["order_summary"].endswith("Total: $31.98")
    # The confirm node's task message was rendered from the state.
    confirm_task = [
        m["content"]
        for m in conv.context.messages
        if m["role"] == "system" and "Read it back" in m["content"]
    ]
    assert confirm_task[-1].startswith("The order has 2 item(s) and comes to $31.98.")
    # The farewell answer, then EndFrame: nothing after it.
    ends = [i for i, f in enumerate(conv.down) if isinstance(f, LLMFullResponseEnd)]
    end = next(i for i, f in enumerate(conv.down) if isinstance(f, EndFrame))
    assert ends[-1] < end
    last_text = "".join(f.text for f in conv.down[ends[-2] : ends[-1]] if isinstance(f, LLMText))
    assert "30-45 minutes" in last_text
    assert conv.task.has_finished


async def test_the_flow_file_gives_the_same_requests_as_the_imperative_version(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = {}
    for which, build in BUILDS.items():
        async with open_scripted_server(default_reply=pizza.scripted_model) as server:
            await run_pizza(server, build)
            runs[which] = [(r.json["messages"], r.json.get("tools")) for r in server.requests]
    imperative, from_file = runs["imperative"], runs["file"]
    assert len(imperative) == len(from_file) > 20
    for i, (a, b) in enumerate(zip(imperative, from_file, strict=True)):
        assert a[0] == b[0], f"request {i}: messages differ"
        assert a[1] == b[1], f"request {i}: tools differ"


async def test_every_request_carries_the_current_nodes_prompt_and_tools(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str | None, list[str]]] = []
    manager: list[Any] = []

    def model(request: Any) -> Any:
        dhara = manager[0]
        tools = sorted(t["function"]["name"] for t in request.json.get("tools", []))
        assert tools == sorted(dhara.function_names())
        assert request.json["messages"][0]["content"] == dhara.context.system_prompt
        seen.append((dhara.current_node, tools))
        return pizza.scripted_model(request)

    def build(context: Any, registry: Any) -> Any:
        manager.append(pizza.build_from_file(context, registry))
        return manager[0]

    async with open_scripted_server(default_reply=model) as server:
        await run_pizza(server, build)
    nodes_seen = [n for n, _ in seen]
    assert nodes_seen[0] == "greeting" and nodes_seen[-1] == "farewell"
    assert ("farewell", []) in seen


async def test_the_demo_scene_shows_every_node_change(
    capsys: pytest.CaptureFixture[str], autojump_clock: trio.testing.MockClock
) -> None:
    from rustvani_trio._cli import scene_dhara

    assert scene_dhara.available()
    await scene_dhara.run()
    out = capsys.readouterr().out
    assert "[node: greeting  (initial)]" in out
    assert "[node: greeting -> menu  (function browse_menu)]" in out
    assert "[node: confirm -> menu  (function modify_order)]" in out
    assert "[node: confirm -> farewell  (function place_order)]" in out
    assert "Final node: farewell; 1 item(s), total $18.99" in out
    assert "the run ended (end)" in out
