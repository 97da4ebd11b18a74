"""A processor's two inbound lanes, the downstream gate, and the drain.

* The **system lane**: an unbounded queue; its sender never waits.
* The **process lane**: one unbounded queue for both directions, FIFO. Backpressure is a gate
  on the downstream direction only: a sender of a downstream frame parks (on a
  :class:`~trio.lowlevel.ParkingLot`) while ``max_buffer`` downstream frames already wait.
  Upstream frames never wait, so there is no cycle of blocking sends.

Each lane is a :class:`Lane`: what an unbounded trio memory channel with one receiver does,
without its generality (several receivers, closing, cloning), so that putting a frame is an
append and taking one that is there is a ``popleft``, with no exception raised on the way.
* The **drain** empties the process lane when an interruption or a cancel arrives, keeping
  the frames that must survive an interruption.

Each item of the process lane carries, besides the frame and its direction, how many system
frames had arrived before it (its *mark*): the process loop handles a frame only once that
many system frames have been handled, so a frame never overtakes a system frame that arrived
before it.

The processor reads and writes these fields directly on its hot path; the methods here are the
slow paths (waiting for room, draining) and :meth:`Lanes.statistics`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Generic, TypeVar

import attrs
import trio
from trio.lowlevel import (
    Abort,
    ParkingLot,
    Task,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .frames import Frame, FrameDirection

__all__ = ["Item", "Lane", "LaneStatistics", "Lanes", "SystemItem"]

logger = logging.getLogger("rustvani_trio")

_DOWN = FrameDirection.DOWNSTREAM
SystemItem = tuple[Frame, FrameDirection]
Item = tuple[Frame, FrameDirection, int]
"""A process-lane item: the frame, its direction, and its mark (system frames before it)."""
T = TypeVar("T")


class Lane(Generic[T]):
    """An unbounded FIFO with one reader: :meth:`put` never waits; the reader takes what is
    there from :attr:`items` (``popleft``) and waits with :meth:`wait` (or both: :meth:`get`);
    a wait it makes itself sets :attr:`waiter` and uses :meth:`abort`."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self.waiter: Task | None = None

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: T) -> None:
        """Append ``item``, waking the reader if it waits."""
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            reschedule(waiter)

    async def get(self) -> T:
        """The oldest item, waiting for one if there is none (a cancel point only then)."""
        items = self.items
        while not items:
            await self.wait()
        return items.popleft()

    async def wait(self) -> None:
        """Wait until an item is put (the lane may have been emptied again by then)."""
        self.waiter = current_task()
        await wait_task_rescheduled(self.abort)

    def abort(self, _raise_cancel: object) -> Abort:
        """The reader's wait was cancelled (its ``abort_func``)."""
        self.waiter = None
        return Abort.SUCCEEDED


@attrs.frozen(kw_only=True)
class LaneStatistics:
    """A snapshot of one processor's lanes (see
    :meth:`~rustvani_trio.processor.FrameProcessor.statistics`).

    Attributes:
        system: frames waiting in the system lane.
        process: control and data frames waiting in the process lane (both directions).
        downstream_waiting: of those, the ones travelling downstream (at most ``max_buffer``).
        max_buffer: the downstream bound of the process lane.
        blocked_senders: senders waiting for room in the process lane.
        dropped: frames an interruption took out of this processor's way in this run: drained
            from the process lane, or whose handling it cut short (a cancel's drops are not
            counted: dropping everything is what it means).
    """

    system: int
    process: int
    downstream_waiting: int
    max_buffer: int
    blocked_senders: int
    dropped: int


class Lanes:
    """The lanes of one processor for one run."""

    __slots__ = (
        "blocked",
        "down_pending",
        "dropped",
        "max_buffer",
        "owner",
        "process",
        "space",
        "system",
    )

    def __init__(self, owner: str, max_buffer: int) -> None:
        self.owner = owner
        self.max_buffer = max_buffer
        self.system: Lane[SystemItem] = Lane()
        self.process: Lane[Item] = Lane()
        self.down_pending = 0
        """Downstream frames in the process lane (the gate counts these)."""
        self.space = ParkingLot()
        """Senders waiting for room in the process lane."""
        self.blocked = 0
        """How many senders wait in :attr:`space` (or were just woken there): read per
        frame, where ``bool(space)`` would be a call."""
        self.dropped = 0

    async def wait_for_room(self) -> None:
        """Park until a downstream frame left the lane (or the lane was drained).

        Raises ``trio.Cancelled`` if the sender was cancelled meanwhile, handing the wake-up on
        to the next sender: a cancelled sender must not emit (an interruption may already have
        gone on downstream, so its frame would pass for a new one).
        """
        self.blocked += 1
        try:
            await self.space.park()
        finally:
            self.blocked -= 1
        try:
            await checkpoint_if_cancelled()
        except trio.Cancelled:
            self.space.unpark()
            raise

    def drain(self, keep: type | tuple[type, ...] | None) -> None:
        """Empty the process lane, keeping the frames of the types ``keep`` in order.

        With ``keep`` (an interruption), each frame dropped is counted and logged at DEBUG;
        without it (a cancel), one DEBUG line says how many were dropped.
        """
        items = self.process.items
        if not items and not self.blocked:  # (every processor an interruption passes)
            self.down_pending = 0
            return
        kept: list[Item] = []
        dropped = 0
        while items:
            item = items.popleft()
            if keep is not None and isinstance(item[0], keep):
                kept.append(item)
            elif keep is not None:
                self.count_drop(item[0], "drained from the process lane")
            else:
                dropped += 1
        if dropped:
            logger.debug("%s: a CancelFrame dropped %d queued frames", self.owner, dropped)
        self.down_pending = 0
        for item in kept:
            if item[1] is _DOWN:
                self.down_pending += 1
            items.append(item)
        self.space.unpark_all()

    def count_drop(self, frame: Frame, how: str) -> None:
        """Record one frame dropped by an interruption."""
        self.dropped += 1
        logger.debug("%s: an interruption dropped %s (%s)", self.owner, frame.name, how)

    def statistics(self) -> LaneStatistics:
        """A frozen snapshot of the lanes."""
        return LaneStatistics(
            system=len(self.system),
            process=len(self.process),
            downstream_waiting=self.down_pending,
            max_buffer=self.max_buffer,
            blocked_senders=len(self.space),
            dropped=self.dropped,
        )
