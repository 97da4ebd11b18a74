"""What a processor says when it is pushed to in a way that cannot be what its author meant
(a mixin of :class:`~rustvani_trio.processor.FrameProcessor`): the same frame pushed twice
in a row, and the pipecat transform habit. Each is warned about once per processor, then
logged at DEBUG."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .frames import Frame, FrameDirection

__all__ = ["PushMisuse"]

logger = logging.getLogger("rustvani_trio")


class PushMisuse:
    """The slow paths of :meth:`FrameProcessor.push_frame` that report a misuse."""

    if TYPE_CHECKING:
        name: str
        _super_forwarded: Frame | None
        _warned_misuse: bool

    def _after_super(self, frame: Frame) -> None:
        """A push right after ``super().process_frame()`` forwarded a frame, while the same
        frame is handled: another frame of the same type is the pipecat transform habit
        (pipecat's base class does not forward), which sends both frames. Warned once."""
        forwarded, self._super_forwarded = self._super_forwarded, None
        if frame is forwarded or type(frame) is not type(forwarded):
            return
        self._warn_misuse(
            "%s called super().process_frame(), which forwards the %s it is given, and then "
            "pushed another %s: both went out. The base class forwards the frame here "
            "(pipecat's does not): a processor that transforms frames should not call it",
            self.name,
            frame.name,
            frame.name,
        )

    def _warn_misuse(self, message: str, *args: object) -> None:
        """Log a misuse of pushing: a warning the first time, at DEBUG after that."""
        log = logger.debug if self._warned_misuse else logger.warning
        self._warned_misuse = True
        log(message, *args)

    async def _pushed_twice(self, frame: Frame, direction: FrameDirection) -> None:
        await trio.lowlevel.checkpoint()
        self._warn_misuse(
            "%s pushed the same %s %s twice in a row; the second push was dropped (the base "
            "class's process_frame already forwards the frame it is given: do not call "
            "super().process_frame() and then push_frame() with the same frame)",
            self.name,
            frame.name,
            direction.value,
        )
