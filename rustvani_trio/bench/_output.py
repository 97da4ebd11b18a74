"""Writing a report: ``bench.json`` (every sample), ``bench.png`` (with matplotlib) and
``report.html`` (self-contained)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._html import render_html
from ._plot import PlotUnavailable, render_png

__all__ = ["ReportFiles", "write_report"]


@attrs.frozen
class ReportFiles:
    """The files written; ``png`` is ``None`` when the plot could not be drawn
    (``png_note`` says why and how to get it)."""

    json: Path
    html: Path
    png: Path | None
    png_note: str | None


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Write the report's files into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    png: bytes | None = None
    png_path: Path | None = None
    note: str | None = None
    try:
        png = render_png(report)
    except PlotUnavailable as exc:
        note = str(exc)
    if png is not None:
        png_path = out / "bench.png"
        png_path.write_bytes(png)
    html_path = out / "report.html"
    html_path.write_text(render_html(report, png, note), encoding="utf-8")
    return ReportFiles(json_path, html_path, png_path, note)
