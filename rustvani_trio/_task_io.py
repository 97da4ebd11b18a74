"""A task's two helpers at its boundary: the event handlers it calls, and the queue of frames
given to it (fed into the pipeline once it has started; those never delivered are reported)."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .frames import Frame, FrameDirection
from .processor import FrameProcessor

__all__ = ["EVENTS", "EventHandlers", "Handler", "TaskInput"]

logger = logging.getLogger("rustvani_trio")

EVENTS = (
    "on_pipeline_started",
    "on_pipeline_finished",
    "on_error",
    "on_frame_reached_upstream",
    "on_frame_reached_downstream",
    "on_idle_timeout",
    "on_heartbeat",
)

Handler = Callable[..., Awaitable[None] | None]


class EventHandlers:
    """Handlers by event name; each is called with the task first, sync or async, in order.

    Each event's handlers are a tuple replaced on every change, so a handler added or removed
    while the event is being emitted (by a handler, say) takes effect from the next one.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, ...]] = {name: () for name in EVENTS}

    def _check_event(self, event: str) -> None:
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; known events: {', '.join(EVENTS)}")

    def add(self, event: str, handler: Handler) -> None:
        self._check_event(event)
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, got {handler!r:.80}")
        self._handlers[event] = (*self._handlers[event], handler)

    def remove(self, event: str, handler: Handler) -> None:
        """Unregister ``handler`` from ``event`` (its latest registration, if it was added
        more than once); ``ValueError`` if it is not registered there."""
        self._check_event(event)
        handlers = self._handlers[event]
        # The handler itself first; then one equal to it (a bound method made again is equal
        # to, not the same object as, the one registered).
        for same in (lambda h: h is handler, lambda h: h == handler):
            for i in range(len(handlers) - 1, -1, -1):
                if same(handlers[i]):
                    self._handlers[event] = handlers[:i] + handlers[i + 1 :]
                    return
        raise ValueError(f"{handler!r:.80} is not a handler of {event!r}")

    def has(self, event: str) -> bool:
        """Whether ``event`` has a handler."""
        return bool(self._handlers[event])

    async def emit(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result


class TaskInput:
    """The frames queued to a task, in order, until they enter the pipeline."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._send, self._recv = trio.open_memory_channel[tuple[Frame, FrameDirection]](math.inf)
        self._undelivered: list[Frame] = []
        self._pending = 0  # queued and not yet delivered (or set aside)

    @property
    def idle(self) -> bool:
        """Whether every frame queued so far has entered the pipeline (or was set aside)."""
        return not self._pending

    def put(self, frame: Frame, direction: FrameDirection) -> None:
        """Queue a frame (never blocks)."""
        self._send.send_nowait((frame, direction))
        self._pending += 1

    async def feed(
        self, entry: Callable[[FrameDirection], FrameProcessor], cancelling: Callable[[], bool]
    ) -> None:
        """Move the queued frames into the pipeline, through ``entry(direction)``, in order;
        once ``cancelling()``, keep them aside to be reported instead."""
        async for frame, direction in self._recv:
            try:
                if cancelling():
                    self._undelivered.append(frame)
                    continue
                await self.deliver(entry(direction), frame, direction)
            finally:
                self._pending -= 1

    async def deliver(
        self, entry: FrameProcessor, frame: Frame, direction: FrameDirection, *, past: bool = False
    ) -> None:
        """Put ``frame`` into the pipeline at ``entry`` (the task's source or sink), or with
        ``past`` have ``entry`` push it on at once, past its own lanes; one that could not go
        in (the caller was cancelled first) is remembered and reported when the run ends."""
        try:
            if past:
                await entry.push_frame(frame, direction)
            else:
                await entry._enqueue(frame, direction)
        except trio.Cancelled:  # raised only before the frame was sent
            self._undelivered.append(frame)
            raise

    def close(self) -> None:
        """No more frames: the run has ended."""
        self._send.close()

    def report_undelivered(self) -> None:
        """Log (WARNING) the frames the run ended with, never delivered."""
        left = [frame.name for frame in self._undelivered]
        while True:
            try:
                frame, _direction = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            left.append(frame.name)
        self._recv.close()
        if left:
            logger.warning(
                "%s: the run ended with %d queued frames never delivered: %s",
                self.owner,
                len(left),
                ", ".join(left[:10]) + (" ..." if len(left) > 10 else ""),
            )
