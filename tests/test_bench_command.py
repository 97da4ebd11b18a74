"""``python -m rustvani_trio bench`` (issue 15): calibration, load shapes, interruptions, tools.

The whole path is trio: the scripted server (in-process, on loopback), the shared httpx client,
the pipelines and the raw streams. So these tests run under pytest-trio's ``autojump_clock``:
scripted delays pass in virtual time, and on Linux loopback bytes are readable as soon as they
are sent, so no virtual time passes between the server's write and the client's read. The
reported figures must then equal the scripted delays; what could make them differ is the bench
measuring from or to the wrong point (the role chunk, the pipeline's start, a tool round), or
mixing up the paths, phases or requests. One test runs in real time: the load generator's own
overhead, which only real time can show.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from rustvani_trio._cli import main
from rustvani_trio.bench import BenchConfig, render_table, run_bench
from rustvani_trio.testing import RecordedRequest, TextReply, numbered_tokens, open_scripted_server

PATHS = ("pipeline", "raw")


def _config(**overrides: Any) -> BenchConfig:
    values: dict[str, Any] = {
        "base_url": "scripted",
        "model": "m",
        "prompt_tokens": 16,
        "max_tokens": 12,
        "overhead": False,
        "scripted_first_token_ms": 200.0,
        "scripted_token_interval_ms": 20.0,
    }
    values.update(overrides)
    return BenchConfig(**values)


def _measured(level: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in level["requests"] if r["phase"] == "measured"]


@pytest.mark.parametrize("users", [1, 32])
async def test_calibration_ttft_and_itl_match_the_scripted_server(
    autojump_clock: trio.testing.MockClock, users: int
) -> None:
    requests = max(8, 2 * users)
    report = await run_bench(_config(concurrency=(users,), requests=requests))
    (level,) = report["levels"]
    assert level["label"] == f"c={users}"
    assert level["errors"]["total"] == 0
    assert level["measured_requests"] == requests
    for path in PATHS:
        stats = level["summary"][path]
        for stat in ("mean", "median", "p90", "p99"):
            assert stats["ttft_ms"][stat] == pytest.approx(200.0, rel=0.03), (path, stat)
            assert stats["itl_ms"][stat] == pytest.approx(20.0, rel=0.03), (path, stat)
            assert stats["tpot_ms"][stat] == pytest.approx(20.0, rel=0.03), (path, stat)
            assert stats["e2e_ms"][stat] == pytest.approx(200.0 + 11 * 20.0, rel=0.03)
        assert stats["ttft_ms"]["n"] == requests // 2
        assert stats["itl_ms"]["n"] == (requests // 2) * 11  # 12 tokens, 11 gaps each
        assert stats["output_tok_s"]["median"] == pytest.approx(12 / 0.42, rel=0.03)
    # Every user is busy all the time: the level lasts requests / users turns of 420 ms.
    assert level["duration_s"] == pytest.approx(requests / users * 0.42, rel=0.03)
    assert level["throughput"]["requests_per_s"]["overall"] == pytest.approx(users / 0.42, rel=0.03)
    assert level["token_source"] == {"usage": requests}


async def test_paths_are_interleaved_and_warmup_is_excluded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    report = await run_bench(_config(concurrency=(2,), requests=6, warmup=3))
    (level,) = report["levels"]
    phases = [(r["index"], r["phase"], r["path"]) for r in level["requests"]]
    assert [p for _i, p, _ in phases] == ["warmup"] * 3 + ["measured"] * 6
    measured = [path for _i, phase, path in phases if phase == "measured"]
    assert measured == ["pipeline", "raw"] * 3
    assert all(r["start_ms"] < 0 for r in level["requests"] if r["phase"] == "warmup")
    assert all(r["start_ms"] >= 0 for r in _measured(level))
    assert level["summary"]["pipeline"]["ttft_ms"]["n"] == 3


async def test_poisson_arrivals_follow_the_seed(autojump_clock: trio.testing.MockClock) -> None:
    async def starts(seed: int) -> list[float]:
        config = _config(
            rate=(40.0,),
            requests=80,
            seed=seed,
            max_tokens=2,
            scripted_first_token_ms=5.0,
            scripted_token_interval_ms=1.0,
        )
        report = await run_bench(config)
        level = report["levels"][0]
        assert level["mode"] == "rate"
        assert all(r["schedule_lag_ms"] == pytest.approx(0.0, abs=0.01) for r in _measured(level))
        return [r["start_ms"] for r in _measured(level)]

    first, again, other = await starts(7), await starts(7), await starts(8)
    assert first == again
    assert first != other
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert sum(gaps) / len(gaps) == pytest.approx(1000.0 / 40.0, rel=0.25)
    assert min(gaps) >= 0


async def test_duration_mode_stops_by_itself(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    report = await run_bench(_config(concurrency=(2,), requests=None, duration=2.0, warmup=0))
    level = report["levels"][0]
    measured = _measured(level)
    # Two users, 420 ms per request, requests issued for 2 s: 5 each (the last ones finish).
    assert len(measured) == 10
    assert all(r["start_ms"] < 2000.0 for r in measured)
    assert trio.current_time() - start == pytest.approx(2.1, abs=0.05)


async def test_tool_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    report = await run_bench(_config(concurrency=(1, 4), requests=8, tools=True))
    assert "tool_rtt_ms" in report["metrics"]
    for level in report["levels"]:
        assert level["errors"]["total"] == 0
        for path in PATHS:
            stats = level["summary"][path]
            # From the complete tool call to the answer's first token: the follow-up request's
            # first-token delay (the tool itself is instant).
            assert stats["tool_rtt_ms"]["median"] == pytest.approx(200.0, rel=0.03)
            assert stats["tool_rtt_ms"]["n"] == 4
            assert stats["ttft_ms"]["median"] > stats["tool_rtt_ms"]["median"]
            assert stats["itl_ms"]["median"] == pytest.approx(20.0, rel=0.03)


async def test_a_model_that_skips_the_tool_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reply = TextReply(numbered_tokens(4))  # never calls the tool
    async with open_scripted_server(default_reply=reply) as server:
        report = await run_bench(_config(base_url=server.base_url, requests=4, tools=True))
    errors = report["levels"][0]["errors"]
    assert errors["by_class"] == {"no_tool_call": 4}
    assert errors["by_path"] == {"pipeline": 2, "raw": 2}


async def test_interruption_closes_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    reply = TextReply(numbered_tokens(50), first_token_delay=0.2, token_delay=0.02)
    async with open_scripted_server(default_reply=reply) as server:
        config = _config(
            base_url=server.base_url, concurrency=(1, 4), requests=8, interrupt_after_ms=310.0
        )
        report = await run_bench(config)
        requests = list(server.requests)
    assert "interrupt_close_ms" in report["metrics"]
    for level in report["levels"]:
        assert level["errors"]["total"] == 0
        assert level["interrupt_outcomes"] == {"closed": 8}
        for path in PATHS:
            stats = level["summary"][path]
            assert stats["interrupt_close_ms"]["n"] == 4
            assert 0.0 <= stats["interrupt_close_ms"]["p99"] < 5.0
            assert stats["ttft_ms"]["median"] == pytest.approx(200.0, rel=0.03)
            assert stats["e2e_ms"]["n"] == 0  # an interrupted answer has no end
        for record in _measured(level):
            assert record["interrupt_ms"] == pytest.approx(310.0, abs=0.5)
            # Tokens arrive up to the interruption, none after it.
            assert len(record["token_ms"]) == 6
    # The server saw every client go away before its answer was complete.
    assert all(r.disconnected.is_set() and not r.completed.is_set() for r in requests)


async def test_an_interruption_due_after_the_answer_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    report = await run_bench(_config(requests=4, interrupt_after_ms=5000.0))
    level = report["levels"][0]
    assert level["interrupt_outcomes"] == {"finished_before": 4}
    assert level["summary"]["raw"]["interrupt_close_ms"]["n"] == 0
    assert level["summary"]["raw"]["e2e_ms"]["n"] == 2


async def test_requests_carry_the_settings(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[RecordedRequest] = []

    def reply(request: RecordedRequest) -> TextReply:
        seen.append(request)
        return TextReply(numbered_tokens(3))

    async with open_scripted_server(default_reply=reply) as server:
        config = _config(
            base_url=server.base_url,
            requests=4,
            warmup=0,
            max_tokens=3,
            prompt_tokens=300,
            extra_body={"ignore_eos": True},
            api_key="sk-settings-test",
        )
        await run_bench(config)
    bodies = [r.json for r in seen]
    assert all(b["max_completion_tokens"] == 3 and b["ignore_eos"] is True for b in bodies)
    assert all(
        b["stream"] is True and b["stream_options"] == {"include_usage": True} for b in bodies
    )
    # Both paths send the same body: the pipeline's handler builds it for the raw stream too.
    assert {json.dumps(sorted(b)) for b in bodies} == {json.dumps(sorted(bodies[0]))}
    prompts = [b["messages"][-1]["content"] for b in bodies]
    assert len(set(prompts)) == 4  # no shared prefix to cache
    assert all(280 <= len(p.split()) <= 310 for p in prompts)
    assert all(r.headers["authorization"] == "Bearer sk-settings-test" for r in seen)
    assert not any("x-rustvani-bench-request" in r.headers for r in seen)
    assert len({r.connection for r in seen}) == 1  # one keep-alive connection, shared


async def test_overhead_is_measured_against_an_instant_server() -> None:
    # Real time: the overhead is what the load generator itself costs.
    config = _config(
        requests=4,
        max_tokens=8,
        overhead=True,
        overhead_requests=6,
        concurrency=(1, 3),
        scripted_first_token_ms=0.0,
        scripted_token_interval_ms=0.0,
    )
    report = await run_bench(config)
    overhead = report["overhead"]
    assert overhead is not None and "instant" in overhead["description"]
    labels = [lv["label"] for lv in overhead["levels"]]
    assert labels == ["c=1", "c=3"]
    for level in overhead["levels"]:
        assert level["errors"]["total"] == 0
        for path in PATHS:
            ttft = level["summary"][path]["ttft_ms"]
            assert ttft["n"] == 3
            assert 0.0 < ttft["median"] < 1000.0
            assert 0.0 < level["summary"][path]["e2e_ms"]["median"] < 1000.0
    table = render_table(report)
    assert "load generator overhead (instant server)" in table
    assert re.search(r"overhead c=1|^c=1 ", table, re.M)


def test_the_command_line_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(
        [
            "bench",
            "--base-url",
            "scripted",
            "--concurrency",
            "1,2",
            "--requests",
            "4",
            "--prompt-tokens",
            "8",
            "--max-tokens",
            "4",
            "--scripted-first-token-ms",
            "2",
            "--scripted-token-interval-ms",
            "1",
            "--no-overhead",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    printed = capsys.readouterr()
    assert "TTFT (ms)" in printed.out and f"wrote {out / 'bench.json'}" in printed.out
    assert "c=2" in printed.err  # the progress lines
    report = json.loads((out / "bench.json").read_text())
    assert [lv["label"] for lv in report["levels"]] == ["c=1", "c=2"]
    assert report["meta"]["command"][:4] == ["python", "-m", "rustvani_trio", "bench"]
    assert report["overhead"] is None
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "0"], "expected numbers >= 1"),
        (["--rate", "-1"], "expected rates > 0"),
        (["--concurrency", "2", "--rate", "1"], "not allowed with argument"),
        (["--requests", "4", "--duration", "2"], "not allowed with argument"),
        (["--extra-body", "[1]"], "expected a JSON object"),
    ],
)
def test_bad_options_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--base-url", "scripted", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_values_are_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["bench", "--base-url", "scripted", "--max-tokens", "0"]) == 2
    assert "max_tokens must be >= 1" in capsys.readouterr().err
    assert main(["bench", "--base-url", "localhost:8000/v1", "--model", "m"]) == 2
    assert "must be an http:// or https:// URL" in capsys.readouterr().err
