"""What the demo scenes share (private): the scripted OpenAI-compatible model on loopback
with a config that talks to it, and errors printed as they reach the task."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ..frames import ErrorFrame
from ..services.llm.openai import OpenAILLMConfig
from ..task import PipelineTask
from ..testing import RecordedRequest, Reply, ScriptedServer, open_scripted_server

__all__ = ["open_scripted_llm", "print_errors"]


@asynccontextmanager
async def open_scripted_llm(
    model: Callable[[RecordedRequest], Reply],
) -> AsyncIterator[tuple[ScriptedServer, OpenAILLMConfig]]:
    """Serve ``model`` (a reply per request) as an OpenAI-compatible server on 127.0.0.1 for
    the block; yields the server (``server.requests``: what it was asked) and a config for
    it (no key needed, 32k context window)."""
    async with open_scripted_server(default_reply=model) as server:
        config = OpenAILLMConfig(
            api_key="demo",
            base_url=server.base_url,
            model="scripted-model",
            context_window_tokens=32_000,
        )
        yield server, config


def print_errors(task: PipelineTask, *, prefix: str = "\n  ") -> None:
    """Print every error that reaches ``task`` on stderr as it comes, after ``prefix``."""

    def show_error(_task: PipelineTask, frame: ErrorFrame) -> None:
        print(f"{prefix}[error from {frame.processor}: {frame.error}]", file=sys.stderr)

    task.add_event_handler("on_error", show_error)
