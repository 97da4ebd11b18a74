"""The WebSocket server under load, and what the transport costs a message.

    python -m benchmarks.websocket                   # 200 sessions, 100 round trips
    python -m benchmarks.websocket --sessions 20 --reps 10 --out /tmp/ws
    python -m benchmarks.websocket --model-in-server # the scripted model in the server process
    python -m benchmarks.websocket --workers 2       # serve-chat --workers 2

Three processes: the server (``serve-chat --factory benchmarks.websocket:open_bench_factory``,
the default chat pipeline per session), the scripted model (``python -m rustvani_trio.testing``,
its own process, so that its work is not counted as the server's), and this one (the clients,
trio-websocket). Each session's query string picks its script (``x_script``).

* **round trip**: one message (``send-text``) to the end of its answer (``bot-llm-stopped``)
  through the server over a loopback WebSocket, versus the same pipeline run directly
  (a TranscriptionFrame queued to the task until LLMFullResponseEnd leaves it). The scripted
  model streams 16 tokens with no delay, so the difference is the transport's and server's.
  Printed as the row ``websocket round trip | direct pipeline | through the server | ratio``.
* **load**: N sessions connect at once (the connection storm: handshake, admission,
  pipeline construction; timed until every session has its ``bot-ready``), then each sends
  one message; the scripted model streams 24 tokens 20 ms apart. Reported: answers complete,
  time to first token and gap between tokens (p50 / p95 / max, as the clients see them), the
  server process's RSS per open session (RSS with N sessions open minus RSS before, over N),
  and CPU seconds of each process in each phase: the server's per token is the figure to
  watch (the machine's cores are shared by all three; when the server's CPU time nears the
  answer phase's wall time, it is saturated and the latencies measure its queue).

Results: a table on stdout and ``websocket.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
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
PACED_TOKENS, TOKEN_DELAY, FAST_TOKENS = 24, 0.02, 16
SCRIPTS = {
    "fast": {"tokens": FAST_TOKENS, "token_delay": 0.0},
    "paced": {"tokens": PACED_TOKENS, "token_delay": TOKEN_DELAY},
}
MODEL_URL_ENV = "RUSTVANI_BENCH_MODEL_URL"
"""The scripted model's base URL, for the server's factory (unset: the model runs inside)."""


def send_text(text: str) -> str:
    return json.dumps(
        {"label": "rtvi-ai", "type": "send-text", "id": "t", "data": {"content": text}}
    )


# --------------------------------------------------------------------------- the server side


@contextlib.asynccontextmanager
async def open_bench_factory() -> AsyncIterator[Any]:
    """The default chat's pipeline (its HTTP clients too) on the scripted model at
    ``$RUSTVANI_BENCH_MODEL_URL`` (or one started in this process); a session's ``script``
    query parameter picks its answer: ``fast`` (16 tokens at once) or ``paced`` (24 tokens
    20 ms apart)."""
    import attrs

    from rustvani_trio.server.chat import chat_pipeline, open_http_clients
    from rustvani_trio.services.llm.openai import OpenAILLMConfig
    from rustvani_trio.testing import open_scripted_server

    async with contextlib.AsyncExitStack() as stack:
        base_url = os.environ.get(MODEL_URL_ENV)
        if not base_url:
            server = await stack.enter_async_context(open_scripted_server())
            base_url = server.base_url
        config = OpenAILLMConfig(
            base_url=base_url, model="scripted-model", context_window_tokens=32_000
        )
        configs = {
            name: attrs.evolve(config, extra_body={"x_script": script})
            for name, script in SCRIPTS.items()
        }
        next_client = await stack.enter_async_context(open_http_clients())

        async def factory(session: Any) -> Any:
            await trio.lowlevel.checkpoint()
            script = session.query.get("script", "paced")
            return chat_pipeline(session, configs[script], next_client())

        yield factory


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``--workers``: the supervisor and its workers)."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            text = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text()
        except OSError:
            text = ""
        pids.extend(int(child) for child in text.split())
        i += 1
    return pids


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants."""
    total = 0
    for one in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants (``None``: this
    process alone)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    total = 0.0
    for one in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _started(proc: subprocess.Popen[str], pattern: str, what: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(pattern, line)
        if match:
            return match.group(1)
    raise RuntimeError(f"{what} did not start")


def start_model() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rustvani_trio.testing", "--port", "0"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    return proc, _started(proc, r"READY (http://\S+)", "the scripted model")


def start_server(
    max_sessions: int, model_url: str | None, workers: int = 1
) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rustvani_trio", "serve-chat", "--port", "0"]
    command += ["--log-level", "WARNING", "--max-sessions", str(max_sessions)]
    command += ["--workers", str(workers)]
    command += ["--factory", "benchmarks.websocket:open_bench_factory"]
    env = {**os.environ, "OPENAI_API_KEY": "", MODEL_URL_ENV: model_url or ""}
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
    url = _started(proc, r"(http://[0-9.]+:\d+)", "serve-chat")
    return proc, url.replace("http", "ws") + "/ws"


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
    async with open_websocket_url(url + "?script=fast") as ws:
        await ws.send_message(READY)
        await until(ws, "bot-ready")
        for _ in range(reps):
            start = time.perf_counter()
            await ws.send_message(send_text("hello"))
            await until(ws, "bot-llm-stopped")
            times.append(time.perf_counter() - start)
    return times


async def direct_round_trips(reps: int) -> list[float]:
    """The same pipeline without the transport: a pass-through processor at each end."""
    from rustvani_trio.frames import LLMFullResponseEnd, TranscriptionFrame
    from rustvani_trio.processor import FrameProcessor

    times: list[float] = []
    async with open_bench_factory() as factory:

        class Plain:
            """What chat_pipeline needs of a session: plain processors at both ends."""

            id = "direct"
            query = {"script": "fast"}

            def __init__(self) -> None:
                self._in, self._out = FrameProcessor(name="in"), FrameProcessor(name="out")

            def input(self) -> FrameProcessor:
                return self._in

            def output(self) -> FrameProcessor:
                return self._out

        task = await factory(Plain())
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
                await task.queue_frame(TranscriptionFrame(text="hello"))
                await done.wait()
                times.append(time.perf_counter() - start)
            await task.cancel()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def three(values: list[float]) -> dict[str, float]:
    return {k: 1000 * pct(values, q) for k, q in (("p50", 0.5), ("p95", 0.95), ("max", 1))}


class CPU:
    """CPU seconds of each process between marks."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.last = self.now()

    def now(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def lap(self) -> dict[str, float]:
        now = self.now()
        lap = {name: round(now[name] - self.last[name], 3) for name in now}
        self.last = now
        return lap


async def load(url: str, pids: dict[str, int | None], sessions: int) -> dict[str, Any]:
    server = pids["server"]
    assert server is not None
    before = rss_kib(server)
    ttfb: list[float] = []
    gaps: list[float] = []
    complete = 0
    all_open = trio.Event()
    all_answered = trio.Event()
    opened = 0
    release = trio.Event()

    async def one() -> None:
        nonlocal complete, opened
        async with open_websocket_url(url + "?script=paced") as ws:
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
            if len(arrivals) == PACED_TOKENS:
                complete += 1
            ttfb.append(arrivals[0] - start)
            gaps.extend(b - a for a, b in itertools.pairwise(arrivals))
            if len(ttfb) == sessions:
                all_answered.set()
            await release.wait()

    cpu = CPU(pids)
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        for _ in range(sessions):
            nursery.start_soon(one)
        await all_open.wait()
        connected = time.perf_counter()
        connect_cpu = cpu.lap()
        await all_answered.wait()
        answered = time.perf_counter()
        answer_cpu = cpu.lap()
        during = rss_kib(server)
        release.set()
    tokens = complete * PACED_TOKENS
    return {
        "sessions": sessions,
        "answers_complete": complete,
        "connect_s": round(connected - start, 3),
        "connect_cpu_s": connect_cpu,
        "answer_s": round(answered - connected, 3),
        "answer_cpu_s": answer_cpu,
        "server_cpu_us_per_token": 1e6 * answer_cpu["server"] / max(1, tokens),
        "server_cpu_ms_per_connect": 1000 * connect_cpu["server"] / sessions,
        "ttfb_ms": three(ttfb),
        "token_gap_ms": three(gaps),
        "rss_before_kib": before,
        "rss_open_kib": during,
        "rss_per_session_kib": (during - before) / sessions,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    model: subprocess.Popen[str] | None = None
    model_url = None
    if not args.model_in_server:
        model, model_url = start_model()
    proc, url = start_server(max(args.sessions + 10, 500), model_url, args.workers)
    pids = {"server": proc.pid, "model": model.pid if model else None, "clients": None}
    if model is None:
        del pids["model"]
    try:
        await ws_round_trips(url, 5)  # warm up
        ws_times = await ws_round_trips(url, args.reps)
        direct = await direct_round_trips(args.reps)
        await load(url, pids, min(20, args.sessions))  # warm the pools
        loaded = await load(url, pids, args.sessions)
    finally:
        for process in (proc, model):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    ws_p50, direct_p50 = statistics.median(ws_times), statistics.median(direct)
    return {
        "round_trip_ms": {
            "websocket_p50": 1000 * ws_p50,
            "direct_p50": 1000 * direct_p50,
            "websocket_p95": 1000 * pct(ws_times, 0.95),
            "direct_p95": 1000 * pct(direct, 0.95),
            "ratio_p50": ws_p50 / direct_p50,
            "reps": args.reps,
            "tokens": FAST_TOKENS,
        },
        "load": loaded,
        "model_process": "server" if args.model_in_server else "own",
        "server_workers": args.workers,
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        },
    }


def round_trip_row(result: dict[str, Any]) -> str:
    """The benchmark row: ``websocket round trip | direct pipeline | through the server |
    ratio`` (p50)."""
    rt = result["round_trip_ms"]
    return (
        f"| websocket round trip ({rt['tokens']} tokens, p50) | {rt['direct_p50']:.2f} ms "
        f"| {rt['websocket_p50']:.2f} ms | {rt['ratio_p50']:.2f}x |"
    )


def table(result: dict[str, Any]) -> str:
    rt, ld = result["round_trip_ms"], result["load"]
    n, workers = ld["sessions"], result["server_workers"]
    server = "one server process" if workers == 1 else f"{workers} server workers"

    def ms3(d: dict[str, float]) -> str:
        return " / ".join(f"{d[k]:.1f}" for k in ("p50", "p95", "max")) + " ms"

    def cpus(d: dict[str, float]) -> str:
        return ", ".join(f"{name} {seconds:.2f}" for name, seconds in d.items())

    lines = [
        "| scenario | direct pipeline | through the server | ratio |",
        "| --- | --- | --- | --- |",
        round_trip_row(result),
        "",
        "| measurement | value |",
        "| --- | --- |",
        f"| round trip p95: direct / through the server "
        f"| {rt['direct_p95']:.2f} / {rt['websocket_p95']:.2f} ms |",
        f"| {n} sessions, {server}: answers complete | {ld['answers_complete']} / {n} |",
        f"| {n} connections at once: all ready after | {1000 * ld['connect_s']:.0f} ms |",
        f"| time to first token (p50 / p95 / max) | {ms3(ld['ttfb_ms'])} |",
        f"| gap between tokens, scripted {1000 * TOKEN_DELAY:.0f} ms (p50 / p95 / max) "
        f"| {ms3(ld['token_gap_ms'])} |",
        f"| server CPU per token (answer phase) | {ld['server_cpu_us_per_token']:.0f} µs |",
        f"| server CPU per connection (connect phase) | {ld['server_cpu_ms_per_connect']:.2f} ms |",
        f"| CPU s, connect phase ({ld['connect_s']:.2f} s wall) | {cpus(ld['connect_cpu_s'])} |",
        f"| CPU s, answer phase ({ld['answer_s']:.2f} s wall) | {cpus(ld['answer_cpu_s'])} |",
        f"| server RSS per open session | {ld['rss_per_session_kib']:.0f} KiB |",
    ]
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument(
        "--model-in-server",
        action="store_true",
        help="run the scripted model inside the server process (as before: it competes with it)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="serve-chat --workers (server CPU and RSS: all)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    result = trio.run(main, args)
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "websocket.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
