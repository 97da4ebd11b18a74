"""The floors under trio: raw ``httpx`` + ``httpx-sse`` (what our OpenAI handler is built on)
and a bare chain of trio memory channels (what our processors' lanes are built on).

Contestant ``httpx``: every LLM scenario, with no framework at all (one client, the request,
the SSE decode, a callback per content delta). Contestant ``channels``: the hop-cost scenario,
tasks forwarding frames through bounded memory channels.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import httpx
import trio
import trio.testing
from httpx_sse import aconnect_sse

from .._common import (
    Samples,
    audio_chunks,
    concurrency_samples,
    cpu_now,
    decode_chunk,
    now,
    rss_probe_start,
    rss_probe_stop,
    split_sentences,
    strip_markdown,
    voice_tokens,
)

_LLM = ("burst", "paced", "interrupt", "tool", "concurrency", "slowsink", "voice")


def capabilities(name: str) -> dict[str, str | None]:
    if name == "channels":
        return {"hop": None}
    return dict.fromkeys(_LLM)


def run(name: str, scenario: str, params: dict[str, Any]) -> Samples:
    if name == "channels":
        return trio.run(_hop, params)
    fn = {
        "burst": _stream,
        "paced": _stream,
        "interrupt": _interrupt,
        "tool": _tool,
        "concurrency": _concurrency,
        "slowsink": _slowsink,
        "voice": _voice,
    }[scenario]
    return trio.run(fn, params)


# --------------------------------------------------------------------------- helpers


def _client(params: dict[str, Any], connections: int = 10) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=params["base_url"],
        headers={"authorization": "Bearer bench"},
        timeout=httpx.Timeout(30.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def _body(params: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    script: dict[str, Any] = {"tokens": params["tokens"], "token_delay": params["token_delay"]}
    if params.get("tool_call"):  # the tool request streams only the call
        script.update(tokens=0, tool_call=params["tool_call"])
    body: dict[str, Any] = {
        "model": "bench",
        "messages": messages or [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "x_script": script,
    }
    if params.get("tools"):
        body["tools"] = params["tools"]
    return body


async def _stream_request(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    on_text: Callable[[str], None],
    tool_calls: dict[int, dict[str, Any]] | None = None,
) -> None:
    """One streaming request, read to the end of the body (so the connection is reused)."""
    async with aconnect_sse(client, "POST", "/chat/completions", json=body) as source:
        async for event in source.aiter_sse():
            content, deltas, done = decode_chunk(event.data)
            if done:
                continue
            if content:
                on_text(content)
            if deltas and tool_calls is not None:
                for d in deltas:
                    call = tool_calls.setdefault(
                        d.get("index", 0), {"id": "", "name": "", "arguments": ""}
                    )
                    fn = d.get("function") or {}
                    call["id"] = d.get("id") or call["id"]
                    call["name"] += fn.get("name") or ""
                    call["arguments"] += fn.get("arguments") or ""


def _ignore(_text: str) -> None:
    """A text callback for requests whose text is not measured."""


def _stamper(into: list[float]) -> Callable[[str], None]:
    """A text callback that timestamps each content delta into ``into``."""
    return lambda _text: into.append(now())


async def _warm(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    """A short request first: imports, code paths and a pooled connection are warm."""
    short = {**params, "tokens": 2, "token_delay": 0.0, "tool_call": None}
    await _stream_request(client, _body(short), _ignore)


# --------------------------------------------------------------------------- scenarios


async def _stream(params: dict[str, Any]) -> Samples:
    """Burst / paced: TTFT and total time of one streamed answer, ``turns`` times."""
    out: Samples = {"ttft_ms": [], "total_ms": [], "cpu_ms": []}
    async with _client(params) as client:
        for turn in range(params["turns"] + 1):  # turn 0 warms the connection up
            stamps: list[float] = []
            t0, c0 = now(), cpu_now()
            await _stream_request(client, _body(params), _stamper(stamps))
            if turn and stamps:
                out["cpu_ms"].append((cpu_now() - c0) * 1e3)
                out["ttft_ms"].append((stamps[0] - t0) * 1e3)
                out["total_ms"].append((stamps[-1] - t0) * 1e3)
    return out


async def _interrupt(params: dict[str, Any]) -> Samples:
    """Cancel the stream ``interrupt_after`` s in: the floor of how fast a stream can stop."""
    out: Samples = {"stop_ms": [], "_t_interrupt": [], "leaked_frames": [], "frames_before": []}
    async with _client(params) as client:
        await _warm(client, params)
        for _ in range(params["turns"]):
            stamps: list[float] = []
            t_int = 0.0
            async with trio.open_nursery() as nursery:
                stopped = trio.CancelScope()

                async def reader(
                    scope: trio.CancelScope = stopped, into: list[float] = stamps
                ) -> None:
                    with scope:
                        await _stream_request(client, _body(params), _stamper(into))

                nursery.start_soon(reader)
                await trio.sleep(params["interrupt_after"])
                t_int = now()
                stopped.cancel()
            after = [t for t in stamps if t > t_int]
            out["stop_ms"].append(max(0.0, (max(stamps, default=t_int) - t_int) * 1e3))
            out["_t_interrupt"].append(t_int)
            out["leaked_frames"].append(float(len(after)))
            out["frames_before"].append(float(len(stamps) - len(after)))
    return out


async def _tool(params: dict[str, Any]) -> Samples:
    """One tool call, a trivial handler, a second request streaming the answer."""
    out: Samples = {"total_ms": [], "ttft_answer_ms": [], "cpu_ms": []}

    async def handler(_args: str) -> str:
        await trio.lowlevel.checkpoint()
        return '{"ok": true}'

    # One conversation, as the frameworks hold it: every turn adds the user message, the
    # tool call, its result and the answer, and every request sends all of it (and the tool).
    messages: list[dict[str, Any]] = []
    async with _client(params) as client:
        for turn in range(params["turns"] + 1):
            t0, c0 = now(), cpu_now()
            messages.append({"role": "user", "content": "call the tool"})
            calls: dict[int, dict[str, Any]] = {}
            await _stream_request(client, _body(params, messages), _ignore, calls)
            assistant = {
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
            messages.append(assistant)
            for _, c in sorted(calls.items()):
                result = await handler(c["arguments"])
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
            stamps: list[float] = []
            text: list[str] = []
            answer = {**params, "tool_call": None}  # the second request streams text
            await _stream_request(client, _body(answer, messages), _stamp_and_keep(stamps, text))
            messages.append({"role": "assistant", "content": "".join(text)})
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
    """``conversations`` concurrent streams on one client (connections = conversations)."""
    n = params["conversations"]
    stamps: list[list[float]] = [[] for _ in range(n)]
    async with _client(params, connections=n) as client:
        await _warm(client, params)
        baseline = rss_probe_start()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = now()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(_stream_request, client, _body(params), _stamper(stamps[i]))
    return concurrency_samples(stamps, n, cpu0, t0, baseline)


async def _slowsink(params: dict[str, Any]) -> Samples:
    """A consumer that takes ``sink_delay`` s per token while the server bursts."""
    consumed = 0
    async with _client(params) as client:
        await _warm(client, params)
        rss0 = rss_probe_start()
        with trio.move_on_after(params["window"]):
            async with aconnect_sse(client, "POST", "/chat/completions", json=_body(params)) as src:
                async for event in src.aiter_sse():
                    content, _, done = decode_chunk(event.data)
                    if content:
                        await trio.sleep(params["sink_delay"])
                        consumed += 1
                    if done:
                        break
    return {
        "peak_rss_mb": [rss_probe_stop(rss0)],
        "max_backlog_frames": [0.0],  # a reader that does not read holds nothing
        "frames_at_sink": [float(consumed)],
    }


async def _voice(params: dict[str, Any]) -> Samples:
    """The voice token path's work with no framework: each content delta filtered, gathered
    into sentences, each sentence turned into audio chunks, timestamped (the conversation's
    messages kept as the aggregators would)."""
    out: Samples = {"ttfa_ms": [], "total_ms": [], "cpu_us_per_token": [], "audio_frames": []}
    tokens = voice_tokens(params["tokens"])
    messages: list[dict[str, Any]] = []
    async with _client(params) as client:
        for turn in range(params["turns"] + 1):
            stamps: list[float] = []
            answer: list[str] = []
            buffer = ""

            def speak(sentence: str, stamps: list[float] = stamps) -> None:
                for _ in range(audio_chunks(sentence)):
                    stamps.append(now())  # one 20 ms chunk handed to the output

            def on_text(text: str, answer: list[str] = answer) -> None:
                nonlocal buffer
                text = strip_markdown(text) if "*" in text else text
                answer.append(text)
                buffer += text
                sentences, buffer = split_sentences(buffer)
                for sentence in sentences:
                    speak(sentence)

            messages.append({"role": "user", "content": "hi"})
            t0, c0 = now(), cpu_now()
            body = _body({**params, "tokens": tokens}, list(messages))
            await _stream_request(client, body, on_text)
            if buffer.strip():
                speak(buffer.strip())
            messages.append({"role": "assistant", "content": "".join(answer)})
            if turn and stamps:
                out["cpu_us_per_token"].append((cpu_now() - c0) * 1e6 / len(tokens))
                out["ttfa_ms"].append((stamps[0] - t0) * 1e3)
                out["total_ms"].append((stamps[-1] - t0) * 1e3)
                out["audio_frames"].append(float(len(stamps)))
    return out


async def _hop(params: dict[str, Any]) -> Samples:
    """``frames`` objects through ``k`` forwarding tasks over bounded memory channels."""
    k = params["k"]
    out: Samples = {"us_per_frame": [], "frames_per_s": []}
    for n in (params["warmup_frames"], params["frames"]):
        items = [{"text": "x"} for _ in range(n)]
        done = trio.Event()
        t_end = 0.0
        async with trio.open_nursery() as nursery:
            channels = [trio.open_memory_channel[Any](params["buffer"]) for _ in range(k + 1)]

            async def forward(
                recv: trio.MemoryReceiveChannel[Any], send: trio.MemorySendChannel[Any]
            ) -> None:
                async with recv, send:
                    async for item in recv:
                        await send.send(item)

            async def sink(
                recv: trio.MemoryReceiveChannel[Any], expected: int = n, done: trio.Event = done
            ) -> None:
                nonlocal t_end
                seen = 0
                async with recv:
                    async for _item in recv:
                        seen += 1
                        if seen == expected:
                            t_end = now()
                            done.set()

            for i in range(k):
                nursery.start_soon(forward, channels[i][1], channels[i + 1][0])
            nursery.start_soon(sink, channels[k][1])
            await trio.testing.wait_all_tasks_blocked()
            t0 = now()
            async with channels[0][0] as send:
                for item in items:
                    await send.send(item)
            await done.wait()
        if n == params["frames"]:
            elapsed = t_end - t0
            out["us_per_frame"].append(elapsed * 1e6 / n)
            out["frames_per_s"].append(n / elapsed)
    return out
