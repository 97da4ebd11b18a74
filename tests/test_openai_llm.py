"""The OpenAI LLM turn (issue 3), end to end through real HTTP on loopback.

Every test here drives :class:`OpenAILLMProcessor` inside a real :class:`PipelineTask` against
the scripted OpenAI-compatible server (``rustvani_trio.testing``): the handler's own
``httpx.AsyncClient`` talks to a real socket; nothing is monkeypatched but environment
variables.

Clocks: tests that wait on purpose (retry backoff, ``Retry-After``, timeouts, stalls) use
pytest-trio's ``autojump_clock``. That works with the in-process loopback server on Linux:
bytes written to a loopback socket are readable as soon as ``send`` returns, so virtual time
only jumps when every task really waits on a timer (see
:func:`~rustvani_trio.testing.open_scripted_server`). Virtual time makes backoffs and
timeouts exact and free; the assertions on elapsed virtual time below prove the waits really
happened. Tests that stream tokens and interrupt them use real time with small delays.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import io
import itertools
import json
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallStart,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMReasoningText,
    LLMRefusalText,
    LLMText,
    LLMUsageMetricsData,
    MetricsFrame,
    ProcessingMetricsData,
    TTFBMetricsData,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm._errors import parse_retry_after
from rustvani_trio.services.llm.openai import (
    CONTEXT_WINDOWS,
    OpenAILLMConfig,
    OpenAILLMHandler,
    OpenAILLMProcessor,
    RetryPolicy,
    context_window_for_model,
)
from rustvani_trio.task import PipelineParams, PipelineTask
from rustvani_trio.testing import (
    ErrorReply,
    RawReply,
    RecordedRequest,
    RunResult,
    ScriptedServer,
    TextReply,
    Usage,
    numbered_tokens,
    open_scripted_server,
    run_test,
)

F = TypeVar("F", bound=Frame)

LLM = "llm"  # the processor name every test gives the handler
METRICS = PipelineParams(enable_metrics=True, enable_usage_metrics=True)
# Retries without waiting (for tests in real time that only count attempts).
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.001, jitter=0.0)
NO_RETRY = RetryPolicy(max_attempts=1)

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "openai-sse"
FIXTURES_MISSING = (
    f"the captured SSE corpus is not checked out at {FIXTURE_DIR} "
    "(expected ../shared/fixtures/openai-sse next to the repository)"
)


# --------------------------------------------------------------------------- helpers


def make_llm(server: ScriptedServer | str, **config: Any) -> OpenAILLMProcessor:
    base_url = server if isinstance(server, str) else server.base_url
    config.setdefault("api_key", "sk-test")
    config.setdefault("model", "gpt-4.1")
    return OpenAILLMHandler(OpenAILLMConfig(base_url=base_url, **config)).into_processor(name=LLM)


def new_context(user: str = "Hello?") -> LLMContext:
    return LLMContext(
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": user}]
    )


async def one_turn(
    server: ScriptedServer | str,
    *,
    context: LLMContext | None = None,
    params: PipelineParams | None = None,
    time_limit: float = 20.0,
    **config: Any,
) -> RunResult:
    """One LLMContextFrame through the handler, then an EndFrame."""
    llm = make_llm(server, **config)
    frame = LLMContextFrame(context=context if context is not None else new_context())
    return await run_test([llm], [frame], params=params, time_limit=time_limit)


def joined(frames: Iterable[Frame], kind: type[LLMText | LLMReasoningText | LLMRefusalText]) -> str:
    return "".join(f.text for f in frames if type(f) is kind)


def before_tools(frames: Sequence[Frame]) -> list[Frame]:
    """The frames of the first request of a turn: up to the first tool round or the end."""
    out: list[Frame] = []
    for frame in frames:
        if isinstance(frame, FunctionCallStart | LLMFullResponseEnd):
            break
        out.append(frame)
    return out


def llm_errors(result: RunResult) -> list[ErrorFrame]:
    return [e for e in result.upstream_of(ErrorFrame) if e.processor == LLM]


def assert_turns_closed(result: RunResult, turns: int = 1) -> None:
    """Every turn opened with LLMFullResponseStart is closed with LLMFullResponseEnd."""
    kinds = [
        type(f)
        for f in result.downstream
        if isinstance(f, LLMFullResponseStart | LLMFullResponseEnd)
    ]
    assert kinds == [LLMFullResponseStart, LLMFullResponseEnd] * turns


def metrics_of(frames: Iterable[Frame], kind: type[F]) -> list[F]:
    return [d for f in frames if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, kind)]


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (a port just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def all_tasks() -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    stack: list[trio.lowlevel.Task] = [trio.lowlevel.current_root_task()]  # type: ignore[list-item]
    while stack:
        task = stack.pop()
        if task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def _server_task(task: trio.lowlevel.Task) -> bool:
    return "rustvani_trio.testing" in task.name or "serve_listeners" in task.name


@attrs.define(eq=False)
class LiveRun:
    """A PipelineTask running in the background, with the frames reaching each end."""

    task: PipelineTask
    downstream: list[Frame] = attrs.Factory(list)
    upstream: list[Frame] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def _add(self, into: list[Frame], frame: Frame) -> None:
        into.append(frame)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 5.0) -> None:
        with trio.fail_after(limit):
            while not predicate():
                await self._changed.wait()

    def count(self, kind: type[Frame]) -> int:
        return sum(isinstance(f, kind) for f in self.downstream)

    async def queue(self, frame: Frame) -> None:
        await self.task.queue_frame(frame)


@asynccontextmanager
async def live_run(
    processors: Sequence[FrameProcessor], *, params: PipelineParams | None = None
) -> AsyncIterator[LiveRun]:
    """Run ``processors`` until the body ends the run (EndFrame or cancel) and it finishes."""
    task = PipelineTask(Pipeline(list(processors)), params=params)
    run = LiveRun(task)
    task.add_event_handler("on_frame_reached_downstream", lambda _t, f: run._add(run.downstream, f))
    task.add_event_handler("on_frame_reached_upstream", lambda _t, f: run._add(run.upstream, f))
    async with trio.open_nursery() as nursery:
        await nursery.start(task.run)
        yield run


# =========================================================================== 1. configuration


def test_config_defaults_match_the_issue() -> None:
    cfg = OpenAILLMConfig()
    assert cfg.api_key == ""
    assert cfg.model == "gpt-4.1"
    assert cfg.base_url == "https://api.openai.com/v1"
    for name in (
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "max_completion_tokens",
        "service_tier",
        "reasoning_effort",
        "context_window_tokens",
    ):
        assert getattr(cfg, name) is None, name
    assert cfg.max_tool_rounds == 5
    assert cfg.include_usage is True
    assert cfg.auth_header == "bearer"
    assert dict(cfg.extra_headers) == dict(cfg.extra_query) == dict(cfg.extra_body) == {}
    assert isinstance(cfg.retry, RetryPolicy)
    assert cfg.connect_timeout > 0 and cfg.first_token_timeout > 0 and cfg.chunk_timeout > 0
    assert cfg.chat_completions_url() == "https://api.openai.com/v1/chat/completions"
    assert cfg.context_window == 1_047_576  # gpt-4.1 from the table


def test_from_env_reads_the_three_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1/")
    monkeypatch.setenv("OPENAI_MODEL", "qwen2.5:7b")
    cfg = OpenAILLMConfig.from_env()
    assert (cfg.api_key, cfg.base_url, cfg.model) == (
        "sk-env",
        "http://localhost:11434/v1/",
        "qwen2.5:7b",
    )
    assert cfg.chat_completions_url() == "http://localhost:11434/v1/chat/completions"
    # Keyword arguments win over the environment.
    assert OpenAILLMConfig.from_env(model="gpt-4o", temperature=0.2).model == "gpt-4o"


def test_from_env_without_variables_keeps_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    assert OpenAILLMConfig.from_env() == OpenAILLMConfig()
    monkeypatch.setenv("OPENAI_MODEL", "")  # set but empty: ignored, not an empty model
    assert OpenAILLMConfig.from_env().model == "gpt-4.1"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"connect_timeout": -1}, ["connect_timeout", "positive", "-1"]),
        ({"first_token_timeout": -0.5}, ["first_token_timeout", "positive"]),
        ({"chunk_timeout": 0}, ["chunk_timeout", "positive"]),
        ({"tool_timeout": -3}, ["tool_timeout", "positive"]),
        ({"temperature": 2.5}, ["temperature", "between", "2.5"]),
        ({"temperature": -0.1}, ["temperature", "between"]),
        ({"top_p": 1.5}, ["top_p", "between"]),
        ({"frequency_penalty": -3}, ["frequency_penalty", "between"]),
        ({"presence_penalty": 2.01}, ["presence_penalty", "between"]),
        ({"model": ""}, ["model", "non-empty"]),
        ({"model": "   "}, ["model", "non-empty"]),
        ({"base_url": ""}, ["base_url", "non-empty"]),
        ({"max_tool_rounds": 0}, ["max_tool_rounds", "at least 1"]),
        ({"max_completion_tokens": 0}, ["max_completion_tokens", "at least 1"]),
        ({"context_window_tokens": -5}, ["context_window_tokens", "at least 1"]),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(
    kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ValueError) as info:
        OpenAILLMConfig(**kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, message


def test_invalid_auth_header_and_retry_policy_are_rejected() -> None:
    with pytest.raises(ValueError, match="auth_header"):
        OpenAILLMConfig(auth_header="basic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="initial_delay"):
        RetryPolicy(initial_delay=-1)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)


def test_the_public_names_load_lazily_and_from_both_paths() -> None:
    script = """
import sys
import rustvani_trio, rustvani_trio.services.llm, rustvani_trio.services.llm.function_registry
import rustvani_trio.tools
from rustvani_trio.services.llm import OpenAILLMConfig, RetryPolicy
assert "httpx" not in sys.modules, "the package or the config imported httpx"
from rustvani_trio.services import llm
from rustvani_trio.services.llm import openai
for name in openai.__all__:
    assert getattr(llm, name) is getattr(openai, name), name
assert sorted(llm.__all__) == sorted(openai.__all__)
assert "OpenAILLMHandler" in dir(llm)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_retry_delay_is_capped_for_any_attempt() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=8.0, jitter=0.25)
    for attempt in (1, 5, 1025, 10**6):
        assert 0.0 <= policy.delay(attempt) <= 8.0 * 1.25
    assert policy.delay(1025, retry_after=3.0) >= 3.0
    assert RetryPolicy(initial_delay=0.0).delay(5000) == 0.0
    assert RetryPolicy(multiplier=0.5, jitter=0.0).delay(5000) == 0.0


@pytest.mark.parametrize(
    "key",
    ["sk-secret-123\n", "sk-secret-123\r\n", " sk-secret-123", "sk-secret 123", "sk-secret-é"],
)
def test_an_api_key_that_cannot_be_a_header_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(ValueError, match="api_key") as info:
        OpenAILLMConfig(api_key=key)
    assert "secret" not in str(info.value)


def test_a_key_read_from_a_crlf_env_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123\r\n")
    with pytest.raises(ValueError, match="CRLF") as info:
        OpenAILLMConfig.from_env()
    assert "secret" not in str(info.value)


def test_header_values_that_cannot_be_sent_are_refused_without_showing_them() -> None:
    with pytest.raises(ValueError, match="extra_headers") as info:
        OpenAILLMConfig(extra_headers={"x-api-key": "hidden-value\n"})
    assert "hidden-value" not in str(info.value)
    assert "hidden" not in repr(OpenAILLMConfig(extra_headers={"x-api-key": "hidden"}))
    assert "sk-hidden" not in repr(OpenAILLMConfig(api_key="sk-hidden"))


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"X-Title": "Caf\u00e9 bot"}, ["X-Title", "other than ASCII", "percent-encode"]),
        ({"Bad Name": "v"}, ["'Bad Name'", "no HTTP header name"]),
        ({"X-Key:": "v"}, ["no HTTP header name"]),
        ({"": "v"}, ["no HTTP header name"]),
    ],
    ids=["non-ascii-value", "space-in-name", "colon-in-name", "empty-name"],
)
def test_headers_httpx_cannot_send_are_refused_where_the_config_is_built(
    headers: dict[str, str], words: list[str]
) -> None:
    # They were accepted, then every turn failed with "the turn failed: UnicodeEncodeError"
    # (or a LocalProtocolError) before a request was sent.
    with pytest.raises(ValueError) as info:
        OpenAILLMConfig(extra_headers=headers)
    for word in words:
        assert word in str(info.value)
    assert "Caf" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"when": datetime.datetime(2025, 1, 1)}, ["JSON values only", "datetime"]),
        ({"top_k": float("nan")}, ["JSON values only", "not JSON compliant"]),
        ({"ids": {1, 2}}, ["JSON values only", "set"]),
        ({"stream": False}, ["may not set 'stream'"]),
        ({"messages": []}, ["may not set 'messages'"]),
    ],
    ids=["datetime", "nan", "set", "stream", "messages"],
)
def test_an_extra_body_that_no_request_could_carry_is_refused(
    body: dict[str, Any], words: list[str]
) -> None:
    # It was accepted; then every turn failed ("the turn failed: TypeError: ... not JSON
    # serializable"), sent NaN (which is no JSON), or got no stream back.
    with pytest.raises(ValueError) as info:
        OpenAILLMConfig(extra_body=body)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"extra_headers": None}, ["extra_headers", "mapping of str to str"]),
        ({"extra_headers": {"x": 1}}, ["extra_headers", "str"]),
        ({"extra_query": None}, ["extra_query", "mapping of str to str"]),
        ({"extra_body": None}, ["extra_body", "mapping with str keys"]),
        ({"extra_body": [("a", 1)]}, ["extra_body", "mapping with str keys"]),
        ({"include_usage": "yes"}, ["include_usage", "True or False"]),
        ({"seed": "42"}, ["seed", "an int"]),
        ({"seed": True}, ["seed", "an int"]),
        ({"service_tier": 1}, ["service_tier", "a str"]),
        ({"reasoning_effort": 1}, ["reasoning_effort", "a str"]),
        ({"retry": {"max_attempts": 2}}, ["retry", "a RetryPolicy"]),
        ({"api_key": None}, ["api_key", "str"]),
        ({"chunk_timeout": "30"}, ["chunk_timeout", "positive number"]),
        ({"request_timeout": "600"}, ["request_timeout", "positive number"]),
        ({"max_tool_rounds": 2.5}, ["max_tool_rounds", "int"]),
    ],
)
def test_wrong_types_are_refused_where_the_config_is_built(
    kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(TypeError) as info:
        OpenAILLMConfig(**kwargs)
    for word in words:
        assert word in str(info.value), str(info.value)


async def test_an_unknown_model_is_reported_once_and_says_how_to_trim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = "unknown-model-for-the-warning-test"
    async with open_scripted_server(default_reply=TextReply(["ok"])) as server:
        context = new_context()
        frames = [LLMContextFrame(context=context) for _ in range(2)]
        with caplog.at_level(logging.WARNING, logger="rustvani_trio"):
            await run_test([make_llm(server, model=model)], frames)
            await run_test([make_llm(server, model=model)], frames)
            await run_test([make_llm(server, model=model, context_window_tokens=8000)], frames)
            await run_test([make_llm(server, model="gpt-4o")], frames)
    warnings = [r.getMessage() for r in caplog.records if "context window" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert model in warnings[0] and "context_window_tokens" in warnings[0]
    assert "not trimmed" in warnings[0]


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4.1", 1_047_576),
        ("gpt-4.1-mini", 1_047_576),
        ("GPT-4.1-NANO-2025-04-14", 1_047_576),
        ("openai/gpt-4.1", 1_047_576),
        ("gpt-4o", 128_000),
        ("gpt-4o-mini", 128_000),
        ("openrouter/openai/GPT-4o-2024-08-06", 128_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-turbo-preview", 128_000),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-3.5-turbo-0125", 16_385),
        ("claude-opus-4-1", 1_048_576),
        ("claude-sonnet-4-20250514", 1_048_576),
        ("anthropic/claude-sonnet-4", 1_048_576),
        ("claude-3-5-sonnet-latest", 200_000),
        ("claude-3-haiku", 200_000),
        ("gemini-2.5-pro", 1_048_576),
        ("gemini-2.0-flash", 1_048_576),
        ("google/gemini-1.5-flash", 1_048_576),
        # unknown: no trimming
        ("gpt-4", None),
        ("gpt-4-0613", None),
        ("gpt-5", None),
        ("o3-mini", None),
        ("llama-3.1-8b-instruct", None),
        ("claude-2.1", None),
        ("claude-haiku-4", None),
        ("gemini-pro", None),
        ("my-gpt-4.1", None),  # a prefix match on the name after the last "/", not a substring
        ("gpt-4.1/custom-finetune", None),  # only the part after the last "/" counts
        ("", None),
    ],
)
def test_context_window_table(model: str, window: int | None) -> None:
    assert context_window_for_model(model) == window


def test_context_window_table_is_exactly_the_seeds() -> None:
    assert dict(CONTEXT_WINDOWS) == {
        "gpt-4.1": 1_047_576,
        "gpt-4o": 128_000,
        "gpt-4-turbo": 128_000,
        "gpt-3.5": 16_385,
        "claude-opus-4": 1_048_576,
        "claude-sonnet-4": 1_048_576,
        "claude-3": 200_000,
        "gemini-2": 1_048_576,
        "gemini-1.5": 1_048_576,
    }
    assert OpenAILLMConfig(model="llama3").context_window is None
    assert OpenAILLMConfig(model="llama3", context_window_tokens=8192).context_window == 8192
    assert OpenAILLMConfig(model="gpt-4o", context_window_tokens=4096).context_window == 4096


# --------------------------------------------------------------------------- the request


async def test_request_leaves_optional_fields_out_and_asks_for_usage() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hi"]))
        result = await one_turn(server)
    assert joined(result.downstream, LLMText) == "Hi"
    (req,) = server.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.json == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert req.headers["authorization"] == "Bearer sk-test"
    assert "api-key" not in req.headers
    assert req.query == {}


async def test_one_llm_text_per_non_empty_content_delta() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hel", "", "lo", " ", ""], reasoning=["a", "", "b"]))
        result = await one_turn(server)
    assert [f.text for f in result.downstream if type(f) is LLMText] == ["Hel", "lo", " "]
    assert [f.text for f in result.downstream_of(LLMReasoningText)] == ["a", "b"]
    kinds = [type(f) for f in result.downstream]
    # Start, the deltas, End, in order.
    first_text = kinds.index(LLMReasoningText)
    assert kinds.index(LLMFullResponseStart) < first_text
    assert max(i for i, k in enumerate(kinds) if k is LLMText) < kinds.index(LLMFullResponseEnd)


async def test_request_carries_every_optional_field_that_is_set() -> None:
    sampling = {
        "temperature": 0.3,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "seed": 42,
        "max_completion_tokens": 256,
        "service_tier": "flex",
        "reasoning_effort": "low",
    }
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hi"]))
        await one_turn(server, model="gpt-4o-mini", include_usage=False, **sampling)
    body = server.requests[0].json
    assert body["model"] == "gpt-4o-mini"
    for key, value in sampling.items():
        assert body[key] == value, key
    assert "stream_options" not in body
    assert "tools" not in body and "tool_choice" not in body


async def test_extra_headers_query_body_and_azure_api_key_header() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hi"]))
        # Azure style: deployment URL (with a trailing slash), api-version, api-key header.
        base = server.base_url + "/"
        result = await one_turn(
            base,
            api_key="azure-secret",
            auth_header="api-key",
            extra_headers={"X-Trace": "t-1", "OpenAI-Organization": "org-9"},
            extra_query={"api-version": "2024-10-21"},
            extra_body={"user": "u-7", "parallel_tool_calls": False},
        )
    assert not llm_errors(result)
    (req,) = server.requests
    assert req.path == "/v1/chat/completions"  # no double slash from the trailing one
    assert req.query == {"api-version": "2024-10-21"}
    assert req.headers["api-key"] == "azure-secret"
    assert "authorization" not in req.headers
    assert req.headers["x-trace"] == "t-1"
    assert req.headers["openai-organization"] == "org-9"
    assert req.json["user"] == "u-7"
    assert req.json["parallel_tool_calls"] is False
    assert req.json["stream"] is True


async def test_no_api_key_sends_no_auth_header() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Hi"]))
        await one_turn(server, api_key="")
    headers = server.requests[0].headers
    assert "authorization" not in headers and "api-key" not in headers


async def test_context_is_trimmed_to_the_configured_window() -> None:
    history: list[dict[str, Any]] = [{"role": "system", "content": "SYSTEM PROMPT"}]
    for i in range(30):
        history.append({"role": "user", "content": f"question {i} " + "x" * 200})
        history.append({"role": "assistant", "content": f"answer {i} " + "y" * 200})
    history.append({"role": "user", "content": "the last question"})
    async with open_scripted_server() as server:
        server.add_replies([TextReply(["a"]), TextReply(["b"])])
        # An unknown model: no trimming by default ...
        await one_turn(server, model="llama3", context=LLMContext(history))
        # ... but a configured window trims to 80% of it, keeping the system prompt.
        await one_turn(
            server, model="llama3", context_window_tokens=1000, context=LLMContext(history)
        )
    untrimmed, trimmed = (r.messages for r in server.requests)
    assert len(untrimmed) == len(history)
    assert 2 < len(trimmed) < len(history)
    assert trimmed[0] == {"role": "system", "content": "SYSTEM PROMPT"}
    assert trimmed[-1] == {"role": "user", "content": "the last question"}
    assert sum(len(m["content"]) for m in trimmed) / 4 <= 1000 * 0.8


# =========================================================================== 2. the fixture corpus


def _load_expected() -> dict[str, dict[str, Any]]:
    if not FIXTURE_DIR.is_dir():
        return {}
    return json.loads((FIXTURE_DIR / "expected.json").read_text(encoding="utf-8"))


EXPECTED = _load_expected()
FIXTURE_NAMES = sorted(EXPECTED)
FIXTURE_PARAMS = FIXTURE_NAMES or [
    pytest.param("absent", marks=pytest.mark.skip(reason=FIXTURES_MISSING))
]
SPLIT_SIZES = (1, 2, 3, 5, 8, 13, 64, 333, 1024, 4096)


def split_sizes(name: str, length: int) -> list[int]:
    """A deterministic, irregular split of a body: some 1-3 byte pieces (which cut multi-byte
    UTF-8 characters and CRLF pairs), some large ones."""
    rng = random.Random(name)
    sizes: list[int] = []
    while sum(sizes) < length:
        sizes.append(rng.choice(SPLIT_SIZES))
    return sizes


def fixture_body(name: str) -> bytes:
    return (FIXTURE_DIR / name).read_bytes()


def check_fixture_turn(name: str, result: RunResult, requests: Sequence[RecordedRequest]) -> None:
    """What one fixture served as the first reply of a turn must produce."""
    exp = EXPECTED[name]
    first = before_tools(result.downstream)
    texts = [f for f in first if type(f) is LLMText]
    assert all(f.text for f in texts), "an empty content delta became an LLMText"
    assert joined(first, LLMText) == exp["text"]
    assert joined(first, LLMReasoningText) == (exp["reasoning"] or "")
    assert joined(first, LLMRefusalText) == (exp["refusal"] or "")
    errors = llm_errors(result)
    assert all(e.processor == LLM for e in result.upstream_of(ErrorFrame)), errors
    assert result.downstream_of(ErrorFrame) == []  # errors travel upstream only
    if exp["error"] is not None:
        assert len(errors) == 1, errors
        assert exp["error"] in errors[0].error
    elif exp["finish_reason"] == "length":
        assert len(errors) == 1, errors
        assert "length" in errors[0].error
    else:
        assert errors == []
    tool_rounds = result.downstream_of(FunctionCallStart)
    if exp["tool_calls"] and exp["error"] is None:
        # The registry is empty: the model is told so, and asked again.
        assert len(requests) == 2
        (start,) = tool_rounds
        calls = [(c.tool_call_id, c.function_name, c.arguments) for c in start.calls]
        assert calls == [(t["id"], t["name"], t["arguments"]) for t in exp["tool_calls"]]
        second = requests[1].messages
        call_message = second[-1 - len(calls)]
        assert call_message["role"] == "assistant"
        assert (call_message.get("content") or "") == exp["text"]
        assert [c["id"] for c in call_message["tool_calls"]] == [t["id"] for t in exp["tool_calls"]]
        for tool_message, expected in zip(second[-len(calls) :], exp["tool_calls"], strict=True):
            assert tool_message["role"] == "tool"
            assert tool_message["tool_call_id"] == expected["id"]
            assert "no function named" in tool_message["content"]
        assert joined(result.downstream, LLMText) == exp["text"] + "after tools"
    else:
        assert tool_rounds == []
        assert len(requests) == 1
    assert_turns_closed(result)


@pytest.mark.parametrize("name", FIXTURE_PARAMS)
async def test_fixture_through_the_whole_handler(name: str) -> None:
    body = fixture_body(name)
    reply = RawReply(body, chunk_sizes=split_sizes(name, len(body)))
    async with open_scripted_server(default_reply=TextReply(["after ", "tools"])) as server:
        server.add_reply(reply)
        result = await one_turn(server, params=METRICS)
    check_fixture_turn(name, result, server.requests)
    # Usage, when the stream has it, is reported as the server sent it.
    usage = EXPECTED[name]["usage"]
    reported = metrics_of(result.downstream, LLMUsageMetricsData)
    if usage is not None and usage.get("prompt_tokens"):
        assert reported, "no usage metrics"
        first = reported[0].value
        assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
            usage["total_tokens"],
        )
        details = usage.get("completion_tokens_details") or {}
        assert first.reasoning_tokens == details.get("reasoning_tokens")
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None:  # DeepSeek's own field
            cached = usage.get("prompt_cache_hit_tokens")
        assert first.cached_tokens == cached


@pytest.mark.parametrize("name", FIXTURE_PARAMS)
async def test_fixture_in_one_piece(name: str) -> None:
    async with open_scripted_server(default_reply=TextReply(["after ", "tools"])) as server:
        server.add_reply(RawReply(fixture_body(name)))
        result = await one_turn(server)
    check_fixture_turn(name, result, server.requests)


@pytest.mark.skipif(not EXPECTED, reason=FIXTURES_MISSING)
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_fixture_under_random_network_splits(data: st.DataObject) -> None:
    # Weighted towards the multi-byte streams (emoji, CJK) and the CRLF one.
    name = data.draw(
        st.sampled_from(FIXTURE_NAMES)
        | st.sampled_from([n for n in FIXTURE_NAMES if n[:2] in {"17", "18", "26", "27"}]),
        label="fixture",
    )
    body = fixture_body(name)
    offset = data.draw(st.integers(0, len(body)), label="first piece")
    small = data.draw(st.lists(st.integers(1, 7), max_size=40), label="small pieces")
    large = data.draw(st.lists(st.integers(1, 4096), max_size=10), label="large pieces")
    reply = RawReply(body, chunk_sizes=[offset, *small, *large])
    async with open_scripted_server(default_reply=TextReply(["after ", "tools"])) as server:
        server.add_reply(reply)
        result = await one_turn(server)
    check_fixture_turn(name, result, server.requests)


def _sse(*chunks: dict[str, Any] | str) -> bytes:
    out = b""
    for chunk in chunks:
        payload = chunk if isinstance(chunk, str) else json.dumps(chunk)
        out += b"data: " + payload.encode() + b"\n\n"
    return out


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def test_stream_without_done_and_without_finish_reason_is_an_error() -> None:
    body = _sse(_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Half an an"}))
    async with open_scripted_server() as server:
        server.add_reply(RawReply(body))
        result = await one_turn(server)
    assert joined(result.downstream, LLMText) == "Half an an"
    (error,) = llm_errors(result)
    assert "[DONE]" in error.error and "finish_reason" in error.error
    assert_turns_closed(result)


async def test_stream_with_finish_reason_but_without_done_is_complete() -> None:
    body = _sse(_chunk({"content": "Whole."}), _chunk({}, "stop"))
    async with open_scripted_server() as server:
        server.add_reply(RawReply(body))
        result = await one_turn(server)
    assert joined(result.downstream, LLMText) == "Whole."
    assert llm_errors(result) == []
    assert_turns_closed(result)


async def test_finish_reason_content_filter_is_reported() -> None:
    body = _sse(_chunk({"content": "I was"}), _chunk({}, "content_filter"), "[DONE]")
    async with open_scripted_server() as server:
        server.add_reply(RawReply(body))
        result = await one_turn(server)
    assert joined(result.downstream, LLMText) == "I was"
    (error,) = llm_errors(result)
    assert "content_filter" in error.error and not error.fatal
    assert_turns_closed(result)


async def test_a_chunk_that_is_not_json_is_an_error_naming_the_processor() -> None:
    body = _sse(_chunk({"content": "ok "}), "{not json", "[DONE]")
    async with open_scripted_server() as server:
        server.add_reply(RawReply(body))
        result = await one_turn(server)
    (error,) = llm_errors(result)
    assert "invalid stream" in error.error
    assert_turns_closed(result)


# =========================================================================== 3. HTTP errors


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_says_the_key_is_wrong(status: int) -> None:
    async with open_scripted_server() as server:
        server.add_reply(ErrorReply(status, "Incorrect API key provided: sk-te***st."))
        result = await one_turn(server)
    (error,) = llm_errors(result)
    assert f"HTTP {status}" in error.error
    assert "Incorrect API key provided" in error.error
    assert "API key" in error.error and "OPENAI_API_KEY" in error.error
    assert not error.fatal
    assert len(server.requests) == 1  # not retried
    assert result.downstream_of(LLMText) == []
    assert_turns_closed(result)


async def test_404_names_the_model_and_the_base_url() -> None:
    async with open_scripted_server() as server:
        server.add_reply(
            ErrorReply(404, "The model `gpt-9` does not exist", code="model_not_found")
        )
        result = await one_turn(server, model="gpt-9")
    (error,) = llm_errors(result)
    assert "404" in error.error
    assert "does not exist" in error.error
    assert "'gpt-9'" in error.error and server.base_url in error.error
    assert len(server.requests) == 1
    assert_turns_closed(result)


async def test_404_from_a_wrong_base_url_path() -> None:
    async with open_scripted_server() as server:
        base = server.base_url.removesuffix("/v1") + "/wrong"
        result = await one_turn(base)
    (error,) = llm_errors(result)
    assert "404" in error.error and "/wrong" in error.error and "base_url" in error.error
    assert_turns_closed(result)


async def test_400_includes_the_server_message_and_is_not_retried() -> None:
    message = "Invalid value for 'temperature': must be at most 2."
    async with open_scripted_server(default_reply=TextReply(["never"])) as server:
        server.add_reply(ErrorReply(400, message, code="invalid_value"))
        result = await one_turn(server)
    (error,) = llm_errors(result)
    assert "HTTP 400" in error.error and message in error.error
    assert len(server.requests) == 1
    assert result.downstream_of(LLMText) == []
    assert_turns_closed(result)


async def test_error_body_that_is_not_json_is_shown_as_text() -> None:
    async with open_scripted_server() as server:
        server.add_reply(
            RawReply(b"<html>upstream says no</html>", status=418, content_type="text/html")
        )
        result = await one_turn(server)
    (error,) = llm_errors(result)
    assert "HTTP 418" in error.error and "upstream says no" in error.error
    assert_turns_closed(result)


# =========================================================================== 4. retries


async def test_429_with_retry_after_then_success(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scripted_server() as server:
        server.add_replies(
            [
                ErrorReply(429, "Rate limit reached", headers={"Retry-After": "7"}),
                TextReply(["Fine", " now."]),
            ]
        )
        start = trio.current_time()
        result = await one_turn(server, params=METRICS)
        elapsed = trio.current_time() - start
    assert len(server.requests) == 2
    assert joined(result.downstream, LLMText) == "Fine now."
    assert result.upstream_of(ErrorFrame) == []
    assert_turns_closed(result)
    # Retry-After (7 s) was honoured over the policy's 0.5 s first delay, and not much more.
    assert 7.0 <= elapsed < 7.5
    # The turn's metrics count one answer.
    assert len(metrics_of(result.downstream, LLMUsageMetricsData)) == 1


async def test_retry_after_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(initial_delay=0.1, jitter=0.0, max_retry_after=3.0)
    async with open_scripted_server() as server:
        server.add_replies(
            [ErrorReply(503, "busy", headers={"Retry-After": "3600"}), TextReply(["ok"])]
        )
        start = trio.current_time()
        result = await one_turn(server, retry=policy)
        elapsed = trio.current_time() - start
    assert joined(result.downstream, LLMText) == "ok"
    assert 3.0 <= elapsed < 3.5


async def test_5xx_is_retried_with_exponential_backoff_then_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    def unavailable(_request: RecordedRequest) -> ErrorReply:
        times.append(trio.current_time())
        return ErrorReply(503, "The engine is currently overloaded", type="server_error")

    policy = RetryPolicy(max_attempts=4, initial_delay=1.0, multiplier=2.0, jitter=0.0)
    async with open_scripted_server(default_reply=unavailable) as server:
        result = await one_turn(server, retry=policy)
    assert len(server.requests) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert [round(g, 1) for g in gaps] == [1.0, 2.0, 4.0]
    (error,) = llm_errors(result)
    assert "after 4 attempts" in error.error
    assert "HTTP 503" in error.error and "overloaded" in error.error
    assert result.downstream_of(LLMText) == []
    assert_turns_closed(result)


async def test_503_three_times_with_the_default_policy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_scripted_server(default_reply=ErrorReply(503, "down")) as server:
        result = await one_turn(server)
    assert len(server.requests) == 3
    (error,) = llm_errors(result)
    assert "after 3 attempts" in error.error and "503" in error.error
    assert_turns_closed(result)


async def test_jitter_spreads_the_delays(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=1.0, jitter=0.5)
    delays = {round(policy.delay(1), 6) for _ in range(50)}
    assert len(delays) > 1 and all(0.5 <= d <= 1.5 for d in delays)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 504])
async def test_retryable_statuses(status: int) -> None:
    async with open_scripted_server() as server:
        server.add_replies([ErrorReply(status, "try again"), TextReply(["ok"])])
        result = await one_turn(server, retry=FAST_RETRY)
    assert len(server.requests) == 2
    assert joined(result.downstream, LLMText) == "ok"
    assert llm_errors(result) == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    async with open_scripted_server(default_reply=TextReply(["never"])) as server:
        server.add_reply(ErrorReply(status, "no"))
        result = await one_turn(server, retry=FAST_RETRY)
    assert len(server.requests) == 1
    assert len(llm_errors(result)) == 1


async def test_connection_refused_names_the_url(autojump_clock: trio.testing.MockClock) -> None:
    url = closed_port_url()
    result = await one_turn(url)
    (error,) = llm_errors(result)
    assert url in error.error
    assert "after 3 attempts" in error.error and "ConnectError" in error.error
    assert_turns_closed(result)


async def test_error_mid_stream_is_not_retried_and_text_is_not_duplicated() -> None:
    async with open_scripted_server(default_reply=TextReply(["NEVER"])) as server:
        server.add_reply(
            TextReply(numbered_tokens(6), error_after=3, error_message="The server had an error")
        )
        result = await one_turn(server, retry=FAST_RETRY)
    assert len(server.requests) == 1
    assert joined(result.downstream, LLMText) == "tok0 tok1 tok2 "
    (error,) = llm_errors(result)
    assert "The server had an error" in error.error
    assert_turns_closed(result)


async def test_connection_dropped_mid_stream_is_not_retried() -> None:
    async with open_scripted_server(default_reply=TextReply(["NEVER"])) as server:
        server.add_reply(TextReply(numbered_tokens(6), drop_after=2))
        result = await one_turn(server, retry=FAST_RETRY)
    assert len(server.requests) == 1
    assert joined(result.downstream, LLMText) == "tok0 tok1 "
    (error,) = llm_errors(result)
    assert server.base_url in error.error
    assert_turns_closed(result)


async def test_connection_dropped_before_the_first_delta_is_retried() -> None:
    async with open_scripted_server() as server:
        server.add_replies([TextReply(["lost"], drop_after=0), TextReply(["saved"])])
        result = await one_turn(server, retry=FAST_RETRY)
    assert len(server.requests) == 2
    assert joined(result.downstream, LLMText) == "saved"
    assert llm_errors(result) == []
    assert_turns_closed(result)


async def test_retry_after_as_an_http_date(autojump_clock: trio.testing.MockClock) -> None:
    when = email.utils.formatdate(time.time() + 6, usegmt=True)
    async with open_scripted_server() as server:
        server.add_replies(
            [ErrorReply(429, "slow down", headers={"Retry-After": when}), TextReply(["ok"])]
        )
        start = trio.current_time()
        result = await one_turn(server)
        elapsed = trio.current_time() - start
    assert joined(result.downstream, LLMText) == "ok"
    assert 4.5 <= elapsed <= 6.5  # the date has a one-second resolution


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "3"}, 0.25),  # OpenAI's and Azure's
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}, 0.0),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "1_0"}, None),
        ({"retry-after": "0x10"}, None),
        ({}, None),
    ],
)
def test_retry_after_values(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == seconds


async def test_retry_after_ms_is_preferred(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(initial_delay=0.01, jitter=0.0)
    headers = {"Retry-After": "20", "retry-after-ms": "1500"}
    async with open_scripted_server() as server:
        server.add_replies([ErrorReply(429, "slow down", headers=headers), TextReply(["ok"])])
        start = trio.current_time()
        result = await one_turn(server, retry=policy)
        elapsed = trio.current_time() - start
    assert joined(result.downstream, LLMText) == "ok"
    assert 1.5 <= elapsed < 1.6


async def test_no_retry_once_reasoning_was_streamed() -> None:
    async with open_scripted_server(default_reply=TextReply(["NEVER"])) as server:
        server.add_reply(TextReply(["answer"], reasoning=["Let ", "me ", "think"], drop_after=2))
        result = await one_turn(server, retry=FAST_RETRY)
    assert len(server.requests) == 1
    assert joined(result.downstream, LLMReasoningText) == "Let me "
    assert len(llm_errors(result)) == 1
    assert_turns_closed(result)


async def test_a_failed_turn_does_not_stop_the_next_one() -> None:
    async with open_scripted_server() as server:
        server.add_replies([ErrorReply(400, "bad request"), TextReply(["fine"])])
        context = new_context()
        frames = [LLMContextFrame(context=context), LLMContextFrame(context=context)]
        result = await run_test([make_llm(server)], frames)
    assert len(llm_errors(result)) == 1
    assert joined(result.downstream, LLMText) == "fine"
    assert_turns_closed(result, turns=2)
    assert result.finish_reason == "end"


# =========================================================================== 5. timeouts


async def test_stalled_stream_is_an_error_not_a_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_scripted_server(default_reply=TextReply(["NEVER"])) as server:
        server.add_reply(TextReply(numbered_tokens(5), stall_after=2))
        start = trio.current_time()
        result = await one_turn(server, chunk_timeout=4.0, time_limit=30)
        elapsed = trio.current_time() - start
        with trio.fail_after(1):
            await server.requests[0].disconnected.wait()
    assert 4.0 <= elapsed < 5.0
    assert len(server.requests) == 1  # text was streamed: no retry
    assert joined(result.downstream, LLMText) == "tok0 tok1 "
    (error,) = llm_errors(result)
    assert "stall" in error.error and "4.0" in error.error
    assert_turns_closed(result)


async def test_stall_in_real_time() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(numbered_tokens(5), stall_after=2))
        with trio.fail_after(3):
            result = await one_turn(server, chunk_timeout=0.2)
            await server.requests[0].disconnected.wait()
    (error,) = llm_errors(result)
    assert "stall" in error.error
    assert_turns_closed(result)


async def test_first_token_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["late"], first_token_delay=20.0))
        start = trio.current_time()
        result = await one_turn(server, first_token_timeout=5.0, chunk_timeout=30.0, retry=NO_RETRY)
        elapsed = trio.current_time() - start
        with trio.fail_after(1):
            await server.requests[0].disconnected.wait()
    assert 5.0 <= elapsed < 6.0
    assert result.downstream_of(LLMText) == []
    (error,) = llm_errors(result)
    assert "first_token_timeout=5.0" in error.error
    assert_turns_closed(result)


async def test_first_token_timeout_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    async with open_scripted_server() as server:
        server.add_replies([TextReply(["late"], first_token_delay=20.0), TextReply(["quick"])])
        result = await one_turn(server, first_token_timeout=5.0)
    assert len(server.requests) == 2
    assert joined(result.downstream, LLMText) == "quick"
    assert llm_errors(result) == []


async def test_first_token_may_take_longer_than_chunk_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A reasoning model thinks 45 s before its first token; first_token_timeout allows 60 s,
    # and the between-chunks limit (30 s) is about silence *between* chunks of the answer.
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["Thought", " it", " through."], first_token_delay=45.0))
        result = await one_turn(
            server, first_token_timeout=60.0, chunk_timeout=30.0, retry=NO_RETRY, time_limit=120
        )
    assert llm_errors(result) == []
    assert joined(result.downstream, LLMText) == "Thought it through."


async def test_connect_timeout_names_the_url_and_the_connect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A listener whose accept queue is full and never drained: connecting hangs (Linux drops
    # the SYNs), so the connect timeout fires.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            url = f"http://127.0.0.1:{port}/v1"
            start = trio.current_time()
            result = await one_turn(url, connect_timeout=2.0, chunk_timeout=30.0, retry=NO_RETRY)
            elapsed = trio.current_time() - start
        finally:
            for filler in fillers:
                filler.close()
    assert 2.0 <= elapsed < 3.0
    (error,) = llm_errors(result)
    assert url in error.error
    assert "connect" in error.error.lower()
    # (not a bare "30": the random port may contain it)
    assert "stalled" not in error.error and "chunk_timeout" not in error.error
    assert "30s" not in error.error and "30.0s" not in error.error


async def test_slow_but_steady_stream_is_not_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 10 tokens 3 s apart: 30 s in all, but never 4 s of silence.
    async with open_scripted_server() as server:
        server.add_reply(TextReply(numbered_tokens(10), token_delay=3.0))
        result = await one_turn(server, chunk_timeout=4.0, first_token_timeout=5.0, time_limit=60)
    assert llm_errors(result) == []
    assert joined(result.downstream, LLMText) == "".join(numbered_tokens(10))


# =========================================================================== 6. cancellation


def _after(frames: Sequence[Frame], kind: type[Frame]) -> list[Frame]:
    index = next(i for i, f in enumerate(frames) if isinstance(f, kind))
    return list(frames[index + 1 :])


async def test_interruption_mid_stream_disconnects_and_the_next_turn_works() -> None:
    first_tokens = [f"A{i} " for i in range(1000)]
    async with open_scripted_server() as server:
        server.add_replies(
            [TextReply(first_tokens, token_delay=0.01), TextReply(["B0 ", "B1 ", "B2"])]
        )
        before = all_tasks()
        context = new_context()
        async with live_run([make_llm(server)], params=METRICS) as run:
            await run.queue(LLMContextFrame(context=context))
            await run.wait_for(lambda: run.count(LLMText) >= 3)
            (streaming,) = server.requests
            await run.queue(InterruptionFrame())
            with trio.fail_after(1.0):
                await streaming.disconnected.wait()
            await trio.sleep(0.1)  # time for a stale token to show up, if one could
            await run.queue(LLMContextFrame(context=context))
            await run.wait_for(lambda: run.count(LLMFullResponseEnd) >= 1)
            await run.queue(EndFrame())
        await trio.testing.wait_all_tasks_blocked()
        leftover = {t for t in all_tasks() - before if not _server_task(t)}
    assert not streaming.completed.is_set()
    assert leftover == set()
    down = run.downstream
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    interrupted_text = joined(down[:cut], LLMText)
    assert 3 <= len(interrupted_text.split()) < len(first_tokens)
    assert interrupted_text == "".join(first_tokens[: len(interrupted_text.split())])
    after = _after(down, InterruptionFrame)
    # Nothing of the interrupted stream after the interruption; the next turn is whole.
    assert joined(after, LLMText) == "B0 B1 B2"
    assert [type(f) for f in after if isinstance(f, LLMFullResponseStart | LLMFullResponseEnd)] == [
        LLMFullResponseStart,
        LLMFullResponseEnd,
    ]
    assert len(server.requests) == 2
    assert [e for e in run.upstream if isinstance(e, ErrorFrame)] == []
    # Usage is reported for the interrupted round too, marked as such.
    usage = metrics_of(down, LLMUsageMetricsData)
    assert [u.interrupted for u in usage] == [True, False]
    assert usage[0].value.completion_tokens >= 3


async def test_interruption_while_waiting_for_the_first_token() -> None:
    async with open_scripted_server() as server:
        server.add_replies([TextReply(["late"], first_token_delay=30.0), TextReply(["next"])])
        async with live_run([make_llm(server)]) as run:
            await run.queue(LLMContextFrame(context=new_context()))
            (waiting,) = await server.wait_for_requests(1)
            await run.queue(InterruptionFrame())
            with trio.fail_after(1.0):
                await waiting.disconnected.wait()
            await run.queue(LLMContextFrame(context=new_context()))
            await run.wait_for(lambda: run.count(LLMFullResponseEnd) >= 1)
            await run.queue(EndFrame())
    assert joined(run.downstream, LLMText) == "next"
    assert [e for e in run.upstream if isinstance(e, ErrorFrame)] == []


class _Announce(logging.Handler):
    """Sets ``event`` when a log message containing ``words`` is emitted (synchronously, in
    the emitting task: nothing else runs in between)."""

    def __init__(self, words: str, event: trio.Event) -> None:
        super().__init__()
        self.words = words
        self.event = event

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


async def test_interruption_during_retry_backoff_stops_retrying(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    policy = RetryPolicy(initial_delay=30.0, max_delay=30.0, jitter=0.0)
    assert policy.delay(1) == 30.0
    # The handler logs "attempt 1 failed (...); retrying in 30.00s" and goes straight into the
    # backoff sleep: that log line is the exact moment to interrupt (no real-time guessing).
    in_backoff = trio.Event()
    announce = _Announce("retrying in", in_backoff)
    caplog.set_level(logging.INFO, logger="rustvani_trio")
    logging.getLogger("rustvani_trio").addHandler(announce)
    try:
        async with open_scripted_server(default_reply=TextReply(["late retry"])) as server:
            server.add_reply(ErrorReply(503, "busy"))
            start = trio.current_time()
            async with live_run([make_llm(server, retry=policy)]) as run:
                await run.queue(LLMContextFrame(context=new_context()))
                (failed,) = await server.wait_for_requests(1)
                with trio.fail_after(1):
                    await failed.completed.wait()
                    await in_backoff.wait()
                await run.queue(InterruptionFrame())
                await run.wait_for(lambda: run.count(InterruptionFrame) == 1)
                await run.queue(EndFrame())
            elapsed = trio.current_time() - start
    finally:
        logging.getLogger("rustvani_trio").removeHandler(announce)
    # Virtual time: the whole run took no time; a backoff that ran to its end takes 30 s.
    assert elapsed < 1.0
    assert len(server.requests) == 1
    assert run.count(LLMText) == 0
    assert [e for e in run.upstream if isinstance(e, ErrorFrame)] == []


async def test_cancel_mid_stream_ends_the_run_promptly() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(numbered_tokens(1000), token_delay=0.01))
        before = all_tasks()
        async with live_run([make_llm(server)]) as run:
            await run.queue(LLMContextFrame(context=new_context()))
            await run.wait_for(lambda: run.count(LLMText) >= 2)
            (streaming,) = server.requests
            await run.task.cancel("user hung up")
            cancelled_at = trio.current_time()
        took = trio.current_time() - cancelled_at
        with trio.fail_after(1.0):
            await streaming.disconnected.wait()
        count = run.count(LLMText)
        await trio.sleep(0.1)
        await trio.testing.wait_all_tasks_blocked()
        leftover = {t for t in all_tasks() - before if not _server_task(t)}
    assert took < 1.0  # the stream had ~10 s to go
    assert run.task.finish_reason == "cancel: user hung up"
    assert run.count(LLMText) == count < 1000
    assert not streaming.completed.is_set()
    assert leftover == set()


async def test_end_frame_waits_for_the_turn_then_closes_the_client() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(numbered_tokens(20), token_delay=0.005))
        result = await one_turn(server)
    assert joined(result.downstream, LLMText) == "".join(numbered_tokens(20))
    assert server.requests[0].completed.is_set()
    assert result.finish_reason == "end"


async def test_consecutive_turns_reuse_the_keep_alive_connection() -> None:
    async with open_scripted_server(default_reply=TextReply(["a", "b"])) as server:
        context = new_context()
        llm = make_llm(server)
        frames = [LLMContextFrame(context=context) for _ in range(3)]
        result = await run_test([llm], frames)
    assert joined(result.downstream, LLMText) == "ab" * 3
    assert all(r.completed.is_set() for r in server.requests)
    assert [r.connection for r in server.requests] == [1, 1, 1]


async def test_end_frame_closes_the_client() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["a"]))
        await one_turn(server)
        # The processor's client was closed at the EndFrame: no connection stays open.
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert not any(t.name.endswith("._run_handler") for t in all_tasks())  # connections


# =========================================================================== 7. metrics


async def test_metrics_ttfb_processing_and_usage(autojump_clock: trio.testing.MockClock) -> None:
    usage = Usage(prompt_tokens=120, completion_tokens=9, cached_tokens=64, reasoning_tokens=5)
    async with open_scripted_server() as server:
        server.add_reply(
            TextReply(
                ["The", " answer"],
                reasoning=["hmm"],
                first_token_delay=2.0,
                token_delay=0.5,
                usage=usage,
            )
        )
        result = await one_turn(server, params=METRICS)
    assert joined(result.downstream, LLMReasoningText) == "hmm"
    assert joined(result.downstream, LLMText) == "The answer"
    (ttfb,) = metrics_of(result.downstream, TTFBMetricsData)
    (processing,) = metrics_of(result.downstream, ProcessingMetricsData)
    (reported,) = metrics_of(result.downstream, LLMUsageMetricsData)
    assert ttfb.processor == processing.processor == reported.processor == LLM
    assert 2.0 <= ttfb.value < 2.1  # request to first delta (the reasoning one)
    assert 3.0 <= processing.value < 3.2  # + two token delays
    assert reported.value.prompt_tokens == 120
    assert reported.value.completion_tokens == 9
    assert reported.value.total_tokens == 129
    assert reported.value.cached_tokens == 64
    assert reported.value.reasoning_tokens == 5
    assert reported.model == "gpt-4.1"
    assert reported.interrupted is False


async def test_no_metrics_unless_enabled() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["x"]))
        result = await one_turn(server)
    assert result.downstream_of(MetricsFrame) == []


async def test_usage_metrics_of_a_failed_round_with_usage() -> None:
    # The stream reports usage and then an error: the usage is still counted.
    body = _sse(
        _chunk({"content": "partial"}),
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}},
        {"error": {"message": "backend exploded", "type": "server_error"}},
    )
    async with open_scripted_server() as server:
        server.add_reply(RawReply(body))
        result = await one_turn(server, params=METRICS)
    (error,) = llm_errors(result)
    assert "backend exploded" in error.error
    (reported,) = metrics_of(result.downstream, LLMUsageMetricsData)
    assert reported.value.total_tokens == 8
    assert_turns_closed(result)


# =========================================================================== 9. the demo


async def test_demo_streams_text_and_tool_lifecycle(capsys: pytest.CaptureFixture[str]) -> None:
    from rustvani_trio._cli.scene_chat import demo

    with trio.fail_after(15):
        await demo()
    out = capsys.readouterr().out
    assert "user> Hi there!" in out
    assert "assistant> Hello! I'm a scripted model streaming over real HTTP" in out
    assert "What's the weather in Pune?" in out
    assert "Let me check that for you." in out
    assert '[tool round 1: get_weather({"city": "Pune"})]' in out
    assert "get_weather running]" in out
    assert "result 'Pune: 31 °C, sunny'" in out
    assert "Here is the latest: Pune: 31 °C, sunny. Anything else?" in out
    assert 'You said: "Thanks, that\'s all."' in out
    assert "TTFB" in out and "tok/s" in out
    assert "4 HTTP requests served" in out
    assert "error" not in out.lower()


async def test_chat_without_a_key_explains_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rustvani_trio._cli.scene_chat import chat

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi there!\n/quit\n"))
    with trio.fail_after(15):
        await chat()
    out = capsys.readouterr().out
    assert "OPENAI_API_KEY is not set" in out
    assert "export OPENAI_API_KEY=" in out and "OPENAI_BASE_URL" in out and "OPENAI_MODEL" in out
    assert "Falling back to the scripted server" in out
    assert "assistant> Hello! I'm a scripted model" in out
