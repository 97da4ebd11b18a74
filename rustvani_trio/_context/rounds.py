"""A tool round: the model's tool calls and their results, staged until committed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import ContextInvariantError, InvalidMessageError, RoundStateError, describe_ids
from .messages import check_content, check_tool_calls
from .readonly import MessageDict, ReadOnlyList
from .values import freeze, short

if TYPE_CHECKING:
    from .llm_context import LLMContext

__all__ = ["ContextRound"]


class ContextRound:
    """One tool round: the model's tool calls and their results, staged until committed.

    Obtain it from :meth:`LLMContext.begin_round`; do not construct it directly.  Typical use::

        with ctx.begin_round() as round_:
            round_.set_assistant(text, tool_calls)
            ...                                   # results arrive in any order
            round_.add_tool_result(call_id, result_json)
            round_.commit()

    Leaving the ``with`` block while the round is still open -- because of an exception
    (including trio's ``Cancelled``) *or* because ``commit()`` was never called -- rolls it back:
    nothing reaches the context unless :meth:`commit` was called explicitly.  State misuse
    raises :class:`RoundStateError`; results that do not match the calls raise
    :class:`ContextInvariantError`.
    """

    __slots__ = ("_calls", "_context", "_ids", "_open", "_results", "_text")

    def __init__(self, context: LLMContext) -> None:
        self._context = context
        self._open = True
        self._text: str | None = None
        self._calls: ReadOnlyList | None = None
        self._ids: list[str] = []
        self._results: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<ContextRound {state} calls={len(self._ids)} pending={len(self.pending_ids)}>"

    def __enter__(self) -> ContextRound:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._open:
            self.rollback()

    def _require_open(self, action: str) -> None:
        if not self._open:
            raise RoundStateError(f"cannot {action}: the round is already closed")

    @property
    def is_open(self) -> bool:
        """Whether the round is neither committed nor rolled back."""
        return self._open

    @property
    def pending_ids(self) -> tuple[str, ...]:
        """The ids of calls still without a result, in call order (empty before
        :meth:`set_assistant` and once closed)."""
        if not self._open:
            return ()
        return tuple(i for i in self._ids if i not in self._results)

    @property
    def tool_calls(self) -> Sequence[Mapping[str, Any]]:
        """The staged tool calls, in the model's order (empty before :meth:`set_assistant`),
        read-only."""
        return self._calls if self._calls is not None else ReadOnlyList._of(())

    def set_assistant(self, text: str | None, tool_calls: Sequence[Mapping[str, Any]]) -> None:
        """Stage the model's answer: optional text and at least one tool call.

        Each call is ``{"id", "type": "function", "function": {"name", "arguments"}}`` (other
        keys are kept).  May be called once per round.
        """
        self._require_open("set the assistant message")
        if self._calls is not None:
            raise RoundStateError("set_assistant() was already called for this round")
        if text is not None and not isinstance(text, str):
            raise InvalidMessageError(
                f"round: assistant text must be a string or None, got {type(text).__name__}"
            )
        if text is not None:
            text = freeze(text, "round: assistant text", InvalidMessageError)
        calls = freeze(tool_calls, "round", InvalidMessageError, name="tool_calls")
        self._ids = check_tool_calls(calls, "round")  # the copy is checked: it is what stays
        self._calls = calls
        self._text = text

    def add_tool_result(
        self, tool_call_id: str, content: str | Sequence[Mapping[str, Any]]
    ) -> None:
        """Stage the result of one call; results may arrive in any order.

        An id that is not one of the round's calls, or that already has a result, raises
        :class:`ContextInvariantError`.
        """
        self._require_open("add a tool result")
        if self._calls is None:
            raise RoundStateError("call set_assistant() before adding tool results")
        if not isinstance(tool_call_id, str):
            raise InvalidMessageError(
                f"round: tool_call_id must be a string, got {type(tool_call_id).__name__} "
                f"{short(tool_call_id)}"
            )
        if tool_call_id not in self._ids:
            raise ContextInvariantError(
                f"round: unknown tool_call_id {short(tool_call_id)}; this round's calls are "
                f"{describe_ids(self._ids)}"
            )
        if tool_call_id in self._results:
            raise ContextInvariantError(
                f"round: tool call {short(tool_call_id)} already has a result"
            )
        where = f"round: result for {short(tool_call_id)}"
        frozen = freeze(content, where, InvalidMessageError)
        check_content(frozen, where)
        self._results[tool_call_id] = frozen

    def commit(self) -> None:
        """Append the assistant message, then one tool message per call in call order; close.

        Requires :meth:`set_assistant` (else :class:`RoundStateError`) and a result for every
        call (else :class:`ContextInvariantError`, and the round stays open).
        """
        self._require_open("commit")
        if self._calls is None:
            raise RoundStateError("call set_assistant() before commit()")
        missing = self.pending_ids
        if missing:
            raise ContextInvariantError(
                f"round: cannot commit, no result yet for tool call(s) {describe_ids(missing)}"
            )
        messages = [
            MessageDict._of({"role": "assistant", "content": self._text, "tool_calls": self._calls})
        ]
        messages.extend(
            MessageDict._of(
                {"role": "tool", "tool_call_id": call_id, "content": self._results[call_id]}
            )
            for call_id in self._ids
        )
        self._context._commit_round(self, messages)
        self._open = False

    def rollback(self) -> None:
        """Discard everything staged and close; the committed messages are untouched.

        Raises :class:`RoundStateError` if the round is already closed (a commit is final).
        """
        self._require_open("roll back")
        self._open = False
        self._calls = None
        self._ids = []
        self._results = {}
        self._context._close_round(self)
