"""PipelineParams: the settings of one run (public as ``rustvani_trio.task.PipelineParams``)."""

from __future__ import annotations

from typing import Any

import attrs

from . import _validators as v
from ._frame_base import is_bool
from .frames import (
    Frame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    TextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)

__all__ = ["PipelineParams"]


def _not_nan(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    # NaN is a wrong value, not a wrong type (as for trio.sleep); the shared validators call it
    # a TypeError, so this check runs first.
    if isinstance(value, float) and value != value:
        raise ValueError(f"{attr.name} must be a number, got nan")


def _frame_types(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, tuple) or not all(
        isinstance(t, type) and issubclass(t, Frame) for t in value
    ):
        raise TypeError(f"{attr.name} must be a tuple of Frame classes, got {value!r:.80}")


_flag = is_bool
_seconds = [_not_nan, v.positive]


@attrs.frozen(kw_only=True)
class PipelineParams:
    """Settings of one run; the interruption and metrics flags reach every processor in the
    StartFrame.

    Attributes:
        allow_interruptions: whether user speech may interrupt the bot.
        enable_metrics: TTFB and processing-time MetricsFrames.
        enable_usage_metrics: token usage MetricsFrames.
        report_only_initial_ttfb: report only the first TTFB of each processor.
        idle_timeout: seconds without activity (a frame of ``idle_timeout_frames`` reaching
            either end, or a frame queued to the task) after which ``on_idle_timeout`` fires.
        cancel_on_idle_timeout: cancel the run when the idle timeout fires.
        idle_timeout_frames: the frame types that count as activity.
        enable_heartbeats: send a HeartbeatFrame every ``heartbeats_period`` seconds.
        heartbeats_period: seconds between heartbeats.
        heartbeats_monitor_timeout: warn when no heartbeat reached the sink for this long.
        cancel_timeout: after a cancel, the longest the run waits for the CancelFrame to reach
            the sink before it cancels every processor's tasks outright.
    """

    allow_interruptions: bool = attrs.field(default=True, validator=_flag)
    enable_metrics: bool = attrs.field(default=False, validator=_flag)
    enable_usage_metrics: bool = attrs.field(default=False, validator=_flag)
    report_only_initial_ttfb: bool = attrs.field(default=False, validator=_flag)
    idle_timeout: float | None = attrs.field(
        default=None, validator=[_not_nan, v.optional(v.positive)]
    )
    cancel_on_idle_timeout: bool = attrs.field(default=True, validator=_flag)
    idle_timeout_frames: tuple[type[Frame], ...] = attrs.field(
        default=(
            TextFrame,
            LLMFullResponseStart,
            LLMFullResponseEnd,
            UserStartedSpeakingFrame,
            UserStoppedSpeakingFrame,
        ),
        validator=_frame_types,
    )
    enable_heartbeats: bool = attrs.field(default=False, validator=_flag)
    heartbeats_period: float = attrs.field(default=1.0, validator=_seconds)
    heartbeats_monitor_timeout: float = attrs.field(default=10.0, validator=_seconds)
    cancel_timeout: float = attrs.field(default=5.0, validator=_seconds)
