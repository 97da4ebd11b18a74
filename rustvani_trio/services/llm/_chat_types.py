"""What a chat-completions stream is decoded into: the typed deltas and the accumulated
:class:`StreamResult` (with its tool calls and the stream's error, if any)."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import attrs

__all__ = [
    "ContentDelta",
    "ReasoningDelta",
    "RefusalDelta",
    "StreamDelta",
    "StreamError",
    "StreamResult",
    "ToolCallAccum",
    "content_delta",
    "is_int",
    "make_error",
]


@attrs.define(frozen=True, slots=True, kw_only=True)
class ContentDelta:
    """A non-empty piece of assistant text (``delta.content``)."""

    text: str


@attrs.define(frozen=True, slots=True, kw_only=True)
class ReasoningDelta:
    """A non-empty piece of reasoning (``delta.reasoning_content`` or ``delta.reasoning``)."""

    text: str


@attrs.define(frozen=True, slots=True, kw_only=True)
class RefusalDelta:
    """A non-empty piece of a refusal (``delta.refusal``)."""

    text: str


StreamDelta: TypeAlias = ContentDelta | ReasoningDelta | RefusalDelta
"""A typed delta produced by :class:`ChatStreamDecoder` as chunks arrive."""

_new = object.__new__
_set_content = vars(ContentDelta)["text"].__set__


def content_delta(text: str) -> ContentDelta:
    """``ContentDelta(text=text)`` without attrs' generic ``__init__`` (one per token)."""
    delta = _new(ContentDelta)
    _set_content(delta, text)
    return delta


@attrs.define(frozen=True, slots=True, kw_only=True)
class StreamError:
    """An error reported inside the stream (a top-level ``error`` object or an ``event: error``).

    ``raw`` is the error object as received; when the server sent something other than a JSON
    object (a string, or non-JSON data in an ``event: error``) it is ``{"message": <text>}``.
    """

    message: str
    code: str | int | None = None
    type: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(slots=True, kw_only=True)
class ToolCallAccum:
    """One tool call assembled from its streamed fragments.

    ``index`` is the wire ``index`` (``None`` for servers that omit it); ``id`` and ``name`` are
    the first non-empty values received; ``arguments`` is the concatenated argument text.
    """

    index: int | None = None
    id: str = ""
    name: str = ""
    arguments: str = ""


@attrs.define(slots=True, kw_only=True)
class StreamResult:
    """Everything accumulated from a chat-completions stream so far.

    ``reasoning`` and ``refusal`` are ``None`` when the server never sent the field as a string.
    ``usage`` is the last non-null top-level ``usage`` object, ``error`` the first stream error,
    ``done`` whether ``data: [DONE]`` arrived, ``model`` the first non-empty ``model`` and
    ``chunks`` the number of data events applied (every event before ``[DONE]``, error events
    included).
    """

    text: str = ""
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallAccum] = attrs.Factory(list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: StreamError | None = None
    done: bool = False
    model: str | None = None
    chunks: int = 0


def is_int(value: object) -> bool:
    """Whether ``value`` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def make_error(obj: object) -> StreamError:
    """Build a :class:`StreamError` from whatever the server put in its error field."""
    if isinstance(obj, dict):
        msg = obj.get("message")
        if isinstance(msg, str) and msg:
            message = msg
        else:
            message = json.dumps(obj, ensure_ascii=False, default=str)
        code = obj.get("code")
        typ = obj.get("type")
        return StreamError(
            message=message,
            code=code if isinstance(code, str) or is_int(code) else None,
            type=typ if isinstance(typ, str) else None,
            raw=obj,
        )
    message = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)
    if not message.strip():
        message = "(the server sent no message)"
    return StreamError(message=message, raw={"message": message})
