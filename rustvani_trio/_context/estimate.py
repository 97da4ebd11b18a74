"""The token heuristic: a cheap estimate of what a message or a tool costs in a prompt."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MESSAGE_OVERHEAD", "REPLY_PRIMING", "message_tokens", "tool_tokens"]

# Heuristic token costs (roughly those of OpenAI's chat format).
_CHARS_PER_TOKEN: Final[int] = 4
MESSAGE_OVERHEAD: Final[int] = 4  # role, separators
_TOOL_CALL_OVERHEAD: Final[int] = 3  # per tool call inside an assistant message
_NON_TEXT_PART_TOKENS: Final[int] = 85  # image / audio / file content parts
REPLY_PRIMING: Final[int] = 3  # every request primes the assistant's reply
_TOOL_OVERHEAD: Final[int] = 8  # per tool definition, on top of its JSON size


def message_tokens(message: Mapping[str, Any]) -> int:
    """Unscaled heuristic token count of one message (tolerates malformed input)."""
    chars = 0
    extra = MESSAGE_OVERHEAD
    content = message.get("content")
    if isinstance(content, str):
        chars += len(content)
    elif isinstance(content, list | tuple):
        for part in content:
            text = part.get("text") if isinstance(part, Mapping) else part
            if isinstance(text, str):
                chars += len(text)
            else:
                extra += _NON_TEXT_PART_TOKENS
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            chars += len(value)
    calls = message.get("tool_calls")
    if isinstance(calls, list | tuple):
        for call in calls:
            extra += _TOOL_CALL_OVERHEAD
            if not isinstance(call, Mapping):
                continue
            call_id = call.get("id")
            if isinstance(call_id, str):
                chars += len(call_id)
            function = call.get("function")
            if isinstance(function, Mapping):
                for key in ("name", "arguments"):
                    value = function.get(key)
                    if isinstance(value, str):
                        chars += len(value)
    return extra + math.ceil(chars / _CHARS_PER_TOKEN)


def tool_tokens(openai: Mapping[str, Any]) -> int:
    """Unscaled heuristic token count of one tool definition (its compact JSON size / 4)."""
    text = json.dumps(openai, ensure_ascii=False, separators=(",", ":"))
    return _TOOL_OVERHEAD + math.ceil(len(text) / _CHARS_PER_TOKEN)
