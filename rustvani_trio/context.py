"""The LLM conversation context: OpenAI-format messages, tools, tool rounds and a token budget.

An :class:`LLMContext` owns one chat conversation in the OpenAI Chat Completions shape::

    {"role": "system" | "developer" | "user" | "assistant" | "tool",
     "content": ..., "tool_calls": [...], "tool_call_id": ...}

plus the ``tools`` offered to the model and the ``tool_choice``.  It is plain, synchronous
Python: every method runs to completion without awaiting, so under trio each call is atomic
with respect to other tasks.

Ownership
    The context stores its own copies of everything handed to it and hands out copies
    (``messages``, ``to_request_messages()``, ``tools``...).  Mutating a returned value never
    changes the context, and mutating an argument after the call never changes it either.

Validation
    Every message is checked on the way in (known role, content shape, a tool message names
    its ``tool_call_id``, every tool call has an id, ...) and rejected with
    :class:`InvalidMessageError`.  Messages may be added one at a time, so the *sequence* may
    be temporarily incomplete (an assistant message whose tool results are still to come);
    :meth:`LLMContext.validate` checks the whole sequence before it is sent.

Tool rounds
    When the model answers with tool calls, the handler stages that answer in a
    :class:`ContextRound` (``ctx.begin_round()``): results arrive in any order and
    :meth:`ContextRound.commit` appends the assistant message followed by the tool messages in
    the model's call order, atomically.  :meth:`ContextRound.rollback` (or leaving a
    ``with`` block without committing, e.g. on cancellation) discards the round and leaves the
    committed messages untouched.

Interrupted assistant messages
    ``add_assistant_message(text, interrupted=True)`` records that the bot's speech was cut
    off.  The mark is kept *outside* the message dicts, because strict OpenAI-compatible
    servers reject unknown keys; query it with :meth:`LLMContext.is_interrupted`.  The mark
    travels with its message when earlier messages are trimmed or a system prompt is inserted.

Token budget
    :meth:`LLMContext.estimate_tokens` is a cheap heuristic (characters / 4 plus per-message
    and per-tool overheads) scaled by a calibration factor learnt from the server's real
    ``usage.prompt_tokens`` (:meth:`LLMContext.calibrate`).  :meth:`LLMContext.trim` drops the
    oldest messages until the estimate fits a budget without breaking tool-call pairing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias

import attrs

from .exceptions import RustvaniError

__all__ = [
    "MAX_CALIBRATION",
    "MIN_CALIBRATION",
    "ROLES",
    "ContextInvariantError",
    "ContextRound",
    "FunctionSchema",
    "InvalidMessageError",
    "InvalidToolError",
    "LLMContext",
    "Message",
    "RoundStateError",
    "ToolChoice",
    "ToolSpec",
]

Message: TypeAlias = dict[str, Any]
"""One OpenAI chat message (``role``, ``content`` and role-specific keys)."""

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | dict[str, Any] | None
"""``None`` (omit the field), ``"auto"``, ``"none"``, ``"required"`` or
``{"type": "function", "function": {"name": ...}}``."""

ROLES: Final[frozenset[str]] = frozenset({"system", "developer", "user", "assistant", "tool"})
"""The message roles the context accepts."""

_HEAD_ROLES: Final[frozenset[str]] = frozenset({"system", "developer"})
_TOOL_CHOICE_STRINGS: Final[frozenset[str]] = frozenset({"auto", "none", "required"})

MIN_CALIBRATION: Final[float] = 0.25
"""Lowest calibration factor :meth:`LLMContext.calibrate` will set."""
MAX_CALIBRATION: Final[float] = 4.0
"""Highest calibration factor :meth:`LLMContext.calibrate` will set."""

# Heuristic token costs (roughly those of OpenAI's chat format).
_CHARS_PER_TOKEN: Final[int] = 4
_MESSAGE_OVERHEAD: Final[int] = 4  # role, separators
_TOOL_CALL_OVERHEAD: Final[int] = 3  # per tool call inside an assistant message
_NON_TEXT_PART_TOKENS: Final[int] = 85  # image / audio / file content parts
_REPLY_PRIMING: Final[int] = 3  # every request primes the assistant's reply
_TOOL_OVERHEAD: Final[int] = 8  # per tool definition, on top of its JSON size


# --------------------------------------------------------------------------- errors


class ContextInvariantError(RustvaniError, ValueError):
    """The context (or a value offered to it) breaks an invariant of the OpenAI chat format.

    Raised by :meth:`LLMContext.validate` for sequence problems (unanswered tool calls,
    results for unknown or already answered calls, an open round) and by
    :class:`ContextRound` for results that do not match the round's calls.  The more specific
    :class:`InvalidMessageError` and :class:`InvalidToolError` derive from it.
    """


class InvalidMessageError(ContextInvariantError):
    """A single message is malformed (unknown role, bad content, missing id, ...)."""


class InvalidToolError(ContextInvariantError):
    """A tool definition or a ``tool_choice`` is malformed."""


class RoundStateError(RustvaniError, RuntimeError):
    """A tool round was used in the wrong state (already open, already closed, ...)."""


# --------------------------------------------------------------------------- helpers


def _clone(value: Any) -> Any:
    """Copy a JSON-like value: mappings become dicts, lists/tuples become lists.

    Other values (strings, numbers, ``None``, opaque objects) are shared, which is safe for the
    immutable JSON scalars the context deals with.
    """
    if isinstance(value, Mapping):
        return {key: _clone(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clone(item) for item in value]
    return value


def _clone_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a JSON-like mapping into a fresh dict (see :func:`_clone`)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a dict, got {type(value).__name__}")
    return {key: _clone(item) for key, item in value.items()}


def _default_parameters() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


def _is_name(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _describe_ids(ids: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in ids) or "(none)"


def _check_content(content: object, where: str) -> None:
    """Check a ``content`` value: a string or a list of typed content parts."""
    if isinstance(content, str):
        return
    if isinstance(content, list | tuple):
        for k, part in enumerate(content):
            if not isinstance(part, Mapping) or not _is_name(part.get("type")):
                raise InvalidMessageError(
                    f"{where}: content part {k} must be a dict with a non-empty string 'type'"
                )
        return
    raise InvalidMessageError(
        f"{where}: 'content' must be a string or a list of content parts, "
        f"got {type(content).__name__}"
    )


def _check_tool_calls(calls: object, where: str) -> list[str]:
    """Check an assistant message's ``tool_calls`` and return their ids in call order."""
    if not isinstance(calls, list | tuple) or not calls:
        raise InvalidMessageError(
            f"{where}: 'tool_calls' must be a non-empty list (omit the key when there are none)"
        )
    ids: list[str] = []
    for k, call in enumerate(calls):
        here = f"{where}: tool call {k}"
        if not isinstance(call, Mapping):
            raise InvalidMessageError(f"{here} must be a dict, got {type(call).__name__}")
        call_id = call.get("id")
        if not _is_name(call_id):
            raise InvalidMessageError(f"{here} has no id (needs a non-empty string 'id')")
        assert isinstance(call_id, str)
        if call_id in ids:
            raise InvalidMessageError(f"{here} repeats the id {call_id!r} of an earlier call")
        if call.get("type") != "function":
            raise InvalidMessageError(
                f"{here} ({call_id!r}): 'type' must be 'function', got {call.get('type')!r}"
            )
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise InvalidMessageError(f"{here} ({call_id!r}): 'function' must be a dict")
        if not _is_name(function.get("name")):
            raise InvalidMessageError(
                f"{here} ({call_id!r}): 'function.name' must be a non-empty string"
            )
        if not isinstance(function.get("arguments"), str):
            raise InvalidMessageError(
                f"{here} ({call_id!r}): 'function.arguments' must be a string (JSON text)"
            )
        ids.append(call_id)
    return ids


def _check_message(message: object, where: str) -> None:
    """Check the shape of one message (not its place in the sequence)."""
    if not isinstance(message, Mapping):
        raise InvalidMessageError(
            f"{where}: a message must be a dict, got {type(message).__name__}"
        )
    role = message.get("role")
    if role not in ROLES:
        raise InvalidMessageError(
            f"{where}: unknown role {role!r} (expected one of {', '.join(sorted(ROLES))})"
        )
    where = f"{where} (role {role!r})"
    if "tool_calls" in message and role != "assistant":
        raise InvalidMessageError(f"{where}: only assistant messages may carry 'tool_calls'")
    if "tool_call_id" in message and role != "tool":
        raise InvalidMessageError(f"{where}: only tool messages may carry 'tool_call_id'")
    if role == "assistant":
        has_calls = "tool_calls" in message
        if has_calls:
            _check_tool_calls(message["tool_calls"], where)
        content = message.get("content")
        if content is None:
            if not has_calls:
                raise InvalidMessageError(f"{where}: needs 'content' or 'tool_calls'")
        else:
            _check_content(content, where)
        return
    if "content" not in message:
        raise InvalidMessageError(f"{where}: missing 'content'")
    _check_content(message["content"], where)
    if role == "tool" and not _is_name(message.get("tool_call_id")):
        raise InvalidMessageError(
            f"{where}: missing 'tool_call_id' (a non-empty string naming the call it answers)"
        )


def _message_tokens(message: Mapping[str, Any]) -> int:
    """Unscaled heuristic token count of one message (tolerates malformed input)."""
    chars = 0
    extra = _MESSAGE_OVERHEAD
    content = message.get("content")
    if isinstance(content, str):
        chars += len(content)
    elif isinstance(content, list | tuple):
        for part in content:
            text = part.get("text") if isinstance(part, Mapping) else part
            if isinstance(text, str):
                chars += len(text)
            else:
                extra += _NON_TEXT_PART_TOKENS
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            chars += len(value)
    calls = message.get("tool_calls")
    if isinstance(calls, list | tuple):
        for call in calls:
            extra += _TOOL_CALL_OVERHEAD
            if not isinstance(call, Mapping):
                continue
            call_id = call.get("id")
            if isinstance(call_id, str):
                chars += len(call_id)
            function = call.get("function")
            if isinstance(function, Mapping):
                for key in ("name", "arguments"):
                    value = function.get(key)
                    if isinstance(value, str):
                        chars += len(value)
    return extra + math.ceil(chars / _CHARS_PER_TOKEN)


def _protected_start(roles: Sequence[str]) -> int:
    """Where the tail that :meth:`LLMContext.trim` must keep starts, in a body of ``roles``.

    The last user message; without one, the last non-tool message; without that, nothing.
    """
    fallback = len(roles)
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            return i
        if roles[i] != "tool" and fallback == len(roles):
            fallback = i
    return fallback


def _check_tool_choice(choice: object) -> None:
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICE_STRINGS):
        return
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if (
            choice.get("type") == "function"
            and isinstance(function, Mapping)
            and _is_name(function.get("name"))
        ):
            return
    raise InvalidToolError(
        "tool_choice must be None, 'auto', 'none', 'required' or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
    )


# --------------------------------------------------------------------------- tools


@attrs.define(frozen=True, slots=True, kw_only=True)
class FunctionSchema:
    """A function the model may call, in a provider-neutral form.

    ``parameters`` is a JSON Schema object; it is copied on construction.  The instance is
    frozen, but ``parameters`` is a dict: treat it as read-only (:meth:`to_openai` returns a
    copy).  Instances are comparable but not hashable (the schema is a dict).
    """

    name: str = attrs.field()
    description: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    parameters: dict[str, Any] = attrs.field(
        factory=_default_parameters, converter=_clone_dict, hash=False
    )

    @name.validator
    def _check_name(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if not _is_name(value):
            raise InvalidToolError(f"a function's name must be a non-empty string, got {value!r}")

    def to_openai(self) -> dict[str, Any]:
        """Return the OpenAI tool definition ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": _clone(self.parameters),
            },
        }


ToolSpec: TypeAlias = FunctionSchema | dict[str, Any]
"""A tool: a :class:`FunctionSchema` or a raw OpenAI tool dict
(``{"type": "function", "function": {"name": ..., ...}}``)."""


@attrs.define(frozen=True, slots=True)
class _Tool:
    """A validated tool with its cached request form and token cost."""

    name: str
    spec: ToolSpec
    openai: dict[str, Any]
    tokens: int


def _make_tool(spec: object) -> _Tool:
    if isinstance(spec, FunctionSchema):
        openai = spec.to_openai()
        stored: ToolSpec = spec
    elif isinstance(spec, Mapping):
        if spec.get("type") != "function":
            raise InvalidToolError(
                f"a tool dict needs 'type': 'function', got {spec.get('type')!r}"
            )
        function = spec.get("function")
        if not isinstance(function, Mapping) or not _is_name(function.get("name")):
            raise InvalidToolError(
                "a tool dict needs 'function': {'name': <non-empty string>, ...}, "
                f"got {function!r}"
            )
        if not isinstance(function.get("description", ""), str):
            raise InvalidToolError(
                f"tool {function['name']!r}: 'function.description' must be a string"
            )
        if not isinstance(function.get("parameters", {}), Mapping):
            raise InvalidToolError(
                f"tool {function['name']!r}: 'function.parameters' must be a dict"
            )
        openai = _clone_dict(spec)
        stored = openai
    else:
        raise InvalidToolError(
            f"a tool must be a FunctionSchema or an OpenAI tool dict, got {type(spec).__name__}"
        )
    text = json.dumps(openai, ensure_ascii=False, separators=(",", ":"), default=str)
    tokens = _TOOL_OVERHEAD + math.ceil(len(text) / _CHARS_PER_TOKEN)
    return _Tool(name=openai["function"]["name"], spec=stored, openai=openai, tokens=tokens)


def _make_tools(specs: Iterable[ToolSpec]) -> list[_Tool]:
    if isinstance(specs, Mapping | FunctionSchema):
        raise InvalidToolError("expected a list of tools, got a single tool")
    tools = [_make_tool(spec) for spec in specs]
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise InvalidToolError(f"tool name {tool.name!r} appears more than once")
        seen.add(tool.name)
    return tools


# --------------------------------------------------------------------------- context


@attrs.define(slots=True)
class _Entry:
    """One committed message with its side data (never sent to the server)."""

    message: Message
    tokens: int
    interrupted: bool = False


def _entry(message: Message, interrupted: bool = False) -> _Entry:
    return _Entry(message=message, tokens=_message_tokens(message), interrupted=interrupted)


class LLMContext:
    """An OpenAI-format chat conversation with its tools, tool choice and token budget.

    See the module docstring for ownership, validation, rounds and interruption marks.
    """

    __slots__ = ("_entries", "_factor", "_last_request_raw", "_round", "_tool_choice", "_tools")

    def __init__(
        self,
        messages: Iterable[Mapping[str, Any]] | None = None,
        *,
        tools: Iterable[ToolSpec] | None = None,
        tool_choice: ToolChoice = None,
    ) -> None:
        """Create a context from initial ``messages``, ``tools`` and ``tool_choice``.

        Every message and tool is checked (:class:`InvalidMessageError`,
        :class:`InvalidToolError`); the sequence as a whole is not (see :meth:`validate`).
        """
        self._entries: list[_Entry] = self._prepare(messages or (), start=0)
        self._tools: list[_Tool] = _make_tools(tools or ())
        _check_tool_choice(tool_choice)
        self._tool_choice: ToolChoice = _clone(tool_choice)
        self._factor: float = 1.0
        self._last_request_raw: int | None = None
        self._round: ContextRound | None = None

    def __repr__(self) -> str:
        return (
            f"<LLMContext messages={len(self._entries)} tools={len(self._tools)} "
            f"factor={self._factor:.3g} round_open={self._round is not None}>"
        )

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _prepare(messages: Iterable[Mapping[str, Any]], start: int) -> list[_Entry]:
        if isinstance(messages, Mapping):
            raise InvalidMessageError("expected a list of messages, got a single message dict")
        entries: list[_Entry] = []
        for offset, message in enumerate(messages):
            _check_message(message, f"message {start + offset}")
            entries.append(_entry(_clone_dict(message)))
        return entries

    @property
    def messages(self) -> list[Message]:
        """A *copy* of the committed messages (a new list of new dicts, staged rounds excluded).

        Mutating the result does not change the context; use the ``add_*``/``set_messages``
        methods instead.
        """
        return [_clone_dict(entry.message) for entry in self._entries]

    @property
    def message_count(self) -> int:
        """Number of committed messages (cheaper than ``len(ctx.messages)``)."""
        return len(self._entries)

    def add_message(self, message: Mapping[str, Any]) -> None:
        """Append one message after checking its shape (see :class:`InvalidMessageError`)."""
        self._entries.extend(self._prepare((message,), start=len(self._entries)))

    def add_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Append several messages; all are checked first, so either all or none are added."""
        self._entries.extend(self._prepare(messages, start=len(self._entries)))

    def set_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Replace all committed messages (and clear interruption marks); all-or-nothing.

        An open round is unaffected and will append to the new history when committed.
        """
        self._entries = self._prepare(messages, start=0)

    def add_user_message(self, text: str) -> None:
        """Append ``{"role": "user", "content": text}``."""
        self.add_message({"role": "user", "content": text})

    def add_assistant_message(self, text: str, *, interrupted: bool = False) -> None:
        """Append ``{"role": "assistant", "content": text}``.

        ``interrupted=True`` records that the bot was cut off while speaking it; the mark is
        kept outside the message (see :meth:`is_interrupted`) and is never sent.
        """
        self.add_message({"role": "assistant", "content": text})
        self._entries[-1].interrupted = interrupted

    def add_tool_message(
        self, tool_call_id: str, content: str | Sequence[Mapping[str, Any]]
    ) -> None:
        """Append ``{"role": "tool", "tool_call_id": ..., "content": ...}``.

        Prefer :meth:`begin_round` for the tool loop; this is for rebuilding histories.
        """
        self.add_message({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def is_interrupted(self, index: int) -> bool:
        """Whether message ``index`` (negative counts from the end) was marked interrupted.

        Raises :class:`IndexError` when there is no such message.
        """
        return self._entries[index].interrupted

    def interrupted_indices(self) -> list[int]:
        """Indices of the messages marked interrupted, ascending."""
        return [i for i, entry in enumerate(self._entries) if entry.interrupted]

    @property
    def system_prompt(self) -> str | None:
        """The content of the leading system message, or ``None`` when there is none.

        Only a ``"system"`` message at index 0 counts.  List content is returned as the
        concatenation of its text parts.  Setting a string replaces that message's content
        (keeping its other keys) or inserts a new system message at index 0; setting ``None``
        removes it.
        """
        if not self._entries or self._entries[0].message["role"] != "system":
            return None
        content = self._entries[0].message["content"]
        if isinstance(content, str):
            return content
        return "".join(part["text"] for part in content if isinstance(part.get("text"), str))

    @system_prompt.setter
    def system_prompt(self, text: str | None) -> None:
        has_prompt = bool(self._entries) and self._entries[0].message["role"] == "system"
        if text is None:
            if has_prompt:
                del self._entries[0]
            return
        if not isinstance(text, str):
            raise InvalidMessageError(
                f"the system prompt must be a string, got {type(text).__name__}"
            )
        if has_prompt:
            message = dict(self._entries[0].message, content=text)
            self._entries[0] = _entry(message, self._entries[0].interrupted)
        else:
            self._entries.insert(0, _entry({"role": "system", "content": text}))

    def to_request_messages(self) -> list[Message]:
        """The committed messages as a fresh, JSON-serialisable list for the next request.

        Staged round content is excluded.  The unscaled estimate of this request (messages and
        current tools) is remembered for :meth:`calibrate_from_usage`.
        """
        self._last_request_raw = self._raw_total(include_tools=True)
        return self.messages

    # ------------------------------------------------------------------ tools

    @property
    def tools(self) -> list[ToolSpec]:
        """A copy of the tool list, in order (``FunctionSchema`` objects or dict copies)."""
        return [
            t.spec if isinstance(t.spec, FunctionSchema) else _clone(t.spec) for t in self._tools
        ]

    @property
    def tool_choice(self) -> ToolChoice:
        """A copy of the tool choice (``None`` means the field is omitted from requests)."""
        return _clone(self._tool_choice)  # type: ignore[no-any-return]

    def set_tools(self, tools: Iterable[ToolSpec] | None) -> None:
        """Replace the tools (``None`` or empty removes them all); names must be unique."""
        self._tools = _make_tools(tools or ())

    def add_tools(self, tools: Iterable[ToolSpec]) -> None:
        """Add tools; one with the name of an existing tool replaces it in place.

        Names must be unique within ``tools``; all are checked before any is added.
        """
        new = _make_tools(tools)
        position = {tool.name: i for i, tool in enumerate(self._tools)}
        for tool in new:
            if tool.name in position:
                self._tools[position[tool.name]] = tool
            else:
                position[tool.name] = len(self._tools)
                self._tools.append(tool)

    def remove_tool(self, name: str, *, missing_ok: bool = False) -> bool:
        """Remove the tool called ``name``; return whether one was removed.

        Raises :class:`KeyError` for an unknown name unless ``missing_ok``.  A ``tool_choice``
        naming the removed tool is left as is (:meth:`validate` reports it).
        """
        for i, tool in enumerate(self._tools):
            if tool.name == name:
                del self._tools[i]
                return True
        if missing_ok:
            return False
        raise KeyError(f"no tool named {name!r} (tools: {_describe_ids(self.tool_names())})")

    def tool_names(self) -> list[str]:
        """The tool names, in order."""
        return [tool.name for tool in self._tools]

    def set_tool_choice(self, choice: ToolChoice) -> None:
        """Set the tool choice: ``None``, ``"auto"``, ``"none"``, ``"required"`` or
        ``{"type": "function", "function": {"name": ...}}``.

        The shape is checked here; whether a named function exists is checked by
        :meth:`validate` (tools may be set afterwards).
        """
        _check_tool_choice(choice)
        self._tool_choice = _clone(choice)

    def tools_for_request(self) -> list[dict[str, Any]] | None:
        """The tools as fresh OpenAI tool dicts, or ``None`` when there are none.

        (OpenAI rejects an empty ``tools`` array, so callers should omit the field on ``None``.)
        """
        if not self._tools:
            return None
        return [_clone_dict(tool.openai) for tool in self._tools]

    # ------------------------------------------------------------------ whole-context

    def copy(self) -> LLMContext:
        """An independent copy: messages, interruption marks, tools, tool choice, calibration.

        An open round is *not* copied; the copy has none.
        """
        other = LLMContext.__new__(LLMContext)
        other._entries = [
            _Entry(message=_clone_dict(e.message), tokens=e.tokens, interrupted=e.interrupted)
            for e in self._entries
        ]
        other._tools = list(self._tools)  # _Tool is immutable; its dicts are never handed out
        other._tool_choice = _clone(self._tool_choice)
        other._factor = self._factor
        other._last_request_raw = self._last_request_raw
        other._round = None
        return other

    def validate(self) -> None:
        """Check that the context can be sent as is; raise :class:`ContextInvariantError` if not.

        Checks, in order: no round is open; every message is well formed (e.g. every tool call
        has an id); every assistant message's tool calls are each answered by exactly one tool
        message before the next non-tool message (results may come in any order); every tool
        message answers a pending call of the assistant message before it (not an unknown or an
        already answered id); a ``tool_choice`` naming a function names one of the tools, and
        ``"required"`` has tools to choose from.
        """
        if self._round is not None:
            raise ContextInvariantError(
                "a tool round is still open: commit() or rollback() it first"
            )
        for i, entry in enumerate(self._entries):
            _check_message(entry.message, f"message {i}")
        pending: dict[str, None] = {}  # ordered set of unanswered call ids
        caller: int | None = None  # index of the assistant message whose results may follow
        answered: set[str] = set()
        for i, entry in enumerate(self._entries):
            message = entry.message
            role = message["role"]
            if role == "tool":
                call_id = message["tool_call_id"]
                if call_id in pending:
                    del pending[call_id]
                    answered.add(call_id)
                elif call_id in answered:
                    raise ContextInvariantError(
                        f"message {i} (tool) answers tool call {call_id!r}, "
                        "which was already answered"
                    )
                elif caller is None:
                    raise ContextInvariantError(
                        f"message {i} (tool) answers tool call {call_id!r}, but it does not "
                        "follow an assistant message with tool calls"
                    )
                else:
                    calls = self._entries[caller].message["tool_calls"]
                    raise ContextInvariantError(
                        f"message {i} (tool) answers unknown tool call {call_id!r}; the "
                        f"assistant message {caller} called {_describe_ids(c['id'] for c in calls)}"
                    )
                continue
            if pending:
                raise ContextInvariantError(
                    f"the tool calls {_describe_ids(pending)} of assistant message {caller} are "
                    f"not answered before message {i} ({role}); every call needs exactly one "
                    "tool message right after the assistant message"
                )
            caller = None
            if role == "assistant" and "tool_calls" in message:
                caller = i
                pending = dict.fromkeys(c["id"] for c in message["tool_calls"])
        if pending:
            raise ContextInvariantError(
                f"the tool calls {_describe_ids(pending)} of assistant message {caller} are "
                "never answered"
            )
        choice = self._tool_choice
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            if name not in self.tool_names():
                raise ContextInvariantError(
                    f"tool_choice names function {name!r}, which is not among the tools "
                    f"({_describe_ids(self.tool_names())})"
                )
        elif choice == "required" and not self._tools:
            raise ContextInvariantError("tool_choice is 'required' but there are no tools")

    # ------------------------------------------------------------------ rounds

    @property
    def open_round(self) -> ContextRound | None:
        """The round begun with :meth:`begin_round` and not yet closed, if any."""
        return self._round

    def begin_round(self) -> ContextRound:
        """Open a tool round (the model answered with tool calls); see :class:`ContextRound`.

        Raises :class:`RoundStateError` when a round is already open.  Other methods stay
        usable while it is open; its messages are appended at commit time, after whatever was
        committed meanwhile.
        """
        if self._round is not None:
            raise RoundStateError(
                "a tool round is already open: commit() or rollback() it before beginning another"
            )
        self._round = ContextRound(self)
        return self._round

    def _commit_round(self, round_: ContextRound, messages: list[Message]) -> None:
        assert self._round is round_
        self._entries.extend(_entry(message) for message in messages)
        self._round = None

    def _close_round(self, round_: ContextRound) -> None:
        if self._round is round_:
            self._round = None

    # ------------------------------------------------------------------ tokens

    @property
    def calibration_factor(self) -> float:
        """The factor applied to heuristic estimates (1.0 until :meth:`calibrate`)."""
        return self._factor

    def reset_calibration(self) -> None:
        """Forget the calibration (factor back to 1.0)."""
        self._factor = 1.0

    def _raw_total(self, *, include_tools: bool) -> int:
        total = _REPLY_PRIMING + sum(entry.tokens for entry in self._entries)
        if include_tools:
            total += sum(tool.tokens for tool in self._tools)
        return total

    def _scale(self, raw: int) -> int:
        return math.floor(raw * self._factor + 0.5)

    def estimate_tokens(
        self,
        messages: Iterable[Mapping[str, Any]] | None = None,
        *,
        include_tools: bool = True,
        calibrated: bool = True,
    ) -> int:
        """Estimate the prompt tokens of a request with ``messages`` (default: the committed
        messages) and, unless ``include_tools=False``, the current tools.

        The heuristic is ``ceil(chars / 4)`` per message plus per-message, per-tool-call and
        per-request overheads, a fixed cost per non-text content part, and each tool's JSON
        size / 4.  The result is multiplied by :attr:`calibration_factor` unless
        ``calibrated=False`` (the raw figure :meth:`calibrate` expects).
        """
        if messages is None:
            raw = self._raw_total(include_tools=include_tools)
        else:
            raw = _REPLY_PRIMING + sum(
                _message_tokens(m) if isinstance(m, Mapping) else _MESSAGE_OVERHEAD
                for m in messages
            )
            if include_tools:
                raw += sum(tool.tokens for tool in self._tools)
        return self._scale(raw) if calibrated else raw

    def calibrate(self, prompt_tokens: int, sent_messages_estimate: int) -> float:
        """Learn the ratio real / estimated tokens; return the new calibration factor.

        ``prompt_tokens`` is the server's ``usage.prompt_tokens`` for a request whose
        *uncalibrated* estimate was ``sent_messages_estimate`` (i.e.
        ``estimate_tokens(sent, calibrated=False)``).  The factor becomes the ratio, clamped to
        [:data:`MIN_CALIBRATION`, :data:`MAX_CALIBRATION`].  A zero on either side (a server
        that reports no usage) leaves it unchanged; negative values raise :class:`ValueError`.
        """
        if prompt_tokens < 0 or sent_messages_estimate < 0:
            raise ValueError(
                "calibrate() needs non-negative token counts, got "
                f"prompt_tokens={prompt_tokens}, sent_messages_estimate={sent_messages_estimate}"
            )
        if prompt_tokens and sent_messages_estimate:
            ratio = prompt_tokens / sent_messages_estimate
            self._factor = min(max(ratio, MIN_CALIBRATION), MAX_CALIBRATION)
        return self._factor

    def calibrate_from_usage(
        self,
        prompt_tokens: int,
        sent_messages: Iterable[Mapping[str, Any]] | None = None,
    ) -> float:
        """:meth:`calibrate` from the usage of a response; return the new factor.

        ``sent_messages`` are the messages of that request (the current tools are counted
        too).  When omitted, the estimate remembered by the last :meth:`to_request_messages`
        is used; :class:`ValueError` if there was none.
        """
        if sent_messages is not None:
            raw = self.estimate_tokens(sent_messages, calibrated=False)
        elif self._last_request_raw is not None:
            raw = self._last_request_raw
        else:
            raise ValueError(
                "calibrate_from_usage() without sent_messages needs a prior to_request_messages()"
            )
        return self.calibrate(prompt_tokens, raw)

    def trim(self, max_tokens: int, *, budget: float = 0.8) -> int:
        """Drop the oldest messages until ``estimate_tokens() <= max_tokens * budget``.

        Returns the number of messages removed (0 when the context already fits).

        * The leading run of system/developer messages is never removed.
        * An assistant message with tool calls and the tool messages after it go as a unit, and
          the remaining conversation never starts (after that leading run) with a tool message.
        * The most recent user message and everything after it are always kept, even if that
          stays over budget (without a user message: the last non-tool message onwards).
        * Only as many messages as needed are removed; interruption marks stay with their
          messages.

        Staged round content is not counted.  ``max_tokens`` must be positive and ``budget``
        in (0, 1].
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be in (0, 1], got {budget!r}")
        limit = max_tokens * budget
        if self.estimate_tokens() <= limit:
            return 0
        head = 0
        while head < len(self._entries) and self._entries[head].message["role"] in _HEAD_ROLES:
            head += 1
        body = self._entries[head:]
        roles = [entry.message["role"] for entry in body]
        keep_from = _protected_start(roles)
        rest = sum(entry.tokens for entry in body)
        fixed = self._raw_total(include_tools=True) - rest
        cut = keep_from
        for i in range(1, keep_from + 1):
            rest -= body[i - 1].tokens
            if (i == len(body) or roles[i] != "tool") and self._scale(fixed + rest) <= limit:
                cut = i
                break
        del self._entries[head : head + cut]
        return cut


# --------------------------------------------------------------------------- rounds


class ContextRound:
    """One tool round: the model's tool calls and their results, staged until committed.

    Obtain it from :meth:`LLMContext.begin_round`; do not construct it directly.  Typical use::

        with ctx.begin_round() as round_:
            round_.set_assistant(text, tool_calls)
            ...                                   # results arrive in any order
            round_.add_tool_result(call_id, result_json)
            round_.commit()

    Leaving the ``with`` block while the round is still open -- because of an exception
    (including trio's ``Cancelled``) *or* because ``commit()`` was never called -- rolls it back:
    nothing reaches the context unless :meth:`commit` was called explicitly.  State misuse
    raises :class:`RoundStateError`; results that do not match the calls raise
    :class:`ContextInvariantError`.
    """

    __slots__ = ("_calls", "_context", "_ids", "_open", "_results", "_text")

    def __init__(self, context: LLMContext) -> None:
        self._context = context
        self._open = True
        self._text: str | None = None
        self._calls: list[dict[str, Any]] | None = None
        self._ids: list[str] = []
        self._results: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<ContextRound {state} calls={len(self._ids)} pending={len(self.pending_ids)}>"

    def __enter__(self) -> ContextRound:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._open:
            self.rollback()

    def _require_open(self, action: str) -> None:
        if not self._open:
            raise RoundStateError(f"cannot {action}: the round is already closed")

    @property
    def is_open(self) -> bool:
        """Whether the round is neither committed nor rolled back."""
        return self._open

    @property
    def pending_ids(self) -> tuple[str, ...]:
        """The ids of calls still without a result, in call order (empty before
        :meth:`set_assistant` and once closed)."""
        if not self._open:
            return ()
        return tuple(i for i in self._ids if i not in self._results)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """A copy of the staged tool calls, in the model's order (empty before
        :meth:`set_assistant`)."""
        return _clone(self._calls or [])  # type: ignore[no-any-return]

    def set_assistant(self, text: str | None, tool_calls: Sequence[Mapping[str, Any]]) -> None:
        """Stage the model's answer: optional text and at least one tool call.

        Each call is ``{"id", "type": "function", "function": {"name", "arguments"}}`` (other
        keys are kept).  May be called once per round.
        """
        self._require_open("set the assistant message")
        if self._calls is not None:
            raise RoundStateError("set_assistant() was already called for this round")
        if text is not None and not isinstance(text, str):
            raise InvalidMessageError(
                f"round: assistant text must be a string or None, got {type(text).__name__}"
            )
        ids = _check_tool_calls(tool_calls, "round")
        self._calls = [_clone_dict(call) for call in tool_calls]
        self._ids = ids
        self._text = text

    def add_tool_result(
        self, tool_call_id: str, content: str | Sequence[Mapping[str, Any]]
    ) -> None:
        """Stage the result of one call; results may arrive in any order.

        An id that is not one of the round's calls, or that already has a result, raises
        :class:`ContextInvariantError`.
        """
        self._require_open("add a tool result")
        if self._calls is None:
            raise RoundStateError("call set_assistant() before adding tool results")
        if tool_call_id not in self._ids:
            raise ContextInvariantError(
                f"round: unknown tool_call_id {tool_call_id!r}; this round's calls are "
                f"{_describe_ids(self._ids)}"
            )
        if tool_call_id in self._results:
            raise ContextInvariantError(f"round: tool call {tool_call_id!r} already has a result")
        _check_content(content, f"round: result for {tool_call_id!r}")
        self._results[tool_call_id] = _clone(content)

    def commit(self) -> None:
        """Append the assistant message, then one tool message per call in call order; close.

        Requires :meth:`set_assistant` (else :class:`RoundStateError`) and a result for every
        call (else :class:`ContextInvariantError`, and the round stays open).
        """
        self._require_open("commit")
        if self._calls is None:
            raise RoundStateError("call set_assistant() before commit()")
        missing = self.pending_ids
        if missing:
            raise ContextInvariantError(
                f"round: cannot commit, no result yet for tool call(s) {_describe_ids(missing)}"
            )
        messages: list[Message] = [
            {"role": "assistant", "content": self._text, "tool_calls": self._calls}
        ]
        messages.extend(
            {"role": "tool", "tool_call_id": call_id, "content": self._results[call_id]}
            for call_id in self._ids
        )
        self._context._commit_round(self, messages)
        self._open = False

    def rollback(self) -> None:
        """Discard everything staged and close; the committed messages are untouched.

        Raises :class:`RoundStateError` if the round is already closed (a commit is final).
        """
        self._require_open("roll back")
        self._open = False
        self._calls = None
        self._ids = []
        self._results = {}
        self._context._close_round(self)
