"""The scripted, OpenAI-compatible chat-completions server (public names, re-exported).

The same names are importable from :mod:`rustvani_trio.testing`, the preferred way in; this
module keeps the older path working, and ``python -m rustvani_trio.testing.server`` runs the
command line of :mod:`rustvani_trio.testing.__main__`.

It is a real HTTP/1.1 server (trio + h11) on a loopback socket: clients such as ``httpx`` or
the ``openai`` SDK talk to it exactly as they talk to the real API. Each
``POST /v1/chat/completions`` consumes one *reply* from a FIFO script::

    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hel", "lo"], token_delay=0.01))
        server.add_reply(ToolCallReply([ScriptedToolCall("get_weather", '{"city": "Paris"}')]))
        ...  # point the client at server.base_url
        (request,) = await server.wait_for_requests(1)

Streamed requests (``"stream": true``) get ``text/event-stream`` responses with
``Transfer-Encoding: chunked``; every SSE event is written to the socket as it is produced, so
clients see tokens arrive one by one. Other requests get a ``chat.completion`` JSON object
built from the same reply. Replies can script faults (an error event mid-stream, an abrupt
close, a stall), HTTP errors (:class:`ErrorReply`) and raw captured bytes (:class:`RawReply`);
a reply can also be a callable that looks at the :class:`RecordedRequest`.

All delays use :func:`trio.sleep`, so an in-process server follows the clock of the trio run
it lives in (see the caveats about ``autojump_clock`` in :func:`open_scripted_server`).
"""

from __future__ import annotations

import sys

from .__main__ import main as main
from ._recorded import RecordedRequest as RecordedRequest
from ._recorded import ReplyFactory as ReplyFactory
from ._recorded import ScriptItem as ScriptItem
from ._replies import AUTO_USAGE as AUTO_USAGE
from ._replies import AutoUsage as AutoUsage
from ._replies import ErrorReply as ErrorReply
from ._replies import RawReply as RawReply
from ._replies import Reply as Reply
from ._replies import ScriptedToolCall as ScriptedToolCall
from ._replies import TextReply as TextReply
from ._replies import ToolCallReply as ToolCallReply
from ._replies import Usage as Usage
from ._replies import numbered_tokens as numbered_tokens
from ._server import ScriptedServer as ScriptedServer
from ._server import open_scripted_server as open_scripted_server

__all__ = [
    "AUTO_USAGE",
    "AutoUsage",
    "ErrorReply",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "ReplyFactory",
    "ScriptItem",
    "ScriptedServer",
    "ScriptedToolCall",
    "TextReply",
    "ToolCallReply",
    "Usage",
    "main",
    "numbered_tokens",
    "open_scripted_server",
]

if __name__ == "__main__":
    sys.exit(main(prog="python -m rustvani_trio.testing.server"))
