"""Statistics of the bench: percentiles, summaries and throughput windows (pure functions).

Every figure the bench reports is computed here, from the per-request samples stored in the
JSON report, so the table, the plot and the HTML page show the numbers of the JSON file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["STAT_KEYS", "percentile", "rounded", "summarize", "window_rates"]

STAT_KEYS = ("mean", "median", "p90", "p99", "n")
"""The statistics of every metric, in the order the table shows them."""


def rounded(value: float, digits: int = 4) -> float:
    """``value`` rounded for the JSON file (4 decimals of a millisecond is 0.1 µs)."""
    return round(float(value), digits)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), interpolating linearly between the closest ranks
    (numpy's default method). ``values`` must not be empty."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0..100, got {q!r}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def summarize(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, median, p90, p99 (rounded) and the sample count of the values that are not
    ``None``; the statistics are ``None`` when there is no sample."""
    samples = [float(v) for v in values if v is not None]
    if not samples:
        return {"mean": None, "median": None, "p90": None, "p99": None, "n": 0}
    return {
        "mean": rounded(math.fsum(samples) / len(samples)),
        "median": rounded(percentile(samples, 50)),
        "p90": rounded(percentile(samples, 90)),
        "p99": rounded(percentile(samples, 99)),
        "n": len(samples),
    }


def window_rates(
    events: Iterable[tuple[float, float]], start: float, end: float, width: float
) -> list[float]:
    """Rates (weight per second) in consecutive windows of ``width`` seconds from ``start``.

    ``events`` are ``(time, weight)`` pairs. Only whole windows inside ``[start, end]`` count,
    except when the span is shorter than one window: then the span is the one window.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width!r}")
    span = end - start
    if span <= 0:
        return []
    # Event times come from rounded JSON values: one that ends the span may lie a hair past it.
    slack = 1e-6 * max(1.0, abs(end))
    count = int(span // width)
    if count == 0:
        return [math.fsum(w for t, w in events if start <= t <= end + slack) / span]
    totals = [0.0] * count
    last = start + count * width
    for t, weight in events:
        slot = math.floor((t - start) / width)
        if slot == count and t <= last + slack:
            slot = count - 1
        if 0 <= slot < count:
            totals[slot] += weight
    return [total / width for total in totals]
