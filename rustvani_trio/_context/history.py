"""The committed messages of a context, with the side data of each (never sent)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final

import attrs

from .estimate import message_tokens
from .readonly import MessageDict, MessageList

__all__ = ["Entry", "History", "encode_json", "make_entry"]

#: JSON as httpx sends a ``json=`` body: compact, UTF-8 as it is, no NaN.
encode_json: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


@attrs.define(slots=True)
class Entry:
    """One committed message with its heuristic token count, interruption mark, and its JSON
    encoding once a request needed it (the message is read-only, so it never goes stale)."""

    message: MessageDict
    tokens: int
    interrupted: bool = False
    json: str | None = attrs.field(default=None, eq=False, repr=False)

    def encoded(self) -> str:
        """The message as JSON (encoded once)."""
        text = self.json
        if text is None:
            text = self.json = encode_json(self.message)
        return text


def make_entry(message: MessageDict, interrupted: bool = False) -> Entry:
    """An :class:`Entry` for ``message`` (already checked and frozen)."""
    return Entry(message=message, tokens=message_tokens(message), interrupted=interrupted)


class History:
    """The committed entries in order, with their token total and a read-only snapshot of
    their messages kept up to date.

    Every change goes through a method here, so that derived data can never go stale. The
    messages are read-only (:class:`.readonly.MessageDict`), so the snapshot can share them.
    """

    __slots__ = ("_entries", "_ids", "_json", "_snapshot", "_tokens", "_upto")

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: list[Entry] = list(entries)
        self._tokens = sum(entry.tokens for entry in self._entries)
        self._snapshot: MessageList | None = None
        # Derived from the first ``_upto`` entries, kept while entries are only appended: the
        # messages' JSON joined (without the brackets), and the tool-call ids they hold.
        self._upto = 0
        self._json = ""
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __getitem__(self, index: int) -> Entry:
        return self._entries[index]

    @property
    def tokens(self) -> int:
        """The sum of the entries' heuristic token counts."""
        return self._tokens

    def messages(self) -> MessageList:
        """The messages, in order: a read-only list, made once per change of the history."""
        if self._snapshot is None:
            self._snapshot = MessageList._of([entry.message for entry in self._entries])
        return self._snapshot

    def messages_json(self) -> str:
        """The messages as one JSON array (what :func:`encode_json` makes of
        :meth:`messages`), from the entries' own encodings: after messages were appended,
        only those are encoded and joined on."""
        self._catch_up()
        return "[" + self._json + "]"

    def tool_call_ids(self) -> set[str]:
        """The tool-call ids the messages hold (of calls and of results): a copy."""
        self._catch_up()
        return set(self._ids)

    def _catch_up(self) -> None:
        entries = self._entries
        upto = self._upto
        if upto == len(entries):
            return
        new = entries[upto:]
        joined = ",".join([entry.encoded() for entry in new])
        self._json = f"{self._json},{joined}" if upto else joined
        ids = self._ids
        for entry in new:
            message = entry.message
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    ids.add(call["id"])
            if isinstance(message.get("tool_call_id"), str):
                ids.add(message["tool_call_id"])
        self._upto = len(entries)

    def _restart(self) -> None:
        """An entry before the end changed: what was derived is made again when asked."""
        self._snapshot = None
        self._upto = 0
        self._json = ""
        self._ids = set()

    def roles(self) -> list[Any]:
        """The role of each message, in order."""
        return [entry.message["role"] for entry in self._entries]

    def extend(self, entries: Iterable[Entry]) -> None:
        """Append ``entries``."""
        entries = list(entries)
        self._entries.extend(entries)
        self._snapshot = None  # (the JSON and the ids catch up when asked)
        self._tokens += sum(entry.tokens for entry in entries)

    def insert(self, index: int, entry: Entry) -> None:
        """Insert ``entry`` before position ``index`` (``0 <= index <= len``)."""
        if index >= len(self._entries):  # at the end: an append (add_message's way)
            self.extend((entry,))
            return
        self._entries.insert(index, entry)
        self._restart()
        self._tokens += entry.tokens

    def replace(self, index: int, entry: Entry) -> Entry:
        """Put ``entry`` at ``index``; return the entry it replaced."""
        old = self._entries[index]
        self._entries[index] = entry
        self._restart()
        self._tokens += entry.tokens - old.tokens
        return old

    def delete(self, start: int, stop: int) -> None:
        """Remove the entries ``start:stop``."""
        self._tokens -= sum(entry.tokens for entry in self._entries[start:stop])
        del self._entries[start:stop]
        self._restart()

    def copy(self) -> History:
        """An independent copy (the read-only messages are shared)."""
        return History(
            Entry(message=e.message, tokens=e.tokens, interrupted=e.interrupted, json=e.json)
            for e in self._entries
        )
