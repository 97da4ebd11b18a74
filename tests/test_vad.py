"""Voice activity detection: the state machine, the processor, and the real Silero model on
speech made here with espeak-ng, on silence, noise and tones."""

from __future__ import annotations

import os
import time
from array import array

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from rustvani_trio.audio.pcm import level_dbfs, silence
from rustvani_trio.audio.vad import (
    VADAnalyzer,
    VadParams,
    VADProcessor,
    VADState,
    VadStateMachine,
    volume_from_dbfs,
)
from rustvani_trio.frames import (
    EndFrame,
    InputAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from rustvani_trio.testing import run_test
from rustvani_trio.testing._speech.audio import espeak_available, speak, tone, white_noise

CHUNK = 0.032  # Silero's chunk: 512 samples at 16 kHz


def needs_espeak() -> None:
    if not espeak_available():
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is missing in CI (.ci/run installs it)")
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")


def frames_of(pcm: bytes, rate: int = 16000, ms: int = 20, channels: int = 1):
    step = rate * ms // 1000 * 2 * channels
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=channels)
        for i in range(0, len(pcm) - step + 1, step)
    ]


# --------------------------------------------------------------------------- params, machine


def test_params_validate() -> None:
    with pytest.raises(ValueError, match="confidence"):
        VadParams(confidence=1.5)
    with pytest.raises(ValueError, match="stop_secs"):
        VadParams(stop_secs=-1)
    with pytest.raises(ValueError, match="min_volume"):
        VadParams(min_volume=float("nan"))


def test_volume_scale() -> None:
    assert volume_from_dbfs(float("-inf")) == 0.0
    assert volume_from_dbfs(-60) == 0.0
    assert volume_from_dbfs(-30) == pytest.approx(0.5)
    assert volume_from_dbfs(3) == 1.0


def run_machine(machine: VadStateMachine, pattern: list[bool]) -> list[tuple[int, VADState]]:
    changes = []
    for i, speech in enumerate(pattern):
        change = machine.step(1.0 if speech else 0.0, 1.0, CHUNK)
        if change is not None:
            changes.append((i, change))
    return changes


def test_machine_states() -> None:
    m = VadStateMachine(VadParams(start_secs=0.1, stop_secs=0.2))
    # 0.1 s of speech = 4 chunks (3.125 rounded up): starting after 1, speaking after 4.
    assert run_machine(m, [True]) == []
    assert m.state is VADState.STARTING
    assert run_machine(m, [True, True, True]) == [(2, VADState.SPEAKING)]
    assert run_machine(m, [False]) == []
    assert m.state is VADState.STOPPING
    assert run_machine(m, [True]) == []  # a pause between words
    assert m.state is VADState.SPEAKING
    assert run_machine(m, [False] * 7) == [(6, VADState.QUIET)]


def test_machine_confidence_and_volume_both_needed() -> None:
    m = VadStateMachine(VadParams(start_secs=0, confidence=0.5, min_volume=0.5))
    assert m.step(0.9, 0.4, CHUNK) is None  # confident but too quiet
    assert m.step(0.4, 0.9, CHUNK) is None  # loud but not speech
    assert m.step(0.5, 0.5, CHUNK) is VADState.SPEAKING


@given(st.lists(st.booleans(), max_size=200), st.integers(1, 10), st.integers(1, 20))
def test_machine_properties(pattern: list[bool], start_chunks: int, stop_chunks: int) -> None:
    """Starts and stops alternate; a start needs start_secs of unbroken speech; a stop needs
    stop_secs of unbroken quiet."""
    m = VadStateMachine(VadParams(start_secs=start_chunks * CHUNK, stop_secs=stop_chunks * CHUNK))
    changes = run_machine(m, pattern)
    kinds = [c for _, c in changes]
    assert kinds == [VADState.SPEAKING, VADState.QUIET][: len(kinds)] * (len(kinds) // 2) + (
        [VADState.SPEAKING] if len(kinds) % 2 else []
    )
    for index, kind in changes:
        run = pattern[
            index - (start_chunks if kind is VADState.SPEAKING else stop_chunks) + 1 : index + 1
        ]
        want = kind is VADState.SPEAKING
        assert len(run) == (start_chunks if want else stop_chunks)
        assert all(s is want for s in run)


# --------------------------------------------------------------------------- processor


class ScriptedAnalyzer(VADAnalyzer):
    """Speech wherever the chunk's level is above -40 dBFS (a stand-in model)."""

    def __init__(self, *, delay: float = 0.0, releases_gil: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.releases_gil = releases_gil
        self.resets = 0

    def voice_confidence(self, chunk: bytes) -> float:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return 1.0 if level_dbfs(chunk) > -40 else 0.0

    def reset(self) -> None:
        self.resets += 1


async def test_processor_signals_in_order(autojump_clock: trio.testing.MockClock) -> None:
    pcm = silence(0.3, 16000) + tone(300, 1.0) + silence(1.2, 16000)
    analyzer = ScriptedAnalyzer()
    vad = VADProcessor(analyzer, VadParams(start_secs=0.2, stop_secs=0.5))
    frames = frames_of(pcm)
    result = await run_test(vad, frames)
    out = result.downstream
    audio = [f for f in out if isinstance(f, InputAudioRawFrame)]
    assert audio == frames  # every audio frame forwarded unchanged, in order
    signals = [type(f) for f in out if not isinstance(f, (InputAudioRawFrame, EndFrame))]
    assert signals[-4:] == [
        VADUserStartedSpeakingFrame,
        UserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
        UserStoppedSpeakingFrame,
    ]
    # The start is reported after the audio frame that completed start_secs of speech.
    start_at = out.index(result.downstream_of(VADUserStartedSpeakingFrame)[0])
    audio_before = sum(f.duration for f in out[:start_at] if isinstance(f, InputAudioRawFrame))
    assert 0.3 + 0.2 <= audio_before <= 0.3 + 0.2 + 0.032 + 0.02
    stop_at = out.index(result.downstream_of(VADUserStoppedSpeakingFrame)[0])
    audio_before = sum(f.duration for f in out[:stop_at] if isinstance(f, InputAudioRawFrame))
    assert 1.3 + 0.5 <= audio_before <= 1.3 + 0.5 + 0.032 + 0.02
    assert analyzer.resets == 1
    assert vad.state is VADState.QUIET


async def test_processor_resamples_and_mixes_down(autojump_clock: trio.testing.MockClock) -> None:
    mono = silence(0.2, 48000) + tone(300, 0.6, sample_rate=48000) + silence(1.0, 48000)
    samples = memoryview(mono).cast("h")
    stereo = bytes(
        memoryview(bytes(b for i in range(0, len(mono), 2) for b in mono[i : i + 2] * 2))
    )
    assert len(stereo) == 2 * len(samples) * 2
    analyzer = ScriptedAnalyzer()
    vad = VADProcessor(analyzer, VadParams(start_secs=0.1, stop_secs=0.3))
    result = await run_test(vad, frames_of(stereo, rate=48000, channels=2))
    assert len(result.downstream_of(VADUserStartedSpeakingFrame)) == 1
    assert len(result.downstream_of(VADUserStoppedSpeakingFrame)) == 1
    # 1.8 s at 48 kHz became 16 kHz chunks of 512 samples.
    assert analyzer.calls == pytest.approx(1.8 * 16000 / 512, abs=2)


async def test_processor_reports_stop_at_end_of_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    vad = VADProcessor(ScriptedAnalyzer(), VadParams(start_secs=0.1), emit_user_speaking=False)
    result = await run_test(vad, frames_of(tone(300, 0.5)))
    assert len(result.downstream_of(VADUserStartedSpeakingFrame)) == 1
    stops = result.downstream_of(VADUserStoppedSpeakingFrame)
    assert len(stops) == 1
    assert result.downstream.index(stops[0]) < result.downstream.index(result.downstream[-1])
    assert not result.downstream_of(UserStartedSpeakingFrame)  # turn signals turned off


async def test_offload_decision() -> None:
    slow = VADProcessor(ScriptedAnalyzer(delay=0.003, releases_gil=True))
    await run_test(slow, frames_of(silence(1.0, 16000)))
    assert slow.offloaded  # slow and releases the GIL: a worker thread helps
    holds_gil = VADProcessor(ScriptedAnalyzer(delay=0.003, releases_gil=False))
    await run_test(holds_gil, frames_of(silence(1.0, 16000)))
    assert not holds_gil.offloaded  # a thread would block the loop just the same
    forced = VADProcessor(ScriptedAnalyzer(), offload=True)
    result = await run_test(forced, frames_of(tone(300, 0.6) + silence(1.0, 16000)))
    assert len(result.downstream_of(VADUserStoppedSpeakingFrame)) == 1


# --------------------------------------------------------------------------- the Silero model

silero = pytest.importorskip("rustvani_trio.audio.vad.silero")


def silero_vad(**params: float) -> VADProcessor:
    if not silero.available():
        pytest.skip("the vad-silero extra is not installed")
    return silero.SileroVADProcessor(VadParams(**params))


async def speaking_signals(vad: VADProcessor, pcm: bytes, rate: int = 16000) -> list[type]:
    result = await run_test(vad, frames_of(pcm, rate=rate))
    return [
        type(f)
        for f in result.downstream
        if isinstance(f, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame))
    ]


async def test_silero_hears_espeak_speech(autojump_clock: trio.testing.MockClock) -> None:
    needs_espeak()
    speech = speak("Hello there. What is the weather like in Paris today?")
    pcm = silence(0.5, 16000) + speech + silence(1.5, 16000)
    vad = silero_vad()
    result = await run_test(vad, frames_of(pcm))
    starts = result.downstream_of(VADUserStartedSpeakingFrame)
    stops = result.downstream_of(VADUserStoppedSpeakingFrame)
    assert len(starts) == 1 and len(stops) == 1, "one utterance, one start and one stop"
    out = result.downstream

    def before(frame: object) -> float:
        return sum(f.duration for f in out[: out.index(frame)] if isinstance(f, InputAudioRawFrame))

    assert 0.5 + 0.2 <= before(starts[0]) <= 0.5 + 0.6  # start_secs after speech began
    # espeak-ng ends sentences with a pause: find where the voice really ends.
    windows = [speech[i : i + 1024] for i in range(0, len(speech), 1024)]
    voiced = [i for i, w in enumerate(windows) if level_dbfs(w) > -45]
    end_of_voice = 0.5 + (voiced[-1] + 1) * 0.032
    assert end_of_voice + 0.8 - 0.1 <= before(stops[0]) <= end_of_voice + 0.8 + 0.4


async def test_silero_two_utterances_and_48k(autojump_clock: trio.testing.MockClock) -> None:
    needs_espeak()
    one = speak("Tell me a joke.", sample_rate=48000)
    two = speak("What is the weather in Oslo?", sample_rate=48000)
    pcm = silence(0.3, 48000) + one + silence(1.5, 48000) + two + silence(1.5, 48000)
    signals = await speaking_signals(silero_vad(), pcm, rate=48000)
    assert signals == [VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame] * 2


@pytest.mark.parametrize(
    "name, pcm",
    [
        ("digital silence", silence(3.0, 16000)),
        ("quiet hiss", white_noise(3.0, amplitude=0.01)),
        ("loud white noise", white_noise(3.0, amplitude=0.5)),
        ("440 Hz tone", tone(440, 3.0)),
        ("1 kHz tone", tone(1000, 3.0)),
        ("3 kHz tone", tone(3000, 3.0, amplitude=0.8)),
        ("a 100 ms click of noise", silence(1.0, 16000) + white_noise(0.1) + silence(1.0, 16000)),
    ],
)
async def test_silero_hears_no_speech_in(
    name: str, pcm: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    assert await speaking_signals(silero_vad(), pcm) == [], name


async def test_silero_quiet_speech_is_below_min_volume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    needs_espeak()
    speech = speak("Hello there, how are you?")
    samples = array("h", speech)
    quiet = array("h", (s // 100 for s in samples)).tobytes()  # -40 dB: about -62 dBFS
    pcm = silence(0.3, 16000) + quiet + silence(1.0, 16000)
    assert await speaking_signals(silero_vad(), pcm) == []
    loud = silence(0.3, 16000) + speech + silence(1.0, 16000)
    assert len(await speaking_signals(silero_vad(), loud)) == 2
