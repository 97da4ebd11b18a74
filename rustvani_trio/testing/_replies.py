"""The scripted server's replies: what one chat request gets back.

Replies are frozen attrs classes, checked where they are built. :class:`TextReply` and
:class:`ToolCallReply` stream; they pre-render the JSON of their deltas once, when built (the
private ``_deltas``, ``_text_deltas`` and ``_arg_deltas`` fields, read by ``_render``), so that
a reply replayed for thousands of requests (a benchmark's default reply) costs no JSON
encoding per token.
"""

from __future__ import annotations

import enum
import json
import reprlib
import types
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import attrs
import h11

from .._validators import at_least, non_negative, optional

__all__ = [
    "AUTO_USAGE",
    "REPLY_TYPES",
    "AutoUsage",
    "ErrorReply",
    "RawReply",
    "Reply",
    "ScriptedToolCall",
    "TextReply",
    "ToolCallReply",
    "Usage",
    "numbered_tokens",
]


class AutoUsage(enum.Enum):
    """Type of :data:`AUTO_USAGE`."""

    AUTO = "auto"


AUTO_USAGE: Final = AutoUsage.AUTO
"""Default ``usage`` of scripted replies: computed from the request and the reply.

``prompt_tokens`` is the number of characters of the request's message contents divided by 4
(rounded up); ``completion_tokens`` is the number of streamed deltas (content tokens, reasoning
tokens and tool-call fragments)."""


# ---- converters and validators --------------------------------------------------------------


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise TypeError("expected a sequence of strings, not a single string")
    out = tuple(value)
    for item in out:
        if not isinstance(item, str):
            raise TypeError(f"expected strings, got {reprlib.repr(item)}")
    return out


def _str(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attr.name} must be a str, got {reprlib.repr(value)}")


def _name(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{attr.name} must be a non-empty str, got {reprlib.repr(value)}")


# The server frames every body itself: a reply may not set these.
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})


def _headers(value: Mapping[str, str]) -> Mapping[str, str]:
    """Headers checked where the reply is built (a bad one made the server drop the
    connection when the reply was played), as a read-only copy."""
    if not isinstance(value, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, got {reprlib.repr(value)}")
    copied = dict(value)
    for name, item in copied.items():
        if not isinstance(name, str) or not isinstance(item, str):
            raise TypeError(
                f"headers must map str to str, got {reprlib.repr(name)}: {reprlib.repr(item)}"
            )
        if name.lower() in _FRAMING_HEADERS:
            raise ValueError(f"header {name!r} is set by the server, not by a reply")
        try:
            encoded = [(name.encode("latin-1"), item.encode("latin-1"))]
            h11.Response(status_code=200, headers=encoded)  # h11's own checks of names, values
        except (UnicodeEncodeError, h11.LocalProtocolError) as exc:
            raise ValueError(
                f"header {reprlib.repr(name)}: {reprlib.repr(item)} cannot be sent "
                f"in HTTP/1.1 ({exc})"
            ) from None
    return types.MappingProxyType(copied)


def _int_tuple_or_none(value: Iterable[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    out = tuple(value)
    if any(not isinstance(size, int) or size < 0 for size in out):
        raise ValueError(f"chunk sizes must be non-negative integers, got {out!r}")
    return out


def _arguments_str(value: str | Mapping[str, Any]) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _bytes(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"body must be bytes (encode text first), got {type(value).__name__}")
    return bytes(value)


def _header_value(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    _headers({attr.name.replace("_", "-"): value})


def _count(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attr.name} must be an int, got {reprlib.repr(value)}")


def _call_tuple(value: Iterable[ScriptedToolCall]) -> tuple[ScriptedToolCall, ...]:
    out = tuple(value)
    for call in out:
        if not isinstance(call, ScriptedToolCall):
            raise TypeError(f"expected ScriptedToolCall, got {reprlib.repr(call)}")
    if not out:
        raise ValueError("a ToolCallReply needs at least one call (a TextReply answers without)")
    return out


_NO_BODY: Final = frozenset({204, 205, 304})


def _with_body(_inst: Any, attr: attrs.Attribute[Any], value: int) -> None:
    if value in _NO_BODY:
        raise ValueError(f"{attr.name} {value} cannot carry a body; this reply sends one")


_STATUS: Final = [at_least(200), attrs.validators.le(999), _with_body]
"""An HTTP status the server can send with a body (no 1xx, 204, 205 or 304)."""


def _fault_field() -> Any:
    return attrs.field(default=None, kw_only=True, validator=optional(at_least(0)))


def _delay_field() -> Any:
    return attrs.field(default=0.0, kw_only=True, validator=non_negative)


@attrs.frozen
class Usage:
    """Token usage reported by a reply (``total_tokens`` defaults to the sum)."""

    prompt_tokens: int = attrs.field(validator=_count)
    completion_tokens: int = attrs.field(validator=_count)
    total_tokens: int | None = attrs.field(default=None, validator=optional(_count))
    reasoning_tokens: int | None = attrs.field(default=None, validator=optional(_count))
    """When set, reported as ``completion_tokens_details.reasoning_tokens``."""
    cached_tokens: int | None = attrs.field(default=None, validator=optional(_count))
    """When set, reported as ``prompt_tokens_details.cached_tokens``."""

    def to_json(self) -> dict[str, Any]:
        """The OpenAI ``usage`` object."""
        total = self.total_tokens
        if total is None:
            total = self.prompt_tokens + self.completion_tokens
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }
        if self.reasoning_tokens is not None:
            out["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        if self.cached_tokens is not None:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


# ---- pre-rendered deltas ------------------------------------------------------------------


def _js(value: Any) -> str:
    return json.dumps(value)


def _text_deltas(reply: TextReply) -> tuple[str, ...]:
    reasoning = ['{"reasoning_content":' + _js(token) + "}" for token in reply.reasoning]
    content = ['{"content":' + _js(token) + "}" for token in reply.tokens]
    return (*reasoning, *content)


def _tool_text_deltas(reply: ToolCallReply) -> tuple[str, ...]:
    return tuple('{"content":' + _js(token) + "}" for token in reply.text_tokens)


def _tool_arg_deltas(reply: ToolCallReply) -> tuple[tuple[str, ...], ...]:
    size = reply.args_fragment_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return ()  # attrs validates after defaults are made: let the validator say so
    out: list[tuple[str, ...]] = []
    for index, call in enumerate(reply.calls):
        args = call.arguments
        out.append(
            tuple(
                f'{{"tool_calls":[{{"index":{index},"function":{{"arguments":'
                f"{_js(args[start : start + size])}}}}}]}}"
                for start in range(0, len(args), size)
            )
        )
    return tuple(out)


# ---- the replies ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _StreamedReply:
    """The fields :class:`TextReply` and :class:`ToolCallReply` share (all keyword-only):
    pacing (``token_delay``, ``first_token_delay``), ``usage``, ``include_role_chunk`` and the
    faults (``error_after``, ``drop_after``, ``stall_after``, ``error_message``,
    ``error_code``), documented on :class:`TextReply`."""

    token_delay: float = _delay_field()
    first_token_delay: float = _delay_field()
    usage: Usage | AutoUsage | None = attrs.field(default=AUTO_USAGE, kw_only=True)
    include_role_chunk: bool = attrs.field(default=True, kw_only=True)
    error_after: int | None = _fault_field()
    drop_after: int | None = _fault_field()
    stall_after: int | None = _fault_field()
    error_message: str = attrs.field(default="scripted stream error", kw_only=True, validator=_str)
    error_code: str | None = attrs.field(
        default="scripted_error", kw_only=True, validator=optional(_str)
    )


@attrs.frozen
class TextReply(_StreamedReply):
    """A streamed assistant text answer, one delta per token.

    The stream is: a role chunk (unless ``include_role_chunk`` is false), one
    ``delta.reasoning_content`` chunk per ``reasoning`` token, one ``delta.content`` chunk per
    token, a finish chunk carrying ``finish_reason``, a usage chunk (``choices: []``) when the
    request asked for ``stream_options.include_usage`` and ``usage`` is not ``None``, then
    ``data: [DONE]``.

    Timing: the headers are sent at once; ``first_token_delay`` passes before the role chunk;
    ``token_delay`` passes between two deltas. A non-streamed request waits
    ``first_token_delay + token_delay * (deltas - 1)`` and gets one JSON object.

    Faults count *deltas* (reasoning tokens, content tokens and, for :class:`ToolCallReply`,
    tool-call fragments) sent after the role chunk; a count larger than the number of deltas
    fires just before the finish chunk. The fault with the smallest count wins (on a tie:
    stall, drop, error), whatever the number of deltas:

    * ``error_after=N``: after N deltas send ``data: {"error": {...}}`` (``type``
      ``"server_error"``, ``error_message``, ``error_code``) and end the body without
      ``[DONE]``; a non-streamed request gets HTTP 500 with that error object instead;
    * ``drop_after=N``: after N deltas close the connection abruptly (no terminating chunk,
      no ``[DONE]``; a non-streamed request gets no response at all);
    * ``stall_after=N``: after N deltas send nothing more, keeping the connection open until
      the client disconnects or the server stops.
    """

    tokens: tuple[str, ...] = attrs.field(converter=_str_tuple)
    reasoning: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, kw_only=True)
    finish_reason: str = attrs.field(default="stop", kw_only=True, validator=_str)
    _deltas: tuple[str, ...] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_text_deltas, takes_self=True)
    )


@attrs.frozen
class ScriptedToolCall:
    """One tool call of a :class:`ToolCallReply`.

    ``arguments`` is the JSON text sent to the client (a mapping is JSON-encoded for you);
    ``id`` defaults to ``call_<n>``, ``n`` counting the server's auto-generated ids from 1.
    """

    name: str = attrs.field(validator=_name)
    arguments: str = attrs.field(default="{}", converter=_arguments_str)
    id: str | None = attrs.field(default=None, validator=optional(_name))


@attrs.frozen
class ToolCallReply(_StreamedReply):
    """A streamed answer calling tools (OpenAI ``delta.tool_calls`` fragments).

    After the role chunk, ``text_tokens`` stream first as content deltas; then each call in
    turn (index 0, 1, ...): a first fragment with ``index``, ``id``, ``type: "function"``, the
    name and ``arguments: ""``, then the arguments split into fragments of
    ``args_fragment_size`` characters (each with only ``index`` and ``arguments``). Timing,
    usage and faults work as in :class:`TextReply`; every fragment counts as one delta.
    """

    calls: tuple[ScriptedToolCall, ...] = attrs.field(converter=_call_tuple)
    text_tokens: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, kw_only=True)
    args_fragment_size: int = attrs.field(default=8, kw_only=True, validator=at_least(1))
    finish_reason: str = attrs.field(default="tool_calls", kw_only=True, validator=_str)
    _text_deltas: tuple[str, ...] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_tool_text_deltas, takes_self=True)
    )
    _arg_deltas: tuple[tuple[str, ...], ...] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_tool_arg_deltas, takes_self=True)
    )


@attrs.frozen
class ErrorReply:
    """A (non-streamed) HTTP error with an OpenAI-style body, for streamed requests too.

    The body is ``{"error": {"message", "type", "param": null, "code"}}``; ``headers`` are
    added to the response (e.g. ``{"Retry-After": "1"}`` with status 429); ``delay`` passes
    before the response is sent.
    """

    status: int = attrs.field(validator=_STATUS)
    message: str = attrs.field(validator=_str)
    type: str = attrs.field(default="invalid_request_error", kw_only=True, validator=_str)
    code: str | None = attrs.field(default=None, kw_only=True, validator=optional(_str))
    headers: Mapping[str, str] = attrs.field(
        factory=dict, kw_only=True, hash=False, converter=_headers
    )
    delay: float = _delay_field()


@attrs.frozen
class RawReply:
    """Raw response bytes (e.g. a captured SSE fixture), sent as a chunked body.

    With ``chunk_sizes``, the body is written in pieces of those sizes (one write, and one
    HTTP chunk, per piece; what the sizes do not cover is the last piece), with
    ``delay_between_chunks`` between two pieces. ``headers`` are added to the response.
    """

    body: bytes = attrs.field(converter=_bytes)
    chunk_sizes: tuple[int, ...] | None = attrs.field(
        default=None, converter=_int_tuple_or_none, kw_only=True
    )
    delay_between_chunks: float = _delay_field()
    status: int = attrs.field(default=200, kw_only=True, validator=_STATUS)
    content_type: str = attrs.field(
        default="text/event-stream", kw_only=True, validator=[_str, _header_value]
    )
    headers: Mapping[str, str] = attrs.field(
        factory=dict, kw_only=True, hash=False, converter=_headers
    )

    def pieces(self) -> list[bytes]:
        """The body split as it will be written (empty pieces are skipped)."""
        if self.chunk_sizes is None:
            return [self.body] if self.body else []
        out: list[bytes] = []
        pos = 0
        for size in self.chunk_sizes:
            piece = self.body[pos : pos + size]
            pos += size
            if piece:
                out.append(piece)
        if pos < len(self.body):
            out.append(self.body[pos:])
        return out


Reply: TypeAlias = TextReply | ToolCallReply | ErrorReply | RawReply
"""A scripted reply."""

REPLY_TYPES: Final = (TextReply, ToolCallReply, ErrorReply, RawReply)
"""The classes of :data:`Reply`, for ``isinstance``."""


def numbered_tokens(count: int) -> list[str]:
    """``["tok0 ", "tok1 ", ...]``: ``count`` distinct, easily checked tokens."""
    return [f"tok{i} " for i in range(count)]
