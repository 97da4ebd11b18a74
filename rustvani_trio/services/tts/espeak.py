"""Offline text-to-speech with espeak-ng (extra ``tts-espeak``): for demos and tests.

espeak-ng is a Debian package (``apt-get install espeak-ng``), run as a subprocess per
sentence; its WAV output is read as it is produced and pushed as audio frames at once. Its
robotic voice is intelligible and fast (about 50 times real time here), which is all a demo
or a test needs. Not for production: use a provider (Deepgram, Sarvam) there.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import trio

from ...frames import StartFrame
from ._base import TTSService

__all__ = ["ESPEAK_SAMPLE_RATE", "EspeakTTSService", "available"]

ESPEAK_SAMPLE_RATE = 22050
"""espeak-ng's output rate."""


def available() -> bool:
    """Whether the ``espeak-ng`` program is installed."""
    return shutil.which("espeak-ng") is not None


class EspeakTTSService(TTSService):
    """Offline TTS (see :class:`TTSService` for the frames). Sentences are synthesised one
    after another by a worker task, so text keeps flowing in while audio comes out.

    Args:
        voice: an espeak-ng voice, e.g. ``"en-us"``, ``"en-gb"``, ``"hi"``.
        words_per_minute: speaking rate.
    """

    def __init__(
        self, *, voice: str = "en-us", words_per_minute: int = 165, name: str | None = None
    ) -> None:
        super().__init__(sample_rate=ESPEAK_SAMPLE_RATE, name=name)
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise RuntimeError(
                "espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)"
            )
        self._exe = exe
        self.voice = voice
        self.words_per_minute = words_per_minute
        self._jobs: list[str] = []
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._job_scope: trio.CancelScope | None = None

    async def on_start(self, frame: StartFrame) -> None:
        await super().on_start(frame)
        self._jobs.clear()  # (left by a run cancelled mid-answer)
        self._idle = trio.Event()
        self._idle.set()
        await self.start_task(self._worker)

    # ------------------------------------------------------------------ TTSService

    async def run_tts(self, text: str) -> None:
        self._jobs.append(text)
        self._idle = trio.Event()
        self._wake.set()

    async def flush_tts(self) -> None:
        await self._idle.wait()

    async def stop_tts(self) -> None:
        self._jobs.clear()
        if self._job_scope is not None:
            self._job_scope.cancel()
        self._idle.set()

    # ------------------------------------------------------------------ the worker

    async def _worker(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            if not self._jobs:
                self._idle.set()
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            text = self._jobs.pop(0)
            generation = self.generation
            with trio.CancelScope() as scope:
                self._job_scope = scope
                try:
                    await self._synthesise(text, generation)
                except (OSError, RuntimeError) as exc:
                    await self.push_error(f"{self.name}: espeak-ng failed: {exc}")
            self._job_scope = None

    async def _synthesise(self, text: str, generation: int) -> None:
        command = [
            self._exe,
            "-v",
            self.voice,
            "-s",
            str(self.words_per_minute),
            "--stdout",
            "--",
            text,
        ]
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            header = bytearray()
            in_data = False
            while data := await process.stdout.receive_some(32768):
                chunk = bytes(data)
                if not in_data:
                    header += chunk
                    offset = _data_offset(header)
                    if offset is None:
                        continue
                    in_data, chunk = True, bytes(header[offset:])
                if chunk and not await self.push_audio(chunk, generation):
                    return
            errors = await process.stderr.receive_some(4096)
            if await process.wait() != 0:
                raise RuntimeError(
                    errors.decode(errors="replace").strip() or f"exit {process.returncode}"
                )
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await process.wait()


def _data_offset(header: bytes | bytearray) -> int | None:
    """Where the PCM starts in a streamed WAV header, or ``None`` until it is complete."""
    pos = 12
    while pos + 8 <= len(header):
        chunk_id = bytes(header[pos : pos + 4])
        if chunk_id == b"data":
            return pos + 8
        (size,) = struct.unpack_from("<I", header, pos + 4)
        pos += 8 + size + (size & 1)
    return None
