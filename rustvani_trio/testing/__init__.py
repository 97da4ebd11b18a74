"""Testing helpers for rustvani-trio and for pipelines built with it.

* :func:`run_test`: run processors inside a real PipelineTask and capture what leaves each end.
* The scripted OpenAI-compatible server (:func:`open_scripted_server` and its replies): real
  HTTP on loopback, for tests, demos and benchmarks.
  ``python -m rustvani_trio.testing`` (or ``python -m rustvani_trio serve``) runs it as a
  process of its own.
* :mod:`rustvani_trio.testing.strategies`: hypothesis strategies for frames and frame sequences
  (import it explicitly; it needs hypothesis, a test-only dependency).
"""

from ._harness import RunResult as RunResult
from ._harness import run_test as run_test
from ._recorded import RecordedRequest as RecordedRequest
from ._replies import AUTO_USAGE as AUTO_USAGE
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
    "ErrorReply",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "RunResult",
    "ScriptedServer",
    "ScriptedToolCall",
    "TextReply",
    "ToolCallReply",
    "Usage",
    "numbered_tokens",
    "open_scripted_server",
    "run_test",
]
