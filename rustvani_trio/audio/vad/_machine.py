"""VAD parameters and the quiet -> starting -> speaking -> stopping state machine (pure)."""

from __future__ import annotations

import enum

import attrs

__all__ = ["VADState", "VadParams", "VadStateMachine", "volume_from_dbfs"]


def _fraction(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"VadParams.{attr.name} must be within [0, 1], got {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"VadParams.{attr.name} must not be negative, got {value!r}")


@attrs.frozen(kw_only=True)
class VadParams:
    """When voice activity counts as speech.

    Attributes:
        confidence: the model's speech probability a chunk needs to count as speech.
        start_secs: how long speech must last before the user "started speaking" (a cough
            or a click is shorter).
        stop_secs: how long quiet must last before the user "stopped speaking" (pauses
            between words are shorter).
        min_volume: the loudness (0..1, see :func:`volume_from_dbfs`: 0 is -60 dBFS or
            quieter, 1 is full scale) a chunk needs to count as speech; keeps far, quiet
            voices and background chatter out.
    """

    confidence: float = attrs.field(default=0.7, validator=_fraction)
    start_secs: float = attrs.field(default=0.2, validator=_non_negative)
    stop_secs: float = attrs.field(default=0.8, validator=_non_negative)
    min_volume: float = attrs.field(default=0.4, validator=_fraction)


class VADState(enum.Enum):
    """Where the user is: quiet, maybe starting, speaking, maybe stopping."""

    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


def volume_from_dbfs(dbfs: float) -> float:
    """Map an RMS level in dBFS to 0..1, linear in dB from -60 dBFS (0) to 0 dBFS (1)."""
    return min(1.0, max(0.0, (dbfs + 60.0) / 60.0))


class VadStateMachine:
    """Turns per-chunk (confidence, volume) into speaking transitions.

    :meth:`step` returns the new state when a *decision* is made (``SPEAKING`` once speech
    lasted ``start_secs``, ``QUIET`` once quiet lasted ``stop_secs``), else ``None``.
    ``speech_secs`` is how much audio since the speech began had been counted when
    ``SPEAKING`` was decided (so the caller can date the start).
    """

    def __init__(self, params: VadParams) -> None:
        self.params = params
        self.state = VADState.QUIET
        self._run = 0.0  # seconds of speech (starting) or quiet (stopping) so far
        self.speech_secs = 0.0

    def reset(self) -> None:
        """Back to quiet, forgetting any partial start or stop."""
        self.state = VADState.QUIET
        self._run = 0.0

    def step(self, confidence: float, volume: float, secs: float) -> VADState | None:
        """Account one chunk of ``secs`` seconds."""
        p = self.params
        speech = confidence >= p.confidence and volume >= p.min_volume
        state = self.state
        if state is VADState.QUIET:
            if speech:
                self.state, self._run = VADState.STARTING, secs
                return self._maybe_started()
        elif state is VADState.STARTING:
            if speech:
                self._run += secs
                return self._maybe_started()
            self.state, self._run = VADState.QUIET, 0.0
        elif state is VADState.SPEAKING:
            if not speech:
                self.state, self._run = VADState.STOPPING, secs
                return self._maybe_stopped()
        elif speech:  # STOPPING, and the user goes on
            self.state, self._run = VADState.SPEAKING, 0.0
        else:
            self._run += secs
            return self._maybe_stopped()
        return None

    def _maybe_started(self) -> VADState | None:
        if self._run + 1e-9 >= self.params.start_secs:
            self.speech_secs = self._run
            self.state, self._run = VADState.SPEAKING, 0.0
            return VADState.SPEAKING
        return None

    def _maybe_stopped(self) -> VADState | None:
        if self._run + 1e-9 >= self.params.stop_secs:
            self.state, self._run = VADState.QUIET, 0.0
            return VADState.QUIET
        return None
