"""One stopwatch for a processor's timers (time to first byte, processing time)."""

from __future__ import annotations

import trio

__all__ = ["Stopwatch"]


class Stopwatch:
    """Times one measurement at a time, on ``trio.current_time()`` (virtual under MockClock)."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since: float | None = None

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._since is not None

    def start(self) -> None:
        """Start (or restart) timing."""
        self._since = trio.current_time()

    def stop(self) -> float | None:
        """Stop timing; the seconds since :meth:`start`, or ``None`` if it was not running."""
        since, self._since = self._since, None
        return None if since is None else trio.current_time() - since
