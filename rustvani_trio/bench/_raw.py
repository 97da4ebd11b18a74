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

__all__ = ["StreamOutcome", "stream_once"]

_OUTPUT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


@attrs.define
class StreamOutcome:
    """What one streamed response carried besides its tokens."""

    tool_calls: dict[int, dict[str, str]] = attrs.Factory(dict)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False


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


def _take_chunk(chunk: Any, outcome: StreamOutcome) -> bool:
    """Fold one decoded chunk into ``outcome``; returns whether it carried output text."""
    if not isinstance(chunk, dict):
        return False
    if isinstance(chunk.get("usage"), dict):
        outcome.usage = chunk["usage"]
    produced = False
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        if any(isinstance(delta.get(k), str) and delta[k] for k in _OUTPUT_KEYS):
            produced = True
        for call in delta.get("tool_calls") or ():
            slot = outcome.tool_calls.setdefault(
                int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""}
            )
            function = call.get("function") or {}
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] += function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""
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
                decoder = SSEDecoder()
                async for piece in response.aiter_bytes():
                    now = trio.current_time()
                    scope.deadline = now + limit
                    for event in decoder.feed(piece):
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
