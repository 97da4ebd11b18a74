"""A scripted, OpenAI-compatible chat-completions server for tests, demos and benchmarks.

It is a real HTTP/1.1 server (trio + h11) on a loopback socket: clients such as ``httpx`` or
the ``openai`` SDK talk to it exactly as they talk to the real API. Each
``POST /v1/chat/completions`` consumes one *reply* from a FIFO script::

    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hel", "lo"], token_delay=0.01))
        server.add_reply(ToolCallReply([ScriptedToolCall("get_weather", '{"city": "Paris"}')]))
        ...  # point the client at server.base_url
        (request,) = await server.wait_for_requests(1)

Streamed requests (``"stream": true``) get ``text/event-stream`` responses with
``Transfer-Encoding: chunked``; every SSE event is written to the socket as it is produced, so
clients see tokens arrive one by one. Other requests get a ``chat.completion`` JSON object
built from the same reply. Replies can script faults (an error event mid-stream, an abrupt
close, a stall), HTTP errors (:class:`ErrorReply`) and raw captured bytes (:class:`RawReply`);
a reply can also be a callable that looks at the :class:`RecordedRequest`.

All delays use :func:`trio.sleep`, so an in-process server follows the clock of the trio run
it lives in (see the caveats about ``autojump_clock`` in :func:`open_scripted_server`).

Run ``python -m rustvani_trio.testing.server --help`` for the stand-alone load-generator mode.
"""

from __future__ import annotations

import argparse
import collections
import enum
import itertools
import json
import logging
import signal
import sys
import time
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeAlias

import attrs
import h11
import trio

from ._http import HttpConnection, IncomingRequest

__all__ = [
    "AUTO_USAGE",
    "AutoUsage",
    "ErrorReply",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "ReplyFactory",
    "ScriptItem",
    "ScriptedServer",
    "ScriptedToolCall",
    "TextReply",
    "ToolCallReply",
    "Usage",
    "main",
    "numbered_tokens",
    "open_scripted_server",
]

logger = logging.getLogger("rustvani_trio.testing.server")

# ``python -m rustvani_trio.testing.server`` executes this file as ``__main__`` after the
# package ``rustvani_trio.testing`` (which re-exports this module) has imported it; runpy then
# warns that the module is already in ``sys.modules``. That is harmless here (the command line
# only uses the ``__main__`` copy), so silence exactly that message.
warnings.filterwarnings(
    "ignore",
    message=r"'rustvani_trio\.testing\.server' found in sys\.modules",
    category=RuntimeWarning,
)

_CHAT_PATH: Final = "/v1/chat/completions"
_MODELS_PATH: Final = "/v1/models"


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------


class AutoUsage(enum.Enum):
    """Type of :data:`AUTO_USAGE`."""

    AUTO = "auto"


AUTO_USAGE: Final = AutoUsage.AUTO
"""Default ``usage`` of scripted replies: computed from the request and the reply.

``prompt_tokens`` is the number of characters of the request's message contents divided by 4
(rounded up); ``completion_tokens`` is the number of streamed deltas (content tokens, reasoning
tokens and tool-call fragments)."""


@attrs.frozen
class Usage:
    """Token usage reported by a reply (``total_tokens`` defaults to the sum)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    """When set, reported as ``completion_tokens_details.reasoning_tokens``."""
    cached_tokens: int | None = None
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


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise TypeError("expected a sequence of strings, not a single string")
    out = tuple(value)
    for item in out:
        if not isinstance(item, str):
            raise TypeError(f"expected strings, got {item!r}")
    return out


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


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _status_code(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 200 <= value <= 999:
        raise ValueError(f"{attribute.name} must be an HTTP status in 200..999, got {value!r}")


def _fault_field() -> Any:
    return attrs.field(default=None, kw_only=True, validator=_non_negative)


def _delay_field() -> Any:
    return attrs.field(default=0.0, kw_only=True, validator=_non_negative)


def _js(value: Any) -> str:
    return json.dumps(value)


def _text_deltas(reply: TextReply) -> tuple[str, ...]:
    reasoning = ['{"reasoning_content":' + _js(token) + "}" for token in reply.reasoning]
    content = ['{"content":' + _js(token) + "}" for token in reply.tokens]
    return (*reasoning, *content)


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
    error_message: str = attrs.field(default="scripted stream error", kw_only=True)
    error_code: str | None = attrs.field(default="scripted_error", kw_only=True)


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
    fires just before the finish chunk. The first fault reached wins (on a tie: stall, drop,
    error):

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
    finish_reason: str = attrs.field(default="stop", kw_only=True)
    _deltas: tuple[str, ...] = attrs.field(
        init=False, eq=False, repr=False, default=attrs.Factory(_text_deltas, takes_self=True)
    )


@attrs.frozen
class ScriptedToolCall:
    """One tool call of a :class:`ToolCallReply`.

    ``arguments`` is the JSON text sent to the client (a mapping is JSON-encoded for you);
    ``id`` defaults to ``call_<n>``, ``n`` counting the server's auto-generated ids from 1.
    """

    name: str
    arguments: str = attrs.field(default="{}", converter=_arguments_str)
    id: str | None = None


def _call_tuple(value: Iterable[ScriptedToolCall]) -> tuple[ScriptedToolCall, ...]:
    out = tuple(value)
    for call in out:
        if not isinstance(call, ScriptedToolCall):
            raise TypeError(f"expected ScriptedToolCall, got {call!r}")
    return out


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value!r}")


def _tool_text_deltas(reply: ToolCallReply) -> tuple[str, ...]:
    return tuple('{"content":' + _js(token) + "}" for token in reply.text_tokens)


def _tool_arg_deltas(reply: ToolCallReply) -> tuple[tuple[str, ...], ...]:
    size = reply.args_fragment_size
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
    args_fragment_size: int = attrs.field(default=8, kw_only=True, validator=_positive)
    finish_reason: str = attrs.field(default="tool_calls", kw_only=True)
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

    status: int = attrs.field(validator=_status_code)
    message: str
    type: str = attrs.field(default="invalid_request_error", kw_only=True)
    code: str | None = attrs.field(default=None, kw_only=True)
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True, hash=False)
    delay: float = _delay_field()


@attrs.frozen
class RawReply:
    """Raw response bytes (e.g. a captured SSE fixture), sent as a chunked body.

    With ``chunk_sizes``, the body is written in pieces of those sizes (one write, and one
    HTTP chunk, per piece; what the sizes do not cover is the last piece), with
    ``delay_between_chunks`` between two pieces. ``headers`` are added to the response.
    """

    body: bytes
    chunk_sizes: tuple[int, ...] | None = attrs.field(
        default=None, converter=_int_tuple_or_none, kw_only=True
    )
    delay_between_chunks: float = _delay_field()
    status: int = attrs.field(default=200, kw_only=True, validator=_status_code)
    content_type: str = attrs.field(default="text/event-stream", kw_only=True)
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True, hash=False)

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


_REPLY_TYPES: Final = (TextReply, ToolCallReply, ErrorReply, RawReply)


def numbered_tokens(count: int) -> list[str]:
    """``["tok0 ", "tok1 ", ...]``: ``count`` distinct, easily checked tokens."""
    return [f"tok{i} " for i in range(count)]


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class RecordedRequest:
    """One request as the server received it, with events tracking its reply.

    ``index`` counts every request the server received, from 1. ``headers`` has lowercased
    names (repeated headers joined with ``", "``); ``json`` is the parsed body, or ``None``
    when the body is empty or not JSON; ``query`` holds the query parameters (last value
    wins).
    """

    index: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any
    http_version: str = "1.1"
    connection: int = 0
    """Number of the connection the request came on (from 1): equal numbers mean that the
    client reused a keep-alive connection."""
    reply: Reply | None = None
    """The reply that was served (``None`` for requests answered by the server itself)."""
    status: int | None = None
    """The HTTP status sent (``None`` while no response was started: a non-streamed request
    being delayed, stalled or dropped)."""
    disconnected: trio.Event = attrs.field(factory=trio.Event, repr=False)
    """Set when the client closed the connection before the reply was finished."""
    completed: trio.Event = attrs.field(factory=trio.Event, repr=False)
    """Set when the reply was played to its end: fully written, or a scripted ``error_after``
    / ``drop_after`` fault carried out. Never set for a stall or a client disconnect."""

    @property
    def messages(self) -> list[Any]:
        """The request's ``messages`` (empty when absent)."""
        if isinstance(self.json, dict):
            messages = self.json.get("messages")
            if isinstance(messages, list):
                return messages
        return []

    @property
    def stream(self) -> bool:
        """True when the request asked for a streamed response."""
        return isinstance(self.json, dict) and self.json.get("stream") is True

    @property
    def include_usage(self) -> bool:
        """True when the request asked for ``stream_options.include_usage``."""
        if not isinstance(self.json, dict):
            return False
        options = self.json.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))


Reply: TypeAlias = TextReply | ToolCallReply | ErrorReply | RawReply
"""A scripted reply."""
ReplyFactory: TypeAlias = Callable[[RecordedRequest], Reply]
"""A callable choosing the reply from the request."""
ScriptItem: TypeAlias = Reply | ReplyFactory
"""What the reply queue holds."""


class _ScriptError(ValueError):
    """An invalid ``x_script`` request field."""


class _Outcome(enum.Enum):
    KEEP = "keep"  # reply finished, the connection can serve another request
    CLOSE = "close"  # reply finished (a scripted drop), the connection is closed
    DISCONNECTED = "disconnected"  # the client went away first


def _error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    chars = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
    return (chars + 3) // 4


_JSON_HEADERS: Final = ((b"content-type", b"application/json"),)
_SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
)
_CLIENT_ERRORS: Final = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.RemoteProtocolError,
    OSError,
)


def _only_client_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_client_errors(inner) for inner in exc.exceptions)
    return isinstance(exc, _CLIENT_ERRORS)


def _headers_bytes(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class ScriptedServer:
    """The scripted OpenAI-compatible server. Start it with :meth:`serve` (or
    :func:`open_scripted_server`), script it with :meth:`add_reply`.

    Routes: ``POST /v1/chat/completions`` (one scripted reply per request), ``GET /v1/models``
    (a list holding ``model``); anything else gets a 404 (or 405) OpenAI-style error. Every
    request is recorded in :attr:`requests`.

    A chat request consumes the next queued reply; with an empty queue ``default_reply`` is
    used (it is never consumed), and without one the answer is HTTP 500 ``scripted server: no
    reply left for request #N``. A callable reply is called with the :class:`RecordedRequest`
    and returns the reply to play (if it raises, the client gets HTTP 500 with the exception).

    With ``allow_x_script`` (the default), a request whose JSON body has an ``"x_script"``
    object gets a reply built from it instead, and the queue is left alone::

        {"tokens": 200 | ["a", "b"], "token_delay": 0.002, "first_token_delay": 0.0,
         "tool_call": {"name": "f", "arguments": "{...}" | {...}, "id": "..."} | [...],
         "finish_reason": "...", "error_after": N, "drop_after": N, "stall_after": N}

    ``tokens`` (default 16, or 0 with a tool call) as a number means
    :func:`numbered_tokens`; with ``tool_call`` the reply is a :class:`ToolCallReply` and the
    tokens are its text tokens.

    The response's ``model`` echoes the request's ``model`` (``model`` when absent).
    """

    host: str = "127.0.0.1"
    port: int = 0
    """The port to bind; after :meth:`serve` started, the bound port."""
    default_reply: ScriptItem | None = attrs.field(default=None, kw_only=True)
    model: str = attrs.field(default="scripted-model", kw_only=True)
    allow_x_script: bool = attrs.field(default=True, kw_only=True)
    requests: list[RecordedRequest] = attrs.field(factory=list, init=False)
    """Every request received so far, in arrival order."""
    _queue: collections.deque[ScriptItem] = attrs.field(factory=collections.deque, init=False)
    _base_url: str | None = attrs.field(default=None, init=False)
    _request_added: trio.Event = attrs.field(factory=trio.Event, init=False)
    _cancel_scope: trio.CancelScope | None = attrs.field(default=None, init=False)
    _started: bool = attrs.field(default=False, init=False)
    _call_ids: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _connection_ids: itertools.count[int] = attrs.field(
        factory=lambda: itertools.count(1), init=False
    )
    _x_cache: dict[str, Reply] = attrs.field(factory=dict, init=False)

    # ---- scripting -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>/v1``, the OpenAI ``base_url``; only once serving."""
        if self._base_url is None:
            raise RuntimeError("the scripted server is not serving yet")
        return self._base_url

    def add_reply(self, reply: ScriptItem) -> None:
        """Queue one reply (FIFO): a reply object or a ``(RecordedRequest) -> reply``."""
        if not isinstance(reply, _REPLY_TYPES) and not callable(reply):
            raise TypeError(f"not a reply: {reply!r}")
        self._queue.append(reply)

    def add_replies(self, replies: Iterable[ScriptItem]) -> None:
        """Queue several replies, in order."""
        for reply in replies:
            self.add_reply(reply)

    @property
    def pending_replies(self) -> int:
        """How many queued replies are left."""
        return len(self._queue)

    def clear_replies(self) -> None:
        """Drop every queued reply."""
        self._queue.clear()

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Wait until ``count`` requests were received; return the first ``count``."""
        if len(self.requests) >= count:
            await trio.lowlevel.checkpoint()
        while len(self.requests) < count:
            await self._request_added.wait()
        return self.requests[:count]

    # ---- serving ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind and serve until cancelled (or :meth:`stop`); ``nursery.start`` returns
        :attr:`base_url`.

        With ``port=0`` and a host resolving to several addresses only one listener is kept
        (IPv4 first), so that :attr:`base_url` names the one port actually served.
        """
        if self._started:
            raise RuntimeError("a ScriptedServer can serve only once")
        self._started = True
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        if self.port == 0 and len(listeners) > 1:
            listeners.sort(key=lambda lst: lst.socket.family != trio.socket.AF_INET)
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        sockname = listeners[0].socket.getsockname()
        address, self.port = sockname[0], sockname[1]
        if address in ("0.0.0.0", ""):
            address = "127.0.0.1"
        elif address == "::":
            address = "::1"
        host = f"[{address}]" if ":" in address else address
        self._base_url = f"http://{host}:{self.port}/v1"
        try:
            with trio.CancelScope() as scope:
                self._cancel_scope = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(trio.serve_listeners, self._handle_stream, listeners)
                    logger.debug("scripted server listening on %s", self._base_url)
                    task_status.started(self._base_url)
        finally:
            self._cancel_scope = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def stop(self) -> None:
        """Stop serving: :meth:`serve` returns (open connections are closed)."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _handle_stream(self, stream: trio.SocketStream) -> None:
        conn = HttpConnection(stream)
        number = next(self._connection_ids)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run_reader)
                try:
                    await self._serve_connection(conn, number)
                finally:
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            if _only_client_errors(exc):
                logger.debug("scripted server: connection closed on error: %r", exc)
            else:
                logger.exception("scripted server: unexpected error in a connection")
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, conn: HttpConnection, number: int) -> None:
        while True:
            try:
                incoming = await conn.next_request()
            except h11.RemoteProtocolError as exc:
                logger.debug("scripted server: bad request: %r", exc)
                if conn.can_send_response() and not conn.peer_closed:
                    body = _error_body(f"bad request: {exc}", "invalid_request_error", None)
                    await conn.send_full(
                        exc.error_status_hint, _JSON_HEADERS, json.dumps(body).encode()
                    )
                return
            if incoming is None:
                return
            record = self._record(incoming, number)
            if not await self._respond(conn, record) or not conn.can_keep_alive():
                return

    def _record(self, incoming: IncomingRequest, connection: int) -> RecordedRequest:
        split = urllib.parse.urlsplit(incoming.target)
        headers: dict[str, str] = {}
        for name, value in incoming.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        parsed: Any = None
        if incoming.body:
            try:
                parsed = json.loads(incoming.body)
            except ValueError:
                parsed = None
        record = RecordedRequest(
            index=len(self.requests) + 1,
            method=incoming.method,
            path=split.path,
            query=dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=incoming.body,
            json=parsed,
            http_version=incoming.http_version,
            connection=connection,
        )
        self.requests.append(record)
        self._request_added.set()
        self._request_added = trio.Event()
        return record

    async def _respond(self, conn: HttpConnection, record: RecordedRequest) -> bool:
        """Answer one request; return whether the connection can serve another one."""
        outcome = _Outcome.DISCONNECTED
        with conn.watch_disconnect():
            try:
                outcome = await self._dispatch(conn, record)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcome = _Outcome.DISCONNECTED
        if outcome is _Outcome.DISCONNECTED:
            logger.debug("scripted server: client left during request #%d", record.index)
            record.disconnected.set()
            return False
        record.completed.set()
        return outcome is _Outcome.KEEP

    async def _send_json(
        self,
        conn: HttpConnection,
        record: RecordedRequest,
        status: int,
        payload: Any,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> _Outcome:
        record.status = status
        body = json.dumps(payload).encode()
        await conn.send_full(status, [*_JSON_HEADERS, *headers], body)
        return _Outcome.KEEP

    async def _send_error(
        self,
        conn: HttpConnection,
        record: RecordedRequest,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
    ) -> _Outcome:
        return await self._send_json(conn, record, status, _error_body(message, type_, code))

    async def _dispatch(self, conn: HttpConnection, record: RecordedRequest) -> _Outcome:
        path = record.path.rstrip("/") or "/"
        if path == _CHAT_PATH:
            if record.method != "POST":
                return await self._send_error(
                    conn, record, 405, f"scripted server: {record.method} not allowed on {path}"
                )
            return await self._chat(conn, record)
        if path == _MODELS_PATH:
            if record.method not in ("GET", "HEAD"):
                return await self._send_error(
                    conn, record, 405, f"scripted server: {record.method} not allowed on {path}"
                )
            models = {
                "object": "list",
                "data": [
                    {"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}
                ],
            }
            return await self._send_json(conn, record, 200, models)
        return await self._send_error(
            conn, record, 404, f"scripted server: unknown path {record.path}", code="not_found"
        )

    # ---- chat completions ------------------------------------------------------------------

    def _resolve_reply(self, record: RecordedRequest, body: Mapping[str, Any]) -> Reply | None:
        if self.allow_x_script and "x_script" in body:
            return self._x_script_reply(body["x_script"])
        item: ScriptItem
        if self._queue:
            item = self._queue.popleft()
        elif self.default_reply is not None:
            item = self.default_reply
        else:
            return None
        if isinstance(item, _REPLY_TYPES):
            return item
        reply = item(record)
        if not isinstance(reply, _REPLY_TYPES):
            raise TypeError(f"reply callable returned {reply!r}, not a reply")
        return reply

    def _x_script_reply(self, spec: Any) -> Reply:
        if not isinstance(spec, dict):
            raise _ScriptError("x_script must be a JSON object")
        key = json.dumps(spec, sort_keys=True)
        reply = self._x_cache.get(key)
        if reply is None:
            try:
                reply = _reply_from_x_script(spec)
            except (TypeError, ValueError, KeyError) as exc:
                raise _ScriptError(f"invalid x_script: {exc}") from exc
            if len(self._x_cache) >= 256:
                self._x_cache.clear()
            self._x_cache[key] = reply
        return reply

    async def _chat(self, conn: HttpConnection, record: RecordedRequest) -> _Outcome:
        body = record.json
        if not isinstance(body, dict):
            return await self._send_error(
                conn, record, 400, "scripted server: the request body is not a JSON object"
            )
        try:
            reply = self._resolve_reply(record, body)
        except _ScriptError as exc:
            return await self._send_error(conn, record, 400, f"scripted server: {exc}")
        except Exception as exc:
            logger.warning("scripted server: reply callable failed", exc_info=True)
            return await self._send_error(
                conn,
                record,
                500,
                f"scripted server: reply callable raised {exc!r}",
                "server_error",
            )
        if reply is None:
            return await self._send_error(
                conn,
                record,
                500,
                f"scripted server: no reply left for request #{record.index}",
                "server_error",
            )
        record.reply = reply
        if isinstance(reply, ErrorReply):
            if reply.delay > 0:
                await trio.sleep(reply.delay)
            return await self._send_json(
                conn,
                record,
                reply.status,
                _error_body(reply.message, reply.type, reply.code),
                _headers_bytes(reply.headers),
            )
        if isinstance(reply, RawReply):
            return await self._send_raw(conn, record, reply)
        model = body.get("model")
        plan = _Plan.build(
            reply,
            record=record,
            model=model if isinstance(model, str) else self.model,
            call_ids=self._call_ids,
            body=body,
        )
        if record.stream:
            return await self._stream(conn, record, plan)
        return await self._complete(conn, record, plan)

    async def _send_raw(
        self, conn: HttpConnection, record: RecordedRequest, reply: RawReply
    ) -> _Outcome:
        headers = [(b"content-type", reply.content_type.encode("latin-1"))]
        headers += _headers_bytes(reply.headers)
        await conn.start_response(reply.status, headers, chunked=True)
        record.status = reply.status
        pieces = reply.pieces()
        for i, piece in enumerate(pieces[:-1]):
            if i and reply.delay_between_chunks > 0:
                await trio.sleep(reply.delay_between_chunks)
            await conn.send_body(piece)
        if len(pieces) > 1 and reply.delay_between_chunks > 0:
            await trio.sleep(reply.delay_between_chunks)
        await conn.end_body(pieces[-1] if pieces else b"")
        return _Outcome.KEEP

    async def _stream(self, conn: HttpConnection, record: RecordedRequest, plan: _Plan) -> _Outcome:
        reply = plan.reply
        headers = [*_SSE_HEADERS, (b"x-request-id", b"req_scripted_%d" % record.index)]
        await conn.start_response(200, headers, chunked=True)
        record.status = 200
        if reply.first_token_delay > 0:
            await trio.sleep(reply.first_token_delay)
        head, tail = plan.head, plan.tail
        if reply.include_role_chunk:
            await conn.send_body((head + plan.role_delta + tail).encode())
        deltas = plan.deltas
        fault_at, fault = plan.fault
        delay = reply.token_delay
        for i, delta in enumerate(deltas):
            if i and delay > 0:
                await trio.sleep(delay)
            if i == fault_at:
                return await self._stream_fault(conn, plan, fault)
            await conn.send_body((head + delta + tail).encode())
        if fault_at == len(deltas):
            return await self._stream_fault(conn, plan, fault)
        await conn.send_body(plan.finish_chunk().encode())
        if plan.usage is not None and record.include_usage:
            await conn.send_body(plan.usage_chunk().encode())
        await conn.end_body(b"data: [DONE]\n\n")
        return _Outcome.KEEP

    async def _stream_fault(self, conn: HttpConnection, plan: _Plan, fault: str) -> _Outcome:
        if fault == "stall":
            await trio.sleep_forever()
        if fault == "drop":
            await conn.abort()
            return _Outcome.CLOSE
        reply = plan.reply
        error = {
            "error": {
                "message": reply.error_message,
                "type": "server_error",
                "code": reply.error_code,
            }
        }
        await conn.end_body(b"data: " + json.dumps(error).encode() + b"\n\n")
        return _Outcome.KEEP

    async def _complete(
        self, conn: HttpConnection, record: RecordedRequest, plan: _Plan
    ) -> _Outcome:
        reply = plan.reply
        fault_at, fault = plan.fault
        produced = len(plan.deltas) if fault_at is None else fault_at
        wait = reply.first_token_delay + reply.token_delay * max(0, produced - 1)
        if wait > 0:
            await trio.sleep(wait)
        if fault == "stall":
            await trio.sleep_forever()
        if fault == "drop":
            await conn.abort()
            return _Outcome.CLOSE
        if fault == "error":
            return await self._send_error(
                conn, record, 500, reply.error_message, "server_error", reply.error_code
            )
        return await self._send_json(conn, record, 200, plan.completion())


def _first_fault(reply: TextReply | ToolCallReply, count: int) -> tuple[int | None, str]:
    best: tuple[int | None, str] = (None, "")
    for name, at in (
        ("stall", reply.stall_after),
        ("drop", reply.drop_after),
        ("error", reply.error_after),
    ):
        if at is not None:
            at = min(at, count)
            if best[0] is None or at < best[0]:
                best = (at, name)
    return best


@attrs.define(eq=False)
class _Plan:
    """What one Text/ToolCall reply sends for one request (SSE text pieces, ids, usage)."""

    reply: TextReply | ToolCallReply
    response_id: str
    created: int
    model: str
    deltas: Sequence[str]
    role_delta: str
    head: str
    tail: str
    usage_null: str
    usage: Usage | None
    fault: tuple[int | None, str]
    call_ids: list[str]

    @classmethod
    def build(
        cls,
        reply: TextReply | ToolCallReply,
        *,
        record: RecordedRequest,
        model: str,
        call_ids: Iterator[int],
        body: Mapping[str, Any],
    ) -> _Plan:
        response_id = f"chatcmpl-scripted-{record.index}"
        created = int(time.time())
        ids: list[str] = []
        deltas: Sequence[str]
        if isinstance(reply, TextReply):
            deltas = reply._deltas
            role_delta = '{"role":"assistant","content":""}'
        else:
            parts = list(reply._text_deltas)
            for index, (call, fragments) in enumerate(
                zip(reply.calls, reply._arg_deltas, strict=True)
            ):
                call_id = call.id if call.id is not None else f"call_{next(call_ids)}"
                ids.append(call_id)
                parts.append(
                    f'{{"tool_calls":[{{"index":{index},"id":{_js(call_id)},"type":"function",'
                    f'"function":{{"name":{_js(call.name)},"arguments":""}}}}]}}'
                )
                parts.extend(fragments)
            deltas = parts
            role_delta = (
                '{"role":"assistant","content":""}'
                if reply.text_tokens
                else '{"role":"assistant","content":null}'
            )
        usage: Usage | None
        if isinstance(reply.usage, AutoUsage):
            reasoning = len(reply.reasoning) if isinstance(reply, TextReply) else 0
            usage = Usage(
                prompt_tokens=_prompt_tokens(body),
                completion_tokens=len(deltas),
                reasoning_tokens=reasoning or None,
            )
        else:
            usage = reply.usage
        usage_null = ',"usage":null' if record.include_usage else ""
        head = (
            f'data: {{"id":{_js(response_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{_js(model)},"choices":[{{"index":0,"delta":'
        )
        tail = ',"logprobs":null,"finish_reason":null}]' + usage_null + "}\n\n"
        return cls(
            reply=reply,
            response_id=response_id,
            created=created,
            model=model,
            deltas=deltas,
            role_delta=role_delta,
            head=head,
            tail=tail,
            usage_null=usage_null,
            usage=usage,
            fault=_first_fault(reply, len(deltas)),
            call_ids=ids,
        )

    def finish_chunk(self) -> str:
        return (
            self.head
            + '{},"logprobs":null,"finish_reason":'
            + _js(self.reply.finish_reason)
            + "}]"
            + self.usage_null
            + "}\n\n"
        )

    def usage_chunk(self) -> str:
        assert self.usage is not None
        return (
            "data: "
            + json.dumps(
                {
                    "id": self.response_id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage.to_json(),
                }
            )
            + "\n\n"
        )

    def completion(self) -> dict[str, Any]:
        """The non-streamed ``chat.completion`` object."""
        reply = self.reply
        message: dict[str, Any] = {"role": "assistant"}
        if isinstance(reply, TextReply):
            message["content"] = "".join(reply.tokens)
            if reply.reasoning:
                message["reasoning_content"] = "".join(reply.reasoning)
        else:
            message["content"] = "".join(reply.text_tokens) if reply.text_tokens else None
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call, call_id in zip(reply.calls, self.call_ids, strict=True)
            ]
        out: dict[str, Any] = {
            "id": self.response_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
        }
        if self.usage is not None:
            out["usage"] = self.usage.to_json()
        return out


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
    return float(value)


def _reply_from_x_script(spec: Mapping[str, Any]) -> Reply:
    raw_calls = spec.get("tool_call")
    if raw_calls is None:
        raw_calls = []
    elif isinstance(raw_calls, dict):
        raw_calls = [raw_calls]
    elif not isinstance(raw_calls, list):
        raise TypeError("tool_call must be an object or a list of objects")
    calls = [
        ScriptedToolCall(
            name=str(call["name"]),
            arguments=call.get("arguments", "{}"),
            id=call.get("id"),
        )
        for call in raw_calls
    ]
    raw_tokens = spec.get("tokens", 0 if calls else 16)
    tokens: list[str]
    if isinstance(raw_tokens, bool):
        raise TypeError("tokens must be a count or a list of strings")
    if isinstance(raw_tokens, int):
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
        common["finish_reason"] = str(spec["finish_reason"])
    if calls:
        return ToolCallReply(calls, text_tokens=tokens, **common)
    return TextReply(tokens, **common)


# --------------------------------------------------------------------------------------------
# Context manager
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def open_scripted_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    default_reply: ScriptItem | None = None,
    model: str = "scripted-model",
    allow_x_script: bool = True,
) -> AsyncIterator[ScriptedServer]:
    """Serve a :class:`ScriptedServer` in its own nursery for the duration of the block.

    On exit the server is cancelled, open connections (even stalled ones) included; no task is
    left behind.

    Clocks: the server sleeps with :func:`trio.sleep` in the caller's trio run, so under a
    :class:`trio.testing.MockClock` scripted delays pass in virtual time. With pytest-trio's
    ``autojump_clock`` the clock jumps as soon as every task is blocked, *including* tasks
    waiting for socket bytes: this works in-process on Linux (loopback bytes are readable as
    soon as ``send`` returns), but client timeouts jump too (a scripted stall makes an httpx
    read timeout fire at once), and bytes in flight through another process or a slower
    loopback (other OSes) can let virtual time leap past them. Prefer real time with small
    delays, or ``MockClock(autojump_threshold=...)`` with a threshold well above loopback
    latency (e.g. 0.05 s).
    """
    server = ScriptedServer(
        host, port, default_reply=default_reply, model=model, allow_x_script=allow_x_script
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            try:
                yield server
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # An error of the ``async with`` body comes back wrapped by the nursery: unwrap it, so
        # that ``pytest.raises(...)`` around the block sees the body's own exception.
        if body_error is None or list(group.exceptions) != [body_error]:
            raise
    else:
        return
    raise body_error


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rustvani_trio.testing.server",
        description=(
            "Serve a scripted OpenAI-compatible chat-completions API (a load generator for "
            "benchmarks). Every request gets a streamed TextReply of numbered tokens, unless "
            "its JSON body carries an 'x_script' object."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per reply")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument(
        "--first-token-delay", type=float, default=0.0, help="seconds before the first token"
    )
    parser.add_argument("--model", default="scripted-model")
    parser.add_argument("--ready-file", help="write the base URL to this file once serving")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def _run_cli(args: argparse.Namespace) -> None:
    reply = TextReply(
        numbered_tokens(args.tokens),
        token_delay=args.token_delay,
        first_token_delay=args.first_token_delay,
    )
    server = ScriptedServer(args.host, args.port, default_reply=reply, model=args.model)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            base_url: str = await nursery.start(server.serve)
            if args.ready_file:
                # Write then rename, so that a poller never reads a partial file.
                tmp = trio.Path(args.ready_file + ".tmp")
                await tmp.write_text(base_url + "\n")
                await tmp.replace(args.ready_file)
            print(f"READY {base_url}", flush=True)
            async for signum in signals:
                logger.debug("scripted server: signal %d, stopping", signum)
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m rustvani_trio.testing.server``)."""
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    trio.run(_run_cli, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
