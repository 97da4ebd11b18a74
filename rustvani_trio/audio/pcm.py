"""PCM helpers: signed 16-bit little-endian audio as ``bytes`` (the format of the audio frames).

Everything here is plain Python (``array``, ``wave``), so it needs no optional dependency.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave
from array import array
from pathlib import Path

__all__ = [
    "WavAudio",
    "duration_of",
    "level_dbfs",
    "read_wav",
    "silence",
    "strip_wav_header",
    "to_mono",
    "wav_bytes",
    "write_wav",
]

_BIG_ENDIAN = sys.byteorder == "big"


def _samples(pcm: bytes) -> array[int]:
    if len(pcm) % 2:
        raise ValueError(f"PCM s16le must have an even number of bytes, got {len(pcm)}")
    samples = array("h", pcm)
    if _BIG_ENDIAN:  # pragma: no cover - no big-endian CI
        samples.byteswap()
    return samples


def _to_bytes(samples: array[int]) -> bytes:
    if _BIG_ENDIAN:  # pragma: no cover
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def silence(seconds: float, sample_rate: int, num_channels: int = 1) -> bytes:
    """``seconds`` of digital silence."""
    if seconds < 0:
        raise ValueError(f"seconds must not be negative, got {seconds}")
    return bytes(2 * num_channels * round(seconds * sample_rate))


def duration_of(pcm: bytes, sample_rate: int, num_channels: int = 1) -> float:
    """Seconds of audio in ``pcm``."""
    return len(pcm) / (2 * num_channels * sample_rate)


def to_mono(pcm: bytes, num_channels: int) -> bytes:
    """Average interleaved channels into one."""
    if num_channels == 1:
        return pcm
    if num_channels < 1:
        raise ValueError(f"num_channels must be positive, got {num_channels}")
    samples = _samples(pcm)
    if len(samples) % num_channels:
        raise ValueError(f"{len(samples)} samples do not split into {num_channels} channels")
    mono = array(
        "h",
        (
            sum(samples[i : i + num_channels]) // num_channels
            for i in range(0, len(samples), num_channels)
        ),
    )
    return _to_bytes(mono)


def level_dbfs(pcm: bytes) -> float:
    """Root-mean-square level in dB relative to full scale (``-inf`` for digital silence)."""
    samples = _samples(pcm)
    if not samples:
        return -math.inf
    mean_square = math.fsum(s * s for s in samples) / len(samples)
    if mean_square == 0:
        return -math.inf
    return 10 * math.log10(mean_square / (32768.0 * 32768.0))


class WavAudio:
    """PCM read from a WAV file: ``pcm`` (s16le), ``sample_rate``, ``num_channels``."""

    __slots__ = ("num_channels", "pcm", "sample_rate")

    def __init__(self, pcm: bytes, sample_rate: int, num_channels: int) -> None:
        self.pcm = pcm
        self.sample_rate = sample_rate
        self.num_channels = num_channels

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return duration_of(self.pcm, self.sample_rate, self.num_channels)


def read_wav(source: str | Path | bytes) -> WavAudio:
    """Read a 16-bit PCM WAV file (a path, or the file's bytes)."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with handle, wave.open(handle, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit samples")
        return WavAudio(wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels())


def wav_bytes(pcm: bytes, sample_rate: int, num_channels: int = 1) -> bytes:
    """A complete WAV file holding ``pcm``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(num_channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


def write_wav(path: str | Path, pcm: bytes, sample_rate: int, num_channels: int = 1) -> None:
    """Write ``pcm`` to a 16-bit PCM WAV file."""
    Path(path).write_bytes(wav_bytes(pcm, sample_rate, num_channels))


def strip_wav_header(data: bytes) -> bytes:
    """The PCM payload of ``data`` if it is a RIFF/WAVE file, else ``data`` unchanged.

    Providers sometimes wrap each streamed chunk in a WAV header; the ``data`` chunk is
    found by walking the RIFF chunks (not by assuming a 44-byte header). A streamed header
    may carry a placeholder size, so the payload runs to the end of ``data``.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return data
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"data":
            return data[pos + 8 :]
        pos += 8 + size + (size & 1)
    return b""
