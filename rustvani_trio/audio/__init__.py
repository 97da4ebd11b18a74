"""Audio for voice pipelines: PCM helpers (:mod:`.pcm`), a streaming resampler
(:mod:`.resample`) and voice activity detection (:mod:`.vad`). Only the Silero model
(:mod:`.vad.silero`) needs an extra (``vad-silero``)."""

from .pcm import level_dbfs, read_wav, silence, to_mono, wav_bytes, write_wav
from .resample import Resampler, resample

__all__ = [
    "Resampler",
    "level_dbfs",
    "read_wav",
    "resample",
    "silence",
    "to_mono",
    "wav_bytes",
    "write_wav",
]
