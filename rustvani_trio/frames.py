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
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

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


class FrameDirection(enum.Enum):
    """Which way a frame travels: towards the sink (downstream) or the source (upstream)."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"


_ids = itertools.count(1)


def _next_id() -> int:
    return next(_ids)


def _now() -> float | None:
    try:
        return trio.current_time()
    except RuntimeError:  # no trio run active (a frame built at import time or in sync code)
        return None


@attrs.frozen(kw_only=True)
class Frame:
    """The base of every frame.

    Attributes:
        id: process-unique, strictly increasing in creation order.
        created: ``trio.current_time()`` at creation, or ``None`` outside a trio run.
    """

    id: int = attrs.field(factory=_next_id, init=False, eq=False)
    created: float | None = attrs.field(factory=_now, init=False, eq=False, repr=False)

    @property
    def name(self) -> str:
        """The frame's class name, e.g. ``"LLMText"``."""
        return type(self).__name__


class UninterruptibleFrame:
    """Marker mixin: the frame is kept when an interruption drains a process lane."""

    __slots__ = ()


@attrs.frozen(kw_only=True)
class SystemFrame(Frame):
    """Handled at once in the system lane, overtaking queued control and data frames."""


@attrs.frozen(kw_only=True)
class ControlFrame(Frame):
    """In-band control, ordered with the data in the process lane."""


@attrs.frozen(kw_only=True)
class DataFrame(Frame):
    """Content, ordered in the process lane."""


# --------------------------------------------------------------------------- system frames


@attrs.frozen(kw_only=True)
class StartFrame(SystemFrame):
    """The first frame of every run; carries the run's settings to every processor."""

    allow_interruptions: bool = True
    enable_metrics: bool = False
    enable_usage_metrics: bool = False
    report_only_initial_ttfb: bool = False


@attrs.frozen(kw_only=True)
class CancelFrame(SystemFrame):
    """Aborts the run: jumps the queues and cancels in-flight work in every processor."""

    reason: str | None = None


@attrs.frozen(kw_only=True)
class ErrorFrame(SystemFrame):
    """An error, pushed upstream.

    A non-fatal error is reported (to the task's ``on_error`` handlers) and the run goes on;
    a fatal one ends the run and :meth:`PipelineTask.run` raises :class:`PipelineFatalError`.
    """

    error: str
    fatal: bool = False
    processor: str | None = None
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class InterruptionFrame(SystemFrame):
    """Cancels the in-flight work of every processor it reaches and drains their queues."""


@attrs.frozen(kw_only=True)
class InterruptionTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to interrupt the whole pipeline from its start."""


@attrs.frozen(kw_only=True)
class UserStartedSpeakingFrame(SystemFrame):
    """The user started speaking (or typing)."""


@attrs.frozen(kw_only=True)
class UserStoppedSpeakingFrame(SystemFrame):
    """The user stopped speaking: the user's turn is complete."""


@attrs.frozen(kw_only=True)
class BotStartedSpeakingFrame(SystemFrame):
    """The bot started speaking: its first audio of an answer went out."""


@attrs.frozen(kw_only=True)
class BotStoppedSpeakingFrame(SystemFrame):
    """The bot stopped speaking: the last audio of an answer went out (or was cut off)."""


@attrs.frozen(kw_only=True)
class VADUserStartedSpeakingFrame(SystemFrame):
    """Voice activity detection heard the user start speaking (after ``start_secs`` of speech).

    Attributes:
        start_secs: how much speech it took to decide.
        timestamp: ``trio.current_time()`` when speech began.
    """

    start_secs: float = 0.0
    timestamp: float = 0.0


@attrs.frozen(kw_only=True)
class VADUserStoppedSpeakingFrame(SystemFrame):
    """Voice activity detection heard the user stop speaking (after ``stop_secs`` of quiet)."""

    stop_secs: float = 0.0
    timestamp: float = 0.0


def _check_pcm(frame: InputAudioRawFrame | OutputAudioRawFrame) -> None:
    if not isinstance(frame.audio, bytes):
        raise TypeError(f"{frame.name}.audio must be bytes (PCM s16le), got {frame.audio!r:.60}")
    for field in ("sample_rate", "num_channels"):
        value = getattr(frame, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{frame.name}.{field} must be a positive int, got {value!r}")
    if len(frame.audio) % (2 * frame.num_channels):
        raise ValueError(
            f"{frame.name}.audio holds {len(frame.audio)} bytes, not a whole number of "
            f"16-bit samples for {frame.num_channels} channel(s)"
        )


@attrs.frozen(kw_only=True)
class InputAudioRawFrame(SystemFrame):
    """Audio from the user: PCM, signed 16-bit little-endian, interleaved channels.

    A system frame (as in the seed and pipecat): audio must reach voice activity detection
    at once, never behind queued output.
    """

    audio: bytes = attrs.field(repr=lambda audio: f"<{len(audio)} bytes>")
    sample_rate: int = 16000
    num_channels: int = 1

    def __attrs_post_init__(self) -> None:
        _check_pcm(self)

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return len(self.audio) // (2 * self.num_channels)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.num_frames / self.sample_rate


@attrs.frozen(kw_only=True)
class EndTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to end the run gracefully (it queues an EndFrame)."""

    reason: str | None = None


@attrs.frozen(kw_only=True)
class CancelTaskFrame(SystemFrame):
    """Pushed upstream to ask the task to cancel the run (it sends a CancelFrame)."""

    reason: str | None = None


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- control frames


@attrs.frozen(kw_only=True)
class EndFrame(ControlFrame, UninterruptibleFrame):
    """Ends the run gracefully: it flows behind the data and each processor finishes first."""

    reason: str | None = None


@attrs.frozen(kw_only=True)
class StopFrame(ControlFrame, UninterruptibleFrame):
    """Ends the run like :class:`EndFrame`, but processors' ``on_stop`` hooks are not run."""


@attrs.frozen(kw_only=True)
class HeartbeatFrame(ControlFrame):
    """Sent periodically by the task to show the pipeline is moving; ``timestamp`` is when."""

    timestamp: float


@attrs.frozen(kw_only=True)
class LLMFullResponseStart(ControlFrame):
    """Opens one LLM turn's output."""


@attrs.frozen(kw_only=True)
class LLMFullResponseEnd(ControlFrame):
    """Closes one LLM turn's output (also a turn that failed)."""


@attrs.frozen(kw_only=True)
class TTSStartedFrame(ControlFrame):
    """A text-to-speech service started speaking one answer."""


@attrs.frozen(kw_only=True)
class TTSStoppedFrame(ControlFrame):
    """A text-to-speech service finished speaking one answer."""


@attrs.frozen(kw_only=True)
class FunctionCallInfo:
    """One tool call requested by the model (not a frame: carried by FunctionCallStart)."""

    tool_call_id: str
    function_name: str
    arguments: str


@attrs.frozen(kw_only=True)
class FunctionCallStart(ControlFrame):
    """Opens a tool round: the model asked for these calls, in this order."""

    calls: tuple[FunctionCallInfo, ...] = ()
    round: int = 1


@attrs.frozen(kw_only=True)
class FunctionCallEnd(ControlFrame):
    """Closes a tool round: every call of the round has its result."""

    round: int = 1


# --------------------------------------------------------------------------- data frames


@attrs.frozen(kw_only=True)
class TextFrame(DataFrame):
    """A piece of text."""

    text: str


@attrs.frozen(kw_only=True)
class LLMText(TextFrame):
    """A piece of text streamed by an LLM (one content delta)."""


@attrs.frozen(kw_only=True)
class LLMReasoningText(DataFrame):
    """A piece of the model's reasoning (``reasoning_content`` / ``reasoning`` deltas).

    Kept apart from :class:`LLMText` so reasoning is never spoken or written into the context.
    """

    text: str


@attrs.frozen(kw_only=True)
class LLMRefusalText(DataFrame):
    """A piece of a refusal streamed by the model (``delta.refusal``)."""

    text: str


@attrs.frozen(kw_only=True)
class TranscriptionFrame(TextFrame):
    """Text the user said (or typed); interim transcripts have ``finalized=False``."""

    user_id: str = ""
    finalized: bool = True


@attrs.frozen(kw_only=True)
class LLMContextFrame(DataFrame):
    """Asks the LLM to run one turn on this context."""

    context: LLMContext


@attrs.frozen(kw_only=True)
class LLMMessagesAppendFrame(DataFrame):
    """Asks the user aggregator to append messages to its context (and optionally run a turn)."""

    messages: tuple[Mapping[str, Any], ...]
    run_llm: bool = False


@attrs.frozen(kw_only=True)
class FunctionCallInProgress(DataFrame):
    """A tool call has started executing; ``arguments`` is the raw JSON string."""

    tool_call_id: str
    function_name: str
    arguments: str


@attrs.frozen(kw_only=True)
class FunctionCallResult(DataFrame):
    """A tool call's result: ``result`` is exactly what the model sees."""

    tool_call_id: str
    function_name: str
    result: str


@attrs.frozen(kw_only=True)
class FunctionCallRawResult(DataFrame):
    """Raw data from a tool call, for user interfaces; never sent to the model."""

    tool_call_id: str
    function_name: str
    raw: Any = attrs.field(eq=False)


@attrs.frozen(kw_only=True)
class TTSTextFrame(TextFrame):
    """Text a text-to-speech service has spoken (or is speaking), in step with its audio."""


@attrs.frozen(kw_only=True)
class OutputAudioRawFrame(DataFrame):
    """Audio for the user: PCM, signed 16-bit little-endian, interleaved channels."""

    audio: bytes = attrs.field(repr=lambda audio: f"<{len(audio)} bytes>")
    sample_rate: int = 24000
    num_channels: int = 1

    def __attrs_post_init__(self) -> None:
        _check_pcm(self)

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return len(self.audio) // (2 * self.num_channels)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.num_frames / self.sample_rate
