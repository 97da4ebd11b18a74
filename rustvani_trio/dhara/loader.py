"""Flow files: a whole flow in JSON (or TOML), handlers bound by name in Python.

```python
handlers = {"browse_menu": browse_menu, "add_to_order": add_to_order, ...}
flow = DharaFlow.load("flows/pizza.json", handlers)  # every error at once, with its path
dhara = flow.build(handlers, context=context, registry=registry)  # a DharaManager
```

The format is rustvani's ``dhara.json`` (``id``, ``version``, ``system_prompt``,
``initial_node``, ``nodes`` with ``system_prompt_override``, ``task_messages``,
``context_strategy``, ``respond_immediately``, ``functions``; ``functions`` with
``description``, ``parameters`` and ``transitions`` {status: node} with ``"default"``), plus
``state``, ``global_functions``, node ``pre_actions`` / ``post_actions`` /
``summary_prompt`` and function ``transition_on`` / ``transition_only`` / ``ack`` /
``timeout``. Its JSON Schema: :func:`rustvani_trio.dhara.flow_json_schema`.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import FunctionSchema, LLMContext
from ..exceptions import RustvaniError
from ._handlers import handler_arity
from ._validate import FlowError, pointer, validate_flow
from .call import DharaFunctionRegistry
from .manager import DharaManager
from .node import (
    ACK,
    ContextStrategy,
    ContextStrategyConfig,
    DharaFunction,
    NodeAction,
    NodeConfig,
)
from .state import StateField

if TYPE_CHECKING:
    from ..services.llm.function_registry import FunctionRegistry
    from .summary import Summarizer

__all__ = ["Dhara", "DharaFlow", "FlowError", "FlowValidationError", "validate_flow"]

Handlers = Mapping[str, Callable[..., Any]] | DharaFunctionRegistry


class FlowValidationError(RustvaniError, ValueError):
    """A flow definition is invalid; :attr:`errors` lists every problem with its path (the
    message shows the first :attr:`SHOWN`)."""

    SHOWN = 50

    def __init__(self, errors: Iterable[FlowError], *, source: str = "the flow") -> None:
        self.errors = list(errors)
        count = len(self.errors)
        lines = "\n".join(f"  {e}" for e in self.errors[: self.SHOWN])
        if count > self.SHOWN:
            lines += f"\n  ... and {count - self.SHOWN} more (all of them in .errors)"
        super().__init__(f"{source} is invalid ({count} error{'s' * (count != 1)}):\n{lines}")


#: The largest flow file (or text) :class:`DharaFlow` reads, by default.
MAX_BYTES = 8 * 1024 * 1024


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers the keys it had twice (json keeps the last)."""

    duplicates: list[str]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    out = _Object(pairs)
    out.duplicates = [k for i, (k, _) in enumerate(pairs) if any(k == p for p, _ in pairs[:i])]
    return out


def _duplicate_errors(data: Any) -> list[FlowError]:
    """A key given twice in one object is an error (the first value would be lost)."""
    errors: list[FlowError] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Object):
            errors += [
                FlowError(pointer(*path, k), f"{k!r} is given twice") for k in value.duplicates
            ]
            stack += [(v, (*path, k)) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, (*path, i)) for i, v in enumerate(value)]
    return sorted(errors, key=lambda e: e.path)


def _too_big(size: int, max_bytes: int, source: str) -> FlowValidationError:
    return FlowValidationError(
        [FlowError("", f"{size} bytes is more than the limit of {max_bytes} (max_bytes)")],
        source=source,
    )


def _parse_error(kind: str, detail: str, source: str) -> FlowValidationError:
    return FlowValidationError([FlowError("", f"not valid {kind}: {detail}")], source=source)


def _names(handlers: Handlers | None) -> Container[str] | None:
    if handlers is None:
        return None
    if not isinstance(handlers, Mapping | DharaFunctionRegistry):
        raise TypeError(
            "handlers map function names to handlers (a dict or a DharaFunctionRegistry), "
            f"got {type(handlers).__name__}"
        )
    return set(handlers)


def _get(handlers: Handlers, name: str) -> Callable[..., Any] | None:
    return handlers.get(name)


def _handler_errors(data: Any, handlers: Handlers | None) -> list[FlowError]:
    """Bound handlers that cannot be called the way the flow will call them."""
    if handlers is None or not isinstance(data, Mapping):
        return []
    errors: list[FlowError] = []
    functions = data.get("functions")
    for name, spec in functions.items() if isinstance(functions, Mapping) else ():
        handler = handlers.get(name) if isinstance(name, str) else None
        if handler is None or (isinstance(spec, Mapping) and spec.get("transition_only")):
            continue
        if not callable(handler):
            errors.append(
                FlowError(
                    pointer("functions", name), f"its handler {handler!r:.40} is not callable"
                )
            )
            continue
        try:
            handler_arity(handler)
        except TypeError as exc:
            errors.append(FlowError(pointer("functions", name), str(exc)))
    nodes = data.get("nodes")
    for nname, ndef in nodes.items() if isinstance(nodes, Mapping) else ():
        for key in ("pre_actions", "post_actions"):
            actions = ndef.get(key) if isinstance(ndef, Mapping) else None
            for i, action in enumerate(actions if isinstance(actions, list) else ()):
                ref = action.get("handler") if isinstance(action, Mapping) else None
                handler = handlers.get(ref) if isinstance(ref, str) else None
                if handler is not None and not callable(handler):
                    where = pointer("nodes", nname, key, i, "handler")
                    errors.append(FlowError(where, f"the handler of {ref!r} is not callable"))
    return errors


class DharaFlow:
    """A validated flow definition; :meth:`build` makes a :class:`DharaManager` for one
    conversation (the definition is shared, each build is independent)."""

    def __init__(self, definition: Mapping[str, Any], *, source: str = "the flow") -> None:
        errors = validate_flow(definition)
        if errors:
            raise FlowValidationError(errors, source=source)
        self._def: dict[str, Any] = copy.deepcopy(dict(definition))
        self.source = source

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dict(
        cls, data: Any, handlers: Handlers | None = None, *, source: str = "the flow"
    ) -> DharaFlow:
        """Validate ``data``; with ``handlers``, a function without one is an error too."""
        errors = _duplicate_errors(data) + validate_flow(data, _names(handlers))
        errors += _handler_errors(data, handlers)
        if errors:
            raise FlowValidationError(errors, source=source)
        return cls(data, source=source)

    @classmethod
    def from_json(
        cls,
        text: str | bytes,
        handlers: Handlers | None = None,
        *,
        source: str = "the flow",
        max_bytes: int = MAX_BYTES,
    ) -> DharaFlow:
        """Parse and validate JSON text (at most ``max_bytes``; a key given twice in an
        object is an error)."""
        if len(text) > max_bytes:
            raise _too_big(len(text), max_bytes, source)
        try:
            data = json.loads(text, object_pairs_hook=_object)
        except json.JSONDecodeError as exc:
            detail = f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
            raise _parse_error("JSON", detail, source) from None
        except RecursionError:
            raise _parse_error("JSON", "nested too deeply", source) from None
        return cls.from_dict(data, handlers, source=source)

    @classmethod
    def from_toml(
        cls,
        text: str,
        handlers: Handlers | None = None,
        *,
        source: str = "the flow",
        max_bytes: int = MAX_BYTES,
    ) -> DharaFlow:
        """Parse and validate TOML text (same fields as the JSON form)."""
        if len(text) > max_bytes:
            raise _too_big(len(text), max_bytes, source)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _parse_error("TOML", str(exc), source) from None
        except RecursionError:
            raise _parse_error("TOML", "nested too deeply", source) from None
        return cls.from_dict(data, handlers, source=source)

    @classmethod
    def load(
        cls, path: str | Path, handlers: Handlers | None = None, *, max_bytes: int = MAX_BYTES
    ) -> DharaFlow:
        """Load a ``.json`` or ``.toml`` file, or ``dhara.json`` in a directory (as rustvani's
        ``Dhara::load(dir)``); a file over ``max_bytes`` is refused before it is read."""
        file = Path(path)
        if file.is_dir():
            file = file / "dhara.json"
        size = file.stat().st_size
        if size > max_bytes:
            raise _too_big(size, max_bytes, str(file))
        text = file.read_text(encoding="utf-8")
        if file.suffix.lower() == ".toml":
            return cls.from_toml(text, handlers, source=str(file), max_bytes=max_bytes)
        return cls.from_json(text, handlers, source=str(file), max_bytes=max_bytes)

    # ------------------------------------------------------------------ reading

    @property
    def id(self) -> str:
        """The flow's id."""
        return str(self._def["id"])

    @property
    def version(self) -> str:
        """The flow's version (as a string)."""
        return str(self._def.get("version", "1"))

    @property
    def definition(self) -> dict[str, Any]:
        """A copy of the flow definition."""
        return copy.deepcopy(self._def)

    @property
    def initial_node(self) -> str:
        """The node a conversation starts in."""
        return str(self._def["initial_node"])

    def node_names(self) -> list[str]:
        """The nodes, in file order."""
        return list(self._def["nodes"])

    def function_names(self) -> list[str]:
        """The functions, in file order."""
        return list(self._def.get("functions", {}))

    def state_fields(self) -> dict[str, StateField]:
        """The declared state fields."""
        return {
            name: StateField(spec["type"], copy.deepcopy(spec.get("default")))
            for name, spec in self._def.get("state", {}).items()
        }

    # ------------------------------------------------------------------ building

    def build(
        self,
        handlers: Handlers,
        *,
        context: LLMContext | None = None,
        registry: FunctionRegistry | None = None,
        state: Mapping[str, Any] | None = None,
        summarizer: Summarizer | None = None,
        summary_timeout: float = 10.0,
    ) -> DharaManager:
        """A :class:`DharaManager` running this flow, in its initial node (missing handlers
        are reported all at once)."""
        errors = validate_flow(self._def, _names(handlers)) + _handler_errors(self._def, handlers)
        if errors:
            raise FlowValidationError(errors, source=self.source)
        d = self._def
        manager = DharaManager(
            context if context is not None else LLMContext(),
            registry,
            state=state,
            state_fields=self.state_fields(),
            summarizer=summarizer,
            summary_timeout=summary_timeout,
            flow_id=self.id,
            flow_version=self.version,
        )
        functions = {
            name: self._function(name, spec, handlers)
            for name, spec in d.get("functions", {}).items()
        }
        for name in d.get("global_functions", ()):
            manager.register_global_function(functions[name])
        for name, spec in d["nodes"].items():
            prompt = spec.get("system_prompt_override", d.get("system_prompt"))
            strategy = ContextStrategyConfig(
                strategy=ContextStrategy.parse(spec.get("context_strategy", "append")),
                **({"summary_prompt": spec["summary_prompt"]} if "summary_prompt" in spec else {}),
            )
            node_functions = [functions[f] for f in spec.get("functions", ())]
            config = NodeConfig(
                name,
                system_prompt=prompt,
                task_messages=[dict(m) for m in spec.get("task_messages", ())],
                tools=[f.schema for f in node_functions if f.schema is not None],
                context_strategy=strategy,
                respond_immediately=spec.get("respond_immediately", True),
                pre_actions=[self._action(a, handlers) for a in spec.get("pre_actions", ())],
                post_actions=[self._action(a, handlers) for a in spec.get("post_actions", ())],
            )
            manager.register_node(name, config, node_functions)
        manager.set_initial_node(self.initial_node)
        return manager

    @staticmethod
    def _function(name: str, spec: Mapping[str, Any], handlers: Handlers) -> DharaFunction:
        schema = FunctionSchema(
            name=name,
            description=spec.get("description", ""),
            parameters=spec.get("parameters") or {"type": "object", "properties": {}},
        )
        only = spec.get("transition_only", False)
        return DharaFunction(
            name=name,
            handler=None if only else _get(handlers, name),
            schema=schema,
            transitions=spec.get("transitions", {}),
            transition_on=spec.get("transition_on"),
            ack=spec.get("ack", ACK),
            timeout=spec.get("timeout"),
        )

    @staticmethod
    def _action(spec: Mapping[str, Any], handlers: Handlers) -> NodeAction:
        kind = spec["type"]
        if kind == "tts_say":
            return NodeAction.say(spec["text"])
        if kind == "end_conversation":
            return NodeAction.end_conversation()
        handler = _get(handlers, spec["handler"])
        assert handler is not None  # validated
        return NodeAction.function(handler, name=spec["handler"])


#: The seed's name for a loaded flow (``Dhara::from_json`` / ``Dhara::load``).
Dhara = DharaFlow
