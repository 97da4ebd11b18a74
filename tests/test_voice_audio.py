"""PCM helpers and the resampler."""

from __future__ import annotations

import math
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustvani_trio.audio.pcm import (
    level_dbfs,
    read_wav,
    silence,
    strip_wav_header,
    to_mono,
    wav_bytes,
    write_wav,
)
from rustvani_trio.audio.resample import Resampler, resample
from rustvani_trio.testing._speech.audio import tone, white_noise


def rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def cycles(pcm: bytes) -> int:
    """Upward crossings with hysteresis (so rounding noise near zero does not count)."""
    count, low = 0, False
    for s in array("h", pcm):
        if s < -1000:
            low = True
        elif s > 1000 and low:
            count, low = count + 1, False
    return count


def test_silence_and_level() -> None:
    assert silence(0.5, 16000) == bytes(16000)
    assert level_dbfs(silence(0.1, 16000)) == -math.inf
    assert level_dbfs(b"") == -math.inf
    # A full-scale sine is -3 dBFS RMS; half scale -9.
    assert level_dbfs(tone(1000, 0.5, amplitude=0.5)) == pytest.approx(-9.03, abs=0.05)
    with pytest.raises(ValueError, match="even"):
        level_dbfs(b"\x00")


def test_to_mono() -> None:
    stereo = array("h", [100, 300, -50, 50, 32767, 32767]).tobytes()
    assert array("h", to_mono(stereo, 2)).tolist() == [200, 0, 32767]
    assert to_mono(b"\x01\x00", 1) == b"\x01\x00"
    with pytest.raises(ValueError, match="channels"):
        to_mono(array("h", [1, 2, 3]).tobytes(), 2)


def test_wav_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pcm = tone(440, 0.25, sample_rate=22050)
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 22050)
    wav = read_wav(path)
    assert (wav.pcm, wav.sample_rate, wav.num_channels) == (pcm, 22050, 1)
    assert wav.duration == pytest.approx(0.25, abs=1e-4)
    assert read_wav(wav_bytes(pcm, 8000, 2)).num_channels == 2


def test_strip_wav_header() -> None:
    pcm = tone(440, 0.01)
    assert strip_wav_header(wav_bytes(pcm, 16000)) == pcm
    assert strip_wav_header(pcm) == pcm  # not a WAV: unchanged
    # An extra chunk before "data" (e.g. LIST) is skipped, not assumed to be 44 bytes.
    header = wav_bytes(b"", 16000)
    fmt_end = header.index(b"data")
    listed = header[:fmt_end] + b"LIST" + (4).to_bytes(4, "little") + b"INFO" + header[fmt_end:]
    assert strip_wav_header(listed + pcm) == pcm


@pytest.mark.parametrize(
    "rate_in, rate_out",
    [(48000, 16000), (22050, 16000), (16000, 24000), (8000, 16000), (44100, 48000)],
)
def test_resample_keeps_a_tone(rate_in: int, rate_out: int) -> None:
    pcm = tone(1000, 1.0, sample_rate=rate_in)
    out = resample(pcm, rate_in, rate_out)
    assert len(out) // 2 == rate_out  # exactly one second
    middle = out[4000:-4000]
    assert 20 * math.log10(rms(middle) / rms(pcm)) == pytest.approx(0.0, abs=0.2)
    assert cycles(out) == pytest.approx(1000, abs=1)  # still 1000 Hz


@pytest.mark.parametrize("rate_in, rate_out, freq", [(48000, 16000, 12000), (22050, 16000, 9000)])
def test_resample_does_not_alias(rate_in: int, rate_out: int, freq: int) -> None:
    """A tone above the new Nyquist frequency is removed, not folded into the band."""
    pcm = tone(freq, 1.0, sample_rate=rate_in)
    out = resample(pcm, rate_in, rate_out)
    assert 20 * math.log10(max(rms(out[4000:-4000]), 1e-9) / rms(pcm)) < -40


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([(48000, 16000), (16000, 22050), (44100, 16000), (16000, 8000)]),
    st.lists(st.integers(0, 700), min_size=1, max_size=12),
)
def test_resample_streaming_equals_whole(rates: tuple[int, int], cuts: list[int]) -> None:
    """Any split of the input gives the same output as one call."""
    rate_in, rate_out = rates
    pcm = white_noise(0.2, sample_rate=rate_in)
    whole = resample(pcm, rate_in, rate_out)
    r = Resampler(rate_in, rate_out)
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(r.process(pcm[pos : pos + 2 * cut]))
        pos += 2 * cut
    pieces.append(r.process(pcm[pos:]))
    pieces.append(r.flush())
    assert b"".join(pieces) == whole


def test_resampler_passthrough_and_validation() -> None:
    r = Resampler(16000, 16000)
    assert r.passthrough and r.process(b"\x01\x02") == b"\x01\x02" and r.flush() == b""
    with pytest.raises(ValueError, match="in_rate"):
        Resampler(0, 16000)
    with pytest.raises(ValueError, match="taps"):
        Resampler(8000, 16000, taps=1)


def test_resampler_clips_instead_of_wrapping() -> None:
    square = array("h", ([32767] * 20 + [-32768] * 20) * 50).tobytes()
    out = array("h", resample(square, 16000, 48000))
    assert max(out) == 32767 and min(out) == -32768  # overshoot clipped, no wrap-around
