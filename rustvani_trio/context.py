"""The LLM conversation context: OpenAI-format messages, tools, tool rounds and a token budget.

An :class:`LLMContext` owns one chat conversation in the OpenAI Chat Completions shape::

    {"role": "system" | "developer" | "user" | "assistant" | "tool",
     "content": ..., "tool_calls": [...], "tool_call_id": ...}

plus the ``tools`` offered to the model and the ``tool_choice``.  It is plain, synchronous
Python: every method runs to completion without awaiting, so under trio each call is atomic
with respect to other tasks.

Ownership
    The context copies everything handed to it, so changing an argument after the call never
    changes the context.  What it hands out (``messages``, ``tools``, ``tool_choice``, a
    message's content and tool calls, ``FunctionSchema.parameters``) is read-only: ``list``
    and ``dict`` subclasses that serialise with :mod:`json` and compare equal to plain values,
    but refuse every change with a :class:`TypeError` naming the method to call instead, so a
    change can never be lost on a copy (their slices are read-only too; ``list(...)``,
    ``dict(...)`` and ``.copy()`` are explicit, editable copies).  Assigning ``messages``,
    ``tools`` or ``tool_choice`` names the method to call.  Edit the conversation through the
    context: ``add_message``, ``insert_message``, ``replace_message``, ``remove_message``,
    ``set_messages``, ``system_prompt``.  ``messages`` and ``tools`` are snapshots, made at
    the first read after a change, so reading them again costs nothing;
    ``to_request_messages()`` and ``tools_for_request()`` are fresh, editable copies for a
    request.  ``copy()``, :func:`copy.copy`, :func:`copy.deepcopy` and pickling give an
    independent context (without an open round).

Validation
    Every message is checked on the way in (known role, content shape, a tool message names
    its ``tool_call_id``, every tool call has a string id, ...) and so is every value in it:
    only what a request can carry is accepted (``str`` without lone surrogates, ``int``,
    finite ``float``, ``bool``, ``None``, lists, and dicts with ``str`` keys, nested at most 64
    levels, read-only values taken back included; subclasses of ``str``, ``int`` and ``float``
    are stored as the plain value).  Anything else (bytes, NaN, a set, ...) is rejected with
    :class:`InvalidMessageError` (:class:`InvalidToolError` for tools), naming where it is and
    what is wrong, at the call that offered it, instead of failing every later request.
    Messages may be added one at a time, so the *sequence* may be temporarily incomplete (an
    assistant message whose tool results are still to come); :meth:`LLMContext.validate`
    checks the whole sequence before it is sent.

Tool rounds
    When the model answers with tool calls, the handler stages that answer in a
    :class:`ContextRound` (``ctx.begin_round()``): results arrive in any order and
    :meth:`ContextRound.commit` appends the assistant message followed by the tool messages in
    the model's call order, atomically.  :meth:`ContextRound.rollback` (or leaving a
    ``with`` block without committing, e.g. on cancellation) discards the round and leaves the
    committed messages untouched.

Interrupted assistant messages
    ``add_assistant_message(text, interrupted=True)`` records that the bot's speech was cut
    off.  The mark is kept *outside* the message dicts, because strict OpenAI-compatible
    servers reject unknown keys; query it with :meth:`LLMContext.is_interrupted`.  The mark
    travels with its message when earlier messages are trimmed or a system prompt is inserted.

Token budget
    :meth:`LLMContext.estimate_tokens` is a cheap heuristic (characters / 4 plus per-message
    and per-tool overheads) scaled by a calibration factor learnt from the server's real
    ``usage.prompt_tokens`` (:meth:`LLMContext.calibrate`).  :meth:`LLMContext.trim` drops the
    oldest messages until the estimate fits a budget without breaking tool-call pairing.
"""

from __future__ import annotations

from ._context.budget import MAX_CALIBRATION as MAX_CALIBRATION
from ._context.budget import MIN_CALIBRATION as MIN_CALIBRATION
from ._context.errors import ContextInvariantError as ContextInvariantError
from ._context.errors import InvalidMessageError as InvalidMessageError
from ._context.errors import InvalidToolError as InvalidToolError
from ._context.errors import RoundStateError as RoundStateError
from ._context.llm_context import LLMContext as LLMContext
from ._context.messages import ROLES as ROLES
from ._context.messages import Message as Message
from ._context.rounds import ContextRound as ContextRound
from ._context.tools import FunctionSchema as FunctionSchema
from ._context.tools import ToolChoice as ToolChoice
from ._context.tools import ToolSpec as ToolSpec

__all__ = [
    "MAX_CALIBRATION",
    "MIN_CALIBRATION",
    "ROLES",
    "ContextInvariantError",
    "ContextRound",
    "FunctionSchema",
    "InvalidMessageError",
    "InvalidToolError",
    "LLMContext",
    "Message",
    "RoundStateError",
    "ToolChoice",
    "ToolSpec",
]

# The classes live in private modules; they present themselves (reprs, tracebacks, pickles)
# under the public path.
for _cls in (
    ContextInvariantError,
    InvalidMessageError,
    InvalidToolError,
    RoundStateError,
    LLMContext,
    ContextRound,
    FunctionSchema,
):
    _cls.__module__ = __name__
del _cls
