"""``x_script``: a reply described in the request body itself (for load generators).

A request whose JSON body has an ``"x_script"`` object gets the reply it describes instead of
the next queued one; the format is documented on :class:`~rustvani_trio.testing.ScriptedServer`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from ..exceptions import RustvaniError
from ._replies import Reply, ScriptedToolCall, TextReply, ToolCallReply, numbered_tokens

__all__ = ["MAX_TOKENS", "ScriptError", "XScriptCache", "reply_from_x_script"]

_CACHE_SIZE: Final = 256
_CACHED_KEY_SIZE: Final = 4096
"""Specs longer than this (as JSON) are built for each request: the cache keeps its keys."""
MAX_TOKENS: Final = 100_000
"""The largest ``tokens`` count an ``x_script`` may ask for (10 million built a 100 MB
answer; the benchmarks ask for a few thousand)."""

_KEYS: Final = frozenset(
    {
        "tokens",
        "token_delay",
        "first_token_delay",
        "tool_call",
        "finish_reason",
        "error_after",
        "drop_after",
        "stall_after",
    }
)
_CALL_KEYS: Final = frozenset({"name", "arguments", "id"})


class ScriptError(RustvaniError, ValueError):
    """An invalid ``x_script`` request field (the client gets HTTP 400 with the message)."""


def _unknown(spec: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:  # a typo ("token_dealy") would otherwise be ignored silently
        raise ValueError(
            f"unknown {where} key(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )


def _opt_int(spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer")
    return value


def _float(spec: Mapping[str, Any], key: str) -> float:
    value = spec.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} must be a number")
    if not math.isfinite(value):  # json.loads reads NaN, Infinity and 1e999
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _call(raw: Any) -> ScriptedToolCall:
    if not isinstance(raw, dict):
        raise TypeError(f"each tool_call must be an object, got {type(raw).__name__}")
    _unknown(raw, _CALL_KEYS, "tool_call")
    if "name" not in raw:
        raise ValueError("a tool_call needs a 'name'")
    return ScriptedToolCall(
        name=raw["name"], arguments=raw.get("arguments", "{}"), id=raw.get("id")
    )


def reply_from_x_script(spec: Mapping[str, Any]) -> Reply:
    """The reply an ``x_script`` object describes (TypeError / ValueError / KeyError if bad).

    ``tokens`` (default 16, or 0 with a tool call) as a number means :func:`numbered_tokens`;
    with ``tool_call`` the reply is a :class:`ToolCallReply` and the tokens are its text.
    Unknown keys are refused.
    """
    _unknown(spec, _KEYS, "x_script")
    raw_calls = spec.get("tool_call")
    if raw_calls is None:
        raw_calls = []
    elif isinstance(raw_calls, dict):
        raw_calls = [raw_calls]
    elif not isinstance(raw_calls, list):
        raise TypeError("tool_call must be an object or a list of objects")
    calls = [_call(raw) for raw in raw_calls]
    raw_tokens = spec.get("tokens", 0 if calls else 16)
    tokens: list[str]
    if isinstance(raw_tokens, bool):
        raise TypeError("tokens must be a count or a list of strings")
    if isinstance(raw_tokens, int):
        if not 0 <= raw_tokens <= MAX_TOKENS:
            raise ValueError(f"tokens must be between 0 and {MAX_TOKENS:,}, got {raw_tokens:,}")
        tokens = numbered_tokens(raw_tokens)
    elif isinstance(raw_tokens, list):
        tokens = list(raw_tokens)
    else:
        raise TypeError("tokens must be a count or a list of strings")
    common: dict[str, Any] = {
        "token_delay": _float(spec, "token_delay"),
        "first_token_delay": _float(spec, "first_token_delay"),
        "error_after": _opt_int(spec, "error_after"),
        "drop_after": _opt_int(spec, "drop_after"),
        "stall_after": _opt_int(spec, "stall_after"),
    }
    if "finish_reason" in spec:
        common["finish_reason"] = spec["finish_reason"]
    if calls:
        return ToolCallReply(calls, text_tokens=tokens, **common)
    return TextReply(tokens, **common)


class XScriptCache:
    """Builds replies from ``x_script`` objects, remembering the last few hundred.

    A load generator sends the same ``x_script`` thousands of times; the cache saves building
    (and pre-rendering) the reply for each request.
    """

    __slots__ = ("_replies",)

    def __init__(self) -> None:
        self._replies: dict[str, Reply] = {}

    def reply(self, spec: Any) -> Reply:
        """The reply for ``spec``; :class:`ScriptError` when it is not a valid ``x_script``."""
        if not isinstance(spec, dict):
            raise ScriptError("x_script must be a JSON object")
        try:
            key = json.dumps(spec, sort_keys=True)
        except (RecursionError, ValueError, TypeError) as exc:
            raise ScriptError(f"invalid x_script: {type(exc).__name__}") from None
        reply = self._replies.get(key)
        if reply is None:
            try:
                reply = reply_from_x_script(spec)
            except (TypeError, ValueError, KeyError) as exc:
                raise ScriptError(f"invalid x_script: {exc}") from exc
            if len(key) <= _CACHED_KEY_SIZE:
                if len(self._replies) >= _CACHE_SIZE:
                    self._replies.clear()
                self._replies[key] = reply
        return reply
