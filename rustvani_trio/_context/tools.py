"""The tools a context offers the model: :class:`FunctionSchema`, tool specs, the tool choice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import attrs

from .errors import ContextInvariantError, InvalidToolError, describe_ids
from .estimate import tool_tokens
from .messages import is_name
from .readonly import ReadOnlyDict, ToolList
from .values import freeze, short, thaw

__all__ = [
    "FunctionSchema",
    "Tool",
    "ToolChoice",
    "ToolSpec",
    "Toolset",
    "check_tool_choice",
    "make_tools",
]

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | dict[str, Any] | None
"""``None`` (omit the field), ``"auto"``, ``"none"``, ``"required"`` or
``{"type": "function", "function": {"name": ...}}``."""

_TOOL_CHOICE_STRINGS: Final[frozenset[str]] = frozenset({"auto", "none", "required"})


def _default_parameters() -> ReadOnlyDict:
    return _freeze_parameters({"type": "object", "properties": {}})


def _freeze_parameters(value: Mapping[str, Any]) -> ReadOnlyDict:
    if not isinstance(value, Mapping):
        raise TypeError(f"FunctionSchema.parameters: expected a dict, got {type(value).__name__}")
    return freeze(value, "FunctionSchema.parameters", InvalidToolError)  # type: ignore[no-any-return]


def _plain(value: object) -> object:
    """A ``str`` subclass as the plain ``str`` (as the context stores every value)."""
    if type(value) is not str and isinstance(value, str):
        return str.__str__(value)
    return value


def _check_text(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    freeze(value, f"FunctionSchema.{attribute.name}", InvalidToolError)


@attrs.define(frozen=True, slots=True, kw_only=True)
class FunctionSchema:
    """A function the model may call, in a provider-neutral form.

    ``parameters`` is a JSON Schema object; it is checked (JSON values only) and copied on
    construction into a read-only dict, so the instance is immutable through and through
    (:meth:`to_openai` returns an editable copy).  Instances compare by all three fields and
    hash by ``name`` and ``description`` (equal schemas hash equal), so they can be set
    members and dict keys.
    """

    name: str = attrs.field(converter=_plain)
    description: str = attrs.field(
        default="", converter=_plain, validator=[attrs.validators.instance_of(str), _check_text]
    )
    parameters: Mapping[str, Any] = attrs.field(
        factory=_default_parameters, converter=_freeze_parameters, hash=False
    )

    @name.validator
    def _check_name(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not is_name(value):
            raise InvalidToolError(
                f"a function's name must be a non-empty string, got {short(value)}"
            )
        _check_text(self, attribute, value)

    def to_openai(self) -> dict[str, Any]:
        """Return the OpenAI tool definition ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": thaw(self.parameters),
            },
        }


ToolSpec: TypeAlias = FunctionSchema | dict[str, Any]
"""A tool: a :class:`FunctionSchema` or a raw OpenAI tool dict
(``{"type": "function", "function": {"name": ..., ...}}``)."""


@attrs.define(frozen=True, slots=True)
class Tool:
    """A validated tool with its cached request form and token cost."""

    name: str
    spec: FunctionSchema | ReadOnlyDict
    openai: Mapping[str, Any]
    """The tool as sent (read-only: requests get a copy)."""
    tokens: int


def _make_tool(spec: object) -> Tool:
    if isinstance(spec, FunctionSchema):
        openai: Mapping[str, Any] = spec.to_openai()
        stored: FunctionSchema | ReadOnlyDict = spec
    elif isinstance(spec, Mapping):
        if spec.get("type") != "function":
            raise InvalidToolError(
                f"a tool dict needs 'type': 'function', got {short(spec.get('type'))}"
            )
        function = spec.get("function")
        if not isinstance(function, Mapping) or not is_name(function.get("name")):
            raise InvalidToolError(
                "a tool dict needs 'function': {'name': <non-empty string>, ...}, "
                f"got {short(function)}"
            )
        if not isinstance(function.get("description", ""), str):
            raise InvalidToolError(
                f"tool {short(function['name'])}: 'function.description' must be a string"
            )
        if not isinstance(function.get("parameters", {}), Mapping):
            raise InvalidToolError(
                f"tool {short(function['name'])}: 'function.parameters' must be a dict"
            )
        frozen: ReadOnlyDict = freeze(spec, f"tool {short(function['name'])}", InvalidToolError)
        openai = stored = frozen
    else:
        raise InvalidToolError(
            f"a tool must be a FunctionSchema or an OpenAI tool dict, got {type(spec).__name__}"
        )
    name = openai["function"]["name"]
    return Tool(name=name, spec=stored, openai=openai, tokens=tool_tokens(openai))


def make_tools(specs: Iterable[ToolSpec]) -> list[Tool]:
    """Check and copy ``specs``; names must be unique."""
    if isinstance(specs, Mapping | FunctionSchema):
        raise InvalidToolError("expected a list of tools, got a single tool")
    tools = [_make_tool(spec) for spec in specs]
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise InvalidToolError(f"tool name {short(tool.name)} appears more than once")
        seen.add(tool.name)
    return tools


def check_tool_choice(choice: object) -> None:
    """Check the shape of a ``tool_choice`` (:class:`InvalidToolError`)."""
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICE_STRINGS):
        return
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if (
            choice.get("type") == "function"
            and isinstance(function, Mapping)
            and is_name(function.get("name"))
        ):
            return
    raise InvalidToolError(
        "tool_choice must be None, 'auto', 'none', 'required' or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}, got {short(choice)}"
    )


def _freeze_choice(choice: object) -> ToolChoice:
    check_tool_choice(choice)
    return freeze(choice, "tool_choice", InvalidToolError)  # type: ignore[no-any-return]


class Toolset:
    """The tools and tool choice of an :class:`LLMContext` (its first layer; see
    :mod:`.llm_context`)."""

    __slots__ = ("_tool_choice", "_tool_list", "_tools")

    def __init__(self, tools: Iterable[ToolSpec] | None, tool_choice: ToolChoice) -> None:
        self._tools: list[Tool] = make_tools(tools or ())
        self._tool_list: ToolList | None = None  # the snapshot ``tools`` hands out
        check_tool_choice(tool_choice)
        self._tool_choice: ToolChoice = _freeze_choice(tool_choice)

    @property
    def tools(self) -> Sequence[FunctionSchema | Mapping[str, Any]]:
        """The tools, in order (``FunctionSchema`` objects or tool dicts), read-only.

        Changing it raises a :class:`TypeError` naming the method to use instead
        (:meth:`set_tools`, :meth:`add_tools`, :meth:`remove_tool`).
        """
        if self._tool_list is None:
            self._tool_list = ToolList._of(tool.spec for tool in self._tools)
        return self._tool_list

    @tools.setter
    def tools(self, _value: object) -> None:
        raise AttributeError(
            "context.tools cannot be assigned: use context.set_tools(tools) (or add_tools, "
            "remove_tool)"
        )

    @property
    def tool_choice(self) -> ToolChoice:
        """The tool choice (``None`` means the field is omitted from requests); a named
        choice is a read-only dict (change it with :meth:`set_tool_choice`)."""
        return self._tool_choice

    @tool_choice.setter
    def tool_choice(self, _value: object) -> None:
        raise AttributeError(
            "context.tool_choice cannot be assigned: use context.set_tool_choice(choice)"
        )

    def set_tools(self, tools: Iterable[ToolSpec] | None) -> None:
        """Replace the tools (``None`` or empty removes them all); names must be unique."""
        self._tools = make_tools(tools or ())
        self._tool_list = None

    def add_tools(self, tools: Iterable[ToolSpec]) -> None:
        """Add tools; one with the name of an existing tool replaces it in place.

        Names must be unique within ``tools``; all are checked before any is added.
        """
        new = make_tools(tools)
        position = {tool.name: i for i, tool in enumerate(self._tools)}
        for tool in new:
            if tool.name in position:
                self._tools[position[tool.name]] = tool
            else:
                position[tool.name] = len(self._tools)
                self._tools.append(tool)
        self._tool_list = None

    def remove_tool(self, name: str, *, missing_ok: bool = False) -> bool:
        """Remove the tool called ``name``; return whether one was removed.

        Raises :class:`KeyError` for an unknown name unless ``missing_ok``.  A ``tool_choice``
        naming the removed tool is left as is (:meth:`validate` reports it).
        """
        for i, tool in enumerate(self._tools):
            if tool.name == name:
                del self._tools[i]
                self._tool_list = None
                return True
        if missing_ok:
            return False
        raise KeyError(f"no tool named {short(name)} (tools: {describe_ids(self.tool_names())})")

    def tool_names(self) -> list[str]:
        """The tool names, in order."""
        return [tool.name for tool in self._tools]

    def set_tool_choice(self, choice: ToolChoice) -> None:
        """Set the tool choice: ``None``, ``"auto"``, ``"none"``, ``"required"`` or
        ``{"type": "function", "function": {"name": ...}}``.

        The shape is checked here; whether a named function exists is checked by
        :meth:`validate` (tools may be set afterwards).
        """
        self._tool_choice = _freeze_choice(choice)

    def tools_for_request(self) -> list[dict[str, Any]] | None:
        """The tools as fresh OpenAI tool dicts, or ``None`` when there are none.

        (OpenAI rejects an empty ``tools`` array, so callers should omit the field on ``None``.)
        """
        if not self._tools:
            return None
        return [thaw(tool.openai) for tool in self._tools]

    def _check_tool_choice_names_a_tool(self) -> None:
        choice = self._tool_choice
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            if name not in self.tool_names():
                raise ContextInvariantError(
                    f"tool_choice names function {short(name)}, which is not among the tools "
                    f"({describe_ids(self.tool_names())})"
                )
        elif choice == "required" and not self._tools:
            raise ContextInvariantError("tool_choice is 'required' but there are no tools")
