"""Voice frames: speaking signals (the user's, the bot's, voice activity detection), PCM
audio in and out, and the text-to-speech boundaries. Public through
:mod:`rustvani_trio.frames`."""

from __future__ import annotations

import attrs

from ._frame_base import ControlFrame, DataFrame, SystemFrame, TextFrame, is_number

__all__ = [
    "BotStartedSpeakingFrame",
    "BotStoppedSpeakingFrame",
    "InputAudioRawFrame",
    "OutputAudioRawFrame",
    "TTSStartedFrame",
    "TTSStoppedFrame",
    "TTSTextFrame",
    "UserStartedSpeakingFrame",
    "UserStoppedSpeakingFrame",
    "VADUserStartedSpeakingFrame",
    "VADUserStoppedSpeakingFrame",
]


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

    start_secs: float = attrs.field(default=0.0, validator=is_number)
    timestamp: float = attrs.field(default=0.0, validator=is_number)


@attrs.frozen(kw_only=True)
class VADUserStoppedSpeakingFrame(SystemFrame):
    """Voice activity detection heard the user stop speaking (after ``stop_secs`` of quiet)."""

    stop_secs: float = attrs.field(default=0.0, validator=is_number)
    timestamp: float = attrs.field(default=0.0, validator=is_number)


def _pcm_bytes(audio: bytes) -> str:
    return f"<{len(audio)} bytes>"  # the audio itself is never dumped into logs


class _PCM:
    """What both audio frames share: PCM, signed 16-bit little-endian, interleaved channels,
    checked where the frame is built."""

    __slots__ = ()
    audio: bytes
    sample_rate: int
    num_channels: int

    def __attrs_post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.audio, bytes):
            raise TypeError(f"{name}.audio must be bytes (PCM s16le), got {self.audio!r:.60}")
        for field in ("sample_rate", "num_channels"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")
        if len(self.audio) % (2 * self.num_channels):
            raise ValueError(
                f"{name}.audio holds {len(self.audio)} bytes, not a whole number of "
                f"16-bit samples for {self.num_channels} channel(s)"
            )

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return len(self.audio) // (2 * self.num_channels)

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.num_frames / self.sample_rate


@attrs.frozen(kw_only=True)
class InputAudioRawFrame(_PCM, SystemFrame):
    """Audio from the user: PCM, signed 16-bit little-endian, interleaved channels.

    A system frame (as in the seed and pipecat): audio must reach voice activity detection
    at once, never behind queued output.
    """

    audio: bytes = attrs.field(repr=_pcm_bytes)
    sample_rate: int = 16000
    num_channels: int = 1


@attrs.frozen(kw_only=True)
class TTSStartedFrame(ControlFrame):
    """A text-to-speech service started speaking one answer."""


@attrs.frozen(kw_only=True)
class TTSStoppedFrame(ControlFrame):
    """A text-to-speech service finished speaking one answer."""


@attrs.frozen(kw_only=True)
class TTSTextFrame(TextFrame):
    """Text a text-to-speech service has spoken (or is speaking), in step with its audio."""


@attrs.frozen(kw_only=True)
class OutputAudioRawFrame(_PCM, DataFrame):
    """Audio for the user: PCM, signed 16-bit little-endian, interleaved channels."""

    audio: bytes = attrs.field(repr=_pcm_bytes)
    sample_rate: int = 24000
    num_channels: int = 1
