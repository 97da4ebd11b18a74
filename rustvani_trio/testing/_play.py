"""Playing one scripted reply onto one HTTP connection (pacing, faults, bodies).

Each function answers one request and returns an :class:`Outcome` that tells the server
whether the connection can serve another request. Client disconnects surface as
:class:`trio.BrokenResourceError` / :class:`trio.ClosedResourceError` (or as the
cancellation of the disconnect watch around the call), never as an outcome.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import trio

from ._http import HttpConnection
from ._recorded import RecordedRequest
from ._render import Fault, StreamPlan, error_body
from ._replies import ErrorReply, RawReply

__all__ = [
    "JSON_HEADERS",
    "Outcome",
    "complete",
    "send_error",
    "send_error_reply",
    "send_json",
    "send_raw",
    "stream",
]

JSON_HEADERS: Final = ((b"content-type", b"application/json"),)
_SSE_HEADERS: Final = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
)


class Outcome(enum.Enum):
    """How answering one request ended."""

    KEEP = "keep"
    """The reply finished; the connection can serve another request."""
    CLOSE = "close"
    """The reply finished with a scripted drop; the connection is closed."""
    DISCONNECTED = "disconnected"
    """The client went away first."""


def _headers_bytes(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def send_json(
    conn: HttpConnection,
    record: RecordedRequest,
    status: int,
    payload: Any,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> Outcome:
    """Send ``payload`` as a complete JSON response."""
    record.status = status
    body = json.dumps(payload).encode()
    await conn.send_full(status, [*JSON_HEADERS, *headers], body)
    return Outcome.KEEP


async def send_error(
    conn: HttpConnection,
    record: RecordedRequest,
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
) -> Outcome:
    """Send an OpenAI-style error response."""
    return await send_json(conn, record, status, error_body(message, type_, code))


async def send_error_reply(
    conn: HttpConnection, record: RecordedRequest, reply: ErrorReply
) -> Outcome:
    """Play an :class:`ErrorReply`: its delay, then its error response."""
    if reply.delay > 0:
        await trio.sleep(reply.delay)
    body = error_body(reply.message, reply.type, reply.code)
    return await send_json(conn, record, reply.status, body, _headers_bytes(reply.headers))


async def send_raw(conn: HttpConnection, record: RecordedRequest, reply: RawReply) -> Outcome:
    """Play a :class:`RawReply`: its bytes as a chunked body, in its pieces."""
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
    return Outcome.KEEP


async def stream(conn: HttpConnection, record: RecordedRequest, plan: StreamPlan) -> Outcome:
    """Play a planned reply as an event stream, one write per event."""
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
    fault_at = plan.fault_at
    delay = reply.token_delay
    for i, delta in enumerate(deltas):
        if i and delay > 0:
            await trio.sleep(delay)
        if i == fault_at:
            return await _stream_fault(conn, plan)
        await conn.send_body((head + delta + tail).encode())
    if fault_at == len(deltas):
        return await _stream_fault(conn, plan)
    await conn.send_body(plan.finish_chunk().encode())
    if plan.usage is not None and record.include_usage:
        await conn.send_body(plan.usage_chunk().encode())
    await conn.end_body(b"data: [DONE]\n\n")
    return Outcome.KEEP


async def _stream_fault(conn: HttpConnection, plan: StreamPlan) -> Outcome:
    if plan.fault is Fault.STALL:
        await trio.sleep_forever()
    if plan.fault is Fault.DROP:
        await conn.abort()
        return Outcome.CLOSE
    await conn.end_body(plan.error_event())
    return Outcome.KEEP


async def complete(conn: HttpConnection, record: RecordedRequest, plan: StreamPlan) -> Outcome:
    """Play a planned reply as one ``chat.completion`` object (a non-streamed request)."""
    reply = plan.reply
    produced = len(plan.deltas) if plan.fault_at is None else plan.fault_at
    wait = reply.first_token_delay + reply.token_delay * max(0, produced - 1)
    if wait > 0:
        await trio.sleep(wait)
    if plan.fault is Fault.STALL:
        await trio.sleep_forever()
    if plan.fault is Fault.DROP:
        await conn.abort()
        return Outcome.CLOSE
    if plan.fault is Fault.ERROR:
        return await send_error(
            conn, record, 500, reply.error_message, "server_error", reply.error_code
        )
    return await send_json(conn, record, 200, plan.completion())
