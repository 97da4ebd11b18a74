"""Voice activity detection: :class:`VadParams`, the model interface :class:`VADAnalyzer` and
:class:`VADProcessor`. The Silero model is in :mod:`rustvani_trio.audio.vad.silero`
(extra ``vad-silero``)."""

from ._machine import VadParams, VADState, VadStateMachine, volume_from_dbfs
from .processor import VADAnalyzer, VADProcessor

__all__ = [
    "VADAnalyzer",
    "VADProcessor",
    "VADState",
    "VadParams",
    "VadStateMachine",
    "volume_from_dbfs",
]
