"""One tool round: the model's calls run concurrently, reported and committed in call order.

The round is the context's own transaction (:meth:`LLMContext.begin_round`): the assistant
message with the calls is staged, each call's task fills its slot, and the round's task reports
the results in the model's call order as they become available, staging each one; the round is
committed when every call has its result, and rolled back by the ``with`` block on anything
else (an interruption, a cancel), so the context never holds a call without its result.
"""

from __future__ import annotations

import json
import secrets

import attrs
import trio

from ..._text import describe, excerpt, has_surrogate_escape, mend_surrogates
from ...context import LLMContext
from ...frames import (
    FunctionCallEnd,
    FunctionCallInfo,
    FunctionCallInProgress,
    FunctionCallRawResult,
    FunctionCallResult,
    FunctionCallStart,
)
from ...processor import FrameProcessor
from ._chat_types import StreamResult
from ._config import OpenAILLMConfig
from ._toolset import Toolset
from .function_registry import FunctionCallParams, FunctionRegistry, ToolCallOutput

__all__ = ["ToolRound"]


@attrs.define
class _Slot:
    """Where one call leaves its output."""

    output: ToolCallOutput | None = None
    filled: trio.Event = attrs.Factory(trio.Event)


@attrs.frozen
class ToolRound:
    """Runs the tool rounds of ``host``: functions from ``registry``, built-in tools started by
    ``toolset``, limits from ``config``."""

    host: FrameProcessor
    registry: FunctionRegistry
    toolset: Toolset
    config: OpenAILLMConfig

    async def run(self, context: LLMContext, result: StreamResult, number: int) -> None:
        """Run round ``number`` of the calls in ``result`` and commit it to ``context``."""
        host = self.host
        calls = await self._calls_of(result, context)
        with context.begin_round() as staged:
            staged.set_assistant(
                result.text or None,
                [
                    {
                        "id": c.tool_call_id,
                        "type": "function",
                        "function": {"name": c.function_name, "arguments": c.arguments or "{}"},
                    }
                    for c in calls
                ],
            )
            await host.push_frame(FunctionCallStart(calls=tuple(calls), round=number))
            slots = [_Slot() for _ in calls]
            async with trio.open_nursery() as nursery:
                for call, slot in zip(calls, slots, strict=True):
                    await host.push_frame(
                        FunctionCallInProgress(
                            tool_call_id=call.tool_call_id,
                            function_name=call.function_name,
                            arguments=call.arguments,
                        )
                    )
                    nursery.start_soon(self._fill, slot, call, context)
                for call, slot in zip(calls, slots, strict=True):
                    await slot.filled.wait()
                    assert slot.output is not None
                    await self._report(call, slot.output)
                    staged.add_tool_result(call.tool_call_id, slot.output.summary)
            # An interruption that arrived while the last result was being pushed rolls the
            # round back (the result may be dropped downstream): frames and context agree.
            await trio.lowlevel.checkpoint_if_cancelled()
            staged.commit()
        await host.push_frame(FunctionCallEnd(round=number))

    async def _calls_of(self, result: StreamResult, context: LLMContext) -> list[FunctionCallInfo]:
        """The round's calls, each with an id unique in the conversation: one is generated
        where the model sent none (``call_`` and 24 random hex digits, as OpenAI's look), and
        an id the model sent again (in this round, or in an earlier one: some servers number
        their calls from 0 in every answer) gets a suffix, so that consumers that key by id
        never mix two calls up."""
        calls: list[FunctionCallInfo] = []
        seen = context._tool_call_ids()  # (kept by the context as messages are added)
        for accum in result.tool_calls:
            call_id = accum.id or f"call_{secrets.token_hex(12)}"
            if call_id in seen:
                suffix = 2
                while f"{call_id}_{suffix}" in seen:
                    suffix += 1
                call_id = f"{call_id}_{suffix}"
            seen.add(call_id)
            name = accum.name
            if not name:
                name = "unnamed_function"
                await self.host.push_error(
                    f"the model sent tool call {excerpt(call_id, 100)} without a function name"
                )
            calls.append(
                FunctionCallInfo(
                    tool_call_id=call_id, function_name=name, arguments=accum.arguments
                )
            )
        return calls

    async def _report(self, call: FunctionCallInfo, output: ToolCallOutput) -> None:
        if output.raw is not None:
            await self.host.push_frame(
                FunctionCallRawResult(
                    tool_call_id=call.tool_call_id, function_name=call.function_name, raw=output.raw
                )
            )
        await self.host.push_frame(
            FunctionCallResult(
                tool_call_id=call.tool_call_id,
                function_name=call.function_name,
                result=output.summary,
            )
        )

    async def _fill(self, slot: _Slot, call: FunctionCallInfo, context: LLMContext) -> None:
        slot.output = await self._call(call, context)
        slot.filled.set()

    async def _call(self, call: FunctionCallInfo, context: LLMContext) -> ToolCallOutput:
        """Run one call; every failure becomes a short result for the model (and an error
        upstream where the model is not to blame)."""
        name = call.function_name
        entry = self.registry.get(name)
        if entry is None:
            known = ", ".join(self.registry.names()) or "none"
            return ToolCallOutput(
                f"Error: there is no function named {name!r}. Available functions: {known}."
            )
        raw_args = call.arguments.strip()
        try:
            parsed = json.loads(raw_args) if raw_args else {}
            if has_surrogate_escape(raw_args):
                parsed = mend_surrogates(parsed)  # (recursive, as the decoding)
        except json.JSONDecodeError as exc:
            return _bad_arguments(name, f"{exc.msg} at position {exc.pos}")
        except ValueError as exc:  # an integer past Python's digit limit, say
            return _bad_arguments(name, excerpt(str(exc), 200))
        except RecursionError:
            return _bad_arguments(name, "it nests too deeply")
        if not isinstance(parsed, dict):
            return ToolCallOutput(
                f"Error: the arguments for {name!r} must be a JSON object, "
                f"not {type(parsed).__name__}."
            )
        limit = entry.timeout or self.config.tool_timeout
        params = FunctionCallParams(
            function_name=name,
            tool_call_id=call.tool_call_id,
            arguments=parsed,
            raw_arguments=raw_args or "{}",
            context=context,
            push_frame=self.host.push_frame,
            processor_name=self.host.name,
        )
        with trio.move_on_after(limit) as scope:
            try:
                await self.toolset.ensure_started(name, self.config.tool_start_timeout)
                return await entry.call(params)
            except Exception as exc:
                await self.host.push_error(
                    f"function {name!r} (call {excerpt(call.tool_call_id, 100)}) failed: "
                    f"{describe(exc)}",
                    exception=exc,
                )
                return ToolCallOutput(
                    f"Error: the function {name!r} failed. The failure was reported; "
                    "do not retry the same call."
                )
        assert scope.cancelled_caught
        await self.host.push_error(
            f"function {name!r} (call {excerpt(call.tool_call_id, 100)}) timed out after {limit:g}s"
        )
        return ToolCallOutput(f"Error: the function {name!r} timed out after {limit:g} seconds.")


def _bad_arguments(name: str, why: str) -> ToolCallOutput:
    return ToolCallOutput(
        f"Error: the arguments for {name!r} are not valid JSON ({why}). Call the function "
        "again with a JSON object."
    )
