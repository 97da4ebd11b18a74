"""The live progress bar (on a terminal) or one line per phase (elsewhere)."""

from __future__ import annotations

import statistics
from typing import TextIO

import trio

__all__ = ["Progress"]

_WIDTH = 24


class Progress:
    """Counts finished requests and redraws one status line while a phase runs.

    On a terminal the line is redrawn in place every ``period`` seconds by :meth:`run`;
    otherwise (a pipe, a log file) one summary line is written when a phase ends. With
    ``stream=None`` nothing is written.
    """

    def __init__(
        self, stream: TextIO | None, *, live: bool | None = None, period: float = 0.2
    ) -> None:
        self.stream = stream
        self.live = bool(stream is not None and stream.isatty()) if live is None else live
        self.period = period
        self.label = ""
        self.total: int | None = None
        self.duration: float | None = None
        self.started = 0.0
        self.ok = 0
        self.failed = 0
        self._ttfts: list[float] = []
        self._drawn = False

    def begin(self, label: str, *, total: int | None, duration: float | None) -> None:
        """A phase starts: ``total`` requests, or requests for ``duration`` seconds."""
        self.label, self.total, self.duration = label, total, duration
        self.started = trio.current_time()
        self.ok = self.failed = 0
        self._ttfts = []
        self._draw()

    def request_done(self, ok: bool, ttft_ms: float | None) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if ok and ttft_ms is not None:
            self._ttfts.append(ttft_ms)

    def end(self) -> None:
        """The phase is over: the line is finished (or written, off a terminal)."""
        if self.stream is None:
            return
        line = self.line(final=True)
        if self.live:
            self.stream.write("\r\x1b[K" + line + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._drawn = False

    def note(self, text: str) -> None:
        """A line of its own between the status lines (a warning for the user)."""
        if self.stream is None:
            return
        self.stream.write(("\r\x1b[K" if self.live else "") + text + "\n")
        self.stream.flush()

    def line(self, *, final: bool = False) -> str:
        """The status line."""
        elapsed = trio.current_time() - self.started
        done = self.ok + self.failed
        if self.total:
            fraction = min(1.0, done / self.total)
            count = f"{done}/{self.total}"
        elif self.duration:
            fraction = min(1.0, elapsed / self.duration)
            count = f"{done} done"
        else:
            fraction, count = 1.0, f"{done} done"
        if final:
            fraction = 1.0
        filled = round(fraction * _WIDTH)
        bar = "#" * filled + "." * (_WIDTH - filled)
        ttft = ""
        if self._ttfts:
            ttft = f"  TTFT p50 {statistics.median(self._ttfts):.1f} ms"
        return (
            f"{self.label:<18} [{bar}] {count}  ok {self.ok}  errors {self.failed}"
            f"{ttft}  {elapsed:.1f}s"
        )

    def _draw(self) -> None:
        if self.stream is not None and self.live:
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self._drawn = True

    async def run(self) -> None:
        """Redraw the line until cancelled (only on a terminal)."""
        if not self.live:
            await trio.sleep_forever()
        while True:
            await trio.sleep(self.period)
            if self.label:
                self._draw()
