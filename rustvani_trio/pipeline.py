"""Pipeline: a processor made of processors, linked in order. Pipelines nest.

A pipeline adds no hop of its own: linking flattens it, so a frame leaving one inner processor
goes straight to the next one, and a frame leaving the last inner processor reaches the
pipeline's downstream neighbour directly. Nesting is free at run time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from .frames import Frame, FrameDirection
from .processor import FrameProcessor

__all__ = ["Pipeline"]


class Pipeline(FrameProcessor):
    """Processors linked in order: ``Pipeline([a, b, c])`` sends a's output to b, then c.

    A Pipeline is itself a processor and can be an element of another Pipeline. An empty
    pipeline forwards frames unchanged.
    """

    def __init__(self, processors: Iterable[FrameProcessor], *, name: str | None = None) -> None:
        super().__init__(name=name)
        procs = list(processors)
        for p in procs:
            if not isinstance(p, FrameProcessor):
                raise TypeError(f"Pipeline elements must be FrameProcessors, got {p!r}")
        if len(set(map(id, procs))) != len(procs):
            raise ValueError("a processor may appear only once in a pipeline")
        if not procs:
            procs = [FrameProcessor(name=f"{self.name}.passthrough")]
        self.processors: list[FrameProcessor] = procs
        for upstream, downstream in itertools.pairwise(procs):
            upstream.link(downstream)

    def _first_leaf(self) -> FrameProcessor:
        return self.processors[0]._first_leaf()

    def _last_leaf(self) -> FrameProcessor:
        return self.processors[-1]._last_leaf()

    def _leaves(self) -> Iterator[FrameProcessor]:
        for p in self.processors:
            yield from p._leaves()

    async def _enqueue(self, frame: Frame, direction: FrameDirection) -> None:
        entry = self._first_leaf() if direction is FrameDirection.DOWNSTREAM else self._last_leaf()
        await entry._enqueue(frame, direction)

    def _enqueue_nowait(self, frame: Frame, direction: FrameDirection) -> None:
        entry = self._first_leaf() if direction is FrameDirection.DOWNSTREAM else self._last_leaf()
        entry._enqueue_nowait(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Push ``frame`` out of the pipeline, as its edge processor would."""
        edge = self._last_leaf() if direction is FrameDirection.DOWNSTREAM else self._first_leaf()
        await edge.push_frame(frame, direction)

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.processors)
        return f"<Pipeline {self.name!r} [{inner}]>"
