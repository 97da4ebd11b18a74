"""rustvani-trio: real-time LLM and voice pipelines on trio's structured concurrency.

Everything a pipeline needs is importable from here::

    import rustvani_trio as rt

    context = rt.LLMContext([{"role": "system", "content": "Be brief."}])
    user, assistant = rt.create_context_aggregators(context, text_mode=True)
    llm = rt.OpenAILLMHandler(rt.OpenAILLMConfig.from_env()).into_processor()
    task = rt.PipelineTask(rt.Pipeline([user, llm, assistant]))

The OpenAI handler (which needs httpx) is loaded on first use, so ``import rustvani_trio`` costs
only the runtime. The seed's module paths work as well (``rustvani_trio.services.llm.openai``,
``rustvani_trio.tools.base`` ...); testing helpers live in :mod:`rustvani_trio.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .aggregators import LLMAssistantAggregator as LLMAssistantAggregator
from .aggregators import LLMUserAggregator as LLMUserAggregator
from .aggregators import create_context_aggregators as create_context_aggregators
from .context import ContextInvariantError as ContextInvariantError
from .context import ContextRound as ContextRound
from .context import FunctionSchema as FunctionSchema
from .context import InvalidMessageError as InvalidMessageError
from .context import InvalidToolError as InvalidToolError
from .context import LLMContext as LLMContext
from .context import RoundStateError as RoundStateError
from .exceptions import RustvaniError as RustvaniError
from .frames import BotStartedSpeakingFrame as BotStartedSpeakingFrame
from .frames import BotStoppedSpeakingFrame as BotStoppedSpeakingFrame
from .frames import CancelFrame as CancelFrame
from .frames import CancelTaskFrame as CancelTaskFrame
from .frames import ControlFrame as ControlFrame
from .frames import DataFrame as DataFrame
from .frames import EndFrame as EndFrame
from .frames import EndTaskFrame as EndTaskFrame
from .frames import ErrorFrame as ErrorFrame
from .frames import Frame as Frame
from .frames import FrameDirection as FrameDirection
from .frames import FunctionCallEnd as FunctionCallEnd
from .frames import FunctionCallInfo as FunctionCallInfo
from .frames import FunctionCallInProgress as FunctionCallInProgress
from .frames import FunctionCallRawResult as FunctionCallRawResult
from .frames import FunctionCallResult as FunctionCallResult
from .frames import FunctionCallStart as FunctionCallStart
from .frames import HeartbeatFrame as HeartbeatFrame
from .frames import InputAudioRawFrame as InputAudioRawFrame
from .frames import InterruptionFrame as InterruptionFrame
from .frames import InterruptionTaskFrame as InterruptionTaskFrame
from .frames import LLMContextFrame as LLMContextFrame
from .frames import LLMFullResponseEnd as LLMFullResponseEnd
from .frames import LLMFullResponseStart as LLMFullResponseStart
from .frames import LLMMessagesAppendFrame as LLMMessagesAppendFrame
from .frames import LLMReasoningText as LLMReasoningText
from .frames import LLMRefusalText as LLMRefusalText
from .frames import LLMText as LLMText
from .frames import LLMTokenUsage as LLMTokenUsage
from .frames import LLMUsageMetricsData as LLMUsageMetricsData
from .frames import MetricsData as MetricsData
from .frames import MetricsFrame as MetricsFrame
from .frames import OutputAudioRawFrame as OutputAudioRawFrame
from .frames import ProcessingMetricsData as ProcessingMetricsData
from .frames import StartFrame as StartFrame
from .frames import StopFrame as StopFrame
from .frames import SystemFrame as SystemFrame
from .frames import TextFrame as TextFrame
from .frames import TranscriptionFrame as TranscriptionFrame
from .frames import TTFBMetricsData as TTFBMetricsData
from .frames import TTSStartedFrame as TTSStartedFrame
from .frames import TTSStoppedFrame as TTSStoppedFrame
from .frames import TTSTextFrame as TTSTextFrame
from .frames import UninterruptibleFrame as UninterruptibleFrame
from .frames import UserStartedSpeakingFrame as UserStartedSpeakingFrame
from .frames import UserStoppedSpeakingFrame as UserStoppedSpeakingFrame
from .frames import VADUserStartedSpeakingFrame as VADUserStartedSpeakingFrame
from .frames import VADUserStoppedSpeakingFrame as VADUserStoppedSpeakingFrame
from .observer import BaseObserver as BaseObserver
from .observer import FramePushed as FramePushed
from .observer import MetricsCollector as MetricsCollector
from .pipeline import Pipeline as Pipeline
from .processor import FrameProcessor as FrameProcessor
from .processor import InlineOutput as InlineOutput
from .processor import InlineProcessor as InlineProcessor
from .services.llm.function_registry import FunctionCallParams as FunctionCallParams
from .services.llm.function_registry import FunctionRegistry as FunctionRegistry
from .services.llm.function_registry import ToolCallOutput as ToolCallOutput
from .task import PipelineFatalError as PipelineFatalError
from .task import PipelineParams as PipelineParams
from .task import PipelineTask as PipelineTask
from .tools.base import BuiltinTool as BuiltinTool

if TYPE_CHECKING:
    from .dhara import DharaFlow as DharaFlow
    from .dhara import DharaManager as DharaManager
    from .dhara import DharaNodeChanged as DharaNodeChanged
    from .dhara import NodeConfig as NodeConfig
    from .dhara import TransitionResult as TransitionResult
    from .services.llm.openai import AfterRound as AfterRound
    from .services.llm.openai import LLMAnswerCutShort as LLMAnswerCutShort
    from .services.llm.openai import LLMErrorKind as LLMErrorKind
    from .services.llm.openai import LLMRequestError as LLMRequestError
    from .services.llm.openai import OpenAILLMConfig as OpenAILLMConfig
    from .services.llm.openai import OpenAILLMHandler as OpenAILLMHandler
    from .services.llm.openai import OpenAILLMProcessor as OpenAILLMProcessor
    from .services.llm.openai import RetryPolicy as RetryPolicy
    from .tools.postgres import NeonPostgresConfig as NeonPostgresConfig
    from .tools.postgres import NeonPostgresTool as NeonPostgresTool
    from .transports.websocket import WebSocketTransport as WebSocketTransport

__version__ = "0.1.0"

# Names loaded on first use: name -> (module that defines it, the extra it needs).
_LAZY: dict[str, tuple[str, str | None]] = {
    "AfterRound": (".services.llm.openai", None),
    "LLMAnswerCutShort": (".services.llm.openai", None),
    "LLMErrorKind": (".services.llm.openai", None),
    "LLMRequestError": (".services.llm.openai", None),
    "OpenAILLMConfig": (".services.llm.openai", None),
    "OpenAILLMHandler": (".services.llm.openai", None),
    "OpenAILLMProcessor": (".services.llm.openai", None),
    "RetryPolicy": (".services.llm.openai", None),
    "NeonPostgresConfig": (".tools.postgres", "db-postgres"),
    "NeonPostgresTool": (".tools.postgres", "db-postgres"),
    "DharaFlow": (".dhara", None),
    "DharaManager": (".dhara", None),
    "DharaNodeChanged": (".dhara", None),
    "NodeConfig": (".dhara", None),
    "TransitionResult": (".dhara", None),
    "WebSocketTransport": (".transports.websocket", "transport-websocket"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rustvani_trio' has no attribute {name!r}")
    module, extra = _LAZY[name]
    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as exc:
        if extra is None:
            raise
        raise ModuleNotFoundError(
            f"rustvani_trio.{name} needs the {extra!r} extra ({exc.name} is missing): "
            f"pip install 'rustvani-trio[{extra}]'",
            name=exc.name,
        ) from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AfterRound",
    "BaseObserver",
    "BotStartedSpeakingFrame",
    "BotStoppedSpeakingFrame",
    "BuiltinTool",
    "CancelFrame",
    "CancelTaskFrame",
    "ContextInvariantError",
    "ContextRound",
    "ControlFrame",
    "DataFrame",
    "DharaFlow",
    "DharaManager",
    "DharaNodeChanged",
    "EndFrame",
    "EndTaskFrame",
    "ErrorFrame",
    "Frame",
    "FrameDirection",
    "FrameProcessor",
    "FramePushed",
    "FunctionCallEnd",
    "FunctionCallInProgress",
    "FunctionCallInfo",
    "FunctionCallParams",
    "FunctionCallRawResult",
    "FunctionCallResult",
    "FunctionCallStart",
    "FunctionRegistry",
    "FunctionSchema",
    "HeartbeatFrame",
    "InlineOutput",
    "InlineProcessor",
    "InputAudioRawFrame",
    "InterruptionFrame",
    "InterruptionTaskFrame",
    "InvalidMessageError",
    "InvalidToolError",
    "LLMAnswerCutShort",
    "LLMAssistantAggregator",
    "LLMContext",
    "LLMContextFrame",
    "LLMErrorKind",
    "LLMFullResponseEnd",
    "LLMFullResponseStart",
    "LLMMessagesAppendFrame",
    "LLMReasoningText",
    "LLMRefusalText",
    "LLMRequestError",
    "LLMText",
    "LLMTokenUsage",
    "LLMUsageMetricsData",
    "LLMUserAggregator",
    "MetricsCollector",
    "MetricsData",
    "MetricsFrame",
    "NeonPostgresConfig",
    "NeonPostgresTool",
    "NodeConfig",
    "OpenAILLMConfig",
    "OpenAILLMHandler",
    "OpenAILLMProcessor",
    "OutputAudioRawFrame",
    "Pipeline",
    "PipelineFatalError",
    "PipelineParams",
    "PipelineTask",
    "ProcessingMetricsData",
    "RetryPolicy",
    "RoundStateError",
    "RustvaniError",
    "StartFrame",
    "StopFrame",
    "SystemFrame",
    "TTFBMetricsData",
    "TTSStartedFrame",
    "TTSStoppedFrame",
    "TTSTextFrame",
    "TextFrame",
    "ToolCallOutput",
    "TranscriptionFrame",
    "TransitionResult",
    "UninterruptibleFrame",
    "UserStartedSpeakingFrame",
    "UserStoppedSpeakingFrame",
    "VADUserStartedSpeakingFrame",
    "VADUserStoppedSpeakingFrame",
    "WebSocketTransport",
    "__version__",
    "create_context_aggregators",
]
