"""Text from outside (a server's messages, URLs) made safe to put in errors and logs.

:func:`excerpt` shortens and escapes: a server's 10 MiB message does not become a 10 MiB
ErrorFrame, a line break in it cannot forge a log line, and terminal escapes or bidirectional
overrides never reach a terminal. :func:`redact_url` drops the user-info (``user:secret@``)
from a URL.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["EXCERPT_CHARS", "excerpt", "redact_url"]

#: How much of a server's text goes into a message.
EXCERPT_CHARS: Final = 300

# Control characters (C0, DEL, C1), line and paragraph separators, and the bidirectional
# controls, each replaced by its escape.
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F)]
_UNSAFE += [*range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C, 0xFEFF]
_ESCAPES: Final = {code: ascii(chr(code))[1:-1] for code in _UNSAFE}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})

_USERINFO: Final = re.compile(r"(?<=://)[^/?#\s]*@")


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters (saying how long it was) with every control
    character, line separator and bidirectional control escaped."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text.translate(_ESCAPES)


def redact_url(url: str) -> str:
    """``url`` without user-info: ``http://user:secret@proxy/v1`` becomes ``http://proxy/v1``
    (also inside a longer text, and for a URL that does not parse)."""
    return _USERINFO.sub("", url)
