"""Validation of a flow definition: every error at once, each with the JSON Pointer of the
offending field (``/nodes/menu/functions/2``)."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Container, Mapping
from typing import Any

import attrs

from ._json import MAX_DEPTH, json_problems
from .node import TASK_ROLES, ContextStrategy
from .state import JSON_TYPES, template_fields, type_matches

__all__ = ["FlowError", "validate_flow"]

TOP_KEYS = {
    "$schema",
    "id",
    "version",
    "description",
    "system_prompt",
    "initial_node",
    "state",
    "global_functions",
    "nodes",
    "functions",
}
NODE_KEYS = {
    "description",
    "system_prompt_override",
    "task_messages",
    "context_strategy",
    "summary_prompt",
    "respond_immediately",
    "functions",
    "pre_actions",
    "post_actions",
}
FUNCTION_KEYS = {
    "description",
    "parameters",
    "transitions",
    "transition_on",
    "transition_only",
    "ack",
    "timeout",
}
ACTION_TYPES = ("tts_say", "end_conversation", "function")
#: What the chat-completions API accepts as a function name.
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxdict, _REPR.maxlist = 2, 40, 40, 4, 4


@attrs.frozen
class FlowError:
    """One problem of a flow: ``path`` is a JSON Pointer ("" is the document itself)."""

    path: str
    message: str

    def __str__(self) -> str:
        path = self.path if len(self.path) <= 200 else self.path[:197] + "..."
        return f"{path or '/'}: {self.message}"


def pointer(*parts: str | int) -> str:
    """The JSON Pointer of ``parts`` (RFC 6901 escaping)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class _Checker:
    def __init__(self, data: Any, handlers: Container[str] | None) -> None:
        self.data = data
        self.handlers = handlers
        self.errors: list[FlowError] = []

    def err(self, message: str, *parts: str | int) -> None:
        self.errors.append(FlowError(pointer(*parts), message))

    def keys(self, obj: Mapping[str, Any], allowed: set[str], *parts: str | int) -> None:
        for key in obj:
            if key not in allowed and not str(key).startswith("x-"):
                self.err(
                    f"unknown field {_show(key)} (allowed: {', '.join(sorted(allowed))})",
                    *parts,
                    key,
                )

    def typed(
        self,
        obj: Mapping[str, Any],
        key: str,
        check: Callable[[Any], bool],
        what: str,
        *parts: str | int,
        required: bool = False,
    ) -> bool:
        if key not in obj:
            if required:
                self.err(f"missing required field {key!r}", *parts)
            return False
        if not check(obj[key]):
            self.err(f"must be {what}, got {_show(obj[key])}", *parts, key)
            return False
        return True

    def string_list(self, obj: Mapping[str, Any], key: str, *parts: str | int) -> list[str]:
        if not self.typed(obj, key, lambda v: isinstance(v, list), "an array of names", *parts):
            return []
        out: list[str] = []
        for i, item in enumerate(obj[key]):
            if isinstance(item, str) and item:
                out.append(item)
            else:
                self.err(f"must be a function name, got {_show(item)}", *parts, key, i)
        return out

    def templates(self, text: str, fields: Container[str], *parts: str | int) -> None:
        for name in template_fields(text):
            if name not in fields:
                self.err(
                    f"{{{{state.{name}}}}} refers to a state field that is not declared in /state",
                    *parts,
                )


def _show(value: Any) -> str:
    """A short repr, bounded in time and size whatever the value (huge, deep, cyclic)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_name(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _is_obj(v: Any) -> bool:
    return isinstance(v, Mapping)


#: The spellings of a context strategy a flow file may use (the JSON Schema's enum).
STRATEGY_SPELLINGS = frozenset(
    spelling
    for s in ContextStrategy
    for spelling in (
        s.value,
        s.value.upper(),
        "".join(part.capitalize() for part in s.value.split("_")),
    )
)


def _strategy_ok(v: Any) -> bool:
    return isinstance(v, str) and v in STRATEGY_SPELLINGS


def validate_flow(data: Any, handlers: Container[str] | None = None) -> list[FlowError]:
    """Every error of flow definition ``data`` (a parsed JSON document). With ``handlers``
    (the bound handler names), every function without a handler is an error too."""
    c = _Checker(data, handlers)
    if not isinstance(data, Mapping):
        c.err(f"a flow must be a JSON object, got {_show(data)}")
        return c.errors
    # Strict JSON first (string keys, finite numbers, bounded nesting); the checks below only
    # look a few levels deep, so they run on whatever this found too.
    for path, message in json_problems(data, max_depth=MAX_DEPTH):
        c.err(message, *path)
    c.keys(data, TOP_KEYS)
    c.typed(data, "id", _is_name, "a non-empty string", required=True)
    c.typed(
        data,
        "version",
        lambda v: isinstance(v, str | int | float) and v is not True and v is not False,
        "a string or a number",
    )
    c.typed(data, "system_prompt", _is_str, "a string")
    c.typed(data, "description", _is_str, "a string")
    has_initial = c.typed(data, "initial_node", _is_name, "a node name", required=True)
    nodes: Mapping[str, Any] = {}
    if c.typed(
        data,
        "nodes",
        lambda v: _is_obj(v) and bool(v),
        "a non-empty object of nodes",
        required=True,
    ):
        nodes = data["nodes"]
    functions: Mapping[str, Any] = {}
    if c.typed(data, "functions", _is_obj, "an object of functions"):
        functions = data["functions"]
    fields = _check_state(c, data)
    if "system_prompt" in data and isinstance(data["system_prompt"], str):
        c.templates(data["system_prompt"], fields, "system_prompt")

    edges: dict[str, set[str]] = {}  # function -> target nodes
    for fname, fdef in functions.items():
        edges[fname] = _check_function(c, fname, fdef, nodes)
    globals_ = c.string_list(data, "global_functions", "global_functions")
    for i, fname in enumerate(globals_):
        if fname not in functions:
            c.err(f"function {fname!r} is not defined in /functions", "global_functions", i)
    node_functions: dict[str, list[str]] = {}
    for nname, ndef in nodes.items():
        node_functions[nname] = _check_node(c, nname, ndef, functions, fields)

    if has_initial and nodes and data["initial_node"] not in nodes:
        c.err(f"node {data['initial_node']!r} is not defined in /nodes", "initial_node")
    elif has_initial and nodes:
        reachable = {data["initial_node"]}
        queue = [data["initial_node"]]
        while queue:
            here = queue.pop()
            for fname in [*node_functions.get(here, ()), *globals_]:
                for target in edges.get(fname, ()):
                    if target in nodes and target not in reachable:
                        reachable.add(target)
                        queue.append(target)
        for nname in nodes:
            if nname not in reachable:
                c.err(
                    f"node {nname!r} is unreachable from the initial node "
                    f"{data['initial_node']!r} (no function transitions to it)",
                    "nodes",
                    nname,
                )
    return c.errors


def _check_state(c: _Checker, data: Mapping[str, Any]) -> set[str]:
    if not c.typed(data, "state", _is_obj, "an object of state fields"):
        return set()
    fields: set[str] = set()
    for name, spec in data["state"].items():
        fields.add(name)
        if not isinstance(spec, Mapping):
            c.err(
                f"a state field is an object with 'type' (and 'default'), got {_show(spec)}",
                "state",
                name,
            )
            continue
        c.keys(spec, {"type", "default", "description"}, "state", name)
        kind = spec.get("type")
        if kind not in JSON_TYPES:
            c.err(
                f"must be one of {', '.join(JSON_TYPES)}, got {_show(kind)}", "state", name, "type"
            )
        elif "default" in spec and not type_matches(kind, spec["default"]):
            c.err(f"the default is not of type {kind}", "state", name, "default")
    return fields


def _check_function(c: _Checker, name: str, fdef: Any, nodes: Mapping[str, Any]) -> set[str]:
    here = ("functions", name)
    if not (isinstance(name, str) and FUNCTION_NAME.match(name)):
        c.err(
            "a function name is 1 to 64 letters, digits, '_' or '-' (the model's API refuses "
            "others)",
            *here,
        )
    if not isinstance(fdef, Mapping):
        c.err(f"a function is an object, got {_show(fdef)}", *here)
        return set()
    c.keys(fdef, FUNCTION_KEYS, *here)
    c.typed(fdef, "description", _is_str, "a string", *here)
    if fdef.get("parameters") is not None and c.typed(
        fdef, "parameters", _is_obj, "a JSON Schema object", *here
    ):
        kind = fdef["parameters"].get("type", "object") if fdef["parameters"] else "object"
        if kind != "object":
            c.err(
                f"the arguments' schema must have type 'object', got {_show(kind)}",
                *here,
                "parameters",
                "type",
            )
    c.typed(fdef, "transition_on", _is_name, "a result field name", *here)
    c.typed(fdef, "ack", _is_str, "a string", *here)
    c.typed(
        fdef,
        "timeout",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        "a positive number",
        *here,
    )
    only = (
        c.typed(fdef, "transition_only", lambda v: isinstance(v, bool), "true or false", *here)
        and fdef["transition_only"]
    )
    targets: set[str] = set()
    if c.typed(fdef, "transitions", _is_obj, "an object of status: node", *here):
        for status, target in fdef["transitions"].items():
            if not _is_name(target):
                c.err(f"must be a node name, got {_show(target)}", *here, "transitions", status)
            elif nodes and target not in nodes:
                c.err(
                    f"transition {status!r} goes to node {target!r}, "
                    "which is not defined in /nodes",
                    *here,
                    "transitions",
                    status,
                )
            else:
                targets.add(target)
    if only and not fdef.get("transitions"):
        c.err("a transition-only function needs a 'default' transition", *here)
    elif (
        only
        and isinstance(fdef.get("transitions"), Mapping)
        and "default" not in fdef["transitions"]
    ):
        c.err("a transition-only function needs a 'default' transition", *here, "transitions")
    if c.handlers is not None and not only and name not in c.handlers:
        c.err(f"no handler is bound for function {name!r}", *here)
    return targets


def _check_node(
    c: _Checker, name: str, ndef: Any, functions: Mapping[str, Any], fields: set[str]
) -> list[str]:
    here = ("nodes", name)
    if not name:
        c.err("a node name must not be empty", *here)
    if not isinstance(ndef, Mapping):
        c.err(f"a node is an object, got {_show(ndef)}", *here)
        return []
    c.keys(ndef, NODE_KEYS, *here)
    if c.typed(ndef, "system_prompt_override", _is_str, "a string", *here):
        c.templates(ndef["system_prompt_override"], fields, *here, "system_prompt_override")
    c.typed(ndef, "context_strategy", _strategy_ok, "append, reset or reset_with_summary", *here)
    c.typed(ndef, "summary_prompt", _is_str, "a string", *here)
    c.typed(ndef, "respond_immediately", lambda v: isinstance(v, bool), "true or false", *here)
    c.typed(ndef, "description", _is_str, "a string", *here)
    if c.typed(ndef, "task_messages", lambda v: isinstance(v, list), "an array of messages", *here):
        for i, msg in enumerate(ndef["task_messages"]):
            where = (*here, "task_messages", i)
            if not isinstance(msg, Mapping):
                c.err(
                    f"a task message is an object with role and content, got {_show(msg)}", *where
                )
                continue
            c.keys(msg, {"role", "content"}, *where)
            if not isinstance(msg.get("role"), str) or msg["role"] not in TASK_ROLES:
                c.err(
                    f"invalid role {_show(msg.get('role'))} "
                    f"(expected one of {', '.join(sorted(TASK_ROLES))})",
                    *where,
                    "role",
                )
            if c.typed(msg, "content", _is_str, "a string", *where, required=True):
                c.templates(msg["content"], fields, *where, "content")
    names = c.string_list(ndef, "functions", *here)
    seen: set[str] = set()
    for i, fname in enumerate(names):
        if fname not in functions:
            c.err(f"function {fname!r} is not defined in /functions", *here, "functions", i)
        elif fname in seen:
            c.err(f"function {fname!r} is listed twice", *here, "functions", i)
        seen.add(fname)
    for key in ("pre_actions", "post_actions"):
        if not c.typed(ndef, key, lambda v: isinstance(v, list), "an array of actions", *here):
            continue
        for i, action in enumerate(ndef[key]):
            _check_action(c, action, fields, *here, key, i)
    return [f for f in names if f in functions]


def _check_action(c: _Checker, action: Any, fields: set[str], *where: str | int) -> None:
    if not isinstance(action, Mapping):
        c.err(f"an action is an object with a 'type', got {_show(action)}", *where)
        return
    c.keys(action, {"type", "text", "handler"}, *where)
    kind = action.get("type")
    if kind not in ACTION_TYPES:
        c.err(f"must be one of {', '.join(ACTION_TYPES)}, got {_show(kind)}", *where, "type")
    elif kind == "tts_say":
        if c.typed(action, "text", _is_str, "a string", *where, required=True):
            c.templates(action["text"], fields, *where, "text")
    elif (
        kind == "function"
        and c.typed(action, "handler", _is_name, "a handler name", *where, required=True)
        and c.handlers is not None
        and action["handler"] not in c.handlers
    ):
        c.err(f"no handler is bound for action {action['handler']!r}", *where, "handler")
