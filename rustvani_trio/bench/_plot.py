"""The PNG plot (matplotlib, from the ``bench-plot`` extra, imported only here and only when a
plot is drawn): latency distributions and TTFT against the load, from the JSON report."""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Mapping
from typing import Any

from ..exceptions import RustvaniError
from ._load import PATHS
from ._report import METRICS

__all__ = ["PLOT_HINT", "PlotUnavailable", "build_figure", "plot_series", "render_png"]

PLOT_HINT = "pip install 'rustvani-trio[bench-plot]'"
_DISTRIBUTIONS = ("ttft_ms", "itl_ms", "e2e_ms", "tool_rtt_ms", "interrupt_close_ms")


class PlotUnavailable(RustvaniError, RuntimeError):
    """matplotlib is not installed."""


def _samples(level: Mapping[str, Any], path: str, key: str) -> list[float]:
    ok = [
        r for r in level["requests"] if r["phase"] == "measured" and r["ok"] and r["path"] == path
    ]
    if key == "itl_ms":
        return sorted(v for r in ok for v in r["itl_ms"])
    return sorted(r[key] for r in ok if r[key] is not None)


def plot_series(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the plot draws, taken from the report: per distribution metric, ``(label,
    sorted samples)`` per level and path; and the TTFT statistics per level and path."""
    levels = report["levels"]
    dists = {
        key: [(f"{lv['label']} {path}", _samples(lv, path, key)) for lv in levels for path in PATHS]
        for key in _DISTRIBUTIONS
        if key in report["metrics"]
    }
    rate = bool(report["config"]["rate"])
    versus: dict[str, Any] = {
        "x": [lv["value"] for lv in levels],
        "xlabel": "arrival rate (requests/s)" if rate else "concurrency",
    }
    for path in PATHS:
        versus[path] = {
            stat: [lv["summary"][path]["ttft_ms"][stat] for lv in levels]
            for stat in ("median", "p90", "p99")
        }
    return {"distributions": dists, "ttft_vs_load": versus}


def _matplotlib_figure() -> Any:
    try:
        return importlib.import_module("matplotlib.figure").Figure
    except ImportError as exc:
        raise PlotUnavailable(f"the PNG plot needs matplotlib: {PLOT_HINT}") from exc


def build_figure(report: Mapping[str, Any]) -> Any:
    """The matplotlib Figure of the report (raises :class:`PlotUnavailable`)."""
    figure_cls = _matplotlib_figure()
    series = plot_series(report)
    dists = series["distributions"]
    panels = len(dists) + 1
    cols = 3 if panels > 4 else 2
    rows = math.ceil(panels / cols)
    fig = figure_cls(figsize=(6.0 * cols, 4.0 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    colours = [f"C{i % 10}" for i in range(len(report["levels"]))]
    for ax, (key, lines) in zip(axes, dists.items(), strict=False):
        for n, (label, values) in enumerate(lines):
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            style = "-" if label.endswith("pipeline") else "--"
            ax.step(values, ys, where="post", linestyle=style, color=colours[n // 2], label=label)
        ax.set_title(f"{METRICS[key]}: distribution (successful requests)")
        ax.set_xlabel(METRICS[key])
        ax.set_ylabel("fraction of samples")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no successful samples", ha="center", transform=ax.transAxes)
    ax = axes[len(dists)]
    versus = series["ttft_vs_load"]
    for path, colour in zip(PATHS, ("C0", "C3"), strict=True):
        for stat, style, marker in (("median", "-", "o"), ("p90", "--", "^"), ("p99", ":", "v")):
            ys = [math.nan if v is None else v for v in versus[path][stat]]
            ax.plot(
                versus["x"],
                ys,
                color=colour,
                linestyle=style,
                marker=marker,
                label=f"{path} {stat}",
            )
    ax.set_title("TTFT against the load")
    ax.set_xlabel(versus["xlabel"])
    ax.set_ylabel(METRICS["ttft_ms"])
    if len(versus["x"]) > 1 and min(versus["x"]) > 0 and max(versus["x"]) / min(versus["x"]) > 8:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    for extra in axes[len(dists) + 1 :]:
        extra.set_visible(False)
    # Server-provided text is shown as it is: '$' must not start matplotlib's math mode.
    title = f"rustvani-trio bench: {report['meta']['model']} at {report['meta']['endpoint']}"
    fig.suptitle(title, parse_math=False)
    return fig


def render_png(report: Mapping[str, Any]) -> bytes:
    """The plot as PNG bytes (raises :class:`PlotUnavailable`)."""
    fig = build_figure(report)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
