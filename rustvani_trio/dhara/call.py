"""What a Dhara handler receives (``DharaContext``), and the seed's handler registry.

```python
handlers = DharaFunctionRegistry()


@handlers.function("add_to_order")
async def add_to_order(args: str, ctx: DharaContext) -> TransitionResult:
    ctx.state["items"].append(json.loads(args))
    return TransitionResult.stay({"status": "added"})
```
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..frames import Frame, FrameDirection

if TYPE_CHECKING:
    from .manager import DharaManager
    from .state import FlowState

__all__ = ["DharaContext", "DharaFunctionRegistry", "PushFrame"]

logger = logging.getLogger("rustvani_trio.dhara")

PushFrame = Callable[[Frame, FrameDirection], Awaitable[None]]


@attrs.frozen(kw_only=True)
class DharaContext:
    """The runtime context of one handler call (or one ``function`` action).

    Attributes:
        manager: the :class:`~rustvani_trio.dhara.DharaManager`.
        state: the conversation's :class:`~rustvani_trio.dhara.FlowState`.
        node: the node the call runs in (sibling calls of a round all see the node they were
            called in, even when one of them asks for a transition).
        function_name / tool_call_id / arguments / raw_arguments: the call (empty for an
            action).
    """

    manager: DharaManager
    state: FlowState
    node: str | None
    function_name: str = ""
    tool_call_id: str = ""
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    raw_arguments: str = "{}"
    _push: PushFrame | None = attrs.field(default=None, alias="push")

    @property
    def current_node(self) -> str | None:
        """The node the call runs in (the seed's ``ctx.current_node()``)."""
        return self.node

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> bool:
        """Push a frame into the pipeline from where the call runs; ``False`` (logged) when
        there is no pipeline to push to (an action run without a Dhara processor)."""
        if self._push is None:
            logger.warning("dhara: no pipeline to push %s to; it was not sent", frame.name)
            return False
        await self._push(frame, direction)
        return True


Handler = Callable[..., Any]


class DharaFunctionRegistry:
    """Handler implementations by function name, bound to a flow file's functions
    (``DharaFlow.load(path, handlers)``). A plain ``dict`` works too."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for name, handler in (handlers or {}).items():
            self.register(name, handler)

    def register(self, name: str, handler: Handler) -> None:
        """Bind ``handler`` (``(args)`` or ``(args, ctx)``, sync or async) to ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a function name must be a non-empty string, got {name!r}")
        if not callable(handler):
            raise TypeError(f"the handler for {name!r} is not callable: {handler!r}")
        self._handlers[name] = handler

    def function(self, name: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: ``@handlers.function()`` or ``@handlers.function("name")``."""

        def decorate(fn: Handler) -> Handler:
            self.register(name or fn.__name__, fn)
            return fn

        return decorate

    def get(self, name: str) -> Handler | None:
        """The handler bound to ``name``, or ``None``."""
        return self._handlers.get(name)

    def names(self) -> list[str]:
        """Bound names, in registration order."""
        return list(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)
