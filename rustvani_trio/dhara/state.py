"""The flow's typed state and ``{{state.x}}`` templating.

``FlowState`` is a dict-like shared by every handler of a conversation. Fields may be declared
with a JSON type and a default (the flow file's ``state`` section); a declared field only takes
values of its type, and every value must be JSON-serialisable, so a snapshot always works::

    state = FlowState({"items": StateField("array", []), "total": StateField("number", 0)})
    state["total"] = 12.99          # fine
    state["total"] = "12.99"        # TypeError: state field 'total' is a number
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Literal

import attrs

from ._json import json_problems

__all__ = ["JSON_TYPES", "FlowState", "StateField", "render", "template_fields"]

JSON_TYPES = ("string", "number", "integer", "boolean", "array", "object")
JsonType = Literal["string", "number", "integer", "boolean", "array", "object"]

_TEMPLATE = re.compile(r"\{\{\s*state\.([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*\}\}")


def type_matches(kind: str, value: object) -> bool:
    """Whether ``value`` is of JSON type ``kind`` (``None`` is always accepted)."""
    if value is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list | tuple)
    if kind == "object":
        return isinstance(value, Mapping)
    return False


@attrs.frozen
class StateField:
    """A declared state field: its JSON type and default (copied for each conversation)."""

    type: JsonType = attrs.field(validator=attrs.validators.in_(JSON_TYPES))
    default: Any = None

    def __attrs_post_init__(self) -> None:
        if not type_matches(self.type, self.default):
            raise TypeError(f"the default {self.default!r} is not of type {self.type}")
        _check_json("default", self.default)


def _check_json(key: str, value: Any) -> None:
    problems = json_problems(value)
    if problems:
        where, message = problems[0]
        inner = "".join(f"[{p!r}]" for p in where)
        raise TypeError(f"state field {key!r}{inner} must be JSON: {message}")


class FlowState(MutableMapping[str, Any]):
    """The conversation's state: declared fields keep their type; every value is strict JSON
    (string keys, finite numbers, bounded nesting), so a snapshot restores exactly what was
    saved."""

    def __init__(
        self,
        fields: Mapping[str, StateField] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        self.fields: dict[str, StateField] = dict(fields or {})
        self._data: dict[str, Any] = {
            name: copy.deepcopy(f.default) for name, f in self.fields.items()
        }
        for key, value in (values or {}).items():
            self[key] = value

    def _check(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"state keys are strings, got {key!r}")
        field = self.fields.get(key)
        if field is not None and not type_matches(field.type, value):
            raise TypeError(
                f"state field {key!r} is declared {field.type}; got {type(value).__name__} "
                f"{value!r}"
            )
        _check_json(key, value)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._check(key, value)
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        if key in self.fields:
            raise KeyError(f"state field {key!r} is declared; it cannot be deleted")
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FlowState({self._data!r})"

    def to_json(self) -> dict[str, Any]:
        """A deep, JSON-serialisable copy (checked: a value mutated in place into something
        that is not JSON is reported here, naming its field)."""
        for key, value in self._data.items():
            self._check(key, value)
        result: dict[str, Any] = json.loads(json.dumps(self._data))
        return result

    def replace(self, values: Mapping[str, Any]) -> None:
        """Replace everything with ``values`` (declared fields missing from it get their
        defaults); all-or-nothing."""
        fresh = FlowState(self.fields, values)
        self._data = fresh._data


def _lookup(state: Mapping[str, Any], name: str, path: str) -> tuple[bool, Any]:
    if name not in state:
        return False, None
    value: Any = state[name]
    for part in filter(None, path.split(".")):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def render(text: str, state: Mapping[str, Any]) -> tuple[str, list[str]]:
    """``text`` with every ``{{state.x}}`` (or ``{{state.x.y}}``) replaced by its value;
    returns the text and the references that had no value (rendered as empty)."""
    missing: list[str] = []

    def sub(match: re.Match[str]) -> str:
        found, value = _lookup(state, match.group(1), match.group(2))
        if not found:
            missing.append("state." + match.group(1) + match.group(2))
            return ""
        return _text(value)

    if "{{" not in text:
        return text, missing
    return _TEMPLATE.sub(sub, text), missing


def template_fields(text: str) -> list[str]:
    """The state fields ``text`` refers to (first path part), in order."""
    return [m.group(1) for m in _TEMPLATE.finditer(text)]
