"""The report as a table: rows and lines built from the JSON report only, rendered as text
for the terminal (and as HTML by the page renderer, from the same rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._load import PATHS
from ._report import METRICS, THROUGHPUT

__all__ = ["COLUMNS", "NO_SAMPLES", "Block", "blocks", "fmt", "header_lines", "render_table"]

COLUMNS = ("level", "path", "metric", "mean", "median", "p90", "p99", "n")
NO_SAMPLES = "no successful requests: no statistics"
"""The row of a path whose measured requests all failed."""


def fmt(value: Any) -> str:
    """A figure as the table shows it: ``-`` for none, about 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    v = float(value)
    magnitude = abs(v)
    if magnitude >= 1000:
        return f"{v:.0f}"
    if magnitude >= 100:
        return f"{v:.1f}"
    if magnitude >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _signed(value: Any) -> str:
    text = fmt(value)
    return text if text == "-" or text.startswith("-") else "+" + text


@attrs.frozen
class Block:
    """One level's rows (cells as strings, in :data:`COLUMNS` order) and notes."""

    title: str
    rows: list[tuple[str, ...]]
    lines: list[str]


def _stat_cells(stats: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(fmt(stats[k]) for k in ("mean", "median", "p90", "p99", "n"))


def _level_block(level: Mapping[str, Any], metrics: Sequence[str], title: str) -> Block:
    rows: list[tuple[str, ...]] = []
    for path in PATHS:
        if not level["successful"][path]:
            rows.append((level["label"], path, NO_SAMPLES, "-", "-", "-", "-", "0"))
            continue
        for key in metrics:
            stats = level["summary"][path][key]
            rows.append((level["label"], path, METRICS[key], *_stat_cells(stats)))
    for key, label in THROUGHPUT.items():
        stats = level["throughput"][key]
        rows.append((level["label"], "all", f"{label} (per window)", *_stat_cells(stats)))
    share = level["framework_share"]
    parts = [
        f"{METRICS[k].split(' (')[0]} {_signed(share[k]['median'])} ms"
        for k in metrics
        if k in share and share[k]["median"] is not None
    ]
    errors = level["errors"]
    lines = [
        "framework share (median pipeline - raw): "
        + (", ".join(parts) or "none (it needs successful requests on both paths)"),
        f"overall: {fmt(level['throughput']['requests_per_s']['overall'])} requests/s, "
        f"{fmt(level['throughput']['output_tok_per_s']['overall'])} output tok/s over "
        f"{fmt(level['duration_s'])} s; load generator CPU {fmt(level['generator_cpu_s'])} s"
        + (
            f" ({level['generator_cpu_share']:.0%} of one core)"
            if level["generator_cpu_share"] is not None
            else ""
        ),
    ]
    if errors["total"]:
        classes = ", ".join(f"{k} {v}" for k, v in errors["by_class"].items())
        lines.append(
            f"errors: {errors['total']} of {errors['of']} ({classes}); excluded from the "
            f"statistics, which are over the {sum(level['successful'].values())} successful"
        )
    else:
        lines.append(f"errors: 0 of {errors['of']}")
    if level.get("aborted_requests"):
        lines.append(
            f"aborted: {level['aborted_requests']} requests in flight when the run was "
            "stopped (left out of every figure)"
        )
    if level["warmup_errors"]["total"]:
        lines.append(f"warm-up errors (not counted above): {level['warmup_errors']['total']}")
    sources = level["token_source"]
    lines.append(
        f"output tokens: server usage {sources.get('usage', 0)}, "
        f"counted {sources.get('counted', 0)}"
        + (
            f"; prompt tokens (server) {fmt(level['prompt_tokens_mean'])} on average"
            if level["prompt_tokens_mean"] is not None
            else ""
        )
    )
    lag = level.get("schedule_lag_ms")
    if lag:
        lines.append(
            f"arrivals started {fmt(lag['median'])} ms late (median; p99 {fmt(lag['p99'])} ms) "
            "against the Poisson schedule"
        )
    if level["interrupt_outcomes"]:
        outcomes = ", ".join(f"{k} {v}" for k, v in level["interrupt_outcomes"].items())
        lines.append(f"interruptions: {outcomes}")
    return Block(title, rows, lines)


def blocks(report: Mapping[str, Any]) -> tuple[list[Block], list[Block]]:
    """The levels' blocks and the overhead levels' blocks."""
    metrics = report["metrics"]
    main = [_level_block(lv, metrics, lv["label"]) for lv in report["levels"]]
    overhead: list[Block] = []
    if report.get("overhead"):
        keys = [k for k in metrics if k not in ("tool_rtt_ms", "interrupt_close_ms")]
        overhead = [
            _level_block(lv, keys, f"overhead {lv['label']}") for lv in report["overhead"]["levels"]
        ]
    return main, overhead


def header_lines(report: Mapping[str, Any]) -> list[str]:
    """What was measured, in a few lines."""
    cfg, meta = report["config"], report["meta"]
    if cfg["rate"]:
        load = "Poisson arrivals at " + ", ".join(f"{r:g}" for r in cfg["rate"]) + " req/s"
    else:
        load = "concurrency " + ", ".join(str(c) for c in cfg["concurrency"])
    amount = (
        f"{cfg['requests']} requests per level"
        if cfg["requests"] is not None
        else f"{cfg['duration']:g} s per level"
    )
    extras = []
    if cfg["tools"]:
        extras.append("tool call per request")
    if cfg["interrupt_after_ms"] is not None:
        extras.append(f"interrupted after {cfg['interrupt_after_ms']:g} ms")
    partial = report.get("partial")
    title = f"rustvani-trio bench: model {meta['model']!r} at {meta['endpoint']} ({meta['date']})"
    notes = list(report["notes"])
    if partial:
        title = "PARTIAL " + title
        where = f" during {partial['during']}" if partial["during"] else ""
        notes.insert(
            0,
            f"PARTIAL: {partial['reason']}{where}; {partial['levels_done']} of "
            f"{partial['levels_planned']} levels complete. The figures are over what was "
            "measured until then.",
        )
    return [
        title,
        f"load: {load}; {amount} (pipeline and raw stream interleaved 1:1), warm-up excluded; "
        f"prompt ~{cfg['prompt_tokens']} tokens, max {cfg['max_tokens']} output tokens"
        + ("; " + ", ".join(extras) if extras else ""),
        *notes,
    ]


def _render_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    out = []
    for row in rows:
        cells = [
            cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render_table(report: Mapping[str, Any]) -> str:
    """The terminal table of a report."""
    main, overhead = blocks(report)
    lines = header_lines(report)
    for title, group in (("", main), ("load generator overhead (instant server)", overhead)):
        if not group:
            continue
        lines.append("")
        if title:
            lines.append(title)
        rows: list[tuple[str, ...]] = [COLUMNS]
        for block in group:
            rows.extend(block.rows)
        rendered = _render_rows(rows)
        lines.append(rendered[0])
        lines.append("-" * len(rendered[0]))
        at = 1
        for block in group:
            lines.extend(rendered[at : at + len(block.rows)])
            at += len(block.rows)
            lines.extend("    " + line for line in block.lines)
    return "\n".join(lines) + "\n"
