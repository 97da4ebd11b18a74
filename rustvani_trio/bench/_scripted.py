"""The endpoints the bench starts itself: the scripted server (``--base-url scripted``) and the
instant server that measures the load generator's own overhead."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ..testing import (
    ErrorReply,
    RawReply,
    RecordedRequest,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    numbered_tokens,
    open_scripted_server,
)
from ._prompt import TOOL_NAME

__all__ = ["instant_body", "open_instant_endpoint", "open_scripted_endpoint", "scripted_replies"]

_DEFAULT_TOKENS = 16
_FAULTS = ("http_500", "error_event", "drop")


def _requested_tokens(body: object) -> int:
    if isinstance(body, dict):
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return _DEFAULT_TOKENS


def scripted_replies(
    *,
    first_token_delay: float,
    token_interval: float,
    error_rate: float = 0.0,
    seed: int = 0,
) -> Callable[[RecordedRequest], TextReply | ToolCallReply | ErrorReply]:
    """The scripted server's replies: ``max_completion_tokens`` numbered tokens (finishing
    with ``"length"``, as a real server stopped by the limit does), the first after
    ``first_token_delay`` seconds, the next ones ``token_interval`` apart. A request offering
    tools gets a call of the bench's tool first; the request carrying its result gets the
    answer. A share ``error_rate`` of the requests (chosen by ``seed`` and the request's
    number) fails: an HTTP 500, an error event half-way, or a dropped connection half-way.
    """
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be within 0..1, got {error_rate!r}")

    def reply(request: RecordedRequest) -> TextReply | ToolCallReply | ErrorReply:
        tokens = _requested_tokens(request.json)
        fault = None
        if error_rate:
            rng = random.Random(f"{seed}:{request.index}")
            if rng.random() < error_rate:
                fault = rng.choice(_FAULTS)
        if fault == "http_500":
            return ErrorReply(500, "scripted fault: internal error", type="server_error")
        half = max(1, tokens // 2)
        error_after = half if fault == "error_event" else None
        drop_after = half if fault == "drop" else None
        messages = request.messages
        answering = (
            bool(messages)
            and isinstance(messages[-1], dict)
            and (messages[-1].get("role") == "tool")
        )
        wants_tool = isinstance(request.json, dict) and bool(request.json.get("tools"))
        if wants_tool and not answering:
            call = ScriptedToolCall(TOOL_NAME, {"city": "Paris"})
            return ToolCallReply(
                [call],
                first_token_delay=first_token_delay,
                token_delay=token_interval,
                error_after=error_after,
                drop_after=drop_after,
            )
        return TextReply(
            numbered_tokens(tokens),
            finish_reason="length",
            first_token_delay=first_token_delay,
            token_delay=token_interval,
            error_after=error_after,
            drop_after=drop_after,
        )

    return reply


@asynccontextmanager
async def open_scripted_endpoint(
    *,
    first_token_ms: float = 200.0,
    token_interval_ms: float = 20.0,
    error_rate: float = 0.0,
    seed: int = 0,
) -> AsyncIterator[str]:
    """Serve :func:`scripted_replies` on loopback for the block; yields the base URL.

    The server runs in the caller's trio run (so it follows a ``MockClock`` in tests)."""
    replies = scripted_replies(
        first_token_delay=first_token_ms / 1000.0,
        token_interval=token_interval_ms / 1000.0,
        error_rate=error_rate,
        seed=seed,
    )
    async with open_scripted_server(default_reply=replies, model="scripted-model") as server:
        yield server.base_url


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-instant",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "instant",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def instant_body(tokens: int) -> bytes:
    """A whole chat-completions stream of ``tokens`` content deltas, with usage and
    ``[DONE]``: the instant server sends it in one write."""
    parts = [_chunk({"role": "assistant", "content": ""})]
    parts.extend(_chunk({"content": token}) for token in numbered_tokens(tokens))
    parts.append(_chunk({}, "length"))
    usage = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
    final = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "choices": []}
    parts.append(b"data: " + json.dumps({**final, "usage": usage}).encode() + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


@asynccontextmanager
async def open_instant_endpoint(tokens: int) -> AsyncIterator[str]:
    """An in-process server whose every answer (``tokens`` deltas) is ready at once: what
    the bench measures against it is its own cost (plus one request parse and one write of
    the server in the same process)."""
    async with open_scripted_server(default_reply=RawReply(instant_body(tokens))) as server:
        yield server.base_url
