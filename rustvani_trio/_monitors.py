"""A task's two monitors: the idle timeout and the heartbeats."""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable

import trio

from ._lifecycle import Phase
from .frames import FrameDirection, HeartbeatFrame
from .processor import FrameProcessor

__all__ = ["Heartbeats", "IdleMonitor"]

logger = logging.getLogger("rustvani_trio")


class IdleMonitor:
    """Calls ``on_idle`` after ``limit`` seconds without :meth:`touch`; stops when it returns
    true (the run is being cancelled), else starts counting again."""

    def __init__(self, owner: str, limit: float) -> None:
        self.owner = owner
        self.limit = limit
        self.last_activity = trio.current_time()

    def touch(self) -> None:
        """Something happened: the idle time starts again."""
        self.last_activity = trio.current_time()

    async def run(self, on_idle: Callable[[], Awaitable[bool]]) -> None:
        while True:
            deadline = self.last_activity + self.limit
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue
            logger.info("%s: idle for %ss", self.owner, self.limit)
            if await on_idle():
                return
            self.touch()


class Heartbeats:
    """Sends a HeartbeatFrame into the pipeline every ``period`` seconds, keeps the latency of
    each that reaches the sink, and warns when none arrived for ``monitor_timeout`` seconds."""

    def __init__(self, owner: str, period: float, monitor_timeout: float) -> None:
        self.owner = owner
        self.period = period
        self.monitor_timeout = monitor_timeout
        self.latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._last = 0.0

    def arrived(self, frame: HeartbeatFrame) -> float:
        """A heartbeat reached the sink: its latency, recorded."""
        self._last = now = trio.current_time()
        latency = now - frame.timestamp
        self.latencies.append(latency)
        return latency

    async def run(self, source: FrameProcessor) -> None:
        """Send heartbeats through ``source`` (the pipeline has started) until the stream ends."""
        self._last = trio.current_time()
        warned = False
        while True:
            await trio.sleep(self.period)
            now = trio.current_time()
            if source._processor_run.phase is not Phase.RUNNING:
                return  # an EndFrame or StopFrame went in: no frame may follow it
            source._enqueue_nowait(HeartbeatFrame(timestamp=now), FrameDirection.DOWNSTREAM)
            stale = now - self._last > self.monitor_timeout
            if stale and not warned:
                logger.warning(
                    "%s: no heartbeat reached the sink for %.1fs; is a processor stuck?",
                    self.owner,
                    now - self._last,
                )
            warned = stale
