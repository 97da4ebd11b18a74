"""Regression tests for the runtime items of issue 9 (hardening), one section per item.

Each test fails on the code before its fix. Clocks are virtual (``autojump_clock``).
"""

from __future__ import annotations

import attrs
import trio
import trio.testing
from conftest import live

from rustvani_trio import (
    DataFrame,
    Frame,
    FrameDirection,
    FrameProcessor,
    InterruptionFrame,
    TextFrame,
    UninterruptibleFrame,
)

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM


def names(frames: list[Frame]) -> list[str]:
    return [getattr(f, "text", None) or f.name for f in frames]


@attrs.frozen(kw_only=True)
class Slow(DataFrame, UninterruptibleFrame):
    """A frame whose handling takes a while and must not be cut short."""


class Injector(FrameProcessor):
    """On TextFrame "go": pushes an InterruptionFrame, then TextFrame "new", at once."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TextFrame) and frame.text == "go":
            await self.push_frame(InterruptionFrame())
            await self.push_frame(TextFrame(text="new"))
        else:
            await self.push_frame(frame, direction)


# =========================================================================== 12


class SlowWorker(FrameProcessor):
    """Takes 1 s over a Slow frame; forwarding an interruption takes it 2 s."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, Slow):
            await trio.sleep(1)
        await self.push_frame(frame, direction)

    async def on_interruption(self, frame: InterruptionFrame) -> None:
        await trio.sleep(2)


async def test_no_output_overtakes_an_interruption_arriving_during_an_uninterruptible_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 9.12: the process loop used to go straight on to the next frame after the
    uninterruptible one, so "new" (pushed after the interruption) left before it."""
    head, worker = Injector(name="head"), SlowWorker(name="worker")
    async with live([head, worker]) as run:
        await run.send(Slow())
        await trio.sleep(0.2)  # the worker is inside the Slow frame
        await run.send(TextFrame(text="go"))
        await run.wait_down(TextFrame)
    got = names(run.downstream)
    assert got == ["StartFrame", "Slow", "InterruptionFrame", "new", "EndFrame"]
    assert run.errors == []


async def test_an_uninterruptible_frame_queued_behind_one_is_handled_after_the_interruption(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The interruption arrives while the worker handles a Slow frame with another queued
    behind it: the queued one survives the drain and is handled once the interruption has
    gone on, before the frame pushed after the interruption."""
    head, worker = Injector(name="head"), SlowWorker(name="worker")
    async with live([head, worker]) as run:
        await run.send(Slow(), Slow())  # the second waits in the worker's lane
        await trio.sleep(0.5)
        await run.send(TextFrame(text="go"))
        await run.wait_down(TextFrame)
    assert names(run.downstream) == [
        "StartFrame",
        "Slow",
        "InterruptionFrame",
        "Slow",
        "new",
        "EndFrame",
    ]
