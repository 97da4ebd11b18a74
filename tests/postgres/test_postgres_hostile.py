"""The hostile-query suite: every known way out of "read-only" that people have used against
database tools, through the tool as a model would call it. Each attempt must be refused or made
harmless, and afterwards a fingerprint of the data, the catalog state and the roles' settings
must be unchanged.

It runs twice: as the read-only role (the normal setup), and as a superuser with
``allow_superuser=True``, where the role no longer helps and layers 1-3 must hold alone (on
PostgreSQL 15 a superuser inside a READ ONLY transaction can still run ``COPY ... TO PROGRAM``,
``pg_read_file``, ``lo_import``, ``pg_import_system_collations`` and ``set_config``).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
import trio

from rustvani_trio.tools.postgres import NeonPostgresTool

from .helpers import PgDatabase, admin_rows, fingerprint, settled_pool_stats, started

PWNED = f"/tmp/rvt_pwned_{os.getpid()}_{secrets.token_hex(3)}"

REFUSED, HARMLESS = "refused", "harmless"

Attempt = tuple[str, str, dict[str, Any], str]


def q(label: str, query: str, expected: str = REFUSED, **more: Any) -> Attempt:
    """A pg_query attempt."""
    return (label, "pg_query", {"query": query, **more}, expected)


def refine(label: str, expected: str = REFUSED, **args: Any) -> Attempt:
    """A pg_refine attempt on rs_0001 (``SELECT * FROM products``)."""
    return (label, "pg_refine", {"result_set_id": "rs_0001", **args}, expected)


def filters(column: str, op: str, value: Any) -> list[dict[str, Any]]:
    return [{"column": column, "op": op, "value": value}]


ATTEMPTS: list[Attempt] = [
    # stacked statements and transaction smuggling
    q("stacked drop", "SELECT 1; DROP TABLE orders"),
    q("MCP escape", "SELECT 1; COMMIT; DROP SCHEMA public CASCADE;"),
    q("bare commit", "COMMIT"),
    q("rollback then write", "ROLLBACK; DELETE FROM orders"),
    q("end then write", "END; UPDATE products SET price = 0"),
    q("begin read write", "BEGIN READ WRITE"),
    # writes, DDL and utility statements
    q("delete", "DELETE FROM orders"),
    q("insert", "INSERT INTO customers (name) VALUES ('x')"),
    q("update", "UPDATE products SET price = 0"),
    q("truncate", "TRUNCATE orders"),
    q("drop", "DROP TABLE orders"),
    q("create temp", "CREATE TEMP TABLE t AS SELECT 1"),
    q("grant", "GRANT ALL ON orders TO PUBLIC"),
    q("alter role", "ALTER ROLE CURRENT_USER SUPERUSER"),
    q("do block", "DO $$BEGIN DELETE FROM orders; END$$"),
    q("explain analyze", "EXPLAIN ANALYZE DELETE FROM orders"),
    q("lock table", "LOCK TABLE orders"),
    q("notify", "NOTIFY ch, 'x'"),
    # writable CTEs
    q("cte delete", "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"),
    q("cte update", "WITH u AS (UPDATE products SET price = 0 RETURNING 1) SELECT 1"),
    q(
        "cte insert nested",
        "SELECT * FROM (WITH i AS (INSERT INTO notes VALUES (9, 'x') RETURNING id) "
        "SELECT id FROM i) s",
    ),
    # INTO and locking
    q("select into", "SELECT * INTO stolen FROM customers"),
    q("for update", "SELECT * FROM products FOR UPDATE"),
    q("for share in subquery", "SELECT (SELECT id FROM products LIMIT 1 FOR SHARE)"),
    # server programs and files
    q("copy to program", f"COPY (SELECT 1) TO PROGRAM 'touch {PWNED}'"),
    q("copy from program", f"COPY notes FROM PROGRAM 'touch {PWNED}'"),
    q("pg_read_file", "SELECT pg_read_file('/etc/passwd')"),
    q("pg_read_file qualified", "SELECT pg_catalog.pg_read_file('/etc/passwd')"),
    q("pg_read_file upper", "SELECT PG_READ_FILE('/etc/passwd')"),
    q("pg_read_binary_file", "SELECT pg_read_binary_file('/etc/passwd')"),
    q("pg_ls_dir in FROM", "SELECT * FROM pg_ls_dir('/')"),
    q(
        "lateral in FROM",
        "SELECT * FROM generate_series(1, 1) g, LATERAL pg_read_file('/etc/passwd') f",
    ),
    q("rows from", "SELECT * FROM ROWS FROM (pg_stat_file('/etc/passwd'))"),
    q("attribute notation", "SELECT t.pg_read_file FROM (SELECT '/etc/passwd'::text) t(x)"),
    q("attribute notation on an expression", "SELECT ('/etc/passwd'::text).pg_read_file"),
    q(
        "ts_rewrite runs a query",
        "SELECT ts_rewrite('a'::tsquery, 'SELECT pg_read_file(''/etc/passwd'')::tsquery, "
        "''b''::tsquery')",
    ),
    q("deeply nested", "SELECT " + "+".join(["1"] * 3000)),
    # large objects, collations
    q("lo_import", "SELECT lo_import('/etc/passwd')"),
    q("lo_from_bytea", "SELECT lo_from_bytea(0, 'x')"),
    q("lo_export", f"SELECT lo_export(1, '{PWNED}')"),
    q("import collations", "SELECT pg_import_system_collations('pg_catalog')"),
    # settings and roles
    q("set_config session", "SELECT set_config('default_transaction_read_only', 'off', false)"),
    q("set_config local", "SELECT set_config('statement_timeout', '0', true)"),
    q("set_config role", "SELECT set_config('role', 'postgres', false)"),
    q("set role", "SET ROLE postgres"),
    q("session authorization", "SET SESSION AUTHORIZATION postgres"),
    q("reset all", "RESET ALL"),
    q("read pg_authid", "SELECT rolname, rolpassword FROM pg_authid"),
    # time, locks, other sessions, sequences, other databases
    q("pg_sleep", "SELECT pg_sleep(30)"),
    q("pg_sleep_for", "SELECT pg_sleep_for('30 seconds')"),
    q("advisory lock", "SELECT pg_advisory_lock(4242)"),
    q("try advisory lock", "SELECT pg_try_advisory_lock(4242)"),
    q("terminate backend", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
    q("cancel backend", "SELECT pg_cancel_backend(pg_backend_pid())"),
    q("nextval", "SELECT nextval('invoice_seq')"),
    q("setval", "SELECT setval('invoice_seq', 1000)"),
    q("pg_notify", "SELECT pg_notify('ch', 'x')"),
    q("dblink", "SELECT * FROM dblink('dbname=test', 'DELETE FROM orders') AS t(a int)"),
    q("dblink_exec", "SELECT dblink_exec('dbname=test', 'DROP TABLE orders')"),
    q("query_to_xml", "SELECT query_to_xml('DELETE FROM orders RETURNING 1', true, false, '')"),
    # hiding statements
    q("comment hides", "SELECT 1 /* ; */ ; DROP TABLE orders"),
    q("line comment", "SELECT 1 --\n; DELETE FROM orders"),
    q("dollar quote", "SELECT $x$ ; $x$; DELETE FROM orders"),
    q("nested comment", "/* /* */ DROP TABLE orders; */ SELECT 1", HARMLESS),
    q("string hides", "SELECT '; DROP TABLE orders; --'", HARMLESS),
    q("unicode function", r"""SELECT U&"\0070g_read_file"('/etc/passwd')"""),
    q("unicode catalog", r"""SELECT * FROM U&"\0070g_authid" """),
    q("unicode string", r"SELECT U&'\0041'", HARMLESS),
    q(
        "bound injection",
        "SELECT count(*) FROM customers WHERE name = $1",
        HARMLESS,
        params=["'; DROP TABLE orders; --"],
    ),
    q("empty", " ;; "),
    # a huge cross join: the row cap, then the statement timeout
    q(
        "huge cross join",
        "SELECT * FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
        HARMLESS,
    ),
    q(
        "huge sorted join",
        "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
    ),
    # identifier injection in refine and vector search
    refine("refine column", filters=filters('price"; DROP TABLE orders; --', "=", 1)),
    refine("refine op", filters=filters("price", "= 1 OR 1=1; DROP TABLE orders --", 1)),
    refine("refine order", order_by=[{"column": "price; DROP TABLE orders"}]),
    refine(
        "refine direction",
        order_by=[{"column": "price", "direction": "desc; DROP TABLE orders"}],
    ),
    refine("refine limit", limit="1; DROP TABLE orders"),
    ("refine id", "pg_refine", {"result_set_id": "rs_0001'; DROP TABLE orders; --"}, REFUSED),
    refine("refine value", HARMLESS, filters=filters("name", "=", "x' OR '1'='1")),
    (
        "vector table",
        "pg_vector_search",
        {"table": "products; DROP TABLE x", "vector_column": "v", "query_vector": [1.0]},
        REFUSED,
    ),
    (
        "vector column",
        "pg_vector_search",
        {"table": "products", "vector_column": 'price"; DROP TABLE x; --', "query_vector": [1.0]},
        REFUSED,
    ),
]


def _pwned() -> bool:
    return os.path.exists(PWNED)


def test_there_are_at_least_40_attempts() -> None:
    assert len(ATTEMPTS) >= 40
    assert len({label for label, *_ in ATTEMPTS}) == len(ATTEMPTS)


@pytest.mark.parametrize("as_superuser", [False, True], ids=["read-only role", "superuser"])
async def test_hostile_queries_are_refused_or_harmless(
    pg_db: PgDatabase, as_superuser: bool
) -> None:
    before = fingerprint(pg_db)
    if as_superuser:
        tool = NeonPostgresTool.from_url(
            pg_db.admin_url, allow_superuser=True, statement_timeout_ms=500
        )
    else:
        tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=500)
    failures: list[str] = []
    outputs: dict[str, str] = {}
    async with started(tool) as call:
        base = await call("pg_query", query="SELECT * FROM products")
        assert base.summary.startswith("result_set rs_0001")
        for label, function, args, expected in ATTEMPTS:
            with trio.fail_after(10):
                out = await call(function, **args)
            outputs[label] = out.summary
            refused = out.summary.startswith("Error:")
            if expected == REFUSED and not refused:
                failures.append(f"{label}: not refused: {out.summary[:200]}")
            if expected == HARMLESS and refused:
                failures.append(f"{label}: harmless but failed: {out.summary[:200]}")
        stats = await settled_pool_stats(tool)
        assert stats["pool_available"] == stats["pool_size"]
    assert not failures, "\n".join(failures)
    assert "truncated" in outputs["huge cross join"]  # the row cap
    assert "statement timeout (500 ms)" in outputs["huge sorted join"]
    assert fingerprint(pg_db) == before
    assert not _pwned()
    locks = admin_rows(pg_db.admin_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert locks == [(0,)]
