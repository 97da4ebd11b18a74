"""Metrics: what a processor measured (TTFB, processing time, token usage) and the frame that
carries it. Public through :mod:`rustvani_trio.frames`."""

from __future__ import annotations

from typing import Any

import attrs

from ._frame_base import (
    SystemFrame,
    as_tuple,
    is_bool,
    is_instance,
    is_int,
    is_number,
    is_optional_str,
    is_str,
    is_tuple_of,
)

__all__ = [
    "LLMTokenUsage",
    "LLMUsageMetricsData",
    "MetricsData",
    "MetricsFrame",
    "ProcessingMetricsData",
    "TTFBMetricsData",
]


def _optional_int(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        is_int(inst, attr, value)


@attrs.frozen(kw_only=True)
class MetricsData:
    """One measurement, attributed to a processor."""

    processor: str = attrs.field(validator=is_str)


@attrs.frozen(kw_only=True)
class _Seconds(MetricsData):
    """A duration measured by a processor (not exported)."""

    value: float = attrs.field(validator=is_number)


@attrs.frozen(kw_only=True)
class TTFBMetricsData(_Seconds):
    """Time to first byte: from a request to its first useful output, in seconds."""


@attrs.frozen(kw_only=True)
class ProcessingMetricsData(_Seconds):
    """Processing time of one unit of work (an LLM turn), in seconds."""


@attrs.frozen(kw_only=True)
class LLMTokenUsage:
    """Token counts reported by an LLM for one request."""

    prompt_tokens: int = attrs.field(default=0, validator=is_int)
    completion_tokens: int = attrs.field(default=0, validator=is_int)
    total_tokens: int = attrs.field(default=0, validator=is_int)
    cached_tokens: int | None = attrs.field(default=None, validator=_optional_int)
    reasoning_tokens: int | None = attrs.field(default=None, validator=_optional_int)


@attrs.frozen(kw_only=True)
class LLMUsageMetricsData(MetricsData):
    """Token usage of one LLM request (also reported for interrupted requests)."""

    value: LLMTokenUsage = attrs.field(validator=is_instance(LLMTokenUsage, "an LLMTokenUsage"))
    model: str | None = attrs.field(default=None, validator=is_optional_str)
    interrupted: bool = attrs.field(default=False, validator=is_bool)


@attrs.frozen(kw_only=True)
class MetricsFrame(SystemFrame):
    """Carries one or more measurements downstream."""

    data: tuple[MetricsData, ...] = attrs.field(
        converter=as_tuple, validator=is_tuple_of(MetricsData, "MetricsData")
    )
