"""The self-contained HTML report: the plot (embedded), the tables and the notes, rendered
from the JSON report and the same table rows as the terminal."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Any

from ._table import COLUMNS, Block, blocks, header_lines

__all__ = ["render_html"]

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #1d2330; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
h3 { font-size: 1em; margin: 1.2em 0 0; }
.sub { color: #555; margin: .1em 0; }
table { border-collapse: collapse; margin: .6em 0 .3em; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e6ec; text-align: right; }
th { background: #f2f4f8; } td.l, th.l { text-align: left; }
tr.pipeline td { background: #fbfcff; } tr.all td { background: #f8faf4; }
ul.notes { color: #333; margin: .2em 0 1.2em; }
img { max-width: 100%; border: 1px solid #e3e6ec; }
.missing { padding: 1em; background: #fff6e0; border: 1px solid #f0d48a; }
pre { background: #f6f7f9; padding: .8em; overflow-x: auto; font-size: 12px; }
"""


def _table(group: list[Block]) -> str:
    """One table per level, each followed by its notes."""
    head = "".join(
        f'<th class="l">{html.escape(c)}</th>' if i < 3 else f"<th>{html.escape(c)}</th>"
        for i, c in enumerate(COLUMNS)
    )
    parts = []
    for block in group:
        parts.append(f"<h3>{html.escape(block.title)}</h3>")
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
        for row in block.rows:
            cells = "".join(
                f'<td class="l">{html.escape(c)}</td>' if i < 3 else f"<td>{html.escape(c)}</td>"
                for i, c in enumerate(row)
            )
            parts.append(f'<tr class="{html.escape(row[1])}">{cells}</tr>')
        parts.append("</tbody></table>")
        items = "".join(f"<li>{html.escape(line)}</li>" for line in block.lines)
        parts.append(f"<ul class='notes'>{items}</ul>")
    return "".join(parts)


def _errors(report: Mapping[str, Any]) -> str:
    rows = []
    for level in report["levels"]:
        for label, message in level["errors"]["examples"].items():
            rows.append(
                f'<tr><td class="l">{html.escape(level["label"])}</td>'
                f'<td class="l">{html.escape(label)}</td>'
                f"<td>{level['errors']['by_class'][label]}</td>"
                f'<td class="l">{html.escape(message)}</td></tr>'
            )
    if not rows:
        return "<p>No request failed.</p>"
    head = '<tr><th class="l">level</th><th class="l">class</th><th>count</th>'
    head += '<th class="l">example message</th></tr>'
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(report: Mapping[str, Any], png: bytes | None, png_note: str | None) -> str:
    """The page. ``png`` is embedded as a data URI; without it ``png_note`` says why."""
    lines = header_lines(report)
    main, overhead = blocks(report)
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        alt = "latency distributions and TTFT against the load"
        plot = f'<img alt="{alt}" src="data:image/png;base64,{data}">'
    else:
        plot = f'<p class="missing">No plot: {html.escape(png_note or "not drawn")}</p>'
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in lines[2:])
    config = json.dumps(report["config"], indent=2, sort_keys=True)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rustvani-trio bench: {html.escape(str(report['meta']['model']))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(lines[0])}</h1>",
        f'<p class="sub">{html.escape(lines[1])}</p>',
        f'<ul class="notes">{notes}</ul>',
        "<h2>Latency distributions and TTFT against the load</h2>",
        plot,
        "<h2>Figures (mean, median, p90, p99 and sample count; times in ms)</h2>",
        _table(main),
    ]
    if overhead:
        parts += [
            "<h2>Load generator overhead (instant in-process server)</h2>",
            f"<p>{html.escape(report['overhead']['description'])}</p>",
            _table(overhead),
        ]
    parts += [
        "<h2>Errors</h2>",
        _errors(report),
        "<h2>Settings</h2>",
        f"<pre>{html.escape(config)}</pre>",
        f'<p class="sub">{html.escape(str(report["meta"]["clock"]))}; '
        f"every sample is in the JSON file ({html.escape(report['schema'])}).</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
