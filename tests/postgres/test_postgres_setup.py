"""Setting the tool up: the read-only role (function and command), writes when read_only=False,
and the pure helpers (redaction, rendering, SQL building)."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from rustvani_trio.tools._pg_embedded import hashing_embedder
from rustvani_trio.tools._pg_guard import QueryRefused
from rustvani_trio.tools._pg_refine import build_refine, vector_text
from rustvani_trio.tools._pg_values import (
    cut,
    redact,
    redact_url,
    render_table,
    secrets_of,
    to_json_value,
)
from rustvani_trio.tools.postgres import NeonPostgresTool, create_readonly_role

from .helpers import PgDatabase, admin_rows, fingerprint, started

# ------------------------------------------------------------------------------ the role


def test_the_role_command_prints_its_sql() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rustvani_trio.tools.postgres",
            "create-role",
            "--print-sql",
            "--role",
            "shop_reader",
            "--schema",
            "public",
            "--schema",
            "sales",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert 'CREATE ROLE "shop_reader" LOGIN NOSUPERUSER' in out
    assert "default_transaction_read_only = on" in out
    assert 'GRANT SELECT ON ALL TABLES IN SCHEMA "sales" TO "shop_reader";' in out
    assert "pg_read_all_data" not in out


def test_the_role_command_creates_a_role_the_tool_accepts(pg_db: PgDatabase) -> None:
    role = f"{pg_db.reader_role}_cli"
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "rustvani_trio.tools.postgres",
                "create-role",
                "--role",
                role,
                "--admin-url",
                pg_db.admin_url,
                "--password",
                "cli-Pw-123",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        url = done.stdout.split("DATABASE_URL='")[1].split("'")[0]
        assert url.startswith(f"postgresql://{role}:cli-Pw-123@")
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
            assert conn.execute("SELECT count(*) FROM products").fetchone() == (4,)
        # Again: the role exists, so it is updated (same grants, new password).
        again = create_readonly_role(pg_db.admin_url, role, password="cli-Pw-456")
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    finally:
        with psycopg.connect(pg_db.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_create_readonly_role_errors_carry_no_password() -> None:
    with pytest.raises(RuntimeError) as info:
        create_readonly_role("postgresql://nobody:adm1n-PW@127.0.0.1:1/x", "r", password="new-PW-9")
    assert "adm1n-PW" not in str(info.value) and "new-PW-9" not in str(info.value)


# ------------------------------------------------------------------------------ writes


async def test_read_only_false_allows_one_committed_write_and_nothing_else(
    pg_db: PgDatabase,
) -> None:
    tool = NeonPostgresTool.from_url(pg_db.admin_url, read_only=False, allow_superuser=True)
    try:
        async with started(tool) as call:
            added = await call(
                "pg_query",
                query="INSERT INTO notes (id, body) VALUES ($1, $2) RETURNING id, body",
                params=[77, "from the model"],
            )
            assert added.summary.startswith("committed: 1 row(s) affected")
            assert added.raw["rows"] == [[77, "from the model"]]  # type: ignore[index]
            changed = await call("pg_query", query="UPDATE notes SET body = 'x' WHERE id = 77")
            assert changed.summary == "committed: 1 row(s) affected"
            for query in ("DROP TABLE notes", "SELECT 1; DELETE FROM notes", "TRUNCATE notes"):
                refused = await call("pg_query", query=query)
                assert refused.summary.startswith("Error:"), query
            read = await call("pg_query", query="SELECT body FROM notes WHERE id = 77")
            assert read.raw["rows"] == [["x"]]  # type: ignore[index]
            assert "INSERT / UPDATE / DELETE" in call.tool.tool_schemas()[1].description
        assert admin_rows(pg_db.admin_url, "SELECT body FROM notes WHERE id = 77") == [("x",)]
    finally:
        admin_rows(pg_db.admin_url, "DELETE FROM notes WHERE id = 77 RETURNING id")
    # The default tool cannot: the same INSERT is refused and nothing changes.
    before = fingerprint(pg_db)
    async with started(NeonPostgresTool.from_url(pg_db.reader_url)) as call:
        out = await call("pg_query", query="INSERT INTO notes VALUES (78, 'no') RETURNING id")
        assert out.summary.startswith("Error:") and "only a read-only SELECT" in out.summary
    assert fingerprint(pg_db) == before


# ------------------------------------------------------------------------------ helpers


def test_secrets_are_found_and_redacted_in_both_url_forms() -> None:
    url = "postgresql://app:p%40ss-w0rd@db.example.com:5432/shop?sslmode=require"
    assert set(secrets_of(url)) == {"p%40ss-w0rd", "p@ss-w0rd"}
    assert redact_url(url) == "postgresql://app:***@db.example.com:5432/shop?sslmode=require"
    kv = "host=db user=app password='it''s secret' dbname=shop"
    assert "secret" not in redact_url("host=db password=hunter2 dbname=x")
    assert redact_url(kv).startswith("host=db user=app password=***")
    text = "failed for postgresql://app:p@ss-w0rd@db/shop and again p@ss-w0rd"
    assert "w0rd" not in redact(text, secrets_of(url))


def test_values_cells_and_tables() -> None:
    assert to_json_value("[1,2.5,-3]", "vector(3)") == [1.0, 2.5, -3.0]
    assert to_json_value(float("inf")) == "Infinity" and to_json_value(b"\x00\xff") == "AP8="
    assert cut("abcdef", 3) == "abc…[cut: 3 more chars]" and cut("abc", 3) == "abc"
    table, shown = render_table(
        ["a", "b"], [[1, None], ["x|y", "l1\nl2"]], cell_limit=50, max_chars=1000
    )
    assert table.splitlines() == ["a | b", "1 | NULL", "x\\|y | l1\\nl2"] and shown == 2
    _, shown = render_table(["a"], [["x" * 40]] * 100, cell_limit=50, max_chars=300)
    assert shown == 7  # rows stop before the character budget is passed


def test_refine_sql_binds_values_with_the_columns_types() -> None:
    query, params = build_refine(
        "SELECT * FROM t WHERE a = $1",
        ["1"],
        {"price": "numeric", "at": "timestamp with time zone", "tags": "text[]"},
        filters=[
            {"column": "price", "op": ">=", "value": 9.5},
            {"column": "at", "op": "<", "value": "2024-01-01"},
            {"column": "tags", "op": "contains", "value": ["a", "b"]},
        ],
        order_by=[{"column": "price", "direction": "desc"}],
        limit=5,
        cap=100,
    )
    assert query.endswith(
        'AS rs WHERE "rs"."price" >= $2::numeric AND "rs"."at" < $3::timestamp with time zone '
        'AND "rs"."tags" @> $4::text[] ORDER BY "rs"."price" DESC LIMIT 5'
    )
    assert params == ["1", "9.5", "2024-01-01", ["a", "b"]]
    with pytest.raises(QueryRefused, match="limit"):
        build_refine("SELECT 1", [], {}, filters=None, order_by=None, limit=1000, cap=100)
    with pytest.raises(QueryRefused, match="dimensions"):
        vector_text([1.0, 2.0], 3)
    assert vector_text([1, 0.5], 2) == "[1.0,0.5]"


def test_the_hashing_embedder_is_deterministic_and_normalised() -> None:
    embed = hashing_embedder(16)
    a, b = embed("Vegetarian curry!"), embed("vegetarian CURRY")
    assert a == b and len(a) == 16 and abs(sum(x * x for x in a) - 1.0) < 1e-9
    assert embed("") == [0.0] * 16
