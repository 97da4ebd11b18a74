"""BuiltinTool: a tool that ships its own functions, schemas and lifecycle.

``OpenAILLMHandler.add_tool(tool)`` registers the tool's functions and offers its schemas to the
model. Lifecycle, driven by the LLM processor:

* ``on_start()`` on StartFrame for cacheable tools (``is_cacheable``), concurrently with the
  other tools, each under a time bound; a tool that fails to start is reported as an ErrorFrame
  and the others go on. Non-cacheable tools start lazily, before their first call;
* ``on_stop()`` on EndFrame, for every started tool;
* ``on_cancel()`` on CancelFrame, after in-flight calls were cancelled (default: ``on_stop``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import FunctionSchema
    from ..services.llm.function_registry import FunctionRegistry

__all__ = ["BuiltinTool"]


class BuiltinTool:
    """Base class of built-in tools. Subclass it and fill in the four methods that apply."""

    #: A unique name, used in error messages; defaults to the class name.
    name: str = "BuiltinTool"
    #: Start on StartFrame (keep a pool or client open for the whole run).
    is_cacheable: bool = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declared = "name" in cls.__dict__ or "name" in inspect.get_annotations(cls)
        if not declared:  # (an annotated field, e.g. of an attrs class, is set per instance)
            cls.name = cls.__name__

    def tool_schemas(self) -> Sequence[FunctionSchema]:
        """The functions this tool offers to the model."""
        return ()

    def register_all(self, registry: FunctionRegistry) -> None:
        """Register this tool's handlers in ``registry``."""

    async def on_start(self) -> None:
        """Acquire resources (connections, pools)."""

    async def on_stop(self) -> None:
        """Release resources at the end of the run."""

    async def on_cancel(self) -> None:
        """Release resources when the run is cancelled; defaults to :meth:`on_stop`."""
        await self.on_stop()
