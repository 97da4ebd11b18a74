"""The OpenAI-compatible LLM handler: SSE streaming, function calling, re-invocation.

```python
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler

llm = OpenAILLMHandler(OpenAILLMConfig(api_key=os.environ["OPENAI_API_KEY"])).into_processor()
```

The processor takes an :class:`~rustvani_trio.frames.LLMContextFrame` and runs one *turn*:
``LLMFullResponseStart``, ``LLMText`` per content delta, and for each tool round
``FunctionCallStart``, per call ``FunctionCallInProgress`` / ``FunctionCallRawResult`` /
``FunctionCallResult``, ``FunctionCallEnd``, then the re-invocation, and finally
``LLMFullResponseEnd`` (which also closes a turn that failed). Works with any endpoint that
speaks the chat-completions API (OpenAI, Azure, vLLM, llama.cpp, Ollama, Groq, OpenRouter, ...).

An interruption or a CancelFrame cancels the turn's scope: the HTTP response is closed at once
(the server sees the disconnect), running tool calls are cancelled, the staged tool round is
rolled back, and nothing from that turn is emitted afterwards.

This module is the public path (the seed's); the implementation is in private modules beside
it: ``_config`` (settings), ``_errors`` (failures), ``_stream`` (one streaming request),
``_tool_round``, ``_toolset`` (built-in tools' lifecycle), ``_handler`` and ``_processor``.
"""

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

__all__ = [
    "CONTEXT_WINDOWS",
    "AfterRound",
    "LLMAnswerCutShort",
    "LLMErrorKind",
    "LLMRequestError",
    "OpenAILLMConfig",
    "OpenAILLMHandler",
    "OpenAILLMProcessor",
    "RetryPolicy",
    "TransitionHook",
    "context_window_for_model",
]
