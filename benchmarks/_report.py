"""The text table and the PNG plot of a benchmark run (``results.json``'s document)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["format_table", "write_plot"]

COLUMNS = ("floor", "openai", "rustvani", "pipecat")
HEADERS = {
    "floor": "floor*",
    "openai": "openai SDK",
    "rustvani": "rustvani-trio",
    "pipecat": "pipecat 1.14",
}
COLORS = {
    "httpx": "#7f7f7f",
    "channels": "#7f7f7f",
    "openai": "#1f77b4",
    "rustvani": "#d62728",
    "pipecat": "#2ca02c",
}


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a >= 100_000:
        return f"{v / 1000:.0f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _floor_of(key: str) -> str:
    return "channels" if key == "hop" else "httpx"


def _cell(result: dict[str, Any], label: str, c: str, metric: str, notes: dict[str, int]) -> str:
    cell = result["configs"][label]["contestants"].get(c)
    if cell is None:
        return ""
    if cell["status"] != "ok":
        reason = cell.get("reason") or cell["status"]
        tag = "skip" if cell["status"] == "skipped" else "ERR"
        n = notes.setdefault(f"{c}: {reason}", len(notes) + 1)
        return f"{tag}[{n}]"
    m = cell.get("metrics", {}).get(metric)
    if m is None:
        return "n/a"
    return f"{_fmt(m['median'])} ({_fmt(m['p95'])})"


def _ratio(result: dict[str, Any], label: str, metric: str, a: str, b: str) -> str:
    for r in result.get("ratios", []):
        if r["config"] == label and r["metric"] == metric and r["a"] == a and r["b"] == b:
            return f"{r['ratio']:.2f}x"
    return ""


def format_table(doc: dict[str, Any]) -> str:
    """A fixed-width table: one row per scenario/configuration/metric, medians (p95)."""
    meta = doc["meta"]
    v = meta["versions"]
    commit = (meta.get("git_commit") or "unknown")[:10]
    if meta.get("git_dirty"):
        commit += " (dirty)"
    lines = [
        f"rustvani-trio benchmarks{' (--quick)' if meta.get('quick') else ''}: "
        f"{meta.get('cores')} cores {meta.get('cpu_model')}, Python {meta.get('python')}, "
        f"trio {v.get('trio')}, httpx {v.get('httpx')}, pipecat-ai {v.get('pipecat-ai')}, "
        f"openai {v.get('openai')}, commit {commit}",
        "cells: median (p95) over all samples; ratios are of medians; lower is better except "
        "frames_per_s and frames_at_sink",
        "* floor = raw httpx + httpx-sse under trio; for hop cost, a bare trio memory-channel "
        "chain",
        "",
    ]
    widths = (12, 10, 20, 15, 15, 15, 15, 12, 10)
    head = (
        "scenario",
        "config",
        "metric",
        *(HEADERS[c] for c in COLUMNS),
        "ours/pipecat",
        "ours/floor",
    )
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
    notes: dict[str, int] = {}
    for key, result in doc["scenarios"].items():
        floor = _floor_of(key)
        first = True
        for label in result["configs"]:
            for metric in result["metrics"]:
                row = [key if first else "", label, metric]
                first = False
                for c in COLUMNS:
                    row.append(_cell(result, label, floor if c == "floor" else c, metric, notes))
                row.append(_ratio(result, label, metric, "rustvani", "pipecat"))
                row.append(_ratio(result, label, metric, "rustvani", floor))
                lines.append(
                    "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
                )
        for name, value in result.get("derived", {}).items():
            lines.append(f"{'':12}  -> {name} = {_fmt(value)}")
        if "wall_time_s" in result:
            lines.append(
                f"{'':12}  ({result['repetitions']} repetitions, {_fmt(result['wall_time_s'])} s, "
                f"server CPU {_fmt(result.get('server_cpu_s'))} s)"
            )
    if notes:
        lines.append("")
        for text, n in notes.items():
            lines.append(f"[{n}] {text}")
    truncated = meta.get("truncated") or []
    for t in truncated:
        lines.append(f"truncated: {t}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot

PANELS: tuple[tuple[str, str, str], ...] = (
    ("burst", "ttft_ms", "Burst: TTFT (ms)"),
    ("burst", "total_ms", "Burst: total (ms)"),
    ("burst", "cpu_ms", "Burst: client CPU per turn (ms)"),
    ("paced", "ttft_ms", "Paced: TTFT (ms)"),
    ("hop", "us_per_frame", "Hop cost: µs per frame vs K"),
    ("interrupt", "disconnect_ms", "Interruption: server sees disconnect (ms)"),
    ("tool", "total_ms", "Tool round trip: total (ms)"),
    ("concurrency", "cpu_ms_per_conv", "Concurrency: CPU ms / conversation"),
    ("concurrency", "itd_p95_ms", "Concurrency: p95 inter-token delay (ms)"),
    ("slowsink", "peak_rss_mb", "Slow sink: peak RSS growth (MiB)"),
    ("slowsink", "max_backlog_frames", "Slow sink: max frames queued before the sink"),
    ("interrupt", "stop_ms", "Interruption: to last text frame at sink (ms)"),
    ("voice", "cpu_us_per_token", "Voice token path: client CPU per token (µs)"),
    ("voice", "ttfa_ms", "Voice token path: to first audio (ms)"),
)


def write_plot(doc: dict[str, Any], path: Path) -> tuple[Path | None, str | None]:
    """Bars of medians with a whisker up to p95 (hop cost: lines over K). Returns the path,
    or ``None`` and why (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return None, f"matplotlib not installed ({exc}); pip install -e '.[bench]'"
    labels = doc["meta"]["contestants"]
    panels = [p for p in PANELS if p[0] in doc["scenarios"]]
    if not panels:
        return None, "no scenario to plot"
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, (key, metric, title) in zip(axes.flat, panels, strict=False):
        result = doc["scenarios"][key]
        ax.set_title(title, fontsize=10)
        configs = list(result["configs"])
        contestants = [
            c
            for c in labels
            if any(
                result["configs"][cfg]["contestants"].get(c, {}).get("status") == "ok"
                for cfg in configs
            )
        ]
        if key == "hop":
            for c in contestants:
                xs, ys = [], []
                for cfg in configs:
                    if "inline" in cfg or c not in result["configs"][cfg]["contestants"]:
                        continue
                    m = result["configs"][cfg]["contestants"][c].get("metrics", {}).get(metric)
                    if m:
                        xs.append(float(cfg.split("=")[1]))
                        ys.append(m["median"])
                ax.plot(xs, ys, marker="o", label=labels[c], color=COLORS.get(c))
            ax.set_xlabel("K pass-through processors")
        else:
            width = 0.8 / max(1, len(contestants))
            for i, c in enumerate(contestants):
                xs, ys, errs = [], [], []
                for j, cfg in enumerate(configs):
                    cell = result["configs"][cfg]["contestants"].get(c, {})
                    m = cell.get("metrics", {}).get(metric)
                    if not m or m["median"] is None or math.isnan(m["median"]):
                        continue
                    xs.append(j + (i - (len(contestants) - 1) / 2) * width)
                    ys.append(m["median"])
                    errs.append(max(0.0, m["p95"] - m["median"]))
                ax.bar(
                    xs,
                    ys,
                    width=width,
                    label=labels[c],
                    color=COLORS.get(c),
                    yerr=[[0.0] * len(errs), errs],
                    capsize=2,
                )
            ax.set_xticks(range(len(configs)), configs)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    meta = doc["meta"]
    fig.suptitle(
        f"rustvani-trio vs pipecat vs raw clients — {meta.get('cores')} cores, "
        f"Python {meta.get('python')}, commit {(meta.get('git_commit') or '?')[:10]}"
        f"{' (quick)' if meta.get('quick') else ''}; bars: median, whisker: p95",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, None
