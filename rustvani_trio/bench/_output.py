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
    _write_whole(json_path, json.dumps(report, indent=1, allow_nan=False) + "\n")
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
    _write_whole(html_path, render_html(report, png, note))
    return ReportFiles(json_path, html_path, png_path, note)


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (no half-written file is left behind)."""
    part = path.with_name(path.name + ".part")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
