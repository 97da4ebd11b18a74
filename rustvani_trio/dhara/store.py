"""Session stores: where a conversation's snapshot lives between processes.

A :class:`SessionStore` keeps one snapshot (``DharaManager.snapshot()``) per session id.
:class:`InMemorySessionStore` is for tests and single-process apps;
:class:`~rustvani_trio.dhara.postgres.PostgresSessionStore` (extra ``db-postgres``) lets any
worker process resume any conversation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import trio

__all__ = ["InMemorySessionStore", "SessionStore", "check_session_id"]


def check_session_id(session_id: str) -> None:
    """A session id is a non-empty string of at most 200 characters."""
    if not isinstance(session_id, str) or not session_id or len(session_id) > 200:
        raise ValueError(
            f"a session id must be a non-empty string (<= 200 chars), got {session_id!r}"
        )


@runtime_checkable
class SessionStore(Protocol):
    """Where snapshots are kept, by session id."""

    async def save(self, session_id: str, snapshot: Mapping[str, Any]) -> None:
        """Write (or replace) the snapshot of ``session_id``, atomically."""
        ...

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The snapshot of ``session_id``, or ``None``."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Forget ``session_id``; whether there was something to forget."""
        ...


class InMemorySessionStore:
    """Snapshots in a dict of this process. Each is stored as JSON text, so what is loaded is
    always a fresh copy and a value that is not JSON is refused at save time."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    async def save(self, session_id: str, snapshot: Mapping[str, Any]) -> None:
        check_session_id(session_id)
        text = json.dumps(snapshot)
        await trio.lowlevel.checkpoint()
        self._data[session_id] = text

    async def load(self, session_id: str) -> dict[str, Any] | None:
        check_session_id(session_id)
        await trio.lowlevel.checkpoint()
        text = self._data.get(session_id)
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    async def delete(self, session_id: str) -> bool:
        check_session_id(session_id)
        await trio.lowlevel.checkpoint()
        return self._data.pop(session_id, None) is not None

    def session_ids(self) -> list[str]:
        """The stored session ids."""
        return list(self._data)
