"""Numbers derived from a scenario's cells: ratios of medians, and each scenario's own."""

from __future__ import annotations

import math
from typing import Any

from benchmarks._scenarios import FRAMEWORKS

__all__ = ["RATIO_PAIRS", "derive"]


RATIO_PAIRS = (
    ("rustvani", "pipecat"),
    ("rustvani", "floor"),
    ("pipecat", "openai"),
    ("openai", "httpx"),
)


def _median(result: dict[str, Any], label: str, c: str, metric: str) -> float:
    cell = result["configs"][label]["contestants"].get(c)
    if not cell or cell["status"] != "ok" or metric not in cell.get("metrics", {}):
        return math.nan
    value: float = cell["metrics"][metric]["median"]
    return value


def derive(key: str, result: dict[str, Any]) -> None:
    """Ratios of medians (a/b, per configuration and metric) and scenario-specific numbers."""
    floor = "channels" if key == "hop" else "httpx"
    ratios = []
    for label in result["configs"]:
        for metric in result["metrics"]:
            for a, b in RATIO_PAIRS:
                b = floor if b == "floor" else b
                va, vb = _median(result, label, a, metric), _median(result, label, b, metric)
                if math.isnan(va) or math.isnan(vb) or vb == 0:
                    continue
                ratios.append({"config": label, "metric": metric, "a": a, "b": b, "ratio": va / vb})
    result["ratios"] = ratios
    derived: dict[str, Any] = {}
    if key == "hop":
        for c in ("channels", "rustvani", "pipecat"):
            pts = [
                (float(label.split("=")[1]), _median(result, label, c, "us_per_frame"))
                for label in result["configs"]
                if "inline" not in label
            ]
            pts = [(k, v) for k, v in pts if not math.isnan(v)]
            if len(pts) >= 2:
                mk = sum(k for k, _ in pts) / len(pts)
                mv = sum(v for _, v in pts) / len(pts)
                den = sum((k - mk) ** 2 for k, _ in pts)
                slope = sum((k - mk) * (v - mv) for k, v in pts) / den if den else math.nan
                derived[f"us_per_hop.{c}"] = slope
    for label in result["configs"]:
        if key == "hop" and label.endswith(" inline"):
            k = float(label.split("=")[1].split()[0])
            v0 = _median(result, "K=0", "rustvani", "us_per_frame")
            v = _median(result, label, "rustvani", "us_per_frame")
            if not (math.isnan(v) or math.isnan(v0)) and k:
                derived["us_per_inline_hop.rustvani"] = (v - v0) / k
        if key == "burst" and label.endswith(" inline"):
            v0 = _median(result, "K=0", "rustvani", "total_ms")
            v = _median(result, label, "rustvani", "total_ms")
            if not (math.isnan(v) or math.isnan(v0)) and v0:
                derived[f"added_by_{label.replace(' ', '_')}.rustvani_total"] = v / v0 - 1
            c0 = _median(result, "K=0", "rustvani", "cpu_ms")
            c = _median(result, label, "rustvani", "cpu_ms")
            if not (math.isnan(c) or math.isnan(c0)) and c0:
                derived[f"added_by_{label.replace(' ', '_')}.rustvani_cpu"] = c / c0 - 1
    if key == "voice":
        for label in result["configs"]:
            floor = _median(result, label, "httpx", "cpu_us_per_token")
            for c in FRAMEWORKS:
                v = _median(result, label, c, "cpu_us_per_token")
                if not (math.isnan(v) or math.isnan(floor)):
                    derived[f"framework_cpu_us_per_token.{label.replace(' ', '_')}.{c}"] = v - floor
    if key in ("paced", "burst"):
        for label in result["configs"]:
            for a, b in (("rustvani", "httpx"), ("pipecat", "openai")):
                va = _median(result, label, a, "ttft_ms")
                vb = _median(result, label, b, "ttft_ms")
                if not (math.isnan(va) or math.isnan(vb)):
                    derived[f"added_ttft_ms.{label}.{a}_over_{b}"] = va - vb
    result["derived"] = derived
