"""Test audio: real speech from espeak-ng (Debian package ``espeak-ng``), tones, noise."""

from __future__ import annotations

import functools
import math
import random
import shutil
import subprocess
from array import array

from ...audio.pcm import read_wav, to_mono
from ...audio.resample import resample

__all__ = ["espeak_available", "speak", "tone", "white_noise"]


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is installed."""
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=64)
def speak(
    text: str, *, sample_rate: int = 16000, voice: str = "en-us", words_per_minute: int = 160
) -> bytes:
    """``text`` spoken by espeak-ng as mono PCM s16le at ``sample_rate`` (no leading or
    trailing silence added). Cached per arguments."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    result = subprocess.run(
        [exe, "-v", voice, "-s", str(words_per_minute), "--stdout", "--", text],
        capture_output=True,
        check=True,
        timeout=30,
    )
    wav = read_wav(_fix_stream_header(result.stdout))
    pcm = to_mono(wav.pcm, wav.num_channels)
    if wav.sample_rate == sample_rate:
        return pcm
    return resample(pcm, wav.sample_rate, sample_rate)


def _fix_stream_header(data: bytes) -> bytes:
    """espeak-ng writes a streaming WAV header with placeholder sizes; patch them."""
    fixed = bytearray(data)
    data_at = fixed.find(b"data", 12)
    if data_at < 0:
        raise ValueError("espeak-ng produced no WAV data chunk")
    fixed[4:8] = (len(fixed) - 8).to_bytes(4, "little")
    fixed[data_at + 4 : data_at + 8] = (len(fixed) - data_at - 8).to_bytes(4, "little")
    return bytes(fixed)


def tone(
    frequency: float, seconds: float, *, sample_rate: int = 16000, amplitude: float = 0.5
) -> bytes:
    """A sine tone (``amplitude`` as a fraction of full scale)."""
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / sample_rate
    samples = array(
        "h", (round(peak * math.sin(step * i)) for i in range(round(seconds * sample_rate)))
    )
    return samples.tobytes()


def white_noise(
    seconds: float, *, sample_rate: int = 16000, amplitude: float = 0.3, seed: int = 1
) -> bytes:
    """Uniform white noise (``amplitude`` as a fraction of full scale), reproducible."""
    rng = random.Random(seed)
    peak = round(amplitude * 32767)
    samples = array("h", (rng.randint(-peak, peak) for _ in range(round(seconds * sample_rate))))
    return samples.tobytes()
