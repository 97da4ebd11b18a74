"""Run every benchmark scenario, side by side, in one command.

    python -m benchmarks.run                  # everything (under 10 minutes on 2 cores)
    python -m benchmarks.run --quick          # tiny sizes (the smoke test uses this)
    python -m benchmarks.run --scenarios burst,hop --reps 5 --out /tmp/bench

One scripted OpenAI-compatible server (``python -m rustvani_trio.testing.server``) runs in its
own process for the whole run; every request says what to stream through its ``x_script``
body field. Each contestant runs in its own worker process (``benchmarks._worker``) with its
own event loop; repetitions alternate between contestants (A B, then B A, ...) so drift of
the machine cancels out. Results: a table on stdout, ``results.json`` and ``plot.png`` in
``--out`` (default ``benchmarks/results``). See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import MARKER, summarize
from benchmarks._report import format_table, write_plot
from benchmarks.contestants import CONTESTANTS
from benchmarks.contestants._pg_tool import TOOL_CALL as PG_TOOL_CALL

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results"
DISCONNECT_LINE = "client left during request"
"""What the server logs (at DEBUG) when a client goes away mid-response."""

LLM4 = ("httpx", "openai", "rustvani", "pipecat")
FRAMEWORKS = ("rustvani", "pipecat")


# --------------------------------------------------------------------------- scenarios


@dataclass
class Config:
    label: str
    params: dict[str, Any]
    contestants: tuple[str, ...]


@dataclass
class Scenario:
    key: str
    title: str
    description: str
    configs: list[Config]
    reps: int
    metrics: dict[str, str]
    """metric name -> unit/explanation, in table order."""
    timeout: float = 120.0


def build_scenarios(quick: bool) -> list[Scenario]:
    """The scenarios of issue 5, full size or tiny (``quick``)."""
    q = quick

    def pick(full: Any, small: Any) -> Any:
        return small if q else full

    stream_metrics = {
        "ttft_ms": "ms to the first text frame at the sink",
        "total_ms": "ms to the last text frame at the sink",
    }
    burst_k = pick((0, 5, 10), (0, 2))
    hop_k = pick((0, 1, 5, 10, 20), (0, 2))
    conv = pick((50, 200), (4,))
    return [
        Scenario(
            "burst",
            "Burst TTFT and total time",
            f"{pick(200, 20)} tokens streamed with no delay; K extra pass-through processors "
            "between the LLM and the sink (the raw clients have no pipeline: K=0 only).",
            [
                Config(
                    f"K={k}",
                    {"tokens": pick(200, 20), "token_delay": 0.0, "k": k, "turns": pick(5, 1)},
                    LLM4 if k == 0 else FRAMEWORKS,
                )
                for k in burst_k
            ],
            reps=pick(8, 2),
            metrics=stream_metrics,
        ),
        Scenario(
            "paced",
            "Paced TTFT",
            f"{pick(50, 5)} tokens at {pick(2, 1)} ms each, K=0: the framework's added TTFT over "
            "its own raw floor (rustvani-trio over httpx-sse, pipecat over the openai SDK).",
            [
                Config(
                    "K=0",
                    {
                        "tokens": pick(50, 5),
                        "token_delay": pick(0.002, 0.001),
                        "k": 0,
                        "turns": pick(3, 1),
                    },
                    LLM4,
                )
            ],
            reps=pick(8, 2),
            metrics=stream_metrics,
        ),
        Scenario(
            "hop",
            "Hop cost",
            f"{pick(20000, 300)} TextFrames pushed by a generator processor through K "
            "pass-through processors to a sink; the floor is a bare chain of trio memory "
            "channels (buffer 64) with one task per hop. µs/hop is the slope over K.",
            [
                Config(
                    f"K={k}",
                    {
                        "frames": pick(20000, 300),
                        "warmup_frames": pick(2000, 50),
                        "k": k,
                        "buffer": 64,
                    },
                    ("channels", *FRAMEWORKS),
                )
                for k in hop_k
            ],
            reps=pick(3, 1),
            metrics={
                "us_per_frame": "µs per frame, end to end",
                "frames_per_s": "frames per second",
            },
        ),
        Scenario(
            "interrupt",
            "Interruption",
            f"Tokens paced at 5 ms, interrupted {pick(200, 50)} ms in (frameworks: "
            f"InterruptionFrame queued to the task, K={pick(5, 1)} pass-through processors; raw "
            "clients: the stream's task/scope is cancelled).",
            [
                Config(
                    f"K={pick(5, 1)}",
                    {
                        "tokens": pick(1000, 100),
                        "token_delay": 0.005,
                        "interrupt_after": pick(0.2, 0.05),
                        "settle": pick(0.3, 0.1),
                        "k": pick(5, 1),
                        "turns": 1,
                    },
                    LLM4,
                )
            ],
            reps=pick(8, 1),
            metrics={
                "stop_ms": "ms from the interruption to the last text frame at the sink",
                "interrupt_at_sink_ms": "ms until the InterruptionFrame reached the sink",
                "disconnect_ms": "ms until the server saw the client disconnect",
                "leaked_frames": "text frames at the sink after the InterruptionFrame (must be 0)",
                "frames_before": "text frames at the sink before the interruption",
            },
        ),
        Scenario(
            "tool",
            "Tool round trip",
            f"One tool call, a trivial handler, a {pick(20, 5)}-token second answer "
            "(frameworks: with their assistant aggregator, which pipecat needs to re-invoke).",
            [
                Config(
                    "1 call",
                    {
                        "tokens": pick(20, 5),
                        "token_delay": 0.0,
                        "turns": pick(5, 1),
                        "tool_call": {"name": "get_time", "arguments": "{}"},
                    },
                    LLM4,
                ),
                # The same round with a real query through the Postgres tool (see
                # benchmarks/contestants/_pg_tool.py): rustvani-trio only.
                Config(
                    "1 pg_query",
                    {
                        "tokens": pick(20, 5),
                        "token_delay": 0.0,
                        "turns": pick(5, 1),
                        "tool_call": PG_TOOL_CALL,
                        "postgres": True,
                    },
                    ("rustvani",),
                ),
            ],
            reps=pick(6, 1),
            metrics={
                "total_ms": "ms from the user turn to the answer's last text frame",
                "ttft_answer_ms": "ms from the user turn to the answer's first text frame",
            },
        ),
        Scenario(
            "concurrency",
            "Concurrency",
            f"N conversations at once in one process, {pick(50, 5)} tokens paced at "
            f"{pick(20, 5)} ms (frameworks: one pipeline per conversation, started and ended "
            "inside the measurement).",
            [
                Config(
                    f"N={n}",
                    {"conversations": n, "tokens": pick(50, 5), "token_delay": pick(0.02, 0.005)},
                    LLM4,
                )
                for n in conv
            ],
            reps=pick(3, 1),
            metrics={
                "cpu_ms_per_conv": "process CPU ms per conversation",
                "itd_p95_ms": "p95 inter-token delay at the sinks, ms",
                "itd_median_ms": "median inter-token delay at the sinks, ms",
                "peak_rss_mb": "peak RSS growth, MiB",
                "wall_s": "wall time of the whole batch, s",
            },
        ),
        Scenario(
            "slowsink",
            "Slow sink",
            f"The server bursts {pick(5000, 200)} tokens; the sink takes {pick(5, 1)} ms per "
            f"frame. Measured over a {pick(3.0, 0.3)} s window: a bounded pipeline stops "
            "reading the socket, an unbounded one buffers the whole answer.",
            [
                Config(
                    "burst→slow",
                    {
                        "tokens": pick(5000, 200),
                        "token_delay": 0.0,
                        "sink_delay": pick(0.005, 0.001),
                        "window": pick(3.0, 0.3),
                        "sample_every": pick(0.01, 0.01),
                    },
                    ("httpx", *FRAMEWORKS),
                )
            ],
            reps=pick(2, 1),
            metrics={
                "peak_rss_mb": "peak RSS growth over the window, MiB",
                "max_backlog_frames": "most text frames between the LLM and the sink",
                "frames_at_sink": "text frames the sink consumed in the window",
            },
            timeout=60.0,
        ),
    ]


# --------------------------------------------------------------------------- processes


def _pump(stream: IO[str], sink: queue.Queue[tuple[float, str]]) -> None:
    for line in stream:
        sink.put((time.perf_counter(), line.rstrip("\n")))


class Server:
    """The scripted server, in its own process, for the whole run."""

    def __init__(self, log_path: Path) -> None:
        self.base_url = ""
        self.disconnects: list[float] = []
        self._log_path = log_path
        self._lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()

    def start(self, timeout: float = 30.0) -> None:
        ready = Path(tempfile.mkdtemp(prefix="bench-")) / "ready"
        cmd = [
            sys.executable,
            "-m",
            "rustvani_trio.testing.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tokens",
            "16",
            "--ready-file",
            str(ready),
            "--log-level",
            "DEBUG",
        ]
        self._proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the scripted server did not start; see {self._log_path}")
            time.sleep(0.02)
        self.base_url = ready.read_text().strip()

    def _watch(self) -> None:
        with open(self._log_path, "w", encoding="utf-8") as log:
            while not self._stop.is_set():
                try:
                    stamp, line = self._lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if DISCONNECT_LINE in line:
                    self.disconnects.append(stamp)
                log.write(f"{stamp:.6f} {line}\n")

    def disconnect_after(self, t: float, within: float = 5.0) -> float:
        """Seconds from ``t`` to the first disconnect the server logged after it (NaN if none)."""
        later = [d for d in self.disconnects if t < d <= t + within]
        return min(later) - t if later else math.nan

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (NaN where unknown)."""
        if self._proc is None:
            return math.nan
        try:
            with open(f"/proc/{self._proc.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stop.set()


class Worker:
    """One contestant's worker process, answering one command at a time."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self._log = open(log_dir / f"worker-{name}.log", "a", encoding="utf-8")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._worker", name],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._replies: queue.Queue[tuple[float, str]] = queue.Queue()
        assert self._proc.stdout is not None
        threading.Thread(target=_pump, args=(self._proc.stdout, self._replies), daemon=True).start()

    def _reply(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:g}s")
            try:
                _, line = self._replies.get(timeout=min(left, 1.0))
            except queue.Empty:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: worker exited ({self._proc.returncode}); "
                        f"see {self._log.name}"
                    ) from None
                continue
            if line.startswith(MARKER):
                reply: dict[str, Any] = json.loads(line[len(MARKER) :])
                return reply

    def hello(self, timeout: float = 60.0) -> dict[str, Any]:
        return self._reply(timeout)

    def call(self, scenario: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"scenario": scenario, "params": params}) + "\n")
        self._proc.stdin.flush()
        return self._reply(timeout)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self._proc.kill()
            self._proc.wait()
        self._log.close()

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError):
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self._proc.stdin.flush()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Cell:
    """One contestant in one configuration: its pooled samples."""

    status: str = "ok"
    reason: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self, metrics: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.errors:
            out["errors"] = self.errors
        if self.status == "ok":
            out["metrics"] = {
                m: {**summarize(self.samples[m]), "samples": [round(v, 6) for v in self.samples[m]]}
                for m in metrics
                if m in self.samples
            }
        return out


class Runner:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.log_dir = out / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.t_start = time.monotonic()
        self.truncated: list[str] = []
        self.versions: dict[str, str | None] = {}

    def over_budget(self) -> bool:
        budget: float = self.args.budget
        return time.monotonic() - self.t_start > budget

    def run_scenario(self, sc: Scenario, server: Server) -> dict[str, Any]:
        wanted = set(self.args.contestants) if self.args.contestants else None
        names = sorted(
            {c for cfg in sc.configs for c in cfg.contestants if wanted is None or c in wanted},
            key=list(CONTESTANTS).index,
        )
        print(f"[{self.elapsed():6.1f}s] {sc.key}: {', '.join(names)}", file=sys.stderr)
        t0, server_cpu0 = time.monotonic(), server.cpu_seconds()
        workers: dict[str, Worker] = {}
        skipped: dict[str, str] = {}
        for name in names:
            workers[name] = Worker(name, self.log_dir)
        for name in names:
            try:
                hello = workers[name].hello()
            except (TimeoutError, RuntimeError) as exc:
                skipped[name] = str(exc)
                continue
            if not hello.get("ready"):
                skipped[name] = hello.get("reason", "unavailable")
                continue
            self.versions.update({k: v for k, v in hello.get("versions", {}).items() if v})
            reason = hello["capabilities"].get(sc.key, f"{name} has no {sc.key} scenario")
            if reason:
                skipped[name] = reason
        cells: dict[str, dict[str, Cell]] = {
            cfg.label: {c: Cell() for c in cfg.contestants} for cfg in sc.configs
        }
        for cfg in sc.configs:
            for c in cfg.contestants:
                cell = cells[cfg.label][c]
                if wanted is not None and c not in wanted:
                    cell.status, cell.reason = "skipped", "not selected (--contestants)"
                elif c in skipped:
                    cell.status, cell.reason = "skipped", skipped[c]
        reps = self.args.reps or sc.reps
        done_reps = 0
        for rep in range(reps):
            if rep and self.over_budget():
                self.truncated.append(f"{sc.key}: {rep} of {reps} repetitions (time budget)")
                break
            for cfg in sc.configs:
                live = [c for c in cfg.contestants if cells[cfg.label][c].status == "ok"]
                shift = rep % len(live) if live else 0
                for c in live[shift:] + live[:shift]:  # A B, B A, ...
                    self._one(sc, cfg, c, workers, cells[cfg.label][c], server)
            done_reps += 1
        for w in workers.values():
            w.close()
        for row in cells.values():
            for cell in row.values():
                if cell.status == "ok" and not cell.samples:
                    cell.status = "error"
                    cell.reason = cell.errors[-1].splitlines()[-1] if cell.errors else "no samples"
        return {
            "title": sc.title,
            "description": sc.description,
            "metrics": sc.metrics,
            "repetitions": done_reps,
            "wall_time_s": round(time.monotonic() - t0, 1),
            "server_cpu_s": round(server.cpu_seconds() - server_cpu0, 2),
            "configs": {
                cfg.label: {
                    "params": cfg.params,
                    "contestants": {
                        c: cells[cfg.label][c].to_json(sc.metrics) for c in cfg.contestants
                    },
                }
                for cfg in sc.configs
            },
        }

    def _one(
        self,
        sc: Scenario,
        cfg: Config,
        c: str,
        workers: dict[str, Worker],
        cell: Cell,
        server: Server,
    ) -> None:
        worker = workers[c]
        if not worker.alive:  # it timed out or crashed earlier: start a fresh one
            worker = workers[c] = Worker(c, self.log_dir)
            try:
                worker.hello()
            except (TimeoutError, RuntimeError) as exc:
                cell.errors.append(f"restarting the worker failed: {exc}")
                worker.kill()
                return
        params = {**cfg.params, "base_url": server.base_url}
        try:
            reply = worker.call(sc.key, params, sc.timeout)
        except (TimeoutError, RuntimeError) as exc:
            cell.errors.append(str(exc))
            worker.kill()  # a fresh worker takes over at the next repetition
            return
        if not reply.get("ok"):
            cell.errors.append(reply.get("error", "unknown error"))
            return
        samples: dict[str, list[float]] = reply["samples"]
        t_ints = samples.pop("_t_interrupt", None)
        if t_ints is not None:
            time.sleep(0.05)  # let the server's last log line arrive
            samples["disconnect_ms"] = [server.disconnect_after(t) * 1e3 for t in t_ints]
        for metric, values in samples.items():
            cell.samples.setdefault(metric, []).extend(values)

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start


# --------------------------------------------------------------------------- derived numbers

RATIO_PAIRS = (
    ("rustvani", "pipecat"),
    ("rustvani", "floor"),
    ("pipecat", "openai"),
    ("openai", "httpx"),
)


def _median(result: dict[str, Any], label: str, c: str, metric: str) -> float:
    cell = result["configs"][label]["contestants"].get(c)
    if not cell or cell["status"] != "ok" or metric not in cell.get("metrics", {}):
        return math.nan
    value: float = cell["metrics"][metric]["median"]
    return value


def derive(key: str, result: dict[str, Any]) -> None:
    """Ratios of medians (a/b, per configuration and metric) and scenario-specific numbers."""
    floor = "channels" if key == "hop" else "httpx"
    ratios = []
    for label in result["configs"]:
        for metric in result["metrics"]:
            for a, b in RATIO_PAIRS:
                b = floor if b == "floor" else b
                va, vb = _median(result, label, a, metric), _median(result, label, b, metric)
                if math.isnan(va) or math.isnan(vb) or vb == 0:
                    continue
                ratios.append({"config": label, "metric": metric, "a": a, "b": b, "ratio": va / vb})
    result["ratios"] = ratios
    derived: dict[str, Any] = {}
    if key == "hop":
        for c in ("channels", "rustvani", "pipecat"):
            pts = [
                (float(label.split("=")[1]), _median(result, label, c, "us_per_frame"))
                for label in result["configs"]
            ]
            pts = [(k, v) for k, v in pts if not math.isnan(v)]
            if len(pts) >= 2:
                mk = sum(k for k, _ in pts) / len(pts)
                mv = sum(v for _, v in pts) / len(pts)
                den = sum((k - mk) ** 2 for k, _ in pts)
                slope = sum((k - mk) * (v - mv) for k, v in pts) / den if den else math.nan
                derived[f"us_per_hop.{c}"] = slope
    if key in ("paced", "burst"):
        for label in result["configs"]:
            for a, b in (("rustvani", "httpx"), ("pipecat", "openai")):
                va = _median(result, label, a, "ttft_ms")
                vb = _median(result, label, b, "ttft_ms")
                if not (math.isnan(va) or math.isnan(vb)):
                    derived[f"added_ttft_ms.{label}.{a}_over_{b}"] = va - vb
    result["derived"] = derived


# --------------------------------------------------------------------------- machine block


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def client_creation_cost() -> dict[str, float]:
    """What one ``httpx.AsyncClient()`` costs to build (its default SSL context loads the CA
    bundle): a per-pipeline cost wherever a processor opens its own client."""
    import httpx

    n = 5
    httpx.AsyncClient()  # the first one also pays for loading certifi and ssl
    t = time.process_time()
    clients = [httpx.AsyncClient() for _ in range(n)]
    cpu = (time.process_time() - t) / n
    del clients
    return {"httpx_async_client_cpu_ms": round(cpu * 1e3, 2)}


def machine_block(worker_versions: dict[str, str | None]) -> dict[str, Any]:
    cpu = platform.processor() or None
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as fh:
        mem = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    versions = {
        d: worker_versions.get(d) or _version(d)
        for d in (
            "trio",
            "httpx",
            "httpx-sse",
            "httpx2",
            "openai",
            "pipecat-ai",
            "matplotlib",
            "rustvani-trio",
        )
    }
    status = _git("status", "--porcelain")
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "versions": versions,
        "diagnostics": client_creation_cost(),
    }


# --------------------------------------------------------------------------- main


def _no_nan(obj: Any) -> Any:
    """NaN (a missing measurement) becomes null, so results.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1-2 repetitions")
    p.add_argument(
        "--scenarios",
        default="",
        help="comma-separated subset of: burst,paced,hop,interrupt,tool,concurrency,slowsink",
    )
    p.add_argument(
        "--contestants", default="", help="comma-separated subset of: " + ",".join(CONTESTANTS)
    )
    p.add_argument(
        "--reps",
        type=int,
        default=0,
        help="repetitions per scenario (default: "
        "each scenario's own, sized for the 10-minute budget)",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    p.add_argument(
        "--budget",
        type=float,
        default=540.0,
        help="seconds; past it, scenarios stop after their current repetition",
    )
    args = p.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.contestants = [c for c in args.contestants.split(",") if c]
    for c in args.contestants:
        if c not in CONTESTANTS:
            p.error(f"unknown contestant {c!r}; choose from {', '.join(CONTESTANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scenarios = build_scenarios(args.quick)
    known = {s.key for s in scenarios}
    for s in args.scenarios:
        if s not in known:
            print(
                f"unknown scenario {s!r}; choose from {', '.join(sorted(known))}", file=sys.stderr
            )
            return 2
    if args.scenarios:
        scenarios = [s for s in scenarios if s.key in args.scenarios]
    runner = Runner(args, out)
    server = Server(runner.log_dir / "server.log")
    results: dict[str, Any] = {}
    server.start()
    try:
        for sc in scenarios:
            result = runner.run_scenario(sc, server)
            derive(sc.key, result)
            results[sc.key] = result
    finally:
        server.stop()
    wall = runner.elapsed()
    doc: dict[str, Any] = {
        "meta": {
            **machine_block(runner.versions),
            "command": " ".join(["python -m benchmarks.run", *(argv or sys.argv[1:])]),
            "quick": args.quick,
            "wall_time_s": round(wall, 1),
            "truncated": runner.truncated,
            "server": "python -m rustvani_trio.testing.server (separate process, 127.0.0.1)",
            "contestants": {k: label for k, (_, label) in CONTESTANTS.items()},
        },
        "scenarios": results,
    }
    table = format_table(doc)
    doc["table"] = table
    plot_path, plot_note = write_plot(doc, out / "plot.png")
    doc["plot"] = plot_path.name if plot_path else None
    if plot_note:
        doc["meta"]["plot_note"] = plot_note
    (out / "results.json").write_text(json.dumps(_no_nan(doc), indent=1) + "\n")
    print(table)
    print(
        f"\nwall time {wall:.1f}s; wrote {out / 'results.json'}"
        + (f" and {plot_path}" if plot_path else f" (no plot: {plot_note})")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
