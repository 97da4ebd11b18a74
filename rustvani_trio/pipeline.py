"""Pipeline: processors linked in order. Pipelines nest.

A pipeline adds no hop of its own: linking flattens it, so a frame leaving one inner processor
goes straight to the next one, and a frame leaving the last inner processor reaches the
pipeline's downstream neighbour directly. Nesting is free at run time, and a pipeline has no
lanes, tasks or timeouts of its own: it is only the order of its elements.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from ._element import PipelineElement, check_element
from .processor import FrameProcessor

__all__ = ["Pipeline"]


class Pipeline(PipelineElement):
    """Processors linked in order: ``Pipeline([a, b, c])`` sends a's output to b, then c.

    The elements are processors or pipelines, so a Pipeline can be an element of another
    Pipeline, and a PipelineTask runs either. An empty pipeline forwards frames unchanged.
    Each element belongs to one pipeline only: building a second one around it raises
    ``ValueError``.
    """

    def __init__(self, processors: Iterable[PipelineElement], *, name: str | None = None) -> None:
        super().__init__(name=name)
        if isinstance(processors, PipelineElement) or not isinstance(processors, Iterable):
            raise TypeError(
                f"Pipeline takes a list of processors, got {processors!r:.80}; "
                "write Pipeline([processor])"
            )
        procs = [check_element(p, "Pipeline") for p in processors]
        if len(set(map(id, procs))) != len(procs):
            raise ValueError("a processor may appear only once in a pipeline")
        for p in procs:
            p._check_owner(self)  # all of them first: a refused pipeline claims nothing
        for p in procs:
            p._claim_owner(self)
        if not procs:
            procs = [FrameProcessor(name=f"{self.name}.passthrough")]
        self.processors: list[PipelineElement] = procs
        for upstream, downstream in itertools.pairwise(procs):
            upstream.link(downstream)

    def _leaves(self) -> Iterator[FrameProcessor]:
        for p in self.processors:
            yield from p._leaves()

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.processors)
        return f"<Pipeline {self.name!r} [{inner}]>"
