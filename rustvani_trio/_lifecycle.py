"""The lifecycle states of a processor and of a pipeline task, and how a run ended.

Each is one explicit state instead of a set of flags that must agree: a processor's
:class:`Phase` says which frames it takes and which hook is still owed; a task's
:class:`TaskPhase` says how far its run has got; :class:`RunEnd` is written once, when the run
ends.
"""

from __future__ import annotations

import enum

import attrs

from .frames import ErrorFrame

__all__ = ["Phase", "RunEnd", "TaskPhase"]


class Phase(enum.Enum):
    """Where one processor is in its run. Transitions happen as frames are *enqueued* (so the
    lanes refuse the right frames at once), except the last two steps, taken as the hooks run.

    ``IDLE -> RUNNING`` (StartFrame) ``-> ENDING`` (EndFrame or StopFrame queued downstream)
    ``-> ENDED`` (forwarded downstream: no cancel hook is owed); from any of them
    ``-> CANCELLING`` (CancelFrame arrived) ``-> CANCELLED`` (the cancel hook was run or is
    running).
    """

    IDLE = "idle"
    """No StartFrame yet: every frame is refused (and reported)."""
    RUNNING = "running"
    """Takes frames both ways."""
    ENDING = "ending"
    """An EndFrame/StopFrame is queued: only upstream frames are taken."""
    ENDED = "ended"
    """The EndFrame/StopFrame went on downstream: only upstream frames are taken."""
    CANCELLING = "cancelling"
    """A CancelFrame arrived: nothing is taken (frames are dropped quietly); the cancel hook is
    owed if the processor started."""
    CANCELLED = "cancelled"
    """The cancel hook has been claimed: it runs, or ran, exactly once."""

    @property
    def takes_upstream(self) -> bool:
        """Whether frames travelling upstream are taken into the process lane."""
        return self is Phase.RUNNING or self is Phase.ENDING or self is Phase.ENDED

    @property
    def cancelling(self) -> bool:
        """Whether a CancelFrame has arrived."""
        return self is Phase.CANCELLING or self is Phase.CANCELLED


class TaskPhase(enum.Enum):
    """Where a :class:`~rustvani_trio.task.PipelineTask` is.

    ``NEW -> RUNNING -> (ENDING | STOPPING | CANCELLING) -> FINISHED``; a cancel may also
    follow ENDING or STOPPING (the run then ends by whichever finishes first).
    """

    NEW = "new"
    RUNNING = "running"
    ENDING = "ending"
    """An EndFrame reached the sink; upstream frames still in flight are being flushed."""
    STOPPING = "stopping"
    """A StopFrame reached the sink; upstream frames are being flushed."""
    CANCELLING = "cancelling"
    """A CancelFrame is on its way (or the watchdog will end the run)."""
    FINISHED = "finished"


@attrs.frozen
class RunEnd:
    """How a run ended, written once when it does.

    Attributes:
        reason: ``"end"``, ``"stop"``, ``"cancel"`` (with the cancel's reason after a colon),
            or ``"error"``.
        fatal: the fatal ErrorFrame that ended the run, if one did.
    """

    reason: str
    fatal: ErrorFrame | None = None
