"""PostgresSessionStore: Dhara snapshots in a PostgreSQL table (extra ``db-postgres``).

```python
async with PostgresSessionStore.open("postgresql://app@db/app") as store:
    processor = dhara.processor(store=store, session_id=session_id)  # saved after each turn
    ...
    resumed = await dhara.load(store, session_id)  # in any worker process
```

One row per session (``session_id`` primary key, the flow's id and version, the node, the
snapshot's revision, the snapshot as ``jsonb``, ``updated_at``), written in one transaction
per save; a save never replaces a row of a higher revision, so a save that commits late
(cancelled, or from a worker that lost the session) cannot undo a newer turn. psycopg's async
API is asyncio-only, so the sync API runs in worker threads (``trio.to_thread``) from a
``psycopg_pool`` pool; a cancelled query is cancelled on the server too (``cancel_safe``,
shielded and bounded). Errors never carry the connection string.
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .store import SessionStoreError, check_session_id, revision_of, stale_error

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

__all__ = ["PostgresSessionStore", "SessionStoreError"]

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


def _modules() -> tuple[Any, Any, Any]:
    try:
        import psycopg
        import psycopg_pool
        from psycopg.types.json import Jsonb
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "PostgresSessionStore needs psycopg: pip install 'rustvani-trio[db-postgres]'"
        ) from exc
    return psycopg, psycopg_pool, Jsonb


def _describe(exc: BaseException) -> str:
    """An error's gist without what it may quote of the connection string."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    state = getattr(exc, "sqlstate", None)
    text = primary or type(exc).__name__
    return f"{text} (SQLSTATE {state})" if state else text


class PostgresSessionStore:
    """A :class:`~rustvani_trio.dhara.SessionStore` on PostgreSQL; build it with
    :meth:`open`."""

    def __init__(self, pool: Any, *, table: str = "dhara_sessions", timeout: float = 10.0):
        if not _NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._pool = pool
        self.table = table
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<PostgresSessionStore table={self.table!r}>"

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        conninfo: str,
        *,
        table: str = "dhara_sessions",
        min_size: int = 1,
        max_size: int = 4,
        op_timeout: float = 10.0,
        create_table: bool = True,
    ) -> AsyncIterator[PostgresSessionStore]:
        """Open a connection pool (closed on exit) and, unless told otherwise, create the
        table if it is missing. ``op_timeout`` bounds connecting and waiting for a pooled
        connection."""
        timeout = op_timeout
        psycopg, psycopg_pool, _jsonb = _modules()
        try:
            # Checked here: a malformed string would otherwise be quoted, password and all,
            # by the pool's connection warnings.
            psycopg.conninfo.conninfo_to_dict(conninfo)
        except Exception:
            raise SessionStoreError(
                "the PostgreSQL connection string is malformed (not shown: it may hold a password)"
            ) from None
        pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=min_size, max_size=max_size, open=False, timeout=timeout
        )
        store = cls(pool, table=table, timeout=timeout)
        try:
            await trio.to_thread.run_sync(
                lambda: pool.open(wait=True, timeout=timeout), abandon_on_cancel=True
            )
        except Exception as exc:
            await store._close()
            raise SessionStoreError(
                f"could not connect to PostgreSQL within {timeout:g}s: {_describe(exc)}"
            ) from None
        try:
            if create_table:
                await store.create_table()
            yield store
        finally:
            await store._close()

    async def _close(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.timeout):
            await trio.to_thread.run_sync(
                lambda: self._pool.close(timeout=self.timeout), abandon_on_cancel=True
            )

    def _table(self) -> sql.Identifier:
        from psycopg import sql

        return sql.Identifier(*self.table.split("."))

    async def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work(conn)`` in a worker thread, in one transaction (committed when it returns).
        A cancelled call cancels its query on the server, and only its own: the connection
        is forgotten under a lock before it goes back to the pool."""
        lock = threading.Lock()
        active: list[Any] = []

        def in_thread() -> T:
            with self._pool.connection(timeout=self.timeout) as conn:
                with lock:
                    active.append(conn)
                try:
                    with conn.transaction():
                        return work(conn)
                finally:
                    with lock:
                        active.clear()

        def cancel() -> None:
            with lock:
                if active:
                    active[0].cancel_safe(timeout=2.0)

        try:
            return await trio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
        except trio.Cancelled:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 3.0):
                await trio.to_thread.run_sync(cancel, abandon_on_cancel=True)
            raise
        except SessionStoreError:
            raise
        except Exception as exc:
            raise SessionStoreError(f"PostgreSQL session store: {_describe(exc)}") from None

    async def create_table(self) -> None:
        """``CREATE TABLE IF NOT EXISTS`` the sessions table."""
        from psycopg import sql

        query = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " session_id text PRIMARY KEY,"
            " flow_id text NOT NULL,"
            " flow_version text NOT NULL,"
            " node text NOT NULL,"
            " revision bigint NOT NULL DEFAULT 0,"
            " snapshot jsonb NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(self._table())
        upgrade = sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT 0"
        ).format(self._table())

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(query)
            conn.execute(upgrade)

        await self._run(work)

    async def save(self, session_id: str, snapshot: Mapping[str, Any]) -> None:
        """Insert or replace the row of ``session_id``, in one transaction; a row of a higher
        revision is kept (:class:`SessionStoreError`)."""
        from psycopg import sql

        check_session_id(session_id)
        revision = revision_of(snapshot)
        _psycopg, _pool, jsonb = _modules()
        table = self._table()
        query = sql.SQL(
            "INSERT INTO {} AS t (session_id, flow_id, flow_version, node, revision, snapshot,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (session_id) DO UPDATE SET flow_id = EXCLUDED.flow_id,"
            " flow_version = EXCLUDED.flow_version, node = EXCLUDED.node,"
            " revision = EXCLUDED.revision, snapshot = EXCLUDED.snapshot, updated_at = now()"
            " WHERE t.revision <= EXCLUDED.revision"
        ).format(table)
        stored = sql.SQL("SELECT revision FROM {} WHERE session_id = %s").format(table)
        params = (
            session_id,
            str(snapshot.get("flow_id", "")),
            str(snapshot.get("flow_version", "")),
            str(snapshot.get("node", "")),
            revision,
            jsonb(dict(snapshot)),
        )

        def work(conn: psycopg.Connection[Any]) -> int | None:
            if conn.execute(query, params).rowcount:
                return None
            row = conn.execute(stored, (session_id,)).fetchone()
            return None if row is None else int(row[0])

        newer = await self._run(work)
        if newer is not None:
            raise stale_error(session_id, newer, revision)

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The snapshot of ``session_id``, or ``None``."""
        from psycopg import sql

        check_session_id(session_id)
        query = sql.SQL("SELECT snapshot FROM {} WHERE session_id = %s").format(self._table())

        def work(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
            row = conn.execute(query, (session_id,)).fetchone()
            return None if row is None else dict(row[0])

        return await self._run(work)

    async def delete(self, session_id: str) -> bool:
        """Delete the row of ``session_id``; whether there was one."""
        from psycopg import sql

        check_session_id(session_id)
        query = sql.SQL("DELETE FROM {} WHERE session_id = %s").format(self._table())
        return await self._run(lambda conn: conn.execute(query, (session_id,)).rowcount > 0)
