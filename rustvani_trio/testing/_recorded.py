"""What the scripted server remembers of each request, and what its script holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs
import trio

from ._replies import Reply

__all__ = ["RecordedRequest", "ReplyFactory", "ScriptItem", "parse_json_body"]


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
    json_error: str | None = None
    """Why :attr:`json` is ``None`` although there is a body (``None`` otherwise)."""
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


def parse_json_body(body: bytes) -> tuple[Any, str | None]:
    """The parsed JSON of a request body and, when it is not JSON, why (``(None, None)``
    for an empty body)."""
    if not body:
        return None, None
    try:
        return json.loads(body), None
    except UnicodeDecodeError:
        return None, "the request body is not UTF-8 (nor UTF-16 or UTF-32) text"
    except ValueError as exc:  # JSONDecodeError, or an int of too many digits
        reason = str(exc)
        if len(reason) > 200:
            reason = reason[:200] + "..."
        return None, f"the request body is not valid JSON ({reason})"
    except RecursionError:
        return None, "the request body is not valid JSON (it nests too deeply)"


ReplyFactory: TypeAlias = Callable[[RecordedRequest], Reply]
"""A callable choosing the reply from the request."""
ScriptItem: TypeAlias = Reply | ReplyFactory
"""What the reply queue holds."""
