"""``python -m rustvani_trio bench`` against bad input and hostile endpoints (issue 15 review).

Bad options are refused before anything runs; endpoints that never answer, stream forever,
send endless lines or malformed chunks, or lie in their usage still give a run that stops by
itself, a report that is written, and figures that are not poisoned. Runs under
``autojump_clock`` like ``test_bench_command.py`` (see its docstring).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from rustvani_trio._cli import main
from rustvani_trio.bench import BenchConfig

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


def test_a_report_that_cannot_be_written_still_shows_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rustvani_trio.bench as bench

    def full_disk(_report: object, _out: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench, "write_report", full_disk)
    status = main(["bench", "--base-url", "scripted", *_QUICK, "--out", str(tmp_path)])
    printed = capsys.readouterr()
    assert status == 1
    assert "TTFT (ms)" in printed.out
    assert "could not write the report" in printed.err and "No space left" in printed.err
