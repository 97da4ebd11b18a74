"""FunctionRegistry: the functions an LLM may call, by name.

A handler is an async (or plain) callable. The simple form takes the raw JSON arguments string
and returns what the model sees::

    async def get_weather(args: str) -> str: ...
    registry.register("get_weather", get_weather)

It may instead return a :class:`ToolCallOutput`, whose ``raw`` part goes only into a
:class:`~rustvani_trio.frames.FunctionCallRawResult` frame (for user interfaces), never to the
model. The rich form (``register(..., rich=True)`` or :meth:`FunctionRegistry.function`)
receives a :class:`FunctionCallParams` with the parsed arguments, the call id, the context and
a way to push frames.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from ..._text import excerpt
from ...context import FunctionSchema
from ...frames import ErrorFrame, FrameDirection

if TYPE_CHECKING:
    from ...context import LLMContext
    from ...frames import Frame

__all__ = [
    "FunctionCallParams",
    "FunctionEntry",
    "FunctionRegistry",
    "RegistryWarning",
    "ToolCallOutput",
]

logger = logging.getLogger("rustvani_trio")


@attrs.frozen
class ToolCallOutput:
    """A handler's result: ``summary`` is what the model sees; ``raw`` is for user interfaces
    only (sent in a FunctionCallRawResult frame, never to the model)."""

    summary: str
    raw: Any = None


@attrs.frozen(kw_only=True)
class FunctionCallParams:
    """What a rich handler receives: the call (``function_name``, ``tool_call_id``, the parsed
    ``arguments`` and the ``raw_arguments`` text), the conversation's ``context``, a way to
    push frames (``push_frame(frame, direction)``) and the name of the processor running the
    call (``processor_name``; ``None`` when the call was made outside one, as in a test).

    A function that wants to report a problem without failing (the model gets its result as
    usual) calls :meth:`push_error`.
    """

    function_name: str
    tool_call_id: str
    arguments: Mapping[str, Any]
    raw_arguments: str
    context: LLMContext
    push_frame: Callable[[Frame, FrameDirection], Awaitable[None]]
    processor_name: str | None = None

    async def push_error(self, message: str, *, exception: BaseException | None = None) -> None:
        """Push a non-fatal :class:`~rustvani_trio.frames.ErrorFrame` upstream, naming the
        processor, the function and the call: ``function 'f' (call c1): <message>``. The
        message is cut to 1000 characters and escaped to one line, as the handler's own."""
        text = excerpt(
            f"function {self.function_name!r} (call {self.tool_call_id}): {message}", 1000
        )
        frame = ErrorFrame(error=text, processor=self.processor_name, exception=exception)
        await self.push_frame(frame, FrameDirection.UPSTREAM)


HandlerResult: TypeAlias = "str | ToolCallOutput"
SimpleHandler: TypeAlias = Callable[[str], "Awaitable[HandlerResult] | HandlerResult"]
RichHandler: TypeAlias = Callable[[FunctionCallParams], "Awaitable[HandlerResult] | HandlerResult"]


class RegistryWarning(UserWarning):
    """A registration replaced an earlier one."""


@attrs.frozen(kw_only=True)
class FunctionEntry:
    """One registered function."""

    name: str
    handler: Callable[..., Any]
    rich: bool = False
    timeout: float | None = None
    schema: FunctionSchema | None = None

    async def call(self, params: FunctionCallParams) -> ToolCallOutput:
        """Run the handler and normalise its result to a ToolCallOutput."""
        arg: Any = params if self.rich else params.raw_arguments
        result = self.handler(arg)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, ToolCallOutput):
            if not isinstance(result.summary, str):
                raise TypeError(
                    f"function {self.name!r} returned a ToolCallOutput whose summary is "
                    f"{type(result.summary).__name__}; the summary must be str"
                )
            return result
        if isinstance(result, str):
            return ToolCallOutput(result)
        raise TypeError(
            f"function {self.name!r} returned {type(result).__name__}; "
            "handlers must return str or ToolCallOutput"
        )


class FunctionRegistry:
    """Functions by name. Registering a name twice replaces it, with a :class:`RegistryWarning`."""

    def __init__(self) -> None:
        self._entries: dict[str, FunctionEntry] = {}

    def register(
        self,
        name: str,
        handler: SimpleHandler | RichHandler,
        *,
        rich: bool = False,
        timeout: float | None = None,
        schema: FunctionSchema | None = None,
    ) -> None:
        """Register ``handler`` under ``name``.

        Args:
            rich: the handler takes a :class:`FunctionCallParams` instead of the raw string.
            timeout: overrides the LLM config's ``tool_timeout`` for this function.
            schema: if given, the function is offered to the model (added to the request's
                tools) without being listed in the context.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"function name must be a non-empty string, got {name!r}")
        if not callable(handler):
            raise TypeError(f"handler for {name!r} is not callable: {handler!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout for {name!r} must be positive, got {timeout}")
        if schema is not None and schema.name != name:
            raise ValueError(f"schema name {schema.name!r} does not match {name!r}")
        if name in self._entries:
            warnings.warn(
                f"function {name!r} was already registered; replacing it",
                RegistryWarning,
                stacklevel=2,
            )
        self._entries[name] = FunctionEntry(
            name=name, handler=handler, rich=rich, timeout=timeout, schema=schema
        )

    def function(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        rich: bool = False,
        timeout: float | None = None,
        schema: FunctionSchema | None = None,
    ) -> Any:
        """Decorator form: ``@registry.function`` or ``@registry.function("name", ...)``
        registers under the given name, or the function's own."""
        if callable(name):
            fn = name
            self.register(fn.__name__, fn, rich=rich, timeout=timeout, schema=schema)
            return fn

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.register(name or fn.__name__, fn, rich=rich, timeout=timeout, schema=schema)
            return fn

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name``; KeyError if it is not registered."""
        try:
            del self._entries[name]
        except KeyError:
            raise KeyError(f"function {name!r} is not registered") from None

    def get(self, name: str) -> FunctionEntry | None:
        """The entry for ``name`` (its ``handler``, ``timeout``, ``schema``), or ``None``."""
        return self._entries.get(name)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def schemas(self) -> list[FunctionSchema]:
        """The schemas registered with functions (those offered to the model automatically)."""
        return [e.schema for e in self._entries.values() if e.schema is not None]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
