"""Wire rendering for the scripted server: SSE chunks, completions, error bodies and faults.

Pure functions and data, no I/O: :class:`StreamPlan` holds what one streamed reply sends for
one request (the text of every SSE event, ids, usage, the fault to carry out), and
:mod:`._play` writes it to a connection.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from ._recorded import RecordedRequest
from ._replies import AutoUsage, TextReply, ToolCallReply, Usage

__all__ = ["Fault", "StreamPlan", "error_body", "prompt_tokens"]


class Fault(enum.Enum):
    """A scripted fault of a streamed reply (``stall_after``, ``drop_after``, ``error_after``).

    The members are in tie-break order: when two faults are due after the same number of
    deltas, the first listed wins.
    """

    STALL = "stall"
    """Send nothing more; keep the connection open."""
    DROP = "drop"
    """Close the connection abruptly."""
    ERROR = "error"
    """Send an error event (streamed) or an HTTP 500 (not streamed)."""


def _first_fault(reply: TextReply | ToolCallReply, count: int) -> tuple[int | None, Fault | None]:
    """The fault of ``reply`` with the smallest count (ties in :class:`Fault` order), and
    after how many of the ``count`` deltas it happens (a count past the end fires at the end).

    The counts are compared as scripted, not as clamped to ``count``: ``error_after=3,
    drop_after=5`` on a two-delta reply is an error, as it would be on a longer one.
    """
    best: tuple[int, Fault] | None = None
    for fault, at in (
        (Fault.STALL, reply.stall_after),
        (Fault.DROP, reply.drop_after),
        (Fault.ERROR, reply.error_after),
    ):
        if at is not None and (best is None or at < best[0]):
            best = (at, fault)
    if best is None:
        return None, None
    return min(best[0], count), best[1]


def error_body(message: str, type_: str, code: str | None) -> dict[str, Any]:
    """The OpenAI error object ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The automatic ``prompt_tokens``: characters of the messages' text, divided by 4."""
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


def _js(value: Any) -> str:
    return json.dumps(value)


_TEXT_ROLE: Final = '{"role":"assistant","content":""}'
_NULL_ROLE: Final = '{"role":"assistant","content":null}'


@attrs.define(eq=False)
class StreamPlan:
    """What one Text/ToolCall reply sends for one request (SSE text pieces, ids, usage).

    Every SSE event of the stream is ``head + <delta JSON> + tail``; :attr:`deltas` are the
    JSON texts of the deltas counted by the faults. Build it with :meth:`build`.
    """

    reply: TextReply | ToolCallReply
    record: RecordedRequest
    model: str
    deltas: Sequence[str]
    role_delta: str
    usage: Usage | None
    call_ids: list[str]
    response_id: str = attrs.field(init=False)
    created: int = attrs.field(init=False)
    head: str = attrs.field(init=False)
    tail: str = attrs.field(init=False)
    usage_null: str = attrs.field(init=False)
    fault_at: int | None = attrs.field(init=False)
    """After how many deltas :attr:`fault` happens (``None``: no fault)."""
    fault: Fault | None = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.response_id = f"chatcmpl-scripted-{self.record.index}"
        self.created = int(time.time())
        self.usage_null = ',"usage":null' if self.record.include_usage else ""
        self.head = (
            f'data: {{"id":{_js(self.response_id)},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{_js(self.model)},"choices":[{{"index":0,"delta":'
        )
        self.tail = ',"logprobs":null,"finish_reason":null}]' + self.usage_null + "}\n\n"
        self.fault_at, self.fault = _first_fault(self.reply, len(self.deltas))

    @classmethod
    def build(
        cls,
        reply: TextReply | ToolCallReply,
        *,
        record: RecordedRequest,
        model: str,
        call_ids: Iterator[int],
        body: Mapping[str, Any],
    ) -> StreamPlan:
        """Plan ``reply`` for ``record``; tool calls without an id take the next of
        ``call_ids``."""
        ids: list[str] = []
        deltas: Sequence[str]
        if isinstance(reply, TextReply):
            deltas = reply._deltas
            role_delta = _TEXT_ROLE
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
            role_delta = _TEXT_ROLE if reply.text_tokens else _NULL_ROLE
        usage: Usage | None
        if isinstance(reply.usage, AutoUsage):
            reasoning = len(reply.reasoning) if isinstance(reply, TextReply) else 0
            usage = Usage(
                prompt_tokens=prompt_tokens(body),
                completion_tokens=len(deltas),
                reasoning_tokens=reasoning or None,
            )
        else:
            usage = reply.usage
        return cls(reply, record, model, deltas, role_delta, usage, ids)

    def finish_chunk(self) -> str:
        """The SSE event carrying ``finish_reason``."""
        return (
            self.head
            + '{},"logprobs":null,"finish_reason":'
            + _js(self.reply.finish_reason)
            + "}]"
            + self.usage_null
            + "}\n\n"
        )

    def usage_chunk(self) -> str:
        """The SSE event carrying ``usage`` (``choices: []``); needs :attr:`usage`."""
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

    def error_event(self) -> bytes:
        """The SSE event of an ``error_after`` fault."""
        reply = self.reply
        error = {
            "error": {
                "message": reply.error_message,
                "type": "server_error",
                "code": reply.error_code,
            }
        }
        return b"data: " + json.dumps(error).encode() + b"\n\n"

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
