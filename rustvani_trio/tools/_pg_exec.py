"""Running statements: psycopg's sync API in worker threads, driven from trio.

psycopg 3's async API runs only on asyncio, so every database call is a plain function run
with :func:`trio.to_thread.run_sync` under a :class:`trio.CapacityLimiter` as large as the pool.
When the trio side is cancelled (an interruption, a CancelFrame, the tool timeout), it asks
the server to cancel the running statement with ``conn.cancel_safe()``, shielded and bounded
in time, and waits (bounded) for the worker to roll back and return its connection, so the
pool stays healthy; then the cancellation goes on.

Safety layers 1 and 2 live here: the statement runs through the extended protocol in a
server-side (named) cursor, which PostgreSQL refuses for data-modifying statements, fetching
at most ``limit + 1`` rows; around it ``BEGIN READ ONLY``, ``SET LOCAL statement_timeout`` and
always ``ROLLBACK``; the pool runs ``DISCARD ALL`` on every returned connection, so settings,
advisory locks, prepared statements and temporary state never outlive a call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import psycopg
import trio
from psycopg import RawCursor, RawServerCursor
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from ._pg_guard import QueryRefused
from ._pg_values import adapters, to_json_value

__all__ = [
    "CURSOR_SQL_OFFSET",
    "Column",
    "Executor",
    "Layers",
    "QueryResult",
    "Statement",
    "guarded_sql",
    "make_pool",
    "run_statement",
]

T = TypeVar("T")

_CURSOR_NAME = "rustvani_trio_cursor"

# The size guard: a running total of the rows' sizes, and a failing cast (whose message the
# tool recognizes) once it passes the budget. ``rvt_q.*`` is the whole row even when the
# model's query has a column called rvt_q (a bare ``rvt_q`` would then be that column).
_TOO_LARGE = "rvt-result-too-large"
_GUARD_HEAD = (
    "SELECT * FROM (SELECT *, pg_catalog.sum(pg_catalog.pg_column_size(rvt_q.*)) "
    'OVER (ROWS UNBOUNDED PRECEDING) AS "rvt result bytes" FROM (\n'
)


def guarded_sql(sql: str, max_bytes: int) -> str:
    """``sql`` wrapped so that the server stops it, with an error, once its rows come to more
    than ``max_bytes`` (PostgreSQL's sizes of the rows, in the query's order); the rows get
    one more column, the running total, which :func:`run_statement` leaves out.

    A server-side cursor fetches lazily, so the statement never produces more than the rows
    fetched (plus the one that passes the budget): no client memory beyond ``max_bytes``
    (about three times that as text on the wire), whatever the model's query computes."""
    return (
        f'{_GUARD_HEAD}{sql}\n) AS rvt_q) AS rvt_w WHERE CASE WHEN rvt_w."rvt result bytes" <= '
        f"{int(max_bytes)} THEN true ELSE ('{_TOO_LARGE} ' || rvt_w.\"rvt result bytes\")::int "
        "IS NULL END"
    )


#: Where the model's SQL starts in the text the server sees (for error positions).
CURSOR_SQL_OFFSET = len(f'DECLARE "{_CURSOR_NAME}" CURSOR FOR ') + len(_GUARD_HEAD)


@attrs.frozen(kw_only=True)
class Layers:
    """The safety layers, all on in normal use. Tests switch single layers off to show that
    each one stops attacks on its own; nothing public sets them."""

    parser: bool = True
    read_only_transaction: bool = True
    cursor: bool = True
    reset: bool = True
    role_check: bool = True
    wrap: bool = True


@attrs.frozen
class Column:
    """A result column: its name and PostgreSQL type (``format_type``, e.g. ``numeric(10,2)``)."""

    name: str
    type: str
    base: str = attrs.field(default="", eq=False)  # without modifier: what values are cast to
    oid: int = attrs.field(default=0, eq=False)


@attrs.frozen
class QueryResult:
    """Rows as JSON-ready values; ``truncated`` when more rows existed than were fetched."""

    columns: tuple[Column, ...]
    rows: list[list[Any]]
    truncated: bool
    rowcount: int = -1


@attrs.frozen(kw_only=True)
class Statement:
    """What one call runs: checked SQL, text bind parameters, the row cap, the limits."""

    sql: str
    params: Sequence[Any] = ()
    limit: int
    timeout_ms: int
    max_bytes: int = 16 * 2**20
    read_only: bool = True
    writes: bool = False
    layers: Layers = Layers()


def make_pool(conninfo: str, *, size: int, connect_timeout: float, name: str) -> ConnectionPool:
    """A pool (not opened) whose connections are autocommit (transactions are explicit),
    never auto-prepare, use the tool's loaders and are checked before use. (The reset,
    ``DISCARD ALL``, is done by :class:`Executor` before a connection goes back, so it is
    over when the call returns.)"""
    return ConnectionPool(
        conninfo,
        min_size=1,
        max_size=size,
        open=False,
        name=name,
        timeout=connect_timeout,
        kwargs={
            "autocommit": True,
            "prepare_threshold": 5,  # only ever used with prepare=True, see run_statement
            "context": adapters(),
            "connect_timeout": max(2, round(connect_timeout)),
            "application_name": "rustvani-trio",
        },
        check=ConnectionPool.check_connection,
        reconnect_timeout=max(connect_timeout, 1.0) * 6,
    )


def _setup_sql(stmt: Statement) -> str:
    if not stmt.layers.read_only_transaction:
        begin = "BEGIN"  # (the role's default_transaction_read_only decides)
    else:
        begin = "BEGIN READ ONLY" if stmt.read_only else "BEGIN READ WRITE"
    ms = int(stmt.timeout_ms)
    # Our own constant text (one round trip); the model's SQL never goes this way.
    # standard_conforming_strings: the parser (layer 3) reads literals as PostgreSQL does
    # with it on; off (a legacy setting of a database or role), the server would read
    # 'x\'' differently and run what the parser took for the inside of a string.
    return (
        f"{begin}; SET LOCAL statement_timeout = {ms}; "
        f"SET LOCAL idle_in_transaction_session_timeout = {max(ms * 3, 10_000)}; "
        "SET LOCAL standard_conforming_strings = on; "
        "SET LOCAL IntervalStyle = iso_8601; SET LOCAL DateStyle = 'ISO, YMD'"
    )


def _type_names(
    conn: psycopg.Connection[Any], keys: list[tuple[int, int]], cache: dict[tuple[int, int], str]
) -> list[str]:
    missing = sorted({k for k in keys if k not in cache})
    if missing:
        cur = RawCursor(conn)
        cur.execute(
            "SELECT format_type(t, NULLIF(m, -1)) FROM unnest($1::oid[], $2::int4[]) AS x(t, m)",
            [[k[0] for k in missing], [k[1] for k in missing]],
            prepare=False,
        )
        for key, (name,) in zip(missing, cur.fetchall(), strict=True):
            cache[key] = str(name)
    return [cache[k] for k in keys]


def run_statement(
    conn: psycopg.Connection[Any], stmt: Statement, type_cache: dict[tuple[int, int], str]
) -> QueryResult:
    """Run ``stmt`` on ``conn`` (in a worker thread). Always ends the transaction: ROLLBACK,
    or COMMIT only for a data-modifying statement of a tool configured with read_only=False."""
    conn.execute(_setup_sql(stmt), prepare=False)
    committed = False
    scur: RawServerCursor[Any] | None = None
    try:
        params = list(stmt.params)
        if stmt.layers.cursor and not stmt.writes:
            scur = RawServerCursor(conn, _CURSOR_NAME)
            scur.execute(guarded_sql(stmt.sql, stmt.max_bytes), params)
            raw = _fetch_guarded(scur, stmt.limit + 1, stmt.max_bytes)
            rowcount = len(raw)
            res = scur.pgresult
            names = [c.name for c in scur.description or ()][:-1]  # (not the running total)
        else:
            # The extended protocol all the same: a prepared statement holds one command.
            cur = RawCursor(conn)
            cur.execute(stmt.sql, params, prepare=True)
            raw = cur.fetchmany(stmt.limit + 1) if cur.description else []
            rowcount = cur.rowcount
            res = cur.pgresult
            names = [c.name for c in cur.description or ()]
        keys = [(res.ftype(i), res.fmod(i)) for i in range(len(names))] if res else []
        bases = [(oid, -1) for oid, _ in keys]
        types = _type_names(conn, keys + bases, type_cache) if keys else []
        columns = tuple(
            Column(n, t, b, k[0])
            for n, t, b, k in zip(names, types[: len(keys)], types[len(keys) :], keys, strict=True)
        )
        truncated = len(raw) > stmt.limit
        rows = [
            [to_json_value(v, c.type) for v, c in zip(row, columns, strict=True)]
            for row in raw[: stmt.limit]
        ]
        if stmt.writes and not stmt.read_only:
            conn.execute("COMMIT", prepare=False)
            committed = True
        return QueryResult(columns, rows, truncated, rowcount)
    finally:
        if not committed and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):  # (broken: the pool discards it)
                conn.execute("ROLLBACK", prepare=False)
        if scur is not None:  # after the ROLLBACK, which ended the cursor: no CLOSE sent
            with contextlib.suppress(psycopg.Error):
                scur.close()


def _fetch_guarded(scur: RawServerCursor[Any], count: int, max_bytes: int) -> list[tuple[Any, ...]]:
    """Up to ``count`` rows of a :func:`guarded_sql` cursor, without the running total."""
    try:
        rows = scur.fetchmany(count)
    except psycopg.errors.InvalidTextRepresentation as exc:
        message = exc.diag.message_primary or ""
        if _TOO_LARGE not in message:
            raise
        size = message.split(_TOO_LARGE, 1)[1].strip(' "')
        raise QueryRefused(
            f"the result is larger than the tool takes ({max_bytes} bytes; the rows came to "
            f"{size} bytes before it stopped them): select fewer or shorter columns (e.g. "
            "left(body, 500) instead of a long text, no large binary or JSON values) or fewer "
            "rows (a WHERE clause, a LIMIT)"
        ) from None
    return [row[:-1] for row in rows]


@attrs.define
class _Call:
    """One call's shared state between the trio task and its worker thread."""

    lock: threading.Lock = attrs.Factory(threading.Lock)
    conn: psycopg.Connection[Any] | None = None
    began: bool = False  # the worker thread runs (it may still wait for a connection)
    cancelled: bool = False


class Executor:
    """Runs jobs (``job(conn) -> T``) on pooled connections in worker threads, cancellably."""

    def __init__(
        self, pool: ConnectionPool, *, size: int, reset: bool = True, cancel_grace: float = 2.0
    ) -> None:
        self.pool = pool
        self.reset = reset
        self.limiter = trio.CapacityLimiter(size)
        self._cancel_limiter = trio.CapacityLimiter(max(2, size))
        self.cancel_grace = cancel_grace
        self.type_cache: dict[tuple[int, int], str] = {}

    def _work(self, call: _Call, job: Callable[[psycopg.Connection[Any]], T]) -> T:
        with call.lock:
            call.began = True
        conn = self.pool.getconn()
        try:
            with call.lock:
                if call.cancelled:
                    raise psycopg.errors.QueryCanceled("cancelled before it started")
                call.conn = conn
            return job(conn)
        finally:
            with call.lock:  # no cancel request can reach this connection's next user
                call.conn = None
            self._reset(conn)
            self.pool.putconn(conn)

    def _reset(self, conn: psycopg.Connection[Any]) -> None:
        """End any transaction and drop all session state (settings, advisory locks,
        prepared statements, temporary tables, LISTEN); a connection that cannot be reset is
        closed, and the pool replaces it."""
        try:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK", prepare=False)
            if self.reset:
                conn.execute("DISCARD ALL", prepare=False)
        except psycopg.Error:
            conn.close()

    @staticmethod
    def _send_cancel(call: _Call, timeout: float) -> bool:
        """Ask the server to cancel the call's statement; False when the call holds no
        connection (still waiting for one, or done with it): nothing runs on its behalf."""
        with call.lock:
            call.cancelled = True
            conn = call.conn
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.cancel_safe(timeout=timeout)
        return conn is not None

    async def run(self, job: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``job`` in a worker thread on a pooled connection. If cancelled: cancel the
        statement on the server, wait (bounded) for the worker to hand its connection back,
        and re-raise the cancellation."""
        call = _Call()
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def work() -> T:
            try:
                return self._work(call, job)
            finally:
                with contextlib.suppress(trio.RunFinishedError):  # (the run is gone)
                    token.run_sync_soon(done.set)

        try:
            return await trio.to_thread.run_sync(work, limiter=self.limiter, abandon_on_cancel=True)
        except trio.Cancelled:
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self.cancel_grace):
                await self._cancel(call, done)
            raise

    async def _cancel(self, call: _Call, done: trio.Event) -> None:
        with call.lock:
            call.cancelled = True
            began = call.began
        if not began:
            # Cancelled while waiting for a worker (the limiter): no thread, or one that will
            # see ``cancelled`` before it runs anything and hand its connection straight back.
            return
        # Repeat: the worker may not have started its statement when the first request went.
        # A worker still waiting for a connection is not waited for: it sees ``cancelled``
        # once it has one and hands it straight back, unused.
        while not done.is_set():
            holds_connection = await trio.to_thread.run_sync(
                self._send_cancel,
                call,
                self.cancel_grace,
                limiter=self._cancel_limiter,
                abandon_on_cancel=True,
            )
            if not holds_connection:
                return
            with trio.move_on_after(0.05):
                await done.wait()

    async def run_on(self, func: Callable[[], T]) -> T:
        """Run a plain blocking function (no pooled connection) in a worker thread."""
        return await trio.to_thread.run_sync(func, abandon_on_cancel=True)
