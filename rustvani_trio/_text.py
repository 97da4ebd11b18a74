"""Text from outside (a server's messages, URLs) made safe to put in errors and logs.

:func:`excerpt` shortens and escapes: a server's 10 MiB message does not become a 10 MiB
ErrorFrame, a line break in it cannot forge a log line, and terminal escapes or bidirectional
overrides never reach a terminal. :func:`redact_url` drops the user-info (``user:secret@``)
from a URL, :func:`hide_secrets` the API key and other configured secrets (a server may
echo them). :func:`mend_surrogates` replaces lone surrogates (which ``json.loads`` produces
from ``"\\ud800"`` and which no encoder accepts) with U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

__all__ = [
    "EXCERPT_CHARS",
    "describe",
    "excerpt",
    "has_surrogate_escape",
    "hide_secrets",
    "mend_surrogates",
    "redact_url",
]

#: How much of a server's text goes into a message.
EXCERPT_CHARS: Final = 300

# Control characters (C0, DEL, C1), line and paragraph separators, and the bidirectional
# controls, each replaced by its escape.
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F)]
_UNSAFE += [*range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0xFEFF]
# Lone surrogates too: a handler writing one to a UTF-8 stream fails ("surrogates not allowed").
_UNSAFE += range(0xD800, 0xE000)
_ESCAPES: Final = {code: ascii(chr(code))[1:-1] for code in _UNSAFE}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})

_USERINFO: Final = re.compile(r"(?<=://)[^/?#\s]*@")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (saying how long it was) with every control
    character, line separator, bidirectional control and lone surrogate escaped."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text.translate(_ESCAPES)


#: The shortest start of a secret that :func:`hide_secrets` hides where it is not followed by
#: the rest (the text was cut there).
SECRET_FRAGMENT: Final = 8


def hide_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``, and also each start
    of one (its first :data:`SECRET_FRAGMENT` characters or more: a cut text may end with
    one). A secret shorter than that is hidden only where it occurs whole."""
    for secret in secrets:
        size = len(secret)
        if size < SECRET_FRAGMENT:
            if size >= 4:
                text = text.replace(secret, "***")
            continue
        head = secret[:SECRET_FRAGMENT]
        start = text.find(head)
        while start != -1:
            end = start + SECRET_FRAGMENT
            while end < len(text) and end - start < size and text[end] == secret[end - start]:
                end += 1
            text = f"{text[:start]}***{text[end:]}"
            start = text.find(head, start + 3)
    return text


def describe(exc: BaseException, limit: int = 1000) -> str:
    """``Type: message`` of an exception (of each one inside a group), each message cut to
    ``limit`` characters and escaped: a tool's or a hook's exception may carry any text."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner, limit) for inner in exc.exceptions[:10])
    return f"{type(exc).__name__}: {excerpt(str(exc), limit)}"


# A URL inside a text (up to the first whitespace or quote), and one query parameter's value.
_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
_QUERY_VALUE: Final = re.compile(r"([?&;][^=&;#]*=)[^&;#]*")


def _redact_one(match: re.Match[str]) -> str:
    url = _USERINFO.sub("", match.group(0))
    head, hash_, fragment = url.partition("#")
    path, query_mark, query = head.partition("?")
    if query_mark:
        head = path + _QUERY_VALUE.sub(r"\1***", "?" + query)
    return head + hash_ + ("***" if fragment else "")


def redact_url(url: str) -> str:
    """``url`` without user-info and with every query value and the fragment hidden:
    ``http://user:secret@proxy/v1?key=s3cret`` becomes ``http://proxy/v1?key=***`` (a query
    may carry a key: ``?api_key=``, a signed URL's signature). Also inside a longer text, and
    for a URL that does not parse."""
    text = _URL.sub(_redact_one, url)
    return _USERINFO.sub("", text)


# A surrogate code point in a string decoded from JSON: ``json.loads`` joins every valid pair
# of ``\uD8xx\uDCxx`` escapes, so whatever is left is lone: not valid Unicode (it cannot be
# encoded), so it would break the context and every later request.
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def has_surrogate_escape(json_text: str) -> bool:
    """Whether ``json_text`` may decode to a lone surrogate (it has a ``\\uD8xx``-``\\uDFxx``
    escape): a cheap test before :func:`mend_surrogates`."""
    return "\\ud" in json_text or "\\uD" in json_text


def mend_surrogates(value: Any) -> Any:
    """``value`` (a string, or decoded JSON) with every lone surrogate in its strings
    replaced by U+FFFD (valid pairs are left alone)."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {mend_surrogates(key): mend_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mend_surrogates(item) for item in value]
    return value
