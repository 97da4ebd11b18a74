"""Helpers shared by the orchestrator and the contestant workers: statistics, memory probes,
the worker wire protocol, and the SSE chunk decoding used by the raw-client floors.

Nothing here imports trio, asyncio frameworks, pipecat or openai: every worker imports only
what its own contestant needs.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import re
import resource
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "AUDIO_CHUNK",
    "MARKER",
    "Samples",
    "audio_chunks",
    "concurrency_samples",
    "cpu_now",
    "decode_chunk",
    "emit",
    "interarrival_gaps",
    "now",
    "percentile",
    "rss_probe_start",
    "rss_probe_stop",
    "split_sentences",
    "strip_markdown",
    "summarize",
    "voice_tokens",
]

MARKER = "@@BENCH "
"""Prefix of the worker's protocol lines on stdout (anything else a library prints is ignored)."""

Samples = dict[str, list[float]]
"""Metric name -> raw samples, as a worker reports them for one command."""

now = time.perf_counter
"""The one clock of every measurement: CLOCK_MONOTONIC on Linux, comparable across processes
(trio.current_time() is not: trio adds a random offset)."""

cpu_now = time.process_time
"""The process's CPU time (user + system, all threads): what a turn costs the client, far less
disturbed than wall time by other work on the machine."""


def emit(payload: dict[str, Any]) -> None:
    """Write one protocol line to the real stdout (fd 1), bypassing sys.stdout buffering."""
    os.write(1, (MARKER + json.dumps(payload) + "\n").encode())


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, p95, min, max and count of ``values`` (NaN for an empty list)."""
    finite = [v for v in values if not math.isnan(v)]
    return {
        "median": percentile(finite, 50),
        "p95": percentile(finite, 95),
        "min": min(finite) if finite else math.nan,
        "max": max(finite) if finite else math.nan,
        "n": len(finite),
    }


def interarrival_gaps(stamps: Iterable[float]) -> list[float]:
    """Gaps between consecutive timestamps."""
    out: list[float] = []
    prev: float | None = None
    for t in stamps:
        if prev is not None:
            out.append(t - prev)
        prev = t
    return out


def concurrency_samples(
    stamps: list[list[float]],
    n: int,
    cpu0: resource.struct_rusage,
    t0: float,
    baseline_kib: int | None,
) -> Samples:
    """The concurrency scenario's metrics, from each conversation's text timestamps at its
    sink: process CPU per conversation, inter-token delays, peak RSS growth, wall time."""
    wall = now() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    gaps = [g * 1e3 for s in stamps for g in interarrival_gaps(s)]
    return {
        "cpu_ms_per_conv": [cpu * 1e3 / n],
        "itd_p95_ms": [percentile(gaps, 95)],
        "itd_median_ms": [percentile(gaps, 50)],
        "peak_rss_mb": [rss_probe_stop(baseline_kib)],
        "wall_s": [wall],
        "complete_conversations": [float(sum(1 for s in stamps if s))],
    }


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_probe_start() -> int | None:
    """Collect garbage, give freed heap back to the OS, reset the peak-RSS mark (Linux
    ``clear_refs`` 5) and return the current RSS in KiB (None where unsupported)."""
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return None
    return _status_kib("VmRSS")


def rss_probe_stop(baseline_kib: int | None) -> float:
    """Peak RSS growth (MiB) since :func:`rss_probe_start`, or NaN where unsupported."""
    peak = _status_kib("VmHWM")
    if baseline_kib is None or peak is None:
        return math.nan
    return max(0, peak - baseline_kib) / 1024.0


# --------------------------------------------------------------------------- SSE decoding


def decode_chunk(data: str) -> tuple[str | None, list[dict[str, Any]] | None, bool]:
    """Decode one ``data:`` payload of an OpenAI chat-completions stream.

    Returns ``(content, tool_call_deltas, done)``: the content delta (or None), the tool-call
    deltas (or None) and whether the stream is over (``[DONE]``).
    """
    if data == "[DONE]":
        return None, None, True
    chunk = json.loads(data)
    choices = chunk.get("choices")
    if not choices:
        return None, None, False
    delta = choices[0].get("delta") or {}
    return delta.get("content") or None, delta.get("tool_calls"), False


# --------------------------------------------------------------------------- voice token path
# The work of the voice scenario's processors, the same in every contestant (each wraps it in
# its own framework's processors): the framework is what differs.

AUDIO_CHUNK = bytes(640)
"""20 ms of 16 kHz 16-bit mono silence: one audio frame of the fake TTS."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def voice_tokens(n: int) -> list[str]:
    """An answer of ``n`` tokens shaped like speech: a sentence ends every 12 tokens (and at
    the last), and markdown emphasis (which the text filter removes) comes every 17."""
    out: list[str] = []
    for i in range(n):
        word = f"w{i}"
        if i % 17 == 5:
            word = f"*{word}*"
        if i % 12 == 11 or i == n - 1:
            word += "."
        out.append(word + " ")
    return out


def strip_markdown(text: str) -> str:
    """The text filter: emphasis marks are not spoken."""
    return text.replace("*", "")


def split_sentences(buffer: str) -> tuple[list[str], str]:
    """The sentence aggregator: the complete sentences of ``buffer`` and the rest."""
    parts = _SENTENCE_END.split(buffer)
    rest = parts.pop()
    return [p for p in parts if p], rest


def audio_chunks(sentence: str) -> int:
    """The fake TTS: how many 20 ms audio frames a sentence becomes."""
    return max(1, len(sentence) // 8)
