"""The raw stream: the same request as the pipeline's, read with plain ``httpx`` and an SSE
parser (the package's own incremental one, so the command needs nothing beyond the core).

This is the floor the framework is compared with: no frames, no processors, just the HTTP
stream decoded and each output delta timestamped as it is decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio

from ..services.llm._sse import SSEDecoder, SSEEvent, SSEProtocolError
from ._records import ErrorInfo, Redactor, clip

__all__ = ["StreamOutcome", "not_a_stream", "stream_once"]

_OUTPUT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


@attrs.define
class StreamOutcome:
    """What one streamed response carried besides its tokens."""

    tool_calls: dict[int, dict[str, str]] = attrs.Factory(dict)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False


def not_a_stream(content_type: str, body: bytes | None = None) -> str:
    """Why a 200 response is no answer: it is not an event stream."""
    what = content_type.split(";")[0].strip() or "no content type"
    message = f"the server answered HTTP 200 with {what}, not an event stream"
    if body is not None:
        text = body[:200].decode("utf-8", "replace").strip()
        message += f": {text}" if text else " (an empty body)"
    return message


def _server_message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return text


def _bad(what: str, value: Any) -> ValueError:
    return ValueError(f"{what} is not what a chat-completions chunk holds: {str(value)[:80]!r}")


def _take_chunk(chunk: Any, outcome: StreamOutcome) -> bool:
    """Fold one decoded chunk into ``outcome``; returns whether it carried output text.

    Raises ValueError for a chunk of the wrong shape (a server's bug must fail its request,
    never the whole run)."""
    if not isinstance(chunk, dict):
        return False
    if isinstance(chunk.get("usage"), dict):
        outcome.usage = chunk["usage"]
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _bad("choices", choices)
    produced = False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise _bad("delta", delta)
        if any(isinstance(delta.get(k), str) and delta[k] for k in _OUTPUT_KEYS):
            produced = True
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise _bad("tool_calls", calls)
        for call in calls:
            _take_call(call, outcome)
        if choice.get("finish_reason"):
            outcome.finish_reason = str(choice["finish_reason"])
    return produced


def _take_event(
    event: SSEEvent,
    outcome: StreamOutcome,
    now: float,
    on_token: Callable[[float], None],
    redact: Redactor,
) -> ErrorInfo | None:
    """Fold one SSE event into ``outcome``; an error event ends the stream."""
    if event.data == "[DONE]":
        outcome.done = True
        return None
    chunk = json.loads(event.data)
    if isinstance(chunk, dict) and chunk.get("error") is not None:
        message = _server_message(event.data.encode())
        return ErrorInfo("stream", clip(redact(f"error event: {message}")))
    if _take_chunk(chunk, outcome):
        on_token(now)
    return None


def _take_call(call: Any, outcome: StreamOutcome) -> None:
    if not isinstance(call, dict):
        raise _bad("a tool call", call)
    index, function = call.get("index", 0), call.get("function") or {}
    if not isinstance(index, int) or isinstance(index, bool) or not isinstance(function, dict):
        raise _bad("a tool call", call)
    parts = (call.get("id") or "", function.get("name") or "", function.get("arguments") or "")
    if not all(isinstance(part, str) for part in parts):
        raise _bad("a tool call", call)
    slot = outcome.tool_calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
    slot["id"] = parts[0] or slot["id"]
    slot["name"] += parts[1]
    slot["arguments"] += parts[2]


async def stream_once(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    limit: float,
    on_token: Callable[[float], None],
    redact: Redactor,
) -> StreamOutcome | ErrorInfo:
    """Send one streaming request and read it to the end of the body.

    ``limit`` bounds the wait for the response and for each next event (as the handler's
    ``first_token_timeout`` / ``chunk_timeout`` do). Returns the outcome, or why it failed.
    """
    outcome = StreamOutcome()
    started = False
    scope = trio.CancelScope(deadline=trio.current_time() + limit)
    try:
        with scope:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                started = True
                if response.status_code != 200:
                    raw = await response.aread()
                    return ErrorInfo(
                        "http", clip(redact(_server_message(raw))), status=response.status_code
                    )
                kind = response.headers.get("content-type", "")
                if "text/event-stream" not in kind:
                    raw = await response.aread()
                    return ErrorInfo("stream", clip(redact(not_a_stream(kind, raw))))
                decoder = SSEDecoder()
                async for piece in response.aiter_bytes():
                    now = trio.current_time()
                    events = decoder.feed(piece)
                    if events:  # comments (keep-alives) do not count as progress
                        scope.deadline = now + limit
                    for event in events:
                        failed = _take_event(event, outcome, now, on_token, redact)
                        if failed is not None:
                            return failed
                for event in decoder.close():
                    failed = _take_event(event, outcome, trio.current_time(), on_token, redact)
                    if failed is not None:
                        return failed
    except httpx.TimeoutException as exc:
        return ErrorInfo("timeout", clip(redact(f"{type(exc).__name__}: {exc}")))
    except httpx.TransportError as exc:
        kind = "stream" if started else "connection"
        return ErrorInfo(kind, clip(redact(f"{type(exc).__name__}: {exc or 'no detail'}")))
    except (SSEProtocolError, ValueError) as exc:
        return ErrorInfo("stream", clip(redact(f"invalid stream: {exc}")))
    if scope.cancelled_caught:
        what = "next chunk" if started else "response"
        return ErrorInfo("timeout", f"no {what} within {limit:g}s")
    if not outcome.done and outcome.finish_reason is None:
        return ErrorInfo("stream", "the stream ended without [DONE] or a finish_reason")
    return outcome
