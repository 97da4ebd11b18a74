"""Every frame class, the frame direction, and the system / control / data split.

A frame is an immutable message travelling between processors. Frames fall into three
categories, and the category decides which lane a frame travels in:

* :class:`SystemFrame` -- lifecycle and out-of-band signals (start, cancel, errors, interruptions,
  speaking signals). They travel in a processor's *system lane*, are handled at once, in arrival
  order, and never wait behind data.
* :class:`ControlFrame` -- in-band control (end of stream, response boundaries, tool-round
  boundaries). They travel in the *process lane*, in order with the data.
* :class:`DataFrame` -- content (text, LLM contexts, function call results).

Frames that must survive an interruption (the process lane is drained of everything else)
derive from :class:`UninterruptibleFrame` as well.

All frames are ``attrs`` classes (frozen, slotted, keyword-only). Each has a process-unique,
increasing :attr:`Frame.id`, a :attr:`Frame.name` (its class name) and a creation time
(:attr:`Frame.created`) read from :func:`trio.current_time` when a trio run is active.

This module defines the lifecycle, task, LLM and tool-call frames, and re-exports the rest
from the private modules beside it: the root and categories (``_frame_base.py``), the voice
frames (``_voice_frames.py``) and the metrics (``_metrics_frames.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._frame_base import ControlFrame as ControlFrame
from ._frame_base import DataFrame as DataFrame
from ._frame_base import Frame as Frame
from ._frame_base import FrameDirection as FrameDirection
from ._frame_base import SystemFrame as SystemFrame
from ._frame_base import (
    TextData,
    as_tuple,
    is_bool,
    is_instance,
    is_int,
    is_number,
    is_optional_str,
    is_str,
    is_tuple_of,
)
from ._frame_base import TextFrame as TextFrame
from ._frame_base import UninterruptibleFrame as UninterruptibleFrame
from ._metrics_frames import LLMTokenUsage as LLMTokenUsage
from ._metrics_frames import LLMUsageMetricsData as LLMUsageMetricsData
from ._metrics_frames import MetricsData as MetricsData
from ._metrics_frames import MetricsFrame as MetricsFrame
from ._metrics_frames import ProcessingMetricsData as ProcessingMetricsData
from ._metrics_frames import TTFBMetricsData as TTFBMetricsData
from ._voice_frames import BotStartedSpeakingFrame as BotStartedSpeakingFrame
from ._voice_frames import BotStoppedSpeakingFrame as BotStoppedSpeakingFrame
from ._voice_frames import InputAudioRawFrame as InputAudioRawFrame
from ._voice_frames import OutputAudioRawFrame as OutputAudioRawFrame
from ._voice_frames import TTSStartedFrame as TTSStartedFrame
from ._voice_frames import TTSStoppedFrame as TTSStoppedFrame
from ._voice_frames import TTSTextFrame as TTSTextFrame
from ._voice_frames import UserStartedSpeakingFrame as UserStartedSpeakingFrame
from ._voice_frames import UserStoppedSpeakingFrame as UserStoppedSpeakingFrame
from ._voice_frames import VADUserStartedSpeakingFrame as VADUserStartedSpeakingFrame
from ._voice_frames import VADUserStoppedSpeakingFrame as VADUserStoppedSpeakingFrame

if TYPE_CHECKING:
    from .context import LLMContext

__all__ = [
    "BotStartedSpeakingFrame",
    "BotStoppedSpeakingFrame",
    "CancelFrame",
    "CancelTaskFrame",
    "ControlFrame",
    "DataFrame",
    "EndFrame",
    "EndTaskFrame",
    "ErrorFrame",
    "Frame",
    "FrameDirection",
    "FunctionCallEnd",
    "FunctionCallInProgress",
    "FunctionCallInfo",
    "FunctionCallRawResult",
    "FunctionCallResult",
    "FunctionCallStart",
    "HeartbeatFrame",
    "InputAudioRawFrame",
    "InterruptionFrame",
    "InterruptionTaskFrame",
    "LLMContextFrame",
    "LLMFullResponseEnd",
    "LLMFullResponseStart",
    "LLMMessagesAppendFrame",
    "LLMReasoningText",
    "LLMRefusalText",
    "LLMText",
    "LLMTokenUsage",
    "LLMUsageMetricsData",
    "MetricsData",
    "MetricsFrame",
    "OutputAudioRawFrame",
    "ProcessingMetricsData",
    "StartFrame",
    "StopFrame",
    "SystemFrame",
    "TTFBMetricsData",
    "TTSStartedFrame",
    "TTSStoppedFrame",
    "TTSTextFrame",
    "TextFrame",
    "TranscriptionFrame",
    "UninterruptibleFrame",
    "UserStartedSpeakingFrame",
    "UserStoppedSpeakingFrame",
    "VADUserStartedSpeakingFrame",
    "VADUserStoppedSpeakingFrame",
]


def _is_context(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    from .context import LLMContext  # context.py imports this module

    if not isinstance(value, LLMContext):
        raise TypeError(
            f"{type(inst).__name__}.{attr.name} must be an LLMContext, got {value!r:.60}"
        )


# --------------------------------------------------------------------------- system frames


@attrs.frozen(kw_only=True)
class StartFrame(SystemFrame):
    """The first frame of every run; carries the run's settings to every processor."""

    allow_interruptions: bool = attrs.field(default=True, validator=is_bool)
    enable_metrics: bool = attrs.field(default=False, validator=is_bool)
    enable_usage_metrics: bool = attrs.field(default=False, validator=is_bool)
    report_only_initial_ttfb: bool = attrs.field(default=False, validator=is_bool)


@attrs.frozen(kw_only=True)
class CancelFrame(SystemFrame):
    """Aborts the run: jumps the queues and cancels in-flight work in every processor."""

    reason: str | None = attrs.field(default=None, validator=is_optional_str)


@attrs.frozen(kw_only=True)
class ErrorFrame(SystemFrame):
    """An error, pushed upstream.

    A non-fatal error is reported (to the task's ``on_error`` handlers) and the run goes on;
    a fatal one ends the run and :meth:`PipelineTask.run` raises :class:`PipelineFatalError`.
    """

    error: str = attrs.field(validator=is_str)
    fatal: bool = attrs.field(default=False, validator=is_bool)
    processor: str | None = attrs.field(default=None, validator=is_optional_str)
    exception: BaseException | None = attrs.field(
        default=None,
        eq=False,
        repr=False,
        validator=is_instance(BaseException, "an exception or None", optional=True),
    )


@attrs.frozen(kw_only=True)
class InterruptionFrame(SystemFrame):
    """Cancels the in-flight work of every processor it reaches and drains their queues."""


@attrs.frozen(kw_only=True)
class InterruptionTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to interrupt the whole pipeline from its start."""


@attrs.frozen(kw_only=True)
class EndTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to end the run gracefully (it queues an EndFrame)."""

    reason: str | None = attrs.field(default=None, validator=is_optional_str)


@attrs.frozen(kw_only=True)
class CancelTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to cancel the run (it sends a CancelFrame)."""

    reason: str | None = attrs.field(default=None, validator=is_optional_str)


# --------------------------------------------------------------------------- control frames


@attrs.frozen(kw_only=True)
class EndFrame(ControlFrame, UninterruptibleFrame):
    """Ends the run gracefully: it flows behind the data and each processor finishes first."""

    reason: str | None = attrs.field(default=None, validator=is_optional_str)


@attrs.frozen(kw_only=True)
class StopFrame(ControlFrame, UninterruptibleFrame):
    """Ends the run like :class:`EndFrame`, but processors' ``on_stop`` hooks are not run."""


@attrs.frozen(kw_only=True)
class HeartbeatFrame(ControlFrame):
    """Sent periodically by the task to show the pipeline is moving; ``timestamp`` is when."""

    timestamp: float = attrs.field(validator=is_number)


@attrs.frozen(kw_only=True)
class LLMFullResponseStart(ControlFrame):
    """Opens one LLM turn's output."""


@attrs.frozen(kw_only=True)
class LLMFullResponseEnd(ControlFrame):
    """Closes one LLM turn's output (also a turn that failed)."""


@attrs.frozen(kw_only=True)
class FunctionCallInfo:
    """One tool call requested by the model (not a frame: carried by FunctionCallStart)."""

    tool_call_id: str = attrs.field(validator=is_str)
    function_name: str = attrs.field(validator=is_str)
    arguments: str = attrs.field(validator=is_str)


@attrs.frozen(kw_only=True)
class FunctionCallStart(ControlFrame):
    """Opens a tool round: the model asked for these calls, in this order."""

    calls: tuple[FunctionCallInfo, ...] = attrs.field(
        default=(), converter=as_tuple, validator=is_tuple_of(FunctionCallInfo, "FunctionCallInfo")
    )
    round: int = attrs.field(default=1, validator=is_int)


@attrs.frozen(kw_only=True)
class FunctionCallEnd(ControlFrame):
    """Closes a tool round: every call of the round has its result."""

    round: int = attrs.field(default=1, validator=is_int)


# --------------------------------------------------------------------------- data frames


@attrs.frozen(kw_only=True)
class LLMText(TextFrame):
    """A piece of text streamed by an LLM (one content delta)."""


@attrs.frozen(kw_only=True)
class LLMReasoningText(TextData):
    """A piece of the model's reasoning (``reasoning_content`` / ``reasoning`` deltas).

    Kept apart from :class:`LLMText` so reasoning is never spoken or written into the context.
    """


@attrs.frozen(kw_only=True)
class LLMRefusalText(TextData):
    """A piece of a refusal streamed by the model (``delta.refusal``)."""


@attrs.frozen(kw_only=True)
class TranscriptionFrame(TextFrame):
    """Text the user said (or typed); interim transcripts have ``finalized=False``."""

    user_id: str = attrs.field(default="", validator=is_str)
    finalized: bool = attrs.field(default=True, validator=is_bool)


@attrs.frozen(kw_only=True)
class LLMContextFrame(DataFrame):
    """Asks the LLM to run one turn on this context."""

    context: LLMContext = attrs.field(validator=_is_context)


@attrs.frozen(kw_only=True)
class LLMMessagesAppendFrame(DataFrame):
    """Asks the user aggregator to append messages to its context (and optionally run a turn)."""

    messages: tuple[Mapping[str, Any], ...] = attrs.field(
        converter=as_tuple, validator=is_tuple_of(Mapping, "Mapping (chat messages)")
    )
    run_llm: bool = attrs.field(default=False, validator=is_bool)


@attrs.frozen(kw_only=True)
class FunctionCallInProgress(DataFrame):
    """A tool call has started executing; ``arguments`` is the raw JSON string."""

    tool_call_id: str = attrs.field(validator=is_str)
    function_name: str = attrs.field(validator=is_str)
    arguments: str = attrs.field(validator=is_str)


@attrs.frozen(kw_only=True)
class FunctionCallResult(DataFrame):
    """A tool call's result: ``result`` is exactly what the model sees."""

    tool_call_id: str = attrs.field(validator=is_str)
    function_name: str = attrs.field(validator=is_str)
    result: str = attrs.field(validator=is_str)


@attrs.frozen(kw_only=True)
class FunctionCallRawResult(DataFrame):
    """Raw data from a tool call, for user interfaces; never sent to the model."""

    tool_call_id: str = attrs.field(validator=is_str)
    function_name: str = attrs.field(validator=is_str)
    raw: Any = attrs.field(eq=False)


def _fix_module() -> None:
    # The classes defined in private modules show this module as theirs (in reprs, errors and
    # documentation), as trio does for its re-exports.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__.startswith("rustvani_trio._"):
            obj.__module__ = __name__


_fix_module()
