""":class:`LLMContext`: one conversation, its tools, tool rounds and token budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .budget import TokenBudget
from .errors import ContextInvariantError, InvalidMessageError, RoundStateError
from .history import Entry, History, make_entry
from .messages import Message, check_message, check_sequence
from .rounds import ContextRound
from .tools import ToolChoice, ToolSpec
from .values import clone, clone_dict

__all__ = ["LLMContext"]


class LLMContext(TokenBudget):
    """An OpenAI-format chat conversation with its tools, tool choice and token budget.

    See :mod:`rustvani_trio.context` for ownership, validation, rounds and interruption marks.
    """

    # Built in layers, each owning its slots: Toolset (tools, tool choice), then TokenBudget
    # (estimates, calibration, trimming), then this class (messages, rounds).
    __slots__ = ("_entries", "_round")

    def __init__(
        self,
        messages: Iterable[Mapping[str, Any]] | None = None,
        *,
        tools: Iterable[ToolSpec] | None = None,
        tool_choice: ToolChoice = None,
    ) -> None:
        """Create a context from initial ``messages``, ``tools`` and ``tool_choice``.

        Every message and tool is checked (:class:`InvalidMessageError`,
        :class:`InvalidToolError`); the sequence as a whole is not (see :meth:`validate`).
        """
        entries = self._prepare(messages or (), start=0)
        super().__init__(tools, tool_choice)
        self._entries: History = History(entries)
        self._round: ContextRound | None = None

    def __repr__(self) -> str:
        return (
            f"<LLMContext messages={len(self._entries)} tools={len(self._tools)} "
            f"factor={self._factor:.3g} round_open={self._round is not None}>"
        )

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _prepare(messages: Iterable[Mapping[str, Any]], start: int) -> list[Entry]:
        if isinstance(messages, Mapping):
            raise InvalidMessageError("expected a list of messages, got a single message dict")
        entries: list[Entry] = []
        for offset, message in enumerate(messages):
            check_message(message, f"message {start + offset}")
            entries.append(make_entry(clone_dict(message)))
        return entries

    @property
    def messages(self) -> list[Message]:
        """A *copy* of the committed messages (a new list of new dicts, staged rounds excluded).

        Mutating the result does not change the context; use the ``add_*``/``set_messages``
        methods instead.
        """
        return [clone_dict(message) for message in self._entries.messages()]

    @property
    def message_count(self) -> int:
        """Number of committed messages (cheaper than ``len(ctx.messages)``)."""
        return len(self._entries)

    def add_message(self, message: Mapping[str, Any]) -> None:
        """Append one message after checking its shape (see :class:`InvalidMessageError`)."""
        self._entries.extend(self._prepare((message,), start=len(self._entries)))

    def add_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Append several messages; all are checked first, so either all or none are added."""
        self._entries.extend(self._prepare(messages, start=len(self._entries)))

    def set_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Replace all committed messages (and clear interruption marks); all-or-nothing.

        An open round is unaffected and will append to the new history when committed.
        """
        self._entries = History(self._prepare(messages, start=0))

    def add_user_message(self, text: str) -> None:
        """Append ``{"role": "user", "content": text}``."""
        self.add_message({"role": "user", "content": text})

    def add_assistant_message(self, text: str, *, interrupted: bool = False) -> None:
        """Append ``{"role": "assistant", "content": text}``.

        ``interrupted=True`` records that the bot was cut off while speaking it; the mark is
        kept outside the message (see :meth:`is_interrupted`) and is never sent.
        """
        self.add_message({"role": "assistant", "content": text})
        self._entries[-1].interrupted = interrupted

    def add_tool_message(
        self, tool_call_id: str, content: str | Sequence[Mapping[str, Any]]
    ) -> None:
        """Append ``{"role": "tool", "tool_call_id": ..., "content": ...}``.

        Prefer :meth:`begin_round` for the tool loop; this is for rebuilding histories.
        """
        self.add_message({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def is_interrupted(self, index: int) -> bool:
        """Whether message ``index`` (negative counts from the end) was marked interrupted.

        Raises :class:`IndexError` when there is no such message.
        """
        return self._entries[index].interrupted

    def interrupted_indices(self) -> list[int]:
        """Indices of the messages marked interrupted, ascending."""
        return [i for i, entry in enumerate(self._entries) if entry.interrupted]

    @property
    def system_prompt(self) -> str | None:
        """The content of the leading system message, or ``None`` when there is none.

        Only a ``"system"`` message at index 0 counts.  List content is returned as the
        concatenation of its text parts.  Setting a string replaces that message's content
        (keeping its other keys) or inserts a new system message at index 0; setting ``None``
        removes it.
        """
        if not self._entries or self._entries[0].message["role"] != "system":
            return None
        content = self._entries[0].message["content"]
        if isinstance(content, str):
            return content
        return "".join(part["text"] for part in content if isinstance(part.get("text"), str))

    @system_prompt.setter
    def system_prompt(self, text: str | None) -> None:
        has_prompt = bool(self._entries) and self._entries[0].message["role"] == "system"
        if text is None:
            if has_prompt:
                self._entries.delete(0, 1)
            return
        if not isinstance(text, str):
            raise InvalidMessageError(
                f"the system prompt must be a string, got {type(text).__name__}"
            )
        if has_prompt:
            message = dict(self._entries[0].message, content=text)
            self._entries.replace(0, make_entry(message, self._entries[0].interrupted))
        else:
            self._entries.insert(0, make_entry({"role": "system", "content": text}))

    def to_request_messages(self) -> list[Message]:
        """The committed messages as a fresh, JSON-serialisable list for the next request.

        Staged round content is excluded.  The unscaled estimate of this request (messages and
        current tools) is remembered for :meth:`calibrate_from_usage`.
        """
        self._last_request_raw = self._raw_total(include_tools=True)
        return [clone_dict(message) for message in self._entries.messages()]

    # ------------------------------------------------------------------ whole-context

    def copy(self) -> LLMContext:
        """An independent copy: messages, interruption marks, tools, tool choice, calibration.

        An open round is *not* copied; the copy has none.
        """
        other = LLMContext.__new__(LLMContext)
        other._entries = self._entries.copy(clone_dict)
        other._tools = list(self._tools)  # Tool is immutable; its dicts are never handed out
        other._tool_choice = clone(self._tool_choice)
        other._factor = self._factor
        other._last_request_raw = self._last_request_raw
        other._round = None
        return other

    def validate(self) -> None:
        """Check that the context can be sent as is; raise :class:`ContextInvariantError` if not.

        Checks, in order: no round is open; every message is well formed (e.g. every tool call
        has an id); every assistant message's tool calls are each answered by exactly one tool
        message before the next non-tool message (results may come in any order); every tool
        message answers a pending call of the assistant message before it (not an unknown or an
        already answered id); a ``tool_choice`` naming a function names one of the tools, and
        ``"required"`` has tools to choose from.
        """
        if self._round is not None:
            raise ContextInvariantError(
                "a tool round is still open: commit() or rollback() it first"
            )
        check_sequence(self._entries.messages())
        self._check_tool_choice_names_a_tool()

    # ------------------------------------------------------------------ rounds

    @property
    def open_round(self) -> ContextRound | None:
        """The round begun with :meth:`begin_round` and not yet closed, if any."""
        return self._round

    def begin_round(self) -> ContextRound:
        """Open a tool round (the model answered with tool calls); see :class:`ContextRound`.

        Raises :class:`RoundStateError` when a round is already open.  Other methods stay
        usable while it is open; its messages are appended at commit time, after whatever was
        committed meanwhile.
        """
        if self._round is not None:
            raise RoundStateError(
                "a tool round is already open: commit() or rollback() it before beginning another"
            )
        self._round = ContextRound(self)
        return self._round

    def _commit_round(self, round_: ContextRound, messages: list[Message]) -> None:
        assert self._round is round_
        self._entries.extend(make_entry(message) for message in messages)
        self._round = None

    def _close_round(self, round_: ContextRound) -> None:
        if self._round is round_:
            self._round = None
