"""The WebSocket server under load, and what the transport costs a message.

    python -m benchmarks.websocket                   # 200 sessions, 100 round trips
    python -m benchmarks.websocket --sessions 20 --reps 10 --out /tmp/ws

* **round trip**: one message (``send-text``) to the end of its answer (``bot-llm-stopped``)
  through ``serve-chat`` over a loopback WebSocket, versus the same pipeline run directly
  (a TranscriptionFrame queued to the task until LLMFullResponseEnd leaves it). The scripted
  model streams 16 tokens with no delay, so the difference is the transport's and server's.
* **load**: N concurrent sessions each send one message; the scripted model streams 24
  tokens 20 ms apart. Reported: answers complete, time to first token and gap between
  tokens (p50 / p95 / max, as the clients see them), and the server process's RSS per open
  session (RSS with N sessions open minus RSS before, over N).

The server runs as its own process (``serve-chat --factory benchmarks.websocket:...``); the
clients (trio-websocket) in this one. Results: a table on stdout and ``websocket.json`` in
``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

REPO = Path(__file__).resolve().parent.parent
READY = json.dumps(
    {"label": "rtvi-ai", "type": "client-ready", "id": "r", "data": {"version": "2.2.0"}}
)


def send_text(text: str) -> str:
    return json.dumps(
        {"label": "rtvi-ai", "type": "send-text", "id": "t", "data": {"content": text}}
    )


# --------------------------------------------------------------------------- the server side


@contextlib.asynccontextmanager
async def open_bench_factory() -> AsyncIterator[Any]:
    """The default chat's pipeline on a scripted model: "fast" answers 16 tokens at once,
    anything else 24 tokens 20 ms apart."""
    from rustvani_trio.server.chat import chat_pipeline
    from rustvani_trio.services.llm.openai import OpenAILLMConfig
    from rustvani_trio.testing import (
        RecordedRequest,
        TextReply,
        numbered_tokens,
        open_scripted_server,
    )

    def reply(request: RecordedRequest) -> TextReply:
        last = request.json["messages"][-1]["content"] if isinstance(request.json, dict) else ""
        if "fast" in str(last):
            return TextReply(numbered_tokens(16))
        return TextReply(numbered_tokens(24), token_delay=0.02)

    import httpx

    async with open_scripted_server(default_reply=reply) as server:
        config = OpenAILLMConfig(base_url=server.base_url, model="scripted-model")
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=None) as client:

            async def factory(session: Any) -> Any:
                await trio.lowlevel.checkpoint()
                return chat_pipeline(session, config, client)

            yield factory


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(max_sessions: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rustvani_trio", "serve-chat", "--port", "0"]
    command += ["--log-level", "WARNING", "--max-sessions", str(max_sessions)]
    command += ["--factory", "benchmarks.websocket:open_bench_factory"]
    env = {**os.environ, "OPENAI_API_KEY": ""}
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"(http://[0-9.]+:\d+)", line)
        if match:
            return proc, match.group(1).replace("http", "ws") + "/ws"
    raise RuntimeError("serve-chat did not start")


# --------------------------------------------------------------------------- measurements


async def until(ws: Any, type_: str, arrivals: list[float] | None = None) -> None:
    while True:
        msg = json.loads(await ws.get_message())
        if arrivals is not None and msg["type"] == "bot-llm-text":
            arrivals.append(time.perf_counter())
        if msg["type"] == type_:
            return


async def ws_round_trips(url: str, reps: int) -> list[float]:
    times = []
    async with open_websocket_url(url) as ws:
        await ws.send_message(READY)
        await until(ws, "bot-ready")
        for _ in range(reps):
            start = time.perf_counter()
            await ws.send_message(send_text("fast"))
            await until(ws, "bot-llm-stopped")
            times.append(time.perf_counter() - start)
    return times


async def direct_round_trips(reps: int) -> list[float]:
    """The same pipeline without the transport: a pass-through processor at each end."""
    from rustvani_trio.frames import LLMFullResponseEnd, TranscriptionFrame
    from rustvani_trio.transports.memory import MemoryConnection
    from rustvani_trio.transports.websocket import WebSocketTransport

    times: list[float] = []
    async with open_bench_factory() as _factory:
        # chat_pipeline needs a session-like object with input()/output(): plain processors
        from rustvani_trio.processor import FrameProcessor

        class Plain:
            id = "direct"
            transport = WebSocketTransport(MemoryConnection())

            def __init__(self) -> None:
                self._in, self._out = FrameProcessor(name="in"), FrameProcessor(name="out")

            def input(self) -> FrameProcessor:
                return self._in

            def output(self) -> FrameProcessor:
                return self._out

        task = await _factory(Plain())
        done = trio.Event()

        def reached(_task: Any, frame: Any) -> None:
            if isinstance(frame, LLMFullResponseEnd):
                done.set()

        task.add_event_handler("on_frame_reached_downstream", reached)
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            for _ in range(reps):
                done = trio.Event()
                start = time.perf_counter()
                await task.queue_frame(TranscriptionFrame(text="fast"))
                await done.wait()
                times.append(time.perf_counter() - start)
            await task.cancel()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(url: str, pid: int, sessions: int) -> dict[str, Any]:
    before = rss_kib(pid)
    ttfb: list[float] = []
    gaps: list[float] = []
    complete = 0
    all_open = trio.Event()
    all_answered = trio.Event()
    opened = 0
    release = trio.Event()

    async def one() -> None:
        nonlocal complete, opened
        async with open_websocket_url(url) as ws:
            await ws.send_message(READY)
            await until(ws, "bot-ready")
            opened += 1
            if opened == sessions:
                all_open.set()
            await all_open.wait()
            arrivals: list[float] = []
            start = time.perf_counter()
            await ws.send_message(send_text("hello"))
            await until(ws, "bot-llm-stopped", arrivals)
            if len(arrivals) == 24:
                complete += 1
            ttfb.append(arrivals[0] - start)
            gaps.extend(b - a for a, b in itertools.pairwise(arrivals))
            if len(ttfb) == sessions:
                all_answered.set()
            await release.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(one)
        await all_answered.wait()
        during = rss_kib(pid)
        release.set()
    return {
        "sessions": sessions,
        "answers_complete": complete,
        "ttfb_ms": {k: 1000 * pct(ttfb, q) for k, q in (("p50", 0.5), ("p95", 0.95), ("max", 1))},
        "token_gap_ms": {
            k: 1000 * pct(gaps, q) for k, q in (("p50", 0.5), ("p95", 0.95), ("max", 1))
        },
        "rss_before_kib": before,
        "rss_open_kib": during,
        "rss_per_session_kib": (during - before) / sessions,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = start_server(max(args.sessions + 10, 500))
    try:
        await ws_round_trips(url, 5)  # warm up
        ws_times = await ws_round_trips(url, args.reps)
        direct = await direct_round_trips(args.reps)
        await load(url, proc.pid, min(20, args.sessions))  # warm the pools
        loaded = await load(url, proc.pid, args.sessions)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "round_trip_ms": {
            "websocket_p50": 1000 * statistics.median(ws_times),
            "direct_p50": 1000 * statistics.median(direct),
            "websocket_p95": 1000 * pct(ws_times, 0.95),
            "direct_p95": 1000 * pct(direct, 0.95),
            "reps": args.reps,
        },
        "load": loaded,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def table(result: dict[str, Any]) -> str:
    rt, ld = result["round_trip_ms"], result["load"]
    n = ld["sessions"]

    def three(d: dict[str, float]) -> str:
        return " / ".join(f"{d[k]:.1f}" for k in ("p50", "p95", "max")) + " ms"

    lines = [
        "| measurement | value |",
        "| --- | --- |",
        "| round trip, 16 tokens, WebSocket server (p50 / p95) "
        f"| {rt['websocket_p50']:.2f} / {rt['websocket_p95']:.2f} ms |",
        "| round trip, 16 tokens, direct pipeline (p50 / p95) "
        f"| {rt['direct_p50']:.2f} / {rt['direct_p95']:.2f} ms |",
        f"| {n} sessions: answers complete | {ld['answers_complete']} / {n} |",
        f"| time to first token (p50 / p95 / max) | {three(ld['ttfb_ms'])} |",
        f"| gap between tokens, scripted 20 ms (p50 / p95 / max) | {three(ld['token_gap_ms'])} |",
        f"| server RSS per open session | {ld['rss_per_session_kib']:.0f} KiB |",
    ]
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    result = trio.run(main, args)
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "websocket.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
