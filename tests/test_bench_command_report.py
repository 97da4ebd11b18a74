"""The bench's report (issue 15): one source of truth for JSON, table, plot and HTML; errors
counted, classified and kept out of the percentiles; token sources; the API key never written.

Runs under ``autojump_clock`` like ``test_bench_command.py`` (see its docstring).
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from rustvani_trio._cli import main
from rustvani_trio.bench import BenchConfig, render_table, run_bench, write_report
from rustvani_trio.bench._plot import build_figure, plot_series
from rustvani_trio.bench._stats import percentile, summarize, window_rates
from rustvani_trio.bench._table import blocks, fmt
from rustvani_trio.testing import (
    ErrorReply,
    RecordedRequest,
    TextReply,
    numbered_tokens,
    open_scripted_server,
)

PATHS = ("pipeline", "raw")
STATS = ("mean", "median", "p90", "p99")


def _config(base_url: str, **overrides: Any) -> BenchConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "model": "m",
        "prompt_tokens": 16,
        "max_tokens": 6,
        "overhead": False,
    }
    values.update(overrides)
    return BenchConfig(**values)


def _varied(request: RecordedRequest) -> TextReply:
    """Different timings per request, so that every statistic differs."""
    spread = request.index % 7
    return TextReply(
        numbered_tokens(6),
        first_token_delay=0.1 + 0.013 * spread,
        token_delay=0.01 + 0.003 * (request.index % 3),
    )


async def _varied_report(**overrides: Any) -> dict[str, Any]:
    async with open_scripted_server(default_reply=_varied) as server:
        return await run_bench(
            _config(server.base_url, concurrency=(1, 3), requests=12, **overrides)
        )


def _reference_stats(values: list[float]) -> dict[str, Any]:
    """The statistics, computed independently of the bench (the standard library)."""
    if len(values) == 1:
        return {"mean": values[0], "median": values[0], "p90": values[0], "p99": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p90": cuts[89],
        "p99": cuts[98],
    }


async def test_the_summary_is_computed_from_the_json_samples(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    report = await _varied_report()
    files = write_report(report, tmp_path)
    loaded = json.loads(files.json.read_text())
    for level in loaded["levels"]:
        measured = [r for r in level["requests"] if r["phase"] == "measured" and r["ok"]]
        for path in PATHS:
            mine = [r for r in measured if r["path"] == path]
            samples = {
                "ttft_ms": [r["ttft_ms"] for r in mine],
                "itl_ms": [v for r in mine for v in r["itl_ms"]],
                "e2e_ms": [r["e2e_ms"] for r in mine],
                "tpot_ms": [r["tpot_ms"] for r in mine],
            }
            for key, values in samples.items():
                reported = level["summary"][path][key]
                assert reported["n"] == len(values)
                for stat, expected in _reference_stats(values).items():
                    assert reported[stat] == pytest.approx(expected, abs=1e-3), (key, stat)
            # Each request's own figures agree with its raw timestamps.
            for r in mine:
                assert r["ttft_ms"] == r["token_ms"][0]
                assert r["e2e_ms"] == r["end_ms"]
                gaps = [b - a for a, b in zip(r["token_ms"], r["token_ms"][1:], strict=False)]
                assert r["itl_ms"] == pytest.approx(gaps, abs=1e-3)
        assert len({level["summary"]["raw"]["ttft_ms"][s] for s in STATS}) > 1  # not degenerate


async def test_table_plot_and_html_show_the_json_numbers(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    report = await _varied_report()
    files = write_report(report, tmp_path)
    loaded = json.loads(files.json.read_text())
    # The table from the file is the table from the run.
    table = render_table(loaded)
    assert table == render_table(report)
    rows = [line.split() for line in table.splitlines()]
    for level in loaded["levels"]:
        for path in PATHS:
            stats = level["summary"][path]["ttft_ms"]
            expected = [level["label"], path, "TTFT", "(ms)", *(fmt(stats[s]) for s in STATS)]
            expected.append(str(stats["n"]))
            assert expected in rows, expected
        rps = level["throughput"]["requests_per_s"]
        assert f"{fmt(rps['overall'])} requests/s" in table
    # The plot draws the JSON's samples and statistics.
    series = plot_series(loaded)
    fig = build_figure(loaded)
    ttft_axis, versus_axis = fig.axes[0], fig.axes[len(series["distributions"])]
    for line, (label, values) in zip(
        ttft_axis.get_lines(), series["distributions"]["ttft_ms"], strict=True
    ):
        assert line.get_label() == label
        level_label, path = label.split()
        level = next(lv for lv in loaded["levels"] if lv["label"] == level_label)
        samples = sorted(
            r["ttft_ms"]
            for r in level["requests"]
            if r["phase"] == "measured" and r["ok"] and r["path"] == path
        )
        assert list(line.get_xdata()) == values == samples
    medians = {line.get_label(): list(line.get_ydata()) for line in versus_axis.get_lines()}
    for path in PATHS:
        assert medians[f"{path} median"] == [
            lv["summary"][path]["ttft_ms"]["median"] for lv in loaded["levels"]
        ]
    assert list(versus_axis.get_lines()[0].get_xdata()) == [1.0, 3.0]
    # The page embeds the plot and shows the same rows.
    page = files.html.read_text()
    assert files.png is not None and files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in page
    main_blocks, _ = blocks(loaded)
    for block in main_blocks:
        for row in block.rows:
            assert "".join(f"<td>{cell}</td>" for cell in row[3:]) in page


async def test_failed_requests_are_counted_and_kept_out_of_the_percentiles(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    def faulty(request: RecordedRequest) -> TextReply | ErrorReply:
        kind = request.index % 6
        if kind == 0:
            return ErrorReply(503, "overloaded", type="server_error")
        if kind == 1:
            return TextReply(numbered_tokens(6), error_after=2, token_delay=0.01)
        if kind == 2:
            return TextReply(numbered_tokens(6), drop_after=3, token_delay=0.01)
        if kind == 3:  # slower successes: if failures leaked into the figures they would show
            return TextReply(numbered_tokens(6), first_token_delay=0.3, token_delay=0.01)
        return TextReply(numbered_tokens(6), first_token_delay=0.1, token_delay=0.01)

    async with open_scripted_server(default_reply=faulty) as server:
        report = await run_bench(_config(server.base_url, requests=24, warmup=0))
    (level,) = report["levels"]
    errors = level["errors"]
    # One request at a time: the server's numbers are the bench's (from 1).
    assert errors["by_class"] == {"http_503": 4, "stream": 8}
    assert errors["total"] == 12 and errors["of"] == 24
    assert errors["by_path"]["pipeline"] + errors["by_path"]["raw"] == 12
    assert level["successful"]["pipeline"] + level["successful"]["raw"] == 12
    for path in PATHS:
        ok = [
            r
            for r in level["requests"]
            if r["path"] == path and r["ok"] and r["phase"] == "measured"
        ]
        assert level["summary"][path]["ttft_ms"]["n"] == len(ok)
        assert level["summary"][path]["ttft_ms"]["median"] == pytest.approx(
            statistics.median(r["ttft_ms"] for r in ok), abs=1e-3
        )
    failed = [r for r in level["requests"] if not r["ok"]]
    assert all(r["error"]["message"] for r in failed)
    assert any(r["ttft_ms"] is not None for r in failed)  # they streamed, yet are excluded
    assert {r["error"]["status"] for r in failed if r["error"]["class"] == "http_503"} == {503}
    table = render_table(report)
    assert "errors: 12 of 24 (http_503 4, stream 8); excluded from the statistics" in table
    assert "over the 12 successful measured requests of 24; 12 failed" in " ".join(report["notes"])
    page = write_report(report, tmp_path).html.read_text()
    assert "overloaded" in page and "http_503" in page


async def test_timeouts_and_refused_connections_are_classified(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stall = TextReply(numbered_tokens(6), stall_after=2)
    async with open_scripted_server(default_reply=stall) as server:
        report = await run_bench(_config(server.base_url, requests=4, warmup=0, request_timeout=5))
    assert report["levels"][0]["errors"]["by_class"] == {"timeout": 4}
    assert report["levels"][0]["errors"]["by_path"] == {"pipeline": 2, "raw": 2}

    with trio.socket.socket() as sock:  # a port that nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = await run_bench(_config(f"http://127.0.0.1:{port}/v1", requests=4, warmup=0))
    assert report["levels"][0]["errors"]["by_class"] == {"connection": 4}


async def test_scripted_faults_reach_the_report(autojump_clock: trio.testing.MockClock) -> None:
    report = await run_bench(
        _config("scripted", requests=40, warmup=0, scripted_error_rate=0.3, seed=3)
    )
    (level,) = report["levels"]
    errors = level["errors"]
    assert 4 <= errors["total"] <= 24
    assert set(errors["by_class"]) <= {"http_500", "stream"}
    assert sum(level["successful"].values()) == 40 - errors["total"]
    assert "30% of requests fail" in report["meta"]["endpoint"]


async def test_tokens_are_counted_when_the_server_reports_no_usage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reply = TextReply(numbered_tokens(5), usage=None, token_delay=0.01)
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(_config(server.base_url, requests=4, max_tokens=50))
    level = report["levels"][0]
    assert level["token_source"] == {"counted": 4}
    assert all(r["output_tokens"] == 5 for r in level["requests"])
    assert "counted as streamed deltas for 4" in " ".join(report["notes"])
    assert "output tokens: server usage 0, counted 4" in render_table(report)
    # With usage, the server's count wins over the deltas (here 3 deltas of "2 tokens").
    reply = TextReply(["a b", "c d", "e f"], token_delay=0.01)
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(_config(server.base_url, requests=2))
    assert report["levels"][0]["token_source"] == {"usage": 2}


async def test_the_api_key_is_never_written(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "sk-bench-secret-0123456789"

    def reject(request: RecordedRequest) -> ErrorReply:
        # A careless server that echoes the credentials in its error message.
        return ErrorReply(401, f"invalid credentials {request.headers.get('authorization')}")

    caplog.set_level(logging.DEBUG)
    async with open_scripted_server(default_reply=reject) as server:
        with_key = _config(server.base_url, api_key=key, api_key_env="BENCH_KEY", requests=4)
        report = await run_bench(with_key)
        assert server.requests[0].headers["authorization"] == f"Bearer {key}"
        # A password in the URL: httpx sends it as Basic credentials and logs the URL.
        with_password = _config(server.base_url.replace("//", "//user:pw-9876@"), requests=4)
        report_pw = await run_bench(with_password)
        assert server.requests[-1].headers["authorization"].startswith("Basic ")
    for result in (report, report_pw):
        assert result["levels"][0]["errors"]["by_class"] == {"http_401": 4}
    files = write_report(report, tmp_path / "key")
    files_pw = write_report(report_pw, tmp_path / "pw")
    written = [render_table(report), render_table(report_pw), repr(with_key)]
    for path in (files.json, files.html, files_pw.json, files_pw.html):
        written.append(path.read_text())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request: POST http://user:***@127.0.0.1" in logged
    written.append(logged)
    for text in written:
        assert key not in text
        assert "pw-9876" not in text
        assert "dXNlcjpwdy05ODc2" not in text  # base64 of user:pw-9876
    assert "invalid credentials Bearer ***" in files.json.read_text()
    assert "invalid credentials Basic ***" in files_pw.json.read_text()
    assert json.loads(files.json.read_text())["config"]["api_key_env"] == "BENCH_KEY"


def test_the_command_reads_the_key_from_the_named_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-cli-secret-abcdef"
    argv = ["bench", "--base-url", "scripted", "--api-key-env", "BENCH_TEST_KEY"]
    argv += ["--requests", "2", "--max-tokens", "2", "--no-overhead", "--out", str(tmp_path)]
    argv += ["--scripted-first-token-ms", "1", "--scripted-token-interval-ms", "1"]
    monkeypatch.delenv("BENCH_TEST_KEY", raising=False)
    assert main(argv) == 2
    assert "BENCH_TEST_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("BENCH_TEST_KEY", key)
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert key not in printed.out + printed.err
    for path in tmp_path.iterdir():
        assert key.encode() not in path.read_bytes()


async def test_without_matplotlib_json_table_and_html_are_still_written(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = await _varied_report()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    files = write_report(report, tmp_path)
    assert files.png is None and not (tmp_path / "bench.png").exists()
    assert files.png_note is not None
    assert "pip install 'rustvani-trio[bench-plot]'" in files.png_note
    page = files.html.read_text()
    assert "rustvani-trio[bench-plot]" in page and "data:image/png" not in page
    assert json.loads(files.json.read_text())["levels"]


# --------------------------------------------------------------------------- statistics


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60))
def test_percentiles_match_the_standard_library(values: list[float]) -> None:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert percentile(values, 90) == pytest.approx(cuts[89], abs=1e-6)
    assert percentile(values, 99) == pytest.approx(cuts[98], abs=1e-6)
    assert percentile(values, 50) == pytest.approx(statistics.median(values), abs=1e-6)
    assert min(values) <= percentile(values, 0) <= percentile(values, 100) == max(values)


def test_summaries_and_windows() -> None:
    assert summarize([]) == {"mean": None, "median": None, "p90": None, "p99": None, "n": 0}
    assert summarize([None, 2.0, 4.0]) == {
        "mean": 3.0,
        "median": 3.0,
        "p90": 3.8,
        "p99": 3.98,
        "n": 2,
    }
    with pytest.raises(ValueError):
        percentile([], 50)
    # Three whole windows; the event at the very end belongs to the last one; the partial
    # window after them is left out.
    events = [(0.1, 1.0), (0.5, 1.0), (1.2, 1.0), (2.9, 2.0), (3.0, 1.0), (3.4, 5.0)]
    assert window_rates(events, 0.0, 3.5, 1.0) == [2.0, 1.0, 3.0]
    assert window_rates([(0.1, 1.0)], 0.0, 0.5, 1.0) == [2.0]  # shorter than one window
    assert window_rates(events, 1.0, 1.0, 1.0) == []
