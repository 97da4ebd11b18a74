"""The JSON report: every sample, and every figure computed from those samples.

The report is the one source of truth: the table, the plot and the HTML page are rendered
from this dict (or from the file it was written to), never from the measurements directly.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from ._config import BenchConfig
from ._levels import LevelRun
from ._load import PATHS
from ._records import redact_url
from ._stats import rounded, summarize, window_rates

__all__ = [
    "METRICS",
    "SCHEMA",
    "THROUGHPUT",
    "build_report",
    "level_json",
    "metric_keys",
    "summarize_requests",
]

SCHEMA = "rustvani-trio-bench/1"

METRICS: dict[str, str] = {
    "ttft_ms": "TTFT (ms)",
    "itl_ms": "ITL (ms)",
    "tpot_ms": "TPOT (ms)",
    "e2e_ms": "E2E (ms)",
    "output_tok_s": "output tok/s per request",
    "tool_rtt_ms": "tool round trip (ms)",
    "interrupt_close_ms": "interrupt -> closed (ms)",
}
"""Per-request metrics: key -> label."""

THROUGHPUT: dict[str, str] = {
    "requests_per_s": "requests/s",
    "output_tok_per_s": "output tok/s total",
}
"""Throughput of both paths together, per window: key -> label."""

_SHARE = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "tool_rtt_ms", "interrupt_close_ms")


def metric_keys(config: Mapping[str, Any]) -> list[str]:
    """The per-request metrics that apply to a run with these settings."""
    keys = ["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "output_tok_s"]
    if config.get("tools"):
        keys.append("tool_rtt_ms")
    if config.get("interrupt_after_ms") is not None:
        keys.append("interrupt_close_ms")
    return keys


def _values(requests: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    if key == "itl_ms":
        return [v for r in requests for v in r["itl_ms"]]
    return [r[key] for r in requests if r.get(key) is not None]


def _counts(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


def _errors(requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    failed = [r for r in requests if not r["ok"]]
    return {
        "total": len(failed),
        "of": len(requests),
        "by_class": _counts(r["error"]["class"] for r in failed),
        "by_path": {p: sum(1 for r in failed if r["path"] == p) for p in PATHS},
        "examples": {r["error"]["class"]: r["error"]["message"] for r in reversed(failed)},
    }


def summarize_requests(
    requests: Sequence[Mapping[str, Any]], *, duration_s: float, window_s: float
) -> dict[str, Any]:
    """Everything a level reports, from its JSON request entries (measured ones only;
    statistics over the successful ones)."""
    measured = [r for r in requests if r["phase"] == "measured" and not r.get("aborted")]
    ok = [r for r in measured if r["ok"]]
    summary: dict[str, Any] = {}
    for path in PATHS:
        mine = [r for r in ok if r["path"] == path]
        summary[path] = {key: summarize(_values(mine, key)) for key in METRICS}
    share: dict[str, Any] = {}
    for key in _SHARE:
        a, b = summary["pipeline"][key], summary["raw"][key]
        share[key] = {
            stat: (
                rounded(a[stat] - b[stat]) if a[stat] is not None and b[stat] is not None else None
            )
            for stat in ("mean", "median")
        }
    done = [(r["start_ms"] + r["end_ms"]) / 1000.0 for r in ok if r["end_ms"] is not None]
    tokens: list[tuple[float, float]] = []
    for r in ok:
        stamps = r["token_ms"]
        if stamps:
            weight = r["output_tokens"] / len(stamps)
            tokens.extend(((r["start_ms"] + t) / 1000.0, weight) for t in stamps)
    throughput = {
        "requests_per_s": {
            **summarize(window_rates(((t, 1.0) for t in done), 0.0, duration_s, window_s)),
            "overall": rounded(len(done) / duration_s) if duration_s > 0 else None,
        },
        "output_tok_per_s": {
            **summarize(window_rates(tokens, 0.0, duration_s, window_s)),
            "overall": (
                rounded(sum(r["output_tokens"] for r in ok if r["end_ms"] is not None) / duration_s)
                if duration_s > 0
                else None
            ),
        },
    }
    prompt = [r["prompt_tokens"] for r in measured if r["prompt_tokens"] is not None]
    outcomes = [r["interrupt_outcome"] for r in measured if r["interrupt_outcome"]]
    lags = [r["schedule_lag_ms"] for r in measured if r["schedule_lag_ms"] is not None]
    return {
        "summary": summary,
        "framework_share": share,
        "throughput": throughput,
        "errors": _errors(measured),
        "warmup_errors": _errors(
            [r for r in requests if r["phase"] == "warmup" and not r.get("aborted")]
        ),
        "successful": {p: sum(1 for r in ok if r["path"] == p) for p in PATHS},
        "token_source": _counts(r["token_source"] for r in ok),
        "prompt_tokens_mean": rounded(math.fsum(prompt) / len(prompt), 1) if prompt else None,
        "interrupt_outcomes": _counts(outcomes),
        "schedule_lag_ms": summarize(lags) if lags else None,
    }


def level_json(run: LevelRun, *, window_s: float) -> dict[str, Any]:
    """One level: its settings, its requests (every sample) and its figures."""
    assert run.begin is not None and run.end is not None, "a level that was measured"
    requests = [r.to_json(run.begin) for r in (*run.warmup, *run.measured)]
    duration = max(0.0, run.end - run.begin)
    return {
        "label": run.level.label,
        "mode": run.level.mode,
        "value": run.level.value,
        "warmup_requests": len(run.warmup),
        "measured_requests": sum(1 for r in run.measured if r.finished),
        "aborted_requests": sum(1 for r in (*run.warmup, *run.measured) if not r.finished),
        "duration_s": rounded(duration),
        "generator_cpu_s": rounded(run.cpu_s),
        "generator_cpu_share": rounded(run.cpu_s / duration) if duration > 0 else None,
        **summarize_requests(requests, duration_s=duration, window_s=window_s),
        "requests": requests,
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _notes(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    ok = sum(sum(lv["successful"].values()) for lv in levels)
    total = sum(lv["errors"]["of"] for lv in levels)
    failed = sum(lv["errors"]["total"] for lv in levels)
    usage = sum(lv["token_source"].get("usage", 0) for lv in levels)
    counted = sum(lv["token_source"].get("counted", 0) for lv in levels)
    notes = [
        f"Statistics are over the {ok} successful measured requests of {total}; "
        f"{failed} failed and are counted under errors, not in the percentiles.",
        f"Output tokens: from the server's usage for {usage} requests, counted as streamed "
        f"deltas for {counted}.",
        "ITL is the gap between streamed deltas (chunks); TPOT is (E2E - TTFT) / (tokens - 1) "
        "with the token count above.",
        "Percentiles interpolate linearly between the closest ranks (numpy's default); over "
        "few samples p90 and p99 lie near the largest one. requests/s counts the successful "
        "requests completed (an interrupted request is not completed: with "
        "--interrupt-after-ms it is 0).",
        "framework share = pipeline minus raw stream, same load, same HTTP client, interleaved.",
    ]
    return notes


def build_report(
    config: BenchConfig,
    runs: Sequence[LevelRun],
    overhead: Sequence[LevelRun],
    *,
    endpoint: str,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole JSON report of a run."""
    settings = config.to_json()
    settings["base_url"] = redact_url(config.base_url)
    levels = [level_json(run, window_s=config.window) for run in runs]
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "endpoint": endpoint,
        "model": config.model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": {n: _version(n) for n in ("rustvani-trio", "trio", "httpx")},
        "clock": "trio.current_time(): monotonic (time.perf_counter)",
        "command": list(command) if command is not None else [sys.argv[0]],
    }
    return {
        "schema": SCHEMA,
        "meta": meta,
        "config": settings,
        "metrics": metric_keys(settings),
        "levels": levels,
        "overhead": (
            {
                "description": (
                    "The same requests against an instant in-process server (the whole answer "
                    "is ready at once): what the load generator itself adds to each figure, "
                    "through the pipeline and as a raw stream."
                ),
                "levels": [level_json(run, window_s=config.window) for run in overhead],
            }
            if overhead
            else None
        ),
        "notes": _notes(levels),
        "partial": None,
    }
