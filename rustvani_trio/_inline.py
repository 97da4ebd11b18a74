"""Inline processors: synchronous transforms, filters and taps that run in the task of the
neighbour that pushes to them, without lanes or tasks of their own.

A frame pushed to an :class:`InlineProcessor` is handled at once, in the pusher's task: its
:meth:`~InlineProcessor.process` returns what to forward, and what it returns goes straight on
(through the inline processors after it, if any) to the next processor with lanes, which the
pusher delivers it to like any push (with backpressure). A chain of inline processors costs a
few function calls per frame, not a channel hop each.

The guarantees of a processor hold because nothing inline can wait: frames are handled in the
order they are pushed (per direction, and system frames in the order their pusher sends
them), an interruption or a cancel goes through at once (there is no lane to drain and no
work in flight) after the synchronous hook, an exception becomes an ErrorFrame upstream naming
the processor, and the lifecycle (refusing frames before the StartFrame and after the
EndFrame, the hooks, the cancel hook owed after a run) is the one of any processor.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._lifecycle import Phase
from ._processor_run import ProcessorRun
from ._run_base import RunBase
from .frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    InterruptionFrame,
    StartFrame,
    StopFrame,
    SystemFrame,
)
from .processor import YIELD_EVERY, FrameProcessor, ProcessorNotLinkedError

__all__ = ["InlineOutput", "InlineProcessor", "InlineRun"]

logger = logging.getLogger("rustvani_trio")

InlineOutput: TypeAlias = Frame | Sequence[Frame] | None
"""What an inline processor's hooks return: one frame, several (in order), or ``None``."""

_DOWN = FrameDirection.DOWNSTREAM
_UP = FrameDirection.UPSTREAM
_ENDS = (EndFrame, StopFrame)
_LIFECYCLE = (StartFrame, CancelFrame, InterruptionFrame)
_SPECIAL = (SystemFrame, EndFrame, StopFrame)
_RUNNING, _ENDED, _CANCELLED = Phase.RUNNING, Phase.ENDED, Phase.CANCELLED
_ASYNC_HOOKS = ("process_frame", "on_start", "on_stop", "on_cancel", "on_interruption")
_SYNC_HOOKS = ("process", "started", "ending", "interrupted", "cancelled")


class InlineProcessor(FrameProcessor):
    """A processor that runs in the task of whoever pushes to it: a synchronous transform,
    filter or tap, cheaper than a processor with lanes (no channel, no task switch).

    Override :meth:`process`, and the synchronous hooks :meth:`started`, :meth:`ending`,
    :meth:`interrupted` and :meth:`cancelled` if needed::

        class Shout(InlineProcessor):
            def process(self, frame, direction):
                if isinstance(frame, LLMText):
                    return attrs.evolve(frame, text=frame.text.upper())
                return frame

    Everything runs synchronously in the pusher's task, so an inline processor cannot await
    (its methods must be plain functions: a coroutine function is refused when the class is
    defined), and a slow one slows the processor upstream of it: keep it to cheap,
    non-blocking work; anything that waits (I/O, a model, a sleep) belongs in a
    :class:`FrameProcessor`. It has no lanes, so ``max_buffer`` means nothing for it and its
    :meth:`statistics` are zeros; ``process_frame`` and the asynchronous hooks of
    :class:`FrameProcessor` are not used (overriding them is refused).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _ASYNC_HOOKS:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {name}(), which an InlineProcessor never calls: "
                    "override process() and the synchronous hooks started(), ending(), "
                    "interrupted() and cancelled() instead (or derive from FrameProcessor)"
                )
        for name in _SYNC_HOOKS:
            fn = cls.__dict__.get(name)
            if fn is not None and (
                inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
            ):
                raise TypeError(
                    f"{cls.__name__}.{name}() must be a plain function: an inline processor "
                    "runs in its upstream neighbour's task and cannot await (derive from "
                    "FrameProcessor for work that waits)"
                )

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)

    def _new_run(self, nursery: trio.Nursery | None) -> RunBase:
        return InlineRun(self, nursery)

    def process(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        """Handle one frame (any but the lifecycle frames, which the framework handles with
        the hooks below) and return what to forward in ``direction``: the frame itself, a
        different one, several (a sequence, in order), or ``None`` to drop it. The default
        forwards the frame. An exception is reported as an ErrorFrame upstream and the frame
        goes no further."""
        return frame

    def started(self, frame: StartFrame) -> None:
        """Called when the StartFrame arrives, before it is forwarded. An exception is fatal
        (as in ``on_start``)."""

    def ending(self, frame: EndFrame) -> InlineOutput:
        """Called when the EndFrame arrives; what it returns is forwarded before the EndFrame
        (flush what was held back here)."""
        return None

    def interrupted(self, frame: InterruptionFrame) -> None:
        """Called when an InterruptionFrame arrives, before it is forwarded (drop what was
        held back here)."""

    def cancelled(self, frame: CancelFrame) -> None:
        """Called once when the run is cancelled, if this processor started (also after a
        run that ended without the CancelFrame reaching it)."""


async def _deliver(last: FrameProcessor, frame: Frame, direction: FrameDirection) -> None:
    """Deliver a frame that leaves an inline chain at ``last`` to the processor with lanes
    beyond it (what :meth:`FrameProcessor.push_frame` does after its checks)."""
    dest = last._next if direction is _DOWN else last._prev
    if dest is None:
        await last._push_past_edge(frame, direction)
        return
    run = dest._processor_run
    assert isinstance(run, ProcessorRun)
    if run.needs_room(frame, direction):
        await run.wait_for_room()
    run.put(frame, direction)
    if last._observers:
        last._notify_observers(frame, direction, dest)
    last._unyielded += 1
    if last._unyielded >= YIELD_EVERY:
        last._unyielded = 0
        await cancel_shielded_checkpoint()


def _deliver_nowait(last: FrameProcessor, frame: Frame, direction: FrameDirection) -> None:
    """:func:`_deliver` without waiting."""
    dest = last._next if direction is _DOWN else last._prev
    if dest is None:
        raise ProcessorNotLinkedError(
            f"{last.name} has no {direction.value} neighbour for {frame.name}"
        )
    dest._processor_run.take_nowait(frame, direction)
    if last._observers:
        last._notify_observers(frame, direction, dest)


def _chain_end(proc: FrameProcessor, direction: FrameDirection) -> FrameProcessor:
    """The last inline processor of the chain starting at ``proc`` in ``direction``."""
    while True:
        nxt = proc._next if direction is _DOWN else proc._prev
        if not isinstance(nxt, InlineProcessor):
            return proc
        proc = nxt


class InlineRun(RunBase):
    """One run of an inline processor: its phase, and the synchronous handling of a frame."""

    inline = True

    def __init__(self, proc: InlineProcessor, nursery: trio.Nursery | None) -> None:
        super().__init__(proc, nursery)
        self.iproc = proc
        # The end of the inline chain each way: what leaves it is delivered from there.
        self.last_down = _chain_end(proc, _DOWN)
        self.last_up = _chain_end(proc, _UP)
        self.chain_down: list[InlineRun] | None = None
        self.chain_up: list[InlineRun] | None = None
        # ``process``, or None where the class keeps the default (which forwards unchanged).
        overridden = type(proc).process is not InlineProcessor.process
        self.process: Callable[[Frame, FrameDirection], InlineOutput] | None = (
            proc.process if overridden else None
        )

    # ------------------------------------------------------------------ taking frames in

    def chain_exit(self, direction: FrameDirection) -> FrameProcessor:
        return self.last_down if direction is _DOWN else self.last_up

    async def take(self, frame: Frame, direction: FrameDirection) -> None:
        left = self.flow(frame, direction)
        if isinstance(left, list):
            await self.deliver_all(left, direction)
        elif left is not None:
            await _deliver(self.chain_exit(direction), left, direction)

    async def deliver_all(self, frames: list[Frame], direction: FrameDirection) -> None:
        last = self.chain_exit(direction)
        await _deliver(last, frames[0], direction)
        for more in frames[1:]:
            await checkpoint_if_cancelled()  # as for each push of a processor
            await _deliver(last, more, direction)

    def take_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        left = self.flow(frame, direction)
        last = self.chain_exit(direction)
        for item in left if isinstance(left, list) else () if left is None else (left,):
            _deliver_nowait(last, item, direction)

    async def enqueue(self, frame: Frame, direction: FrameDirection) -> None:
        await checkpoint_if_cancelled()
        await self.take(frame, direction)
        await trio.lowlevel.cancel_shielded_checkpoint()

    enqueue_nowait = take_nowait

    # ------------------------------------------------------------------ handling

    def flow(
        self,
        frame: Frame,
        direction: FrameDirection,
        i: int = 0,
        chain: list[InlineRun] | None = None,
    ) -> Frame | list[Frame] | None:
        """Pass ``frame`` through this inline processor and those after it (``chain[i:]``):
        what leaves the chain, one frame, several or none. One loop for the common case of
        one frame in, one out; a recursion per frame where a processor returns several."""
        if chain is None:
            chain = self.chain_down if direction is _DOWN else self.chain_up
            if chain is None:
                chain = self._resolve_chain(direction)
        n = len(chain)
        observers = bool(self.iproc._observers)
        down = direction is _DOWN
        plain = down and not isinstance(frame, _SPECIAL)
        while i < n:
            run = chain[i]
            if i and observers:
                chain[i - 1].iproc._notify_observers(frame, direction, run.iproc)
            i += 1
            if plain and run.phase is _RUNNING:
                process = run.process
                if process is None:  # the default: forward unchanged
                    continue
                try:
                    result = process(frame, direction)
                except Exception as exc:
                    run._report(exc, frame)
                    return None
            else:
                result = run._stage(frame, direction)
            if result is frame:
                continue
            if isinstance(result, Frame):
                frame = result
                plain = down and not isinstance(frame, _SPECIAL)
                continue
            if result is None:
                return None
            out: list[Frame] = []
            for item in run._frames_of(result, frame):
                left = self.flow(item, direction, i, chain)
                if isinstance(left, list):
                    out.extend(left)
                elif left is not None:
                    out.append(left)
            return out or None
        return frame

    def _resolve_chain(self, direction: FrameDirection) -> list[InlineRun]:
        """This run and those of the inline processors after it in ``direction`` (read once
        per run, when every processor of the run has its run)."""
        chain: list[InlineRun] = [self]
        proc: FrameProcessor = self.iproc
        while True:
            nxt = proc._next if direction is _DOWN else proc._prev
            if nxt is None or not isinstance(nxt._processor_run, InlineRun):
                break
            chain.append(nxt._processor_run)
            proc = nxt
        if direction is _DOWN:
            self.chain_down = chain
        else:
            self.chain_up = chain
        return chain

    def _stage(self, frame: Frame, direction: FrameDirection) -> InlineOutput:
        """Everything but a plain frame travelling downstream: what to forward from here."""
        if isinstance(frame, SystemFrame):
            if isinstance(frame, _LIFECYCLE):
                return self._lifecycle(frame)
        elif direction is _DOWN:
            if self.phase is not _RUNNING:
                self._refuse(frame)
                return None
            if isinstance(frame, _ENDS):
                return self._end(frame)
        else:
            if not self.phase.takes_upstream:
                self._refuse(frame)
                return None
            if isinstance(frame, _ENDS):  # not shown to process(), as in any processor
                return frame
        try:
            return self.iproc.process(frame, direction)
        except Exception as exc:
            self._report(exc, frame)
            return None

    def _frames_of(self, result: InlineOutput, source: Frame) -> Sequence[Frame]:
        """``result`` (not a single frame) as frames to forward; what is not frames is
        reported and nothing is forwarded."""
        if isinstance(result, str | bytes) or not isinstance(result, Sequence):
            problem = f"returned {result!r:.80}"
        elif all(isinstance(item, Frame) for item in result):
            if len({id(item) for item in result}) < len(result):
                return self._once_each(result)
            return result
        else:
            bad = next(item for item in result if not isinstance(item, Frame))
            problem = f"returned {bad!r:.80} among its frames"
        self._report(
            TypeError(
                f"{self.iproc.name} {problem}; an inline processor returns a Frame, a "
                "sequence of frames, or None"
            ),
            source,
        )
        return ()

    def _once_each(self, frames: Sequence[Frame]) -> list[Frame]:
        """``frames`` with each frame once: a frame goes out once, as for any push (warned
        once per processor; make another frame, ``attrs.evolve(frame)``, to send two)."""
        unique: dict[int, Frame] = {}
        repeated = frames[0]
        for item in frames:
            if id(item) in unique:
                repeated = item
            unique.setdefault(id(item), item)
        self.iproc._warn_misuse(
            "%s returned the same %s twice; it goes out once (return another frame, "
            "attrs.evolve(frame), to send two)",
            self.iproc.name,
            repeated.name,
        )
        return list(unique.values())

    def _lifecycle(self, frame: SystemFrame) -> Frame | None:
        proc = self.iproc
        if isinstance(frame, StartFrame):
            if self.start_frame is not None:
                self._error(f"{proc.name} received a second StartFrame; ignored")
                return None
            if self.phase.cancelling:
                return None
            self.phase = _RUNNING
            self.start_frame = frame
            try:
                proc.started(frame)
            except Exception as exc:
                self._report(exc, frame, fatal=True)
        elif isinstance(frame, CancelFrame):
            if self.phase is _CANCELLED:
                return None
            self.phase = _CANCELLED
            if self.start_frame is not None:
                try:
                    proc.cancelled(frame)
                except Exception as exc:
                    self._report(exc, frame)
        elif isinstance(frame, InterruptionFrame):
            try:
                proc.interrupted(frame)
            except Exception as exc:
                self._report(exc, frame)
        return frame

    def _end(self, frame: Frame) -> InlineOutput:
        """An EndFrame or StopFrame travelling downstream: the stream ends here."""
        self.phase = _ENDED
        if not isinstance(frame, EndFrame):
            return frame
        try:
            flushed = self.iproc.ending(frame)
        except Exception as exc:
            self._report(exc, frame)
            return frame
        if flushed is None:
            return frame
        if isinstance(flushed, Frame):
            return [flushed, frame]
        return [*self._frames_of(flushed, frame), frame]

    def _refuse(self, frame: Frame) -> None:
        """A frame arrived when the processor cannot take it: say so, never drop silently."""
        name = self.iproc.name
        if self.phase.cancelling:
            logger.debug("%s: dropped %s after CancelFrame", name, frame.name)
            return
        if self.phase is Phase.IDLE:
            why = "before StartFrame (did an upstream processor forget to forward it?)"
        else:
            why = "after EndFrame (it was pushed after the end of the stream)"
        message = f"{name} received {frame.name} {why}; the frame was dropped"
        logger.error(message)
        self._error(message)

    def _report(self, exc: Exception, frame: Frame, *, fatal: bool = False) -> None:
        self._send_up(self.error_frame(exc, frame, fatal=fatal))

    def _error(self, message: str) -> None:
        self._send_up(ErrorFrame(error=message, processor=self.iproc.name))

    def _send_up(self, error: ErrorFrame) -> None:
        """An error goes upstream at once, whichever way the frame that caused it went."""
        proc = self.iproc
        if proc._prev is not None:
            proc.push_frame_nowait(error, _UP)
        else:
            logger.error("%s: %s", proc.name, error.error)

    async def cancel_hook_after_run(self, reason: str) -> None:
        if not self.owes_cancel_hook():
            return
        self.phase = _CANCELLED
        try:
            self.iproc.cancelled(CancelFrame(reason=reason))
        except Exception as exc:
            logger.warning("%s: cancelled() failed: %s", self.iproc.name, exc, exc_info=exc)
        await trio.lowlevel.checkpoint()
