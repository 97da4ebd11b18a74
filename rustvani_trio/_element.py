"""What a FrameProcessor and a Pipeline share: a name, linking, and a single owner.

A pipeline is built from *elements*: processors (the leaves, which have lanes and tasks) and
pipelines (which have neither: linking flattens them, so nesting costs no hop). An element
belongs to at most one owner, the Pipeline or PipelineTask that was built around it; a second
one is refused where it is built, because relinking an element that another pipeline uses would
leave that pipeline's run hanging.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .processor import FrameProcessor

__all__ = ["PipelineElement", "check_element"]

_names = itertools.count(1)


class PipelineElement:
    """A processor or a pipeline: anything a Pipeline or a PipelineTask can be built from.

    Args:
        name: shown in errors and metrics; defaults to ``ClassName#n``.
    """

    def __init__(self, *, name: str | None = None) -> None:
        self.name: str = name or f"{type(self).__name__}#{next(_names)}"
        self._owner: object | None = None

    def link(self, other: PipelineElement) -> PipelineElement:
        """Make ``other`` the downstream neighbour of this element; returns ``other``."""
        last = self._last_leaf()
        first = other._first_leaf()
        last._next = first
        first._prev = last
        return other

    def _leaves(self) -> Iterator[FrameProcessor]:
        """The processors this element is made of, in order (a processor: itself)."""
        raise NotImplementedError

    def _first_leaf(self) -> FrameProcessor:
        return next(self._leaves())

    def _last_leaf(self) -> FrameProcessor:
        *_, last = self._leaves()
        return last

    def _check_owner(self, owner: object) -> None:
        """Raise ``ValueError`` unless ``owner`` may claim this element."""
        if self._owner is not None and self._owner is not owner:
            raise ValueError(
                f"{self.name} is already part of {_describe(self._owner)}; an element can be "
                f"in only one pipeline or task at a time: build a new {type(self).__name__} "
                f"for {_describe(owner)}"
            )

    def _claim_owner(self, owner: object) -> None:
        """Make ``owner`` (a Pipeline or a PipelineTask) this element's only owner."""
        self._check_owner(owner)
        self._owner = owner

    def _release_owner(self, owner: object) -> None:
        """Give up ``owner``'s claim (a task whose run has finished)."""
        if self._owner is owner:
            self._owner = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _describe(owner: object) -> str:
    name = getattr(owner, "name", None)
    return f"{type(owner).__name__} {name!r}" if name else type(owner).__name__


def check_element(value: object, where: str) -> PipelineElement:
    """``value`` if it is a processor or a pipeline; else a TypeError saying what ``where``
    expected (and, for an LLM handler or a list, what to write instead)."""
    if isinstance(value, PipelineElement):
        return value
    if hasattr(value, "into_processor"):
        raise TypeError(
            f"{where} takes processors, and {type(value).__name__} is a handler: "
            "pass handler.into_processor() instead"
        )
    if isinstance(value, list | tuple):
        raise TypeError(
            f"{where} takes a processor or a Pipeline, got a {type(value).__name__}: "
            "wrap the processors in Pipeline([...])"
        )
    raise TypeError(f"{where} takes a FrameProcessor or a Pipeline, got {value!r:.80}")
