"""Built-in tools: tools that ship their own functions, schemas and lifecycle.

Subclass :class:`BuiltinTool` and add it with ``OpenAILLMHandler.add_tool(tool)``.
"""

from .base import BuiltinTool as BuiltinTool

__all__ = ["BuiltinTool"]
