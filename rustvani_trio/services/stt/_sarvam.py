"""What Sarvam's speech-to-text and text-to-speech sockets share (private): the header that
carries the key, the ``{"type", "data"}`` envelope of every message, and an error's text."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["KEY_HEADER", "envelope", "error_text"]

#: the handshake header that carries the subscription key
KEY_HEADER = "Api-Subscription-Key"


def envelope(message: str) -> tuple[Any, dict[str, Any]]:
    """The ``type`` and ``data`` of a text message from Sarvam."""
    payload = json.loads(message)
    return payload.get("type"), payload.get("data") or {}


def error_text(data: dict[str, Any], message: str) -> str:
    """An ``error`` message's text: ``"<message> (code <code>)"`` (the whole message when
    it has no text)."""
    text = data.get("message") or data.get("error") or message
    code = data.get("code")
    return f"{text}" + (f" (code {code})" if code is not None else "")
