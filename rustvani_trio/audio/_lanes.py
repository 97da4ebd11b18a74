"""Waiting for audio still queued in a processor's system lane (a private helper).

Input audio travels as system frames, an EndFrame in the process lane: the EndFrame can
reach ``on_stop`` while audio that arrived before it still waits in the system lane (or is
being analysed). Audio processors call :func:`wait_for_queued_audio` in ``on_stop`` so the
end of the stream is analysed before the stream ends.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..processor import FrameProcessor

__all__ = ["wait_for_queued_audio"]


async def wait_for_queued_audio(
    processor: FrameProcessor, busy: Callable[[], bool], *, limit: float = 5.0
) -> bool:
    """Wait (at most ``limit`` seconds) until ``processor``'s system lane is empty and
    ``busy()`` is false; returns whether it drained in time."""
    with trio.move_on_after(limit):
        # Polled: the lane belongs to the base class, which signals no event when it drains.
        while busy() or processor.statistics().system:  # noqa: ASYNC110
            await trio.sleep(0.001)
        return True
    return False
