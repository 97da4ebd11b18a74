"""Testing helpers for rustvani-trio and for pipelines built with it.

* :func:`run_test`: run processors inside a real PipelineTask and capture what leaves each end.
* The scripted OpenAI-compatible server (:func:`open_scripted_server` and its replies): real
  HTTP on loopback, for tests, demos and benchmarks.
* :mod:`rustvani_trio.testing.strategies`: hypothesis strategies for frames and frame sequences
  (import it explicitly; it needs hypothesis, a test-only dependency).
"""

from ._harness import RunResult, run_test
from .server import (
    AUTO_USAGE,
    ErrorReply,
    RawReply,
    RecordedRequest,
    Reply,
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    Usage,
    numbered_tokens,
    open_scripted_server,
)

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
