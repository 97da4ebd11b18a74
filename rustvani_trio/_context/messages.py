"""The shape of one OpenAI chat message, and of a whole sequence of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from .errors import ContextInvariantError, InvalidMessageError, describe_ids
from .values import short, type_name

__all__ = [
    "ROLES",
    "Message",
    "check_content",
    "check_message",
    "check_sequence",
    "check_tool_calls",
    "is_name",
]

Message: TypeAlias = dict[str, Any]
"""One OpenAI chat message (``role``, ``content`` and role-specific keys)."""

ROLES: Final[frozenset[str]] = frozenset({"system", "developer", "user", "assistant", "tool"})
"""The message roles the context accepts."""


def is_name(value: object) -> bool:
    """A non-empty string."""
    return isinstance(value, str) and value != ""


def check_id(value: object, where: str, key: str, missing: str) -> str:
    """Check a tool-call id (a non-empty string) found under ``key``; return it.

    ``missing`` completes ``where`` when there is no id (absent, ``None`` or empty).
    """
    if value is None or value == "":
        raise InvalidMessageError(f"{where}{missing}")
    if not isinstance(value, str):
        raise InvalidMessageError(
            f"{where}: {key!r} must be a string, got {type_name(value)} {short(value)}"
        )
    return value


def check_content(content: object, where: str) -> None:
    """Check a ``content`` value: a string or a list of typed content parts."""
    if isinstance(content, str):
        return
    if isinstance(content, list | tuple):
        for k, part in enumerate(content):
            if not isinstance(part, Mapping) or not is_name(part.get("type")):
                raise InvalidMessageError(
                    f"{where}: content part {k} must be a dict with a non-empty string 'type'"
                )
        return
    raise InvalidMessageError(
        f"{where}: 'content' must be a string or a list of content parts, got {type_name(content)}"
    )


def check_tool_calls(calls: object, where: str) -> list[str]:
    """Check an assistant message's ``tool_calls`` and return their ids in call order."""
    if not isinstance(calls, list | tuple) or not calls:
        raise InvalidMessageError(
            f"{where}: 'tool_calls' must be a non-empty list (omit the key when there are none)"
        )
    ids: list[str] = []
    for k, call in enumerate(calls):
        here = f"{where}: tool call {k}"
        if not isinstance(call, Mapping):
            raise InvalidMessageError(f"{here} must be a dict, got {type_name(call)}")
        call_id = check_id(call.get("id"), here, "id", " has no id (needs a non-empty string 'id')")
        if call_id in ids:
            raise InvalidMessageError(f"{here} repeats the id {short(call_id)} of an earlier call")
        here = f"{here} ({short(call_id)})"
        if call.get("type") != "function":
            raise InvalidMessageError(
                f"{here}: 'type' must be 'function', got {short(call.get('type'))}"
            )
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise InvalidMessageError(f"{here}: 'function' must be a dict")
        if not is_name(function.get("name")):
            raise InvalidMessageError(f"{here}: 'function.name' must be a non-empty string")
        if not isinstance(function.get("arguments"), str):
            raise InvalidMessageError(f"{here}: 'function.arguments' must be a string (JSON text)")
        ids.append(call_id)
    return ids


def check_message(message: object, where: str) -> None:
    """Check the shape of one message (not its place in the sequence)."""
    if not isinstance(message, Mapping):
        raise InvalidMessageError(f"{where}: a message must be a dict, got {type_name(message)}")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidMessageError(
            f"{where}: unknown role {short(role)} (expected one of {', '.join(sorted(ROLES))})"
        )
    where = f"{where} (role {role!r})"
    if "tool_calls" in message and role != "assistant":
        raise InvalidMessageError(f"{where}: only assistant messages may carry 'tool_calls'")
    if "tool_call_id" in message and role != "tool":
        raise InvalidMessageError(f"{where}: only tool messages may carry 'tool_call_id'")
    if role == "assistant":
        has_calls = "tool_calls" in message
        if has_calls:
            check_tool_calls(message["tool_calls"], where)
        content = message.get("content")
        if content is None:
            if not has_calls:
                raise InvalidMessageError(f"{where}: needs 'content' or 'tool_calls'")
        else:
            check_content(content, where)
        return
    if "content" not in message:
        raise InvalidMessageError(f"{where}: missing 'content'")
    check_content(message["content"], where)
    if role == "tool":
        check_id(
            message.get("tool_call_id"),
            where,
            "tool_call_id",
            ": missing 'tool_call_id' (a non-empty string naming the call it answers)",
        )


def check_sequence(messages: Sequence[Mapping[str, Any]]) -> None:
    """Check every message's shape, then the tool-call pairing of the whole sequence.

    Every assistant message's tool calls are each answered by exactly one tool message before
    the next non-tool message (results in any order); every tool message answers a pending
    call of the assistant message before it. Raises :class:`ContextInvariantError`.
    """
    for i, message in enumerate(messages):
        check_message(message, f"message {i}")
    pending: dict[str, None] = {}  # ordered set of unanswered call ids
    caller: int | None = None  # index of the assistant message whose results may follow
    answered: set[str] = set()
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            call_id = message["tool_call_id"]
            if call_id in pending:
                del pending[call_id]
                answered.add(call_id)
            elif call_id in answered:
                raise ContextInvariantError(
                    f"message {i} (tool) answers tool call {short(call_id)}, which was already "
                    "answered"
                )
            elif caller is None:
                raise ContextInvariantError(
                    f"message {i} (tool) answers tool call {short(call_id)}, but it does not "
                    "follow an assistant message with tool calls"
                )
            else:
                calls = messages[caller]["tool_calls"]
                raise ContextInvariantError(
                    f"message {i} (tool) answers unknown tool call {short(call_id)}; the "
                    f"assistant message {caller} called {describe_ids(c['id'] for c in calls)}"
                )
            continue
        if pending:
            raise ContextInvariantError(
                f"the tool calls {describe_ids(pending)} of assistant message {caller} are "
                f"not answered before message {i} ({role}); every call needs exactly one "
                "tool message right after the assistant message"
            )
        caller = None
        if role == "assistant" and "tool_calls" in message:
            caller = i
            pending = dict.fromkeys(c["id"] for c in message["tool_calls"])
    if pending:
        raise ContextInvariantError(
            f"the tool calls {describe_ids(pending)} of assistant message {caller} are "
            "never answered"
        )
