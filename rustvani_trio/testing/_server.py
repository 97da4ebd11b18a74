"""The scripted OpenAI-compatible server: listening, routing, the reply queue, recording.

How a reply is written to the wire lives in :mod:`._play` and :mod:`._render`; the HTTP/1.1
plumbing in :mod:`._http`.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import h11
import trio

from .._validators import at_least
from . import _play
from ._http import HttpConnection, IncomingRequest, only_client_errors
from ._play import Outcome
from ._recorded import RecordedRequest, ScriptItem, parse_json_body
from ._render import StreamPlan, error_body
from ._replies import REPLY_TYPES, ErrorReply, RawReply, Reply
from ._x_script import ScriptError, XScriptCache

__all__ = ["ScriptedServer", "open_scripted_server"]

logger = logging.getLogger("rustvani_trio.testing.server")

_CHAT_PATH: Final = "/v1/chat/completions"
_MODELS_PATH: Final = "/v1/models"


def _cut(text: str, limit: int = 200) -> str:
    """``text`` cut for an error message or a log line."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _counter() -> itertools.count[int]:
    return itertools.count(1)


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
    :func:`numbered_tokens` (at most 100,000); with ``tool_call`` the reply is a
    :class:`ToolCallReply` and the tokens are its text tokens. Unknown keys, non-finite
    delays and values of the wrong type get HTTP 400 naming the field.

    The response's ``model`` echoes the request's ``model`` (``model`` when absent).
    """

    host: str = attrs.field(default="127.0.0.1", validator=attrs.validators.instance_of(str))
    port: int = attrs.field(default=0, validator=[at_least(0), attrs.validators.le(65535)])
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
    _call_ids: itertools.count[int] = attrs.field(factory=_counter, init=False)
    _connection_ids: itertools.count[int] = attrs.field(factory=_counter, init=False)
    _x_script: XScriptCache = attrs.field(factory=XScriptCache, init=False)

    # ---- scripting -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>/v1``, the OpenAI ``base_url``; only once serving."""
        if self._base_url is None:
            raise RuntimeError("the scripted server is not serving yet")
        return self._base_url

    def add_reply(self, reply: ScriptItem) -> None:
        """Queue one reply (FIFO): a reply object or a ``(RecordedRequest) -> reply``."""
        if not isinstance(reply, REPLY_TYPES) and not callable(reply):
            raise TypeError(f"not a reply: {_cut(repr(reply))}")
        if inspect.iscoroutinefunction(reply):
            raise TypeError(
                f"reply callables are called synchronously; {_cut(repr(reply))} is async"
            )
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
            if only_client_errors(exc):
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
                if conn.peer_closed:
                    logger.debug("scripted server: client left mid-request: %s", exc)
                    return
                logger.debug("scripted server: bad request: %r", exc)
                if conn.can_send_response():
                    body = error_body(f"bad request: {exc}", "invalid_request_error", None)
                    await conn.send_full(
                        exc.error_status_hint, _play.JSON_HEADERS, json.dumps(body).encode()
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
        parsed, json_error = parse_json_body(incoming.body)
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
            json_error=json_error,
        )
        self.requests.append(record)
        self._request_added.set()
        self._request_added = trio.Event()
        return record

    async def _respond(self, conn: HttpConnection, record: RecordedRequest) -> bool:
        """Answer one request; return whether the connection can serve another one."""
        outcome = Outcome.DISCONNECTED
        with conn.watch_disconnect():
            try:
                outcome = await self._dispatch(conn, record)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcome = Outcome.DISCONNECTED
        if outcome is Outcome.DISCONNECTED:
            if conn.flooded:
                logger.warning(
                    "scripted server: connection %d closed during request #%d: the client "
                    "sent more than one request's worth of bytes ahead",
                    record.connection,
                    record.index,
                )
            else:
                logger.debug("scripted server: client left during request #%d", record.index)
            record.disconnected.set()
            return False
        record.completed.set()
        return outcome is Outcome.KEEP

    async def _dispatch(self, conn: HttpConnection, record: RecordedRequest) -> Outcome:
        path = record.path.rstrip("/") or "/"
        if path not in (_CHAT_PATH, _MODELS_PATH):
            return await _play.send_error(
                conn, record, 404, f"scripted server: unknown path {record.path}", code="not_found"
            )
        allowed = ("POST",) if path == _CHAT_PATH else ("GET", "HEAD")
        if record.method not in allowed:
            return await _play.send_error(
                conn, record, 405, f"scripted server: {record.method} not allowed on {path}"
            )
        if path == _CHAT_PATH:
            return await self._chat(conn, record)
        models = {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}],
        }
        return await _play.send_json(conn, record, 200, models)

    # ---- chat completions ------------------------------------------------------------------

    def _resolve_reply(self, record: RecordedRequest, body: Mapping[str, Any]) -> Reply | None:
        if self.allow_x_script and "x_script" in body:
            return self._x_script.reply(body["x_script"])
        item: ScriptItem
        if self._queue:
            item = self._queue.popleft()
        elif self.default_reply is not None:
            item = self.default_reply
        else:
            return None
        if isinstance(item, REPLY_TYPES):
            return item
        reply = item(record)
        if inspect.isawaitable(reply):
            if inspect.iscoroutine(reply):
                reply.close()  # never awaited: no "coroutine was never awaited" warning
            raise TypeError(
                f"reply callable {_cut(repr(item))} returned an awaitable: reply callables are "
                "called synchronously and return a reply"
            )
        if not isinstance(reply, REPLY_TYPES):
            raise TypeError(f"reply callable returned {_cut(repr(reply))}, not a reply")
        return reply

    async def _chat(self, conn: HttpConnection, record: RecordedRequest) -> Outcome:
        body = record.json
        if not isinstance(body, dict):
            if record.json_error is not None:
                problem = record.json_error
            elif not record.body:
                problem = "the request has no body (a JSON object was expected)"
            else:
                problem = f"the request body is JSON but not an object (got {type(body).__name__})"
            return await _play.send_error(conn, record, 400, f"scripted server: {problem}")
        try:
            reply = self._resolve_reply(record, body)
        except ScriptError as exc:
            return await _play.send_error(conn, record, 400, f"scripted server: {exc}")
        except Exception as exc:
            logger.warning("scripted server: reply callable failed", exc_info=True)
            message = f"scripted server: reply callable raised {_cut(repr(exc))}"
            return await _play.send_error(conn, record, 500, message, "server_error")
        if reply is None:
            message = f"scripted server: no reply left for request #{record.index}"
            return await _play.send_error(conn, record, 500, message, "server_error")
        record.reply = reply
        if isinstance(reply, ErrorReply):
            return await _play.send_error_reply(conn, record, reply)
        if isinstance(reply, RawReply):
            return await _play.send_raw(conn, record, reply)
        model = body.get("model")
        plan = StreamPlan.build(
            reply,
            record=record,
            model=model if isinstance(model, str) else self.model,
            call_ids=self._call_ids,
            body=body,
        )
        if record.stream:
            return await _play.stream(conn, record, plan)
        return await _play.complete(conn, record, plan)


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
    own_error: BaseException | None = None  # the body's, or the start's (e.g. port in use)
    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(server.serve)
            except Exception as exc:
                own_error = exc
                raise
            try:
                yield server
            except BaseException as exc:
                own_error = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # An error of the ``async with`` body, or of binding the port, comes back wrapped by
        # the nursery: unwrap it, so that ``pytest.raises(...)`` (or ``except OSError``)
        # around the block sees the exception itself.
        if own_error is None or list(group.exceptions) != [own_error]:
            raise
    else:
        return
    raise own_error
