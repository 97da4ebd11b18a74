"""``python -m rustvani_trio bench`` against bad input and hostile endpoints (issue 15 review).

Bad options are refused before anything runs; endpoints that never answer, stream forever,
send endless lines or malformed chunks, or lie in their usage still give a run that stops by
itself, a report that is written, and figures that are not poisoned. Runs under
``autojump_clock`` like ``test_bench_command.py`` (see its docstring).
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from rustvani_trio import ErrorFrame, LLMErrorKind, LLMRequestError, bench
from rustvani_trio._cli import main
from rustvani_trio.bench import BenchConfig, run_bench
from rustvani_trio.bench import _records as bench_records
from rustvani_trio.bench._html import render_html
from rustvani_trio.testing import (
    ErrorReply,
    RawReply,
    RecordedRequest,
    TextReply,
    numbered_tokens,
    open_scripted_server,
)

_QUICK = [
    "--requests",
    "2",
    "--max-tokens",
    "2",
    "--no-overhead",
    "--scripted-first-token-ms",
    "1",
    "--scripted-token-interval-ms",
    "1",
]


@pytest.fixture
def no_plot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command writes no PNG (as without matplotlib): drawing it takes half a second."""
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)


def _page(report: dict[str, Any]) -> str:
    """The HTML page of ``report`` without its plot (drawing it takes half a second)."""
    return render_html(report, None, "not drawn in this test")


def _config(**overrides: Any) -> BenchConfig:
    values: dict[str, Any] = {
        "base_url": "scripted",
        "model": "m",
        "prompt_tokens": 16,
        "max_tokens": 6,
        "overhead": False,
    }
    values.update(overrides)
    return BenchConfig(**values)


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "1,,8"], "an empty item in '1,,8'"),
        (["--concurrency", "4,"], "an empty item"),
        (["--rate", "inf"], "expected rates > 0 (and finite)"),
        (["--rate", "2,,3"], "an empty item"),
    ],
)
def test_bad_lists_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--base-url", "scripted", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # 0 used to become the default of 40 without a word.
        (
            ["--base-url", "scripted", "--requests", "0"],
            "requests must be >= 1 (and finite), got 0",
        ),
        # Infinite values used to run forever, or crash when the JSON file was written.
        (["--base-url", "scripted", "--duration", "inf"], "duration must be >= 0.001 (and finite)"),
        (
            ["--base-url", "scripted", "--timeout", "inf"],
            "request_timeout must be >= 0.001 (and finite)",
        ),
        (["--base-url", "scripted", "--scripted-first-token-ms", "inf"], "(and finite)"),
        (["--base-url", "scripted", "--interrupt-after-ms", "nan"], "(and finite)"),
        # A URL without a host used to run and fail every request; a broken one, a traceback.
        (["--base-url", "http://", "--model", "m"], "base_url has no host"),
        (["--base-url", "http://[::1", "--model", "m"], "base_url is not a valid URL"),
        (["--base-url", "http://u:pw-77@[::1", "--model", "m"], "base_url is not a valid URL"),
        # Silently ignored against a real endpoint.
        (
            ["--base-url", "http://h/v1", "--model", "m", "--scripted-error-rate", "0.2"],
            "--scripted-error-rate apply only with --base-url scripted",
        ),
        # The query went into the path: ...?api-version=1/chat/completions.
        (["--base-url", "http://h/v1?key=pw-77", "--model", "m"], "must have no query"),
    ],
)
def test_bad_values_are_refused_before_the_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "pw-77" not in err


def test_non_finite_settings_are_refused_by_the_config() -> None:
    for field in ("duration", "request_timeout", "scripted_token_interval_ms", "window"):
        with pytest.raises(ValueError, match="and finite"):
            _config(**{field: math.inf})
    with pytest.raises(ValueError, match="and finite"):
        _config(rate=(2.0, math.inf))


@pytest.mark.usefixtures("no_plot")
def test_an_out_that_cannot_hold_the_report_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    argv = ["bench", "--base-url", "scripted", *_QUICK]
    # These used to run the whole benchmark, then lose it in a traceback.
    assert main([*argv, "--out", str(a_file)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert main([*argv, "--out", str(a_file / "sub")]) == 2
    assert "cannot write into --out" in capsys.readouterr().err
    assert a_file.read_text() == ""


@pytest.mark.usefixtures("no_plot")
def test_a_report_that_cannot_be_written_still_shows_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(_report: object, _out: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench, "write_report", full_disk)
    status = main(["bench", "--base-url", "scripted", *_QUICK, "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert status == 1
    assert "TTFT (ms)" in printed.out
    assert "could not write the report" in printed.err and "No space left" in printed.err


# --------------------------------------------------------------------------- hostile streams


def _sse(*payloads: object) -> bytes:
    events = [b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads]
    return b"".join(events) + b"data: [DONE]\n\n"


_DONE = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": [{"index": 0, "delta": "text"}]},
        {"choices": 5},
        {"choices": [{"index": 0, "delta": {"tool_calls": [5]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": None}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": 5}}]}}]},
    ],
)
async def test_a_malformed_chunk_fails_its_request_not_the_run(
    autojump_clock: trio.testing.MockClock, chunk: dict[str, Any]
) -> None:
    # These used to raise out of the raw stream and end the whole run with a traceback.
    async with open_scripted_server(default_reply=RawReply(_sse(chunk, _DONE))) as server:
        report = await run_bench(_config(base_url=server.base_url, requests=2, warmup=0))
    raw = [r for r in report["levels"][0]["requests"] if r["path"] == "raw"]
    assert [r["error"]["class"] for r in raw] == ["stream"]
    assert "not what a chat-completions chunk holds" in raw[0]["error"]["message"]


@pytest.mark.parametrize(
    ("completion", "warned"),
    [
        (True, ()),  # not a count: ignored
        (-5, ()),
        ("7", ("pipeline",)),  # the handler makes it 0: "none, for 2 streamed deltas"
        (10**30, ("pipeline", "raw")),  # "more than the 6 the request allowed"
    ],
)
async def test_implausible_usage_is_not_the_token_count(
    autojump_clock: trio.testing.MockClock, completion: object, warned: tuple[str, ...]
) -> None:
    body = _sse(
        {"choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": True, "completion_tokens": completion}},
    )
    async with open_scripted_server(default_reply=RawReply(body)) as server:
        report = await run_bench(_config(base_url=server.base_url, requests=2, warmup=0))
    (level,) = report["levels"]
    assert level["errors"]["total"] == 0
    for record in level["requests"]:
        if completion is True and record["path"] == "pipeline":
            continue  # the OpenAI handler reads true as 1 before the bench sees it
        # These used to be true, -5, 0 or 10**30 tokens (a TPOT of 0, a throughput of 1e30).
        assert record["output_tokens"] == 2, record["path"]
        assert record["token_source"] == "counted"
        notes = [w for w in record["warnings"] if "deltas counted instead" in w]
        assert len(notes) == (record["path"] in warned), record["warnings"]
    raw = next(r for r in level["requests"] if r["path"] == "raw")
    assert raw["prompt_tokens"] is None  # true is no count
    json.dumps(report, allow_nan=False)


async def test_a_slow_steady_stream_is_not_cut_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 30 tokens a second apart take 30 s with a 2 s timeout between chunks: a slow endpoint
    # (a CPU model), not a stuck one. The pipeline path used to fail it as a timeout after
    # 3 * timeout + 10 s, while the raw path measured it.
    config = _config(
        max_tokens=30,
        requests=2,
        warmup=0,
        request_timeout=2.0,
        scripted_first_token_ms=500,
        scripted_token_interval_ms=1000,
    )
    report = await run_bench(config)
    (level,) = report["levels"]
    assert level["errors"]["total"] == 0
    for path in ("pipeline", "raw"):
        assert level["summary"][path]["e2e_ms"]["median"] == pytest.approx(29_500, rel=0.01)


async def test_a_stream_that_ignores_the_token_limit_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # max_tokens 6, and 3000 tokens come (a server that ignores the limit; one that never
    # ends is cut at the same point).
    reply = TextReply(numbered_tokens(3000), token_delay=0.01)
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(_config(base_url=server.base_url, requests=2, warmup=0))
        requests = list(server.requests)
    (level,) = report["levels"]
    assert level["errors"]["by_class"] == {"stream": 2}
    for record in level["requests"]:
        assert (
            "went past 88 lines for a request allowing 6 output tokens"
            in (record["error"]["message"])
        )
        assert len(record["token_ms"]) < 100
    assert all(r.disconnected.is_set() and not r.completed.is_set() for r in requests)


async def test_keep_alive_comments_forever_are_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One token, then comments that keep the connection alive (and the pipeline's handler's
    # chunk timeout with them) without ever finishing.
    first = _sse({"choices": [{"index": 0, "delta": {"content": "a"}}]})[
        : -len(b"data: [DONE]\n\n")
    ]
    ping = b": keep-alive\n\n"
    reply = RawReply(
        first + ping * 500, chunk_sizes=(len(first),) + (len(ping),) * 499, delay_between_chunks=0.5
    )
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(
            _config(base_url=server.base_url, requests=2, warmup=0, request_timeout=2.0)
        )
    (level,) = report["levels"]
    errors = {r["path"]: r["error"] for r in level["requests"]}
    # Both paths count only events that carry data (comments are none) towards progress, so
    # both stop at the stall limit (the handler's chunk_timeout; issue 9, item 3).
    assert errors["raw"]["class"] == "timeout"
    assert errors["pipeline"]["class"] == "timeout"


async def test_an_endless_line_does_not_fill_the_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    head = b'data: {"choices": [{"index": 0, "delta": {"content": "'
    body = head + b"x" * 300_000  # no end of line, ever (here: until the body ends)
    reply = RawReply(body, chunk_sizes=(len(head),) + (16_384,) * 18, delay_between_chunks=0.01)
    async with open_scripted_server(default_reply=reply) as server:
        config = _config(base_url=server.base_url, requests=2, warmup=0, max_line_bytes=65_536)
        report = await run_bench(config)
    (level,) = report["levels"]
    for record in level["requests"]:
        assert record["error"]["class"] == "stream"
        assert "a line of the response went past 65536 bytes" in record["error"]["message"]


# --------------------------------------------------------------------------- what is written


async def test_a_model_name_with_dollars_does_not_break_the_plot(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # matplotlib read "$...$" in the title as math and raised: report.html was never written.
    report = await run_bench(_config(model=r"odd$\frac$model", requests=2, max_tokens=2))
    files = bench.write_report(report, tmp_path)
    assert files.png is not None
    assert r"odd$\frac$model" in files.html.read_text()


async def test_a_decoded_url_password_echoed_back_is_removed(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    def echo(request: RecordedRequest) -> ErrorReply:
        scheme, _, encoded = request.headers["authorization"].partition(" ")
        decoded = base64.b64decode(encoded).decode()
        return ErrorReply(401, f"bad credentials {decoded} ({scheme})")

    async with open_scripted_server(default_reply=echo) as server:
        # The password is "p@ss-55" written with %40 for the "@" (as a URL needs it).
        url = server.base_url.replace("//", "//alice:p%40ss-55@")
        report = await run_bench(_config(base_url=url, requests=2, warmup=0))
    written = json.dumps(report) + _page(report) + bench.render_table(report)
    assert "bad credentials alice:*** (Basic)" in written
    assert "p@ss-55" not in written and "p%40ss-55" not in written


async def test_a_server_failing_everything_still_gets_a_report_that_says_so(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    reply = ErrorReply(500, "boom <script>alert('x')</script>", type="server_error")
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(_config(base_url=server.base_url, requests=4, warmup=0))
    (level,) = report["levels"]
    assert level["errors"]["by_class"] == {"http_500": 4}
    assert all(s["n"] == 0 for p in ("pipeline", "raw") for s in level["summary"][p].values())
    table = bench.render_table(report)
    # These rows used to be five lines of dashes per path, and an empty framework share.
    for path in ("pipeline", "raw"):
        assert f"c=1    {path:<8}  no successful requests: no statistics" in table
    assert "TTFT (ms)" not in table
    assert "framework share (median pipeline - raw): none (it needs successful" in table
    assert "linearly between the closest ranks" in table
    page = _page(report)
    assert "no successful requests: no statistics" in page
    assert "<script>" not in page and "boom &lt;script&gt;" in page


# --------------------------------------------------------------------------- stopping early


async def test_a_stopped_run_reports_what_it_measured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stop = trio.Event()
    config = _config(concurrency=(2, 4), requests=400, scripted_first_token_ms=200.0)
    report: dict[str, Any] = {}

    async def bench_it() -> None:
        report.update(await run_bench(config, stop=stop))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bench_it)
        await trio.sleep(10.0)  # each request takes 200 + 5 * 20 = 300 ms
        stop.set()
    assert trio.current_time() - start < 10.5  # it stopped at once
    assert report["partial"] == {
        "reason": "the run was stopped before it was complete",
        "during": "c=2",
        "levels_done": 0,
        "levels_planned": 2,
    }
    (level,) = report["levels"]  # c=4 never began
    aborted = [r for r in level["requests"] if r["aborted"]]
    assert len(aborted) == 2 == level["aborted_requests"]  # one in flight per user
    assert level["measured_requests"] == len(level["requests"]) - 2 - 2  # minus the warm-up
    assert level["errors"]["of"] == level["measured_requests"] > 40
    assert level["errors"]["total"] == 0
    assert level["summary"]["raw"]["ttft_ms"]["median"] == pytest.approx(200.0, rel=0.03)
    assert level["duration_s"] == pytest.approx(10.0 - 0.3, abs=0.05)  # minus the warm-up
    table = bench.render_table(report)
    assert table.startswith("PARTIAL rustvani-trio bench")
    assert "aborted: 2 requests in flight when the run was stopped" in table


def _ctrl_c_after(monkeypatch: pytest.MonkeyPatch, requests_done: int, presses: int) -> None:
    """Press Ctrl-C ``presses`` times when ``requests_done`` requests have finished."""
    original = bench.Progress.request_done
    done = 0

    def request_done(self: bench.Progress, ok: bool, ttft_ms: float | None) -> None:
        nonlocal done
        original(self, ok, ttft_ms)
        done += 1
        if done == requests_done:
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(bench.Progress, "request_done", request_done)


@pytest.mark.usefixtures("no_plot")
def test_ctrl_c_writes_the_partial_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to exit with "interrupted; nothing written", losing everything measured.
    _ctrl_c_after(monkeypatch, requests_done=8, presses=1)
    argv = ["bench", "--base-url", "scripted", *_QUICK, "--requests", "1000", "--warmup", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 130
    printed = capsys.readouterr()
    assert "stopping; writing what was measured" in printed.err
    assert printed.out.startswith("PARTIAL ")
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["partial"]["during"] == "c=1"
    assert 6 <= report["levels"][0]["measured_requests"] < 1000
    assert "PARTIAL" in (tmp_path / "report.html").read_text()


def test_a_second_ctrl_c_aborts() -> None:
    from rustvani_trio._cli.bench import _until_ctrl_c

    async def stuck_bench(_config: object, *, stop: trio.Event, **_: object) -> dict[str, Any]:
        signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: stop, please
        await stop.wait()
        signal.raise_signal(signal.SIGINT)  # it does not stop in time: the second one
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    assert trio.run(_until_ctrl_c, stuck_bench, None, None, []) is None


_CHROMIUM = Path("/usr/bin/chromium")
_INJECT = "<script>document.body.setAttribute('data-pwned', '1')</script>"


async def _hostile_page(tmp_path: Path, *, plot: bool) -> Path:
    reply = ErrorReply(500, f"{_INJECT}<img src=x onerror=\"document.title='pwned'\">")
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(
            _config(base_url=server.base_url, model=f"m{_INJECT}", requests=2, warmup=0)
        )
    if plot:
        return bench.write_report(report, tmp_path).html
    page = tmp_path / "report.html"
    page.write_text(_page(report))
    return page


async def test_the_page_is_self_contained_and_escapes_what_servers_say(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    page = (await _hostile_page(tmp_path, plot=True)).read_text()
    tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Tags(html.parser.HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append((tag, attrs))

    Tags().feed(page)
    names = {tag for tag, _ in tags}
    assert "script" not in names and "link" not in names and "iframe" not in names
    assert all(not name.startswith("on") for _, attrs in tags for name, _ in attrs)
    # Nothing is fetched: the only resource is the embedded plot.
    resources = [v or "" for _, attrs in tags for n, v in attrs if n in ("src", "href")]
    assert len(resources) == 1 and resources[0].startswith("data:image/png;base64,")
    assert "@import" not in page and "url(" not in page
    assert "&lt;script&gt;document.body" in page  # what the server said, as text


@pytest.mark.skipif(not _CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
async def test_the_page_opens_in_chromium_and_runs_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    html = await _hostile_page(tmp_path, plot=False)
    command = [str(_CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    command.append(html.as_uri())
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, timeout=60, check=True)
    )
    dom = done.stdout.decode()
    assert ("<h1>" in dom and "TTFT" not in dom) or "no successful requests" in dom
    assert "<body data-pwned" not in dom and "<title>pwned" not in dom
    assert "&lt;script&gt;document.body" in dom  # shown as text


@pytest.mark.usefixtures("no_plot")
def test_a_key_with_a_trailing_newline_is_used_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to go into the header as it was: httpx refused it with the key in its message,
    # and that message went into bench.json and report.html.
    monkeypatch.setenv("BENCH_NL_KEY", "sk-newline-4711\n")
    argv = ["bench", "--base-url", "scripted", *_QUICK, "--api-key-env", "BENCH_NL_KEY"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr()
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["levels"][0]["errors"]["total"] == 0
    for text in (printed.out, printed.err, *(p.read_text("latin-1") for p in tmp_path.iterdir())):
        assert "newline-4711" not in text


def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="whitespace or control characters") as info:
        _config(api_key="sk-inner space-99")
    assert "space-99" not in str(info.value)
    redact = bench_records.Redactor.of(["sk-esc\n-42"])
    assert redact("header b'Bearer sk-esc\\n-42' and \"sk-esc\\n-42\"") == (
        "header b'Bearer ***' and \"***\""
    )


async def test_a_run_stopped_in_its_warm_up_says_so(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    stop = trio.Event()
    report: dict[str, Any] = {}

    async def bench_it() -> None:
        report.update(await run_bench(_config(requests=4, warmup=4), stop=stop))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bench_it)
        await trio.sleep(0.5)
        stop.set()
    assert report["partial"]["during"] == "c=1 warm-up"  # it said nothing (None)
    assert report["levels"] == []
    assert "during c=1 warm-up" in _page(report)


async def test_a_web_page_with_200_is_named_as_such(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A proxy's or captive portal's page: the pipeline path said "the LLM stream ended
    # before it was complete", the raw path quoted httpx-sse's content-type check.
    page = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
    reply = RawReply(page, content_type="text/html; charset=utf-8")
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(_config(base_url=server.base_url, requests=2, warmup=0))
    errors = {r["path"]: r["error"] for r in report["levels"][0]["requests"]}
    for error in errors.values():
        assert error["class"] == "stream"
        assert error["message"].startswith(
            "the server answered HTTP 200 with text/html, not an event stream"
        )
    assert "Welcome to nginx!" in errors["raw"]["message"]


async def test_a_warm_up_that_fails_entirely_is_pointed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A server that never answers takes --timeout per request: without a word, a wrong URL
    # or model showed only an error count while the run went on for (requests x timeout).
    written = io.StringIO()
    stall = TextReply(numbered_tokens(6), stall_after=0)
    async with open_scripted_server(default_reply=stall) as server:
        config = _config(base_url=server.base_url, requests=2, warmup=2, request_timeout=5)
        report = await run_bench(config, progress=bench.Progress(written, live=False))
    assert report["levels"][0]["errors"]["by_class"] == {"timeout": 2}
    assert "every warm-up request of c=1 failed (timeout: " in written.getvalue()


@pytest.mark.parametrize(
    ("kind", "responded", "expected"),
    [
        ("protocol", True, "stream"),
        ("stream", True, "stream"),
        ("connection", False, "connection"),
        ("connection", True, "stream"),
        ("timeout", True, "timeout"),
        ("config", False, "other"),
    ],
)
def test_a_failure_is_classified_by_its_kind_not_by_words_in_the_servers_message(
    kind: LLMErrorKind, responded: bool, expected: str
) -> None:
    """A server's message that says "timeout" (an upstream's error event, say) is not a
    timeout of ours, and a message without the word can be one."""
    from rustvani_trio.bench._pipeline import classify_error_frame
    from rustvani_trio.bench._records import Redactor
    from rustvani_trio.bench._wire import WireExchange

    words = "timeout" if expected != "timeout" else "no first token"
    exc = LLMRequestError(f"the server said: upstream {words}", kind=kind)
    frame = ErrorFrame(error=str(exc), exception=exc)
    exchanges = [WireExchange(sent=0.0, status=200, content_type="text/event-stream")]
    info = classify_error_frame(frame, exchanges if responded else [], Redactor.of([]))
    assert info is not None
    assert info.kind == expected
