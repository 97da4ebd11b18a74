""":class:`LLMContext`: one conversation, its tools, tool rounds and token budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .budget import TokenBudget
from .errors import ContextInvariantError, InvalidMessageError, RoundStateError
from .history import Entry, History, make_entry
from .messages import ROLES, Message, check_message, check_sequence
from .readonly import MessageDict
from .rounds import ContextRound
from .tools import ToolChoice, ToolSpec
from .values import freeze, freeze_message, thaw

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
        return [
            make_entry(_checked(message, start + offset)) for offset, message in enumerate(messages)
        ]

    @property
    def messages(self) -> Sequence[Mapping[str, Any]]:
        """The committed messages (staged rounds excluded), as a read-only snapshot.

        It is a ``list`` of ``dict`` s (JSON-serialisable, equal to plain lists and dicts)
        that refuses every change with a :class:`TypeError` naming the method to use instead:
        :meth:`add_message`, :meth:`insert_message`, :meth:`replace_message`,
        :meth:`remove_message` or :meth:`set_messages`. Reading it is cheap: the snapshot is
        made once per change of the context, at the first read after the change (a copy of
        the list of references, as :meth:`to_request_messages` makes for every request), so
        adding messages costs nothing per message, and every read without a change between
        costs nothing. Reading after *every* single change copies the list each time: use
        :attr:`message_count`, or read once after a batch.
        """
        return self._entries.messages()

    @messages.setter
    def messages(self, _value: object) -> None:
        raise AttributeError(
            "context.messages cannot be assigned: use context.set_messages(messages) (or "
            "add_messages, insert_message, replace_message, remove_message)"
        )

    @property
    def message_count(self) -> int:
        """Number of committed messages (cheaper than ``len(ctx.messages)``)."""
        return len(self._entries)

    def add_message(self, message: Mapping[str, Any]) -> None:
        """Append one message after checking its shape and values (see
        :class:`InvalidMessageError`)."""
        end = len(self._entries)
        self._entries.insert(end, make_entry(_checked(message, end)))

    def add_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Append several messages; all are checked first, so either all or none are added."""
        self._entries.extend(self._prepare(messages, start=len(self._entries)))

    def set_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Replace all committed messages (and clear interruption marks); all-or-nothing.

        An open round is unaffected and will append to the new history when committed.
        """
        self._entries = History(self._prepare(messages, start=0))

    def insert_message(self, index: int, message: Mapping[str, Any]) -> None:
        """Insert one message before position ``index`` (as :meth:`list.insert`, negative
        indices count from the end), after checking it; :class:`IndexError` when ``index``
        is outside ``-len .. len``.

        Whether the sequence still pairs tool calls with their results is checked by
        :meth:`validate`, before the next request.
        """
        position = self._position(index, len(self._entries) + 1)
        self._entries.insert(position, make_entry(_checked(message, position)))

    def replace_message(
        self, index: int, message: Mapping[str, Any], *, interrupted: bool | None = None
    ) -> None:
        """Replace message ``index`` (negative counts from the end) after checking the new one.

        Its interruption mark is kept unless ``interrupted`` says otherwise. To change one
        field, pass a changed copy: ``replace_message(i, {**context.messages[i], "content":
        text})``.
        """
        position = self._position(index, len(self._entries))
        mark = self._entries[position].interrupted if interrupted is None else _mark(interrupted)
        self._entries.replace(position, make_entry(_checked(message, position), mark))

    def remove_message(self, index: int) -> Mapping[str, Any]:
        """Remove message ``index`` (negative counts from the end) and return it."""
        position = self._position(index, len(self._entries))
        removed = self._entries[position].message
        self._entries.delete(position, position + 1)
        return removed

    def _position(self, index: int, size: int) -> int:
        """``index`` as a position in ``range(size)`` (negative counts back from ``len``)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a message index must be an int, got {type(index).__name__}")
        position = index + len(self._entries) if index < 0 else index
        if not 0 <= position < size:
            raise IndexError(
                f"message index {index} is out of range (the context has "
                f"{len(self._entries)} messages)"
            )
        return position

    def add_user_message(self, text: str) -> None:
        """Append ``{"role": "user", "content": text}``."""
        self.add_message({"role": "user", "content": text})

    def add_assistant_message(self, text: str, *, interrupted: bool = False) -> None:
        """Append ``{"role": "assistant", "content": text}``.

        ``interrupted=True`` records that the bot was cut off while speaking it; the mark is
        kept outside the message (see :meth:`is_interrupted`) and is never sent.
        """
        mark = _mark(interrupted)
        self.add_message({"role": "assistant", "content": text})
        self._entries[-1].interrupted = mark

    def add_tool_message(
        self, tool_call_id: str, content: str | Sequence[Mapping[str, Any]]
    ) -> None:
        """Append ``{"role": "tool", "tool_call_id": ..., "content": ...}``.

        Prefer :meth:`begin_round` for the tool loop; this is for rebuilding histories.
        """
        self.add_message({"role": "tool", "tool_call_id": tool_call_id, "content": content})

    def is_interrupted(self, index: int) -> bool:
        """Whether message ``index`` (negative counts from the end) was marked interrupted.

        Raises :class:`IndexError` when there is no such message, :class:`TypeError` for an
        index that is not an ``int``.
        """
        return self._entries[self._position(index, len(self._entries))].interrupted

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
        text = freeze(text, "the system prompt", InvalidMessageError)  # a str subclass: plain
        if has_prompt:
            message = MessageDict._of({**self._entries[0].message, "content": text})
            self._entries.replace(0, make_entry(message, self._entries[0].interrupted))
        else:
            message = MessageDict._of({"role": "system", "content": text})
            self._entries.insert(0, make_entry(message))

    def to_request_messages(self) -> list[Message]:
        """The committed messages as a fresh, JSON-serialisable list for the next request: a
        copy, so changing it changes nothing in the context (edit through the context's
        methods; :attr:`messages` is the read-only view).

        Staged round content is excluded.  The unscaled estimate of this request (messages and
        current tools) is remembered for :meth:`calibrate_from_usage`.
        """
        return thaw(self._request_messages_shared())  # type: ignore[no-any-return]

    def _request_messages_shared(self) -> Sequence[Message]:
        """What :meth:`to_request_messages` returns, without the copy: the context's own
        read-only snapshot (JSON-serialisable as it is), for a caller that only serialises it
        (the LLM processor's request body). Remembers the request's estimate the same way."""
        self._last_request_raw = self._raw_total(include_tools=True)
        return self._entries.messages()

    def _tool_call_ids(self) -> set[str]:
        """The tool-call ids the committed messages hold (a copy to add to)."""
        return self._entries.tool_call_ids()

    def _request_messages_json(self) -> str:
        """:meth:`_request_messages_shared` as a JSON array, each message encoded once for
        all the requests that send it (the request body of a long conversation is then not
        re-encoded at every request)."""
        self._last_request_raw = self._raw_total(include_tools=True)
        return self._entries.messages_json()

    # ------------------------------------------------------------------ whole-context

    def copy(self) -> LLMContext:
        """An independent copy: messages, interruption marks, tools, tool choice, calibration.

        An open round is *not* copied; the copy has none. :func:`copy.copy` and
        :func:`copy.deepcopy` make the same copy (the values it holds are read-only, so
        sharing them is safe; sharing the message list itself would not be).
        """
        other = object.__new__(type(self))
        if hasattr(self, "__dict__"):  # a subclass's own attributes, shallow-copied
            other.__dict__.update(self.__dict__)
        other._entries = self._entries.copy()
        other._tools = list(self._tools)  # tools and the tool choice are read-only values
        other._tool_list = self._tool_list  # a read-only snapshot: shared until one changes
        other._tool_choice = self._tool_choice
        other._factor = self._factor
        other._last_request_raw = self._last_request_raw
        other._round = None
        return other

    def __copy__(self) -> LLMContext:
        return self.copy()

    def __deepcopy__(self, _memo: dict[int, Any]) -> LLMContext:
        return self.copy()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle what :meth:`copy` copies, through the public constructor (so a pickle does
        not depend on private attributes, and is checked again when loaded)."""
        tools = [tool.spec for tool in self._tools]
        state = (self.interrupted_indices(), self._factor, self._last_request_raw)
        messages = list(self._entries.messages())
        arguments = (type(self), messages, tools, self._tool_choice, state)
        extra = getattr(self, "__dict__", None)  # a subclass's own attributes
        return (_unpickle, arguments, extra) if extra else (_unpickle, arguments)

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

    def _commit_round(self, round_: ContextRound, messages: list[MessageDict]) -> None:
        if self._round is not round_:
            raise RoundStateError(
                "this round is not the context's open round: begin rounds with "
                "context.begin_round(), not ContextRound(context)"
            )
        self._entries.extend(make_entry(message) for message in messages)
        self._round = None

    def _close_round(self, round_: ContextRound) -> None:
        if self._round is round_:
            self._round = None


def _mark(interrupted: object) -> bool:
    """``interrupted`` checked: a mark is a ``bool`` (a string such as ``"no"`` is truthy)."""
    if not isinstance(interrupted, bool):
        raise TypeError(f"interrupted must be a bool, got {type(interrupted).__name__}")
    return interrupted


def _unpickle(
    cls: type[LLMContext],
    messages: list[Mapping[str, Any]],
    tools: list[ToolSpec],
    tool_choice: ToolChoice,
    state: tuple[list[int], float, int | None],
) -> LLMContext:
    context = cls.__new__(cls)
    LLMContext.__init__(context, messages, tools=tools, tool_choice=tool_choice)
    marks, context._factor, context._last_request_raw = state
    for index in marks:
        context._entries[index].interrupted = True
    return context


def _checked(message: Mapping[str, Any], index: int) -> MessageDict:
    """``message`` frozen (its values checked) and its shape checked, as message ``index``.

    The frozen copy is what is checked and stored, so a mapping that changes while it is
    read (or answers ``get`` and ``items`` differently) cannot slip past the checks.
    """
    if not isinstance(message, Mapping):
        check_message(message, f"message {index}")  # raises: not a dict
    frozen = freeze_message(message, lambda: _label(message, index), InvalidMessageError)
    check_message(frozen, f"message {index}")
    return frozen


def _label(message: Mapping[str, Any], index: int) -> str:
    role = message.get("role")
    if isinstance(role, str) and role in ROLES:
        return f"message {index} (role {role!r})"
    return f"message {index}"
