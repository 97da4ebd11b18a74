"""LLM services: the OpenAI-compatible streaming chat-completions handler and its helpers.

The names of :mod:`rustvani_trio.services.llm.openai` are importable from here too; they are
loaded on first use, so importing this package (or :mod:`.function_registry` in it) does not
import httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import CONTEXT_WINDOWS as CONTEXT_WINDOWS
    from ._config import OpenAILLMConfig as OpenAILLMConfig
    from ._config import RetryPolicy as RetryPolicy
    from ._config import context_window_for_model as context_window_for_model
    from ._errors import LLMAnswerCutShort as LLMAnswerCutShort
    from ._errors import LLMErrorKind as LLMErrorKind
    from ._errors import LLMRequestError as LLMRequestError
    from ._handler import AfterRound as AfterRound
    from ._handler import OpenAILLMHandler as OpenAILLMHandler
    from ._handler import TransitionHook as TransitionHook
    from ._processor import OpenAILLMProcessor as OpenAILLMProcessor

# Each public name and the private module that defines it, imported on first use: the config
# alone needs no httpx.
_LAZY = {
    "CONTEXT_WINDOWS": "_config",
    "OpenAILLMConfig": "_config",
    "RetryPolicy": "_config",
    "context_window_for_model": "_config",
    "LLMAnswerCutShort": "_errors",
    "LLMErrorKind": "_errors",
    "LLMRequestError": "_errors",
    "AfterRound": "_handler",
    "OpenAILLMHandler": "_handler",
    "TransitionHook": "_handler",
    "OpenAILLMProcessor": "_processor",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
