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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import summarize
from benchmarks._derive import derive
from benchmarks._processes import REPO, Server, Worker
from benchmarks._report import format_table, write_plot
from benchmarks._scenarios import Config, Scenario, build_scenarios
from benchmarks.contestants import CONTESTANTS

DEFAULT_OUT = REPO / "benchmarks" / "results"


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
        help="comma-separated subset of: burst,paced,hop,interrupt,tool,concurrency,slowsink,voice",
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
        if s not in known and args.scenarios != ["all"]:
            print(
                f"unknown scenario {s!r}; choose from {', '.join(sorted(known))}", file=sys.stderr
            )
            return 2
    if args.scenarios == ["all"]:
        pass
    elif args.scenarios:
        scenarios = [s for s in scenarios if s.key in args.scenarios]
    else:
        scenarios = [s for s in scenarios if s.default]
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
