"""The tool under trio: cancelling a running query, many queries at once through the pool, a
database that is down, and secrets that never show."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable

import pytest
import trio
from psycopg.pq import TransactionStatus

from rustvani_trio.tools._pg_exec import Executor
from rustvani_trio.tools.postgres import NeonPostgresTool, PostgresUnavailableError

from .helpers import (
    READER_PASSWORD,
    Caller,
    PgDatabase,
    backends_settle,
    eventually,
    query_is_running,
    settled_pool_stats,
    started,
    tool_backends,
)

LONG_QUERY = "SELECT count(*) FROM generate_series(1, 10000000000)"


async def _backends(url: str) -> list[tuple[object, ...]]:
    return await trio.to_thread.run_sync(tool_backends, url)


async def test_cancelling_a_long_query_stops_it_on_the_server(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=60_000)
    async with started(tool) as call:
        outputs: list[object] = []
        scope = trio.CancelScope()

        async def run_query() -> None:
            with scope:
                outputs.append(await call("pg_query", query=LONG_QUERY))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_query)
            await eventually(lambda: query_is_running(pg_db.admin_url))
            started_at = time.perf_counter()
            scope.cancel()
        elapsed = time.perf_counter() - started_at
        assert outputs == [] and scope.cancelled_caught
        assert elapsed < 0.5, f"the cancelled call took {elapsed:.3f}s to return"
        backends = await _backends(pg_db.admin_url)
        assert backends and all(state == "idle" for _pid, state, _q in backends), backends
        # The pool is healthy: every connection came back, and the next query works.
        stats = await settled_pool_stats(tool)
        assert stats["pool_available"] == stats["pool_size"]
        again = await call("pg_query", query="SELECT 41 + 1 AS answer")
        assert again.raw["rows"] == [[42]]  # type: ignore[index]
        assert call.errors == []


async def test_cancelling_calls_that_wait_for_the_pool_is_prompt(pg_db: PgDatabase) -> None:
    """Five long queries on a pool of one: one runs, four wait for it; cancelling them all
    returns at once and leaves the pool whole."""
    tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=60_000, pool_size=1)
    async with started(tool) as call:
        done: list[object] = []
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(lambda: _append(done, call("pg_query", query=LONG_QUERY)))
            await eventually(lambda: query_is_running(pg_db.admin_url))
            begun = time.perf_counter()
            nursery.cancel_scope.cancel()
        elapsed = time.perf_counter() - begun
        assert done == [] and elapsed < 0.5, elapsed
        stats = await settled_pool_stats(tool)
        assert stats["pool_available"] == stats["pool_size"] == 1
        assert (await call("pg_query", query="SELECT 1")).raw["rows"] == [[1]]  # type: ignore[index]
        backends = await _backends(pg_db.admin_url)
        assert [state for _p, state, _q in backends] == ["idle"]


async def _append(out: list[object], aw: Awaitable[object]) -> None:
    out.append(await aw)


async def test_the_statement_timeout_cancels_on_the_server(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=200)
    async with started(tool) as call:
        out = await call("pg_query", query=LONG_QUERY)
        assert "statement timeout (200 ms)" in out.summary
        assert len(call.errors) == 1 and "statement timeout" in call.errors[0]
        assert (await call("pg_query", query="SELECT 1")).raw["rows"] == [[1]]  # type: ignore[index]


async def test_fifty_concurrent_queries_share_the_pool_without_leaks(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, pool_size=4)
    results: dict[int, list[object]] = {}
    async with started(tool) as call:

        async def one(i: int) -> None:
            out = await call(
                "pg_query",
                query="SELECT $1::int * 2 AS doubled, pg_backend_pid() AS pid, "
                "(SELECT count(*) FROM orders WHERE quantity >= $2) AS big",
                params=[i, i % 4],
            )
            results[i] = out.raw["rows"][0]  # type: ignore[index]

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
        expected_big = {0: 4, 1: 4, 2: 2, 3: 1}
        assert sorted(results) == list(range(50))
        for i, (doubled, _pid, big) in results.items():
            assert (doubled, big) == (2 * i, expected_big[i % 4])
        pids = {pid for _d, pid, _b in results.values()}
        assert 1 <= len(pids) <= 4
        assert call.errors == []
        stats = await settled_pool_stats(tool)
        assert stats["pool_size"] <= 4 and stats["pool_available"] == stats["pool_size"]
        assert stats["requests_num"] >= 50 and stats.get("requests_errors", 0) == 0
        assert stats.get("connections_lost", 0) == 0
        # At most the pool's four connections (the start's own probe connection, closed
        # before the pool opened, may take a moment to leave pg_stat_activity).
        await backends_settle(pg_db.admin_url, lambda backends: len(backends) <= 4)
        result_ids = sorted({rs for rs in tool._results.ids()})
        assert len(result_ids) == tool.config.max_result_sets  # ids are unique, oldest evicted
    # on_stop closed every connection: each backend goes (a leaked connection would stay).
    await backends_settle(pg_db.admin_url, lambda backends: backends == [])


async def test_a_database_that_is_down_is_reported_and_never_blocks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Sup3r-Secret-PW"
    tool = NeonPostgresTool.from_url(
        f"postgresql://someone:{secret}@127.0.0.1:1/nodb", connect_timeout=2
    )
    with caplog.at_level(logging.DEBUG):
        with trio.fail_after(10):
            with pytest.raises(PostgresUnavailableError, match="database unavailable") as info:
                await tool.on_start()
        assert secret not in str(info.value)
        # A later (lazy) start records it instead of raising; the calls answer at once.
        await tool.on_start()
        call = Caller(tool)
        with trio.fail_after(10):
            out = await call("pg_query", query="SELECT 1")
            again = await call("pg_schema")
        assert out.summary.startswith("Error: database unavailable")
        assert again.summary.startswith("Error: database unavailable")
        assert len(call.errors) == 2 and "database unavailable" in call.errors[0]
        await tool.on_stop()
    texts = [r.getMessage() for r in caplog.records] + call.errors + [out.summary, repr(tool)]
    assert not any(secret in t for t in texts)


async def test_the_password_never_shows_in_errors_or_logs(
    pg_db: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url)
    with caplog.at_level(logging.DEBUG):
        async with started(tool) as call:
            outs = [
                await call("pg_query", query=f"SELECT '{READER_PASSWORD}' AS leaked"),
                await call("pg_query", query=f"SELECT {READER_PASSWORD}"),
                await call("pg_query", query=f'SELECT * FROM "{READER_PASSWORD}"'),
            ]
    texts = [o.summary for o in outs] + call.errors + [r.getMessage() for r in caplog.records]
    assert call.errors  # the failing ones were reported
    assert not any(READER_PASSWORD in t for t in texts), texts
    assert READER_PASSWORD not in repr(tool) and READER_PASSWORD not in repr(tool.config)


class _SlowPool:
    """A pool whose getconn blocks until ``release`` is set (a database slow to accept
    connections, a pool growing towards a remote server)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.returned: list[object] = []
        self.handed_back = threading.Event()

    def getconn(self) -> object:
        self.entered.set()
        self.release.wait(10)
        return _FakeConn()

    def putconn(self, conn: object) -> None:
        self.returned.append(conn)
        self.handed_back.set()


class _FakeConn:
    class info:  # mimics psycopg's conn.info
        transaction_status = TransactionStatus.IDLE

    def execute(self, *_args: object, **_kwargs: object) -> None:
        pass


async def test_cancelling_a_call_that_waits_for_a_connection_is_prompt() -> None:
    """A call whose worker was still waiting for a connection took the whole cancel grace
    (2 s) to unwind: the canceller kept waiting for a statement that had not started. It
    now returns at once; the worker hands the connection back unused when it gets one."""
    pool = _SlowPool()
    ran: list[object] = []
    executor = Executor(pool, size=2)  # type: ignore[arg-type]
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run, ran.append)
            await trio.to_thread.run_sync(pool.entered.wait, 5)
            begun = time.perf_counter()
            scope.cancel()
    elapsed = time.perf_counter() - begun
    assert elapsed < 0.5, f"the cancelled call took {elapsed:.3f}s to return"
    pool.release.set()
    assert await trio.to_thread.run_sync(pool.handed_back.wait, 5)
    assert ran == [] and len(pool.returned) == 1  # never used, handed back
