"""The pizza-order flow (after rustvani's ``pizza_order_dhara`` example), both ways.

```
greeting -> menu -> confirm -> farewell
              ^        |
              +--------+  (modify_order)
```

* :func:`load_flow` / :func:`build_from_file`: ``pizza.json`` beside this module, handlers
  bound by name (they take ``(args, ctx)`` and use ``ctx.state``);
* :func:`build_imperative`: the same flow with the seed's API (``NodeConfig``,
  ``register_node``, handlers taking the raw arguments and returning ``TransitionResult``).

Both give the model the same prompts, tools and tool results, message by message.
:func:`scripted_model` is a scripted OpenAI-compatible "model" for this flow (for the demo and
the tests): it reads each request and answers with a tool call or text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ...context import FunctionSchema, LLMContext
from ...services.llm.function_registry import FunctionRegistry
from ...testing import RecordedRequest, ScriptedToolCall, TextReply, ToolCallReply
from ..call import DharaContext, DharaFunctionRegistry
from ..loader import DharaFlow
from ..manager import DharaManager
from ..node import NodeAction, NodeConfig, TransitionResult

__all__ = [
    "FLOW_PATH",
    "PRICES",
    "TOPPING_PRICE",
    "build_from_file",
    "build_imperative",
    "handlers",
    "load_flow",
    "scripted_model",
]

FLOW_PATH = Path(__file__).with_name("pizza.json")

#: The seed's prices.
PRICES = {"small": 8.99, "medium": 12.99, "large": 15.99}
TOPPING_PRICE = 1.50
PIZZAS = ("Margherita", "Pepperoni", "Hawaiian", "BBQ Chicken", "Veggie Supreme")

MENU = {
    "menu": [
        {"name": "Margherita", "description": "Classic tomato, mozzarella, basil"},
        {"name": "Pepperoni", "description": "Loaded with pepperoni"},
        {"name": "Hawaiian", "description": "Ham and pineapple"},
        {"name": "BBQ Chicken", "description": "BBQ sauce, chicken, red onion"},
        {"name": "Veggie Supreme", "description": "Bell peppers, mushrooms, olives, onions"},
    ],
    "sizes": ["small ($8.99)", "medium ($12.99)", "large ($15.99)"],
    "extra_toppings": "$1.50 each",
}

# ----------------------------------------------------------------------------- the order


def _recount(state: MutableMapping[str, Any]) -> None:
    items = state["items"]
    state["item_count"] = len(items)
    state["total"] = round(sum(item["price"] for item in items), 2)


def summary(state: Mapping[str, Any]) -> str:
    """The order as text, with its total."""
    if not state["items"]:
        return "No items in order"
    lines = [
        f"{i}. {item['size']} {item['pizza']} with "
        + (", ".join(item["toppings"]) or "no extra toppings")
        for i, item in enumerate(state["items"], 1)
    ]
    return "\n".join(lines) + f"\nTotal: ${state['total']:.2f}"


def add_item(state: MutableMapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """Add a pizza; its price is the size's plus 1.50 per topping."""
    pizza = str(args.get("pizza", "Margherita"))
    size = str(args.get("size", "medium"))
    toppings = [str(t) for t in args.get("toppings") or []]
    price = round(PRICES.get(size, PRICES["medium"]) + TOPPING_PRICE * len(toppings), 2)
    state["items"] = [
        *state["items"],
        {"pizza": pizza, "size": size, "toppings": toppings, "price": price},
    ]
    _recount(state)
    return {
        "status": "added",
        "pizza": pizza,
        "size": size,
        "toppings": toppings,
        "order_summary": summary(state),
    }


def remove_item(state: MutableMapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """Remove item ``item_number`` (1-based)."""
    number = args.get("item_number")
    items = list(state["items"])
    if not isinstance(number, int) or not 1 <= number <= len(items):
        return {"status": "error", "error": f"No item #{number}"}
    removed = items.pop(number - 1)
    state["items"] = items
    _recount(state)
    return {
        "status": "removed",
        "removed": f"{removed['size']} {removed['pizza']}",
        "order_summary": summary(state),
    }


def view(state: Mapping[str, Any]) -> dict[str, Any]:
    """The order summary."""
    return {
        "order_summary": summary(state),
        "item_count": len(state["items"]),
        "total_price": f"${state['total']:.2f}",
    }


def confirm(state: Mapping[str, Any]) -> dict[str, Any]:
    """Ready to confirm, unless the order is empty."""
    if not state["items"]:
        return {"status": "empty", "error": "Cannot confirm: the order is empty"}
    return {
        "status": "ready_to_confirm",
        "order_summary": summary(state),
        "message": "Please confirm or modify",
    }


def place(state: MutableMapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """Place the order (a deterministic order id)."""
    state["orders_placed"] = state["orders_placed"] + 1
    return {
        "status": "order_placed",
        "order_id": f"DP-{1000 + state['orders_placed']}",
        "delivery_address": str(args.get("delivery_address", "unknown")),
        "order_summary": summary(state),
        "estimated_delivery": "30-45 minutes",
    }


RETURNING = json.dumps({"status": "returning_to_menu"})

# ----------------------------------------------------------------------------- the file version


def handlers() -> DharaFunctionRegistry:
    """The flow file's handlers, bound by name (``modify_order`` only transitions: none)."""
    reg = DharaFunctionRegistry()
    reg.register("browse_menu", lambda args, ctx: MENU)
    reg.register("add_to_order", lambda args, ctx: add_item(ctx.state, json.loads(args)))
    reg.register("remove_from_order", lambda args, ctx: remove_item(ctx.state, json.loads(args)))
    reg.register("view_order", lambda args, ctx: view(ctx.state))
    reg.register("confirm_order", lambda args, ctx: confirm(ctx.state))

    async def place_order(args: str, ctx: DharaContext) -> dict[str, Any]:
        return place(ctx.state, json.loads(args))

    reg.register("place_order", place_order)
    return reg


def load_flow() -> DharaFlow:
    """``pizza.json``, validated with its handlers."""
    return DharaFlow.load(FLOW_PATH, handlers())


def build_from_file(
    context: LLMContext | None = None, registry: FunctionRegistry | None = None
) -> DharaManager:
    """A manager running ``pizza.json``."""
    return load_flow().build(handlers(), context=context, registry=registry)


# ----------------------------------------------------------------------------- the seed's API


def build_imperative(
    context: LLMContext | None = None, registry: FunctionRegistry | None = None
) -> DharaManager:
    """The same flow with the imperative API, as in the seed's example."""
    flow = json.loads(FLOW_PATH.read_text(encoding="utf-8"))
    schemas = {
        name: FunctionSchema(
            name=name, description=spec["description"], parameters=spec["parameters"]
        )
        for name, spec in flow["functions"].items()
    }
    nodes = flow["nodes"]

    def node(name: str, **kw: Any) -> NodeConfig:
        return NodeConfig(
            name,
            task_messages=[m["content"] for m in nodes[name]["task_messages"]],
            tools=[schemas[f] for f in nodes[name].get("functions", ())],
            **kw,
        )

    dhara = DharaManager(
        context if context is not None else LLMContext(),
        registry,
        state_fields=load_flow().state_fields(),
        flow_id=flow["id"],
        flow_version=flow["version"],
    )
    state = dhara.state

    def add_to_order(args: str) -> TransitionResult:
        return TransitionResult.stay(add_item(state, json.loads(args)))

    def confirm_order(args: str) -> TransitionResult:
        result = confirm(state)
        if result["status"] != "ready_to_confirm":
            return TransitionResult.stay(result)
        return TransitionResult.transition(result, "confirm")

    async def place_order(args: str) -> TransitionResult:
        return TransitionResult.transition(place(state, json.loads(args)), "farewell")

    prompt = flow["system_prompt"]
    dhara.register_node(
        "greeting",
        node("greeting", system_prompt=prompt),
        [("browse_menu", lambda args: TransitionResult.transition(MENU, "menu"))],
    )
    dhara.register_node(
        "menu",
        node("menu", system_prompt=prompt),
        [
            ("add_to_order", add_to_order),
            (
                "remove_from_order",
                lambda a: TransitionResult.stay(remove_item(state, json.loads(a))),
            ),
            ("view_order", lambda args: TransitionResult.stay(view(state))),
            ("confirm_order", confirm_order),
        ],
    )
    dhara.register_node(
        "confirm",
        node("confirm"),
        [
            ("modify_order", lambda args: TransitionResult.transition(RETURNING, "menu")),
            ("place_order", place_order),
        ],
    )
    dhara.register_node_no_tools(
        "farewell", node("farewell", post_actions=[NodeAction.end_conversation()])
    )
    dhara.set_initial_node("greeting")
    return dhara


# ----------------------------------------------------------------------------- a scripted model

_SIZE = re.compile(r"\b(small|medium|large)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\b(\d+)\b")


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _text(answer: str, delay: float) -> TextReply:
    return TextReply(_words(answer), token_delay=delay)


def _call(name: str, args: Mapping[str, Any], delay: float) -> ToolCallReply:
    return ToolCallReply(
        [ScriptedToolCall(name=name, arguments=json.dumps(args))], token_delay=delay
    )


def _parse(text: str) -> tuple[str, dict[str, Any]] | None:
    low = text.lower()
    if "menu" in low:
        return "browse_menu", {}
    if "remove" in low and (number := _NUMBER.search(low)):
        return "remove_from_order", {"item_number": int(number.group(1))}
    if "deliver to" in low:
        return "place_order", {"delivery_address": text[low.index("deliver to") + 11 :].strip()}
    if "change" in low:
        return "modify_order", {}
    if "confirm" in low:
        return "confirm_order", {}
    if "my order" in low:
        return "view_order", {}
    size = _SIZE.search(low)
    pizza = next((p for p in PIZZAS if p.lower() in low), None)
    if size and pizza:
        toppings: list[str] = []
        if " with " in low:
            rest = low.split(" with ", 1)[1].rstrip(".!?")
            toppings = [t.strip() for t in re.split(r",| and ", rest) if t.strip()]
        return "add_to_order", {"pizza": pizza, "size": size.group(1), "toppings": toppings}
    return None


def _entry_line(tools: set[str], task: str) -> str:
    if "browse_menu" in tools:
        return "Welcome to Dhara Pizza! Would you like to see the menu?"
    if "add_to_order" in tools:
        return "Here is our menu: Margherita, Pepperoni, Hawaiian, BBQ Chicken and Veggie Supreme. What would you like?"  # noqa: E501
    if "place_order" in tools:
        total = re.search(r"\$(\d+(?:\.\d+)?)", task)
        return f"Your order comes to ${total.group(1) if total else '?'}. Shall I place it, and where should we deliver?"  # noqa: E501
    return "Thank you for your order! It will arrive in 30-45 minutes. Goodbye!"


def _after_tool(result: str) -> str:
    try:
        data = json.loads(result)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return f"Sorry: {data['error']}."
    if isinstance(data, dict) and isinstance(data.get("order_summary"), str):
        order = str(data["order_summary"]).replace("\n", "; ")
        return f"Done. Your order: {order}."
    return f"Done: {result}"


def scripted_model(request: RecordedRequest, *, delay: float = 0.0) -> TextReply | ToolCallReply:
    """A scripted model for the pizza flow: a tool call when the user asks for something the
    current node offers, a short answer otherwise."""
    body: dict[str, Any] = request.json if isinstance(request.json, dict) else {}
    messages: list[dict[str, Any]] = body.get("messages", [])
    tools = {t["function"]["name"] for t in body.get("tools", [])}
    last = messages[-1] if messages else {"role": "system", "content": ""}
    if last["role"] == "system":  # a node was just entered (its task message is last)
        return _text(_entry_line(tools, str(last.get("content", ""))), delay)
    if last["role"] == "tool":
        return _text(_after_tool(str(last.get("content", ""))), delay)
    wanted = _parse(str(last.get("content", "")))
    if wanted is None:
        return _text("Sorry, I did not get that.", delay)
    if wanted[0] not in tools:
        return _text(f"I can't {wanted[0].replace('_', ' ')} right now.", delay)
    return _call(wanted[0], wanted[1], delay)
