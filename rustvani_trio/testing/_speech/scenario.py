"""A microphone for tests, benchmarks and the demo: PCM fed to a task in real time, with
marks of when speech really started and ended (the first and last audible sample)."""

from __future__ import annotations

from array import array
from collections.abc import Awaitable, Callable

import attrs
import trio

from ...frames import InputAudioRawFrame
from ...task import PipelineTask

__all__ = ["Microphone", "Silence", "Speech", "Until"]

_AUDIBLE = 500  # |sample| above this is speech (about -36 dBFS)


@attrs.frozen
class Speech:
    """Speech to say (mono PCM s16le at the microphone's rate); ``label`` names it in marks."""

    pcm: bytes
    label: str


@attrs.frozen
class Silence:
    seconds: float


@attrs.frozen
class Until:
    """Silence until ``event`` is set, then ``after`` more seconds."""

    event: trio.Event
    after: float = 0.0


def _audible_bounds(pcm: bytes) -> tuple[int, int]:
    samples = array("h", pcm)
    loud = [i for i, s in enumerate(samples) if abs(s) > _AUDIBLE]
    return (loud[0], loud[-1]) if loud else (0, 0)


@attrs.define
class Microphone:
    """Feeds segments in real time, 20 ms at a time: to a task as
    :class:`InputAudioRawFrame` s, or to any ``async def send(pcm)`` (a WebSocket client).

    ``speech_start[label]`` / ``speech_end[label]`` are the times the first and last audible
    samples of each :class:`Speech` were sent (the clock of the run: virtual under a
    MockClock).
    """

    sample_rate: int = 16000
    frame_ms: int = 20
    speech_start: dict[str, float] = attrs.Factory(dict)
    speech_end: dict[str, float] = attrs.Factory(dict)
    done: trio.Event = attrs.Factory(trio.Event)

    async def play(
        self,
        sink: PipelineTask | Callable[[bytes], Awaitable[None]],
        segments: list[Speech | Silence | Until],
    ) -> None:
        step = self.sample_rate * self.frame_ms // 1000
        frame_secs = step / self.sample_rate
        clock = trio.current_time()
        silent = bytes(2 * step)

        async def send(pcm: bytes) -> None:
            nonlocal clock
            if isinstance(sink, PipelineTask):
                frame = InputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate)
                await sink.queue_frame(frame)
            else:
                await sink(pcm)
            clock += frame_secs
            await trio.sleep_until(clock)

        for segment in segments:
            if isinstance(segment, Speech):
                first, last = _audible_bounds(segment.pcm)
                pcm = segment.pcm + bytes(-len(segment.pcm) % (2 * step))
                for i in range(0, len(pcm), 2 * step):
                    lo, hi = i // 2, i // 2 + step
                    if lo <= first < hi:
                        self.speech_start[segment.label] = clock + (first - lo) / self.sample_rate
                    if lo <= last < hi:
                        self.speech_end[segment.label] = clock + (last - lo) / self.sample_rate
                    await send(pcm[i : i + 2 * step])
            elif isinstance(segment, Silence):
                for _ in range(round(segment.seconds / frame_secs)):
                    await send(silent)
            else:
                while not segment.event.is_set():
                    await send(silent)
                for _ in range(round(segment.after / frame_secs)):
                    await send(silent)
        self.done.set()
