"""Metrics: what a processor measured (TTFB, processing time, token usage) and the frame that
carries it. Public through :mod:`rustvani_trio.frames`."""

from __future__ import annotations

import attrs

from ._frame_base import SystemFrame

__all__ = [
    "LLMTokenUsage",
    "LLMUsageMetricsData",
    "MetricsData",
    "MetricsFrame",
    "ProcessingMetricsData",
    "TTFBMetricsData",
]


@attrs.frozen(kw_only=True)
class MetricsData:
    """One measurement, attributed to a processor."""

    processor: str


@attrs.frozen(kw_only=True)
class TTFBMetricsData(MetricsData):
    """Time to first byte: from a request to its first useful output, in seconds."""

    value: float


@attrs.frozen(kw_only=True)
class ProcessingMetricsData(MetricsData):
    """Processing time of one unit of work (an LLM turn), in seconds."""

    value: float


@attrs.frozen(kw_only=True)
class LLMTokenUsage:
    """Token counts reported by an LLM for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@attrs.frozen(kw_only=True)
class LLMUsageMetricsData(MetricsData):
    """Token usage of one LLM request (also reported for interrupted requests)."""

    value: LLMTokenUsage
    model: str | None = None
    interrupted: bool = False


@attrs.frozen(kw_only=True)
class MetricsFrame(SystemFrame):
    """Carries one or more measurements downstream."""

    data: tuple[MetricsData, ...]
