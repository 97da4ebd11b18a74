"""The official ``openai`` SDK (``AsyncOpenAI``, streaming) under asyncio: what most users
would write by hand, and the floor under pipecat (whose OpenAI service is built on it)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI

from .._common import (
    Samples,
    concurrency_samples,
    cpu_now,
    now,
    rss_probe_start,
    rss_probe_stop,
)

_LLM = ("burst", "paced", "interrupt", "tool", "concurrency", "slowsink")


def capabilities(name: str) -> dict[str, str | None]:
    return dict.fromkeys(_LLM)


def run(name: str, scenario: str, params: dict[str, Any]) -> Samples:
    fn = {
        "burst": _stream,
        "paced": _stream,
        "interrupt": _interrupt,
        "tool": _tool,
        "concurrency": _concurrency,
        "slowsink": _slowsink,
    }[scenario]
    return asyncio.run(fn(params))


def _client(params: dict[str, Any]) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="bench", base_url=params["base_url"], max_retries=0)


def _script(params: dict[str, Any]) -> dict[str, Any]:
    script: dict[str, Any] = {"tokens": params["tokens"], "token_delay": params["token_delay"]}
    if params.get("tool_call"):  # the tool request streams only the call
        script.update(tokens=0, tool_call=params["tool_call"])
    return {"x_script": script}


def _ignore(_text: str) -> None:
    """A text callback for requests whose text is not measured."""


def _stamper(into: list[float]) -> Callable[[str], None]:
    return lambda _text: into.append(now())


async def _stream_request(
    client: AsyncOpenAI,
    params: dict[str, Any],
    on_text: Callable[[str], None],
    messages: list[dict[str, Any]] | None = None,
    tool_calls: dict[int, dict[str, Any]] | None = None,
    sink_delay: float = 0.0,
) -> None:
    extra: dict[str, Any] = {}
    if params.get("tools"):
        extra["tools"] = params["tools"]
    completions: Any = client.chat.completions  # plain dicts, not the SDK's TypedDicts
    stream = await completions.create(
        model="bench",
        messages=messages or [{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=_script(params),
        **extra,
    )
    async with stream:
        async for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if delta.content:
                on_text(delta.content)
                if sink_delay:
                    await asyncio.sleep(sink_delay)
            if delta.tool_calls and tool_calls is not None:
                for d in delta.tool_calls:
                    call = tool_calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] = d.id or call["id"]
                    if d.function:
                        call["name"] += d.function.name or ""
                        call["arguments"] += d.function.arguments or ""


async def _warm(client: AsyncOpenAI, params: dict[str, Any]) -> None:
    """A short request first: imports, code paths and a pooled connection are warm."""
    short = {**params, "tokens": 2, "token_delay": 0.0, "tool_call": None}
    await _stream_request(client, short, _ignore)


async def _stream(params: dict[str, Any]) -> Samples:
    out: Samples = {"ttft_ms": [], "total_ms": [], "cpu_ms": []}
    async with _client(params) as client:
        for turn in range(params["turns"] + 1):
            stamps: list[float] = []
            t0, c0 = now(), cpu_now()
            await _stream_request(client, params, _stamper(stamps))
            if turn and stamps:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["ttft_ms"].append((stamps[0] - t0) * 1e3)
                out["total_ms"].append((stamps[-1] - t0) * 1e3)
    return out


async def _interrupt(params: dict[str, Any]) -> Samples:
    out: Samples = {"stop_ms": [], "_t_interrupt": [], "leaked_frames": [], "frames_before": []}
    async with _client(params) as client:
        await _warm(client, params)
        for _ in range(params["turns"]):
            stamps: list[float] = []
            reader = asyncio.create_task(_stream_request(client, params, _stamper(stamps)))
            await asyncio.sleep(params["interrupt_after"])
            t_int = now()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            after = [t for t in stamps if t > t_int]
            out["stop_ms"].append(max(0.0, (max(stamps, default=t_int) - t_int) * 1e3))
            out["_t_interrupt"].append(t_int)
            out["leaked_frames"].append(float(len(after)))
            out["frames_before"].append(float(len(stamps) - len(after)))
    return out


async def _tool(params: dict[str, Any]) -> Samples:
    out: Samples = {"total_ms": [], "ttft_answer_ms": [], "cpu_ms": []}

    async def handler(_args: str) -> str:
        await asyncio.sleep(0)
        return '{"ok": true}'

    # One conversation, as the frameworks hold it: every turn adds the user message, the
    # tool call, its result and the answer, and every request sends all of it (and the tool).
    messages: list[dict[str, Any]] = []
    async with _client(params) as client:
        for turn in range(params["turns"] + 1):
            t0, c0 = now(), cpu_now()
            messages.append({"role": "user", "content": "call the tool"})
            calls: dict[int, dict[str, Any]] = {}
            await _stream_request(client, params, _ignore, messages, calls)
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for _, c in sorted(calls.items())
                    ],
                }
            )
            for _, c in sorted(calls.items()):
                result = await handler(c["arguments"])
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
            stamps: list[float] = []
            text: list[str] = []
            answer = {**params, "tool_call": None}  # the second request streams text
            await _stream_request(client, answer, _stamp_and_keep(stamps, text), messages)
            if turn and stamps:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["total_ms"].append((stamps[-1] - t0) * 1e3)
                out["ttft_answer_ms"].append((stamps[0] - t0) * 1e3)
    return out


def _stamp_and_keep(into: list[float], text: list[str]) -> Callable[[str], None]:
    """A text callback that timestamps each content delta and keeps its text."""

    def on_text(piece: str) -> None:
        into.append(now())
        text.append(piece)

    return on_text


async def _concurrency(params: dict[str, Any]) -> Samples:
    n = params["conversations"]
    stamps: list[list[float]] = [[] for _ in range(n)]
    async with _client(params) as client:
        await _warm(client, params)
        baseline = rss_probe_start()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = now()
        async with asyncio.TaskGroup() as group:
            for i in range(n):
                group.create_task(_stream_request(client, params, _stamper(stamps[i])))
    return concurrency_samples(stamps, n, cpu0, t0, baseline)


async def _slowsink(params: dict[str, Any]) -> Samples:
    stamps: list[float] = []
    async with _client(params) as client:
        await _warm(client, params)
        rss0 = rss_probe_start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(params["window"]):
                await _stream_request(
                    client, params, _stamper(stamps), sink_delay=params["sink_delay"]
                )
    return {
        "peak_rss_mb": [rss_probe_stop(rss0)],
        "max_backlog_frames": [0.0],
        "frames_at_sink": [float(len(stamps))],
    }
