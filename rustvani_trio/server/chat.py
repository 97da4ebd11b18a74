"""The default application of ``serve-chat``: an LLM chat with one tool, per session.

With ``OPENAI_API_KEY`` set it talks to the real endpoint (``OPENAI_BASE_URL``,
``OPENAI_MODEL``); without, to a scripted model on loopback, so the page works offline:
ask about the weather (a tool call, shown as a card), ask for a story (a long answer to
interrupt), or say anything.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import trio

from .._cli.scene_chat import SYSTEM_PROMPT, WEATHER_SCHEMA, get_weather
from ..aggregators import create_context_aggregators
from ..context import LLMContext
from ..pipeline import Pipeline
from ..processor import FrameProcessor
from ..services.llm.function_registry import FunctionRegistry
from ..services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from ..task import PipelineParams, PipelineTask
from ..testing import (
    RecordedRequest,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
)
from ..testing._recorded import ScriptItem
from .sessions import PipelineFactory, Session

__all__ = [
    "SYSTEM_PROMPT",
    "WEATHER",
    "chat_pipeline",
    "open_chat_factory",
    "open_http_clients",
    "scripted_model",
]

logger = logging.getLogger("rustvani_trio.server")

WEATHER = WEATHER_SCHEMA
"""The weather tool's schema (the ``chat`` command's, shared)."""

STORY = (
    "Once upon a time, in a city of bridges, a small robot learned to listen. Every morning it "
    "counted the boats, every evening it counted the stars, and in between it answered the "
    "questions of anyone who stopped to ask. One day a child asked it why the river never "
    "ran out of water, and the robot, for the first time, had to say that it did not know. "
    "So it went to find out, following the river upstream, past the mills and the orchards, "
    "up into the hills where the rain begins."
)


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def scripted_model(request: RecordedRequest) -> TextReply | ToolCallReply:
    """The offline model: weather questions call the tool, "story" streams a long answer
    slowly, anything else gets a short reply."""
    body: dict[str, Any] = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages", [])
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return TextReply(_tokens(f"Here is the latest: {last.get('content')}."), token_delay=0.02)
    text = str(last.get("content", ""))
    if "weather" in text.lower():
        city = text.rstrip("?.! ").split(" ")[-1]
        call = ScriptedToolCall(name="get_weather", arguments=json.dumps({"city": city}))
        return ToolCallReply([call], text_tokens=_tokens("Let me check."), token_delay=0.02)
    if "story" in text.lower():
        return TextReply(_tokens(STORY), token_delay=0.08)
    answer = f"You said: {text!r}. I am a scripted model, streaming token by token."
    return TextReply(_tokens(answer), token_delay=0.02)


def chat_pipeline(
    session: Session,
    config: OpenAILLMConfig,
    client: httpx.AsyncClient | None = None,
    *,
    extra: Sequence[FrameProcessor] = (),
) -> PipelineTask:
    """One session's chat: input -> ``extra`` -> user aggregator -> LLM (with the weather
    tool) -> output -> assistant aggregator, metrics on."""
    context = LLMContext([{"role": "system", "content": SYSTEM_PROMPT}])
    registry = FunctionRegistry()
    registry.register("get_weather", get_weather, schema=WEATHER)
    llm = OpenAILLMHandler.with_registry(config, registry, http_client=client).into_processor(
        name="llm"
    )
    user, assistant = create_context_aggregators(context, text_mode=True)
    pipeline = Pipeline([session.input(), *extra, user, llm, session.output(), assistant])
    params = PipelineParams(enable_metrics=True, enable_usage_metrics=True)
    return PipelineTask(pipeline, params=params, name=f"session-{session.id}")


HTTP_CLIENT_SHARDS = 8
"""How many HTTP clients the sessions of one process share (see :func:`open_http_clients`)."""


@contextlib.asynccontextmanager
async def open_http_clients(
    shards: int = HTTP_CLIENT_SHARDS, *, trust_env: bool = False, keepalive: int = 64
) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """``shards`` HTTP clients for the sessions of one process; yields a function that hands
    them out in turn (one per session).

    One client shared by every session is slow with many sessions: httpcore's pool (1.0.x)
    walks all its connections, and for each idle one all of them again, whenever a request
    starts or ends (encode/httpcore#1035), so at 200 concurrent answers that bookkeeping was
    the server's largest cost. Sessions spread over ``shards`` clients keep each pool small.
    The clients share one TLS context (built once); each keeps at most ``keepalive`` idle
    connections.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    ssl_context = httpx.create_ssl_context(trust_env=trust_env)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=keepalive)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=limits, trust_env=trust_env, verify=ssl_context, timeout=None
                )
            )
            for _ in range(shards)
        ]
        turn = itertools.cycle(clients)
        open_ = True

        def next_client() -> httpx.AsyncClient:
            if not open_:
                raise RuntimeError("open_http_clients has exited: its clients are closed")
            return next(turn)

        try:
            yield next_client
        finally:
            open_ = False


async def open_model(
    stack: contextlib.AsyncExitStack,
    scripted_reply: ScriptItem,
    *,
    context_window_tokens: int,
    label: str,
) -> tuple[OpenAILLMConfig, bool]:
    """The model the default factories talk to, and whether it is a real endpoint: the one
    ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL`` / ``OPENAI_MODEL``) names, or else the
    scripted server on loopback answering with ``scripted_reply``, kept open by ``stack``."""
    if os.environ.get("OPENAI_API_KEY"):
        config = OpenAILLMConfig.from_env()
        logger.info("%s: %s at %s", label, config.model, config.base_url)
        return config, True
    server = await stack.enter_async_context(open_scripted_server(default_reply=scripted_reply))
    logger.info("%s: OPENAI_API_KEY is not set; using the scripted model", label)
    config = OpenAILLMConfig(
        api_key="",
        base_url=server.base_url,
        model="scripted-model",
        context_window_tokens=context_window_tokens,
    )
    return config, False


@contextlib.asynccontextmanager
async def open_chat_factory(
    extra: Callable[[Session], Sequence[FrameProcessor]] | None = None,
) -> AsyncIterator[PipelineFactory]:
    """The default factory, with what its sessions share for the server's lifetime: the
    HTTP clients (:func:`open_http_clients`), and the scripted model when there is no API
    key. ``extra(session)`` gives processors of your own for each session, placed after the
    input (they see the user's transcripts first)."""
    async with contextlib.AsyncExitStack() as stack:
        config, real = await open_model(
            stack, scripted_model, context_window_tokens=32_000, label="chat"
        )
        next_client = await stack.enter_async_context(open_http_clients(trust_env=real))

        async def factory(session: Session) -> PipelineTask:
            await trio.lowlevel.checkpoint()
            return chat_pipeline(
                session, config, next_client(), extra=extra(session) if extra is not None else ()
            )

        yield factory
