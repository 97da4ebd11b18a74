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

from ..exceptions import RustvaniError

__all__ = [
    "InMemorySessionStore",
    "SessionStore",
    "SessionStoreError",
    "check_session_id",
    "revision_of",
]


class SessionStoreError(RustvaniError, RuntimeError):
    """The session store could not do what was asked."""


def revision_of(snapshot: Mapping[str, Any]) -> int:
    """A snapshot's revision (0 when it has none). A store never replaces a snapshot with
    one of a lower revision: a save that commits late (cancelled, retried, from a process
    that lost the session) cannot undo a newer turn."""
    revision = snapshot.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise ValueError(f"a snapshot's revision is a count, got {revision!r}")
    return revision


def stale_error(session_id: str, stored: int, revision: int) -> SessionStoreError:
    return SessionStoreError(
        f"session {session_id!r} has a newer snapshot stored (revision {stored} > {revision}); "
        "it was not replaced (delete the session first to go back to an older snapshot)"
    )


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
        """Write (or replace) the snapshot of ``session_id``, atomically; never replace one
        of a higher ``revision`` (:class:`SessionStoreError` then)."""
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
        self._data: dict[str, tuple[int, str]] = {}

    async def save(self, session_id: str, snapshot: Mapping[str, Any]) -> None:
        check_session_id(session_id)
        revision = revision_of(snapshot)
        text = json.dumps(snapshot, allow_nan=False)
        await trio.lowlevel.checkpoint()
        stored = self._data.get(session_id)
        if stored is not None and stored[0] > revision:
            raise stale_error(session_id, stored[0], revision)
        self._data[session_id] = (revision, text)

    async def load(self, session_id: str) -> dict[str, Any] | None:
        check_session_id(session_id)
        await trio.lowlevel.checkpoint()
        stored = self._data.get(session_id)
        if stored is None:
            return None
        value: dict[str, Any] = json.loads(stored[1])
        return value

    async def delete(self, session_id: str) -> bool:
        check_session_id(session_id)
        await trio.lowlevel.checkpoint()
        return self._data.pop(session_id, None) is not None

    def session_ids(self) -> list[str]:
        """The stored session ids."""
        return list(self._data)
