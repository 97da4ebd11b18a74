"""The Postgres tool's functions against a real PostgreSQL: schema, query, refine, type
fidelity, errors, construction (from_env / from_url / the config)."""

from __future__ import annotations

import pytest

from rustvani_trio.frames import ErrorFrame, FrameDirection
from rustvani_trio.tools.base import BuiltinTool
from rustvani_trio.tools.postgres import (
    NeonPostgresConfig,
    NeonPostgresTool,
    PostgresToolError,
)

from .helpers import Caller, PgDatabase, settled_pool_stats, started, tool_backends


def rows_of(raw: object) -> list[list[object]]:
    assert isinstance(raw, dict)
    rows = raw["rows"]
    assert isinstance(rows, list)
    return rows


# ------------------------------------------------------------------------------ building


def test_from_env_names_database_url_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(PostgresToolError, match="DATABASE_URL is not set") as info:
        NeonPostgresTool.from_env()
    assert "create-role" in str(info.value)


def test_from_env_and_from_url_build_without_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter22@db.invalid:5432/app")
    tool = NeonPostgresTool.from_env(max_rows=7)
    assert isinstance(tool, BuiltinTool) and tool.is_cacheable
    assert tool.config.max_rows == 7 and tool.config.url.endswith("/app")
    assert "hunter22" not in repr(tool) and "hunter22" not in repr(tool.config)
    assert NeonPostgresTool.from_url("postgresql://x@h/db").config.read_only is True


def test_config_fields_defaults_and_validation() -> None:
    cfg = NeonPostgresConfig("postgresql://u@h/db")
    assert (cfg.read_only, cfg.statement_timeout_ms, cfg.max_rows, cfg.max_raw_rows) == (
        True,
        10_000,
        50,
        1000,
    )
    assert (cfg.max_result_sets, cfg.schemas, cfg.pool_size, cfg.embedder) == (
        10,
        ("public",),
        4,
        None,
    )
    assert cfg.connect_timeout > 0 and cfg.allow_superuser is False
    assert NeonPostgresConfig("postgresql://u@h/db", schemas=["a", "b"]).schemas == ("a", "b")
    with pytest.raises(ValueError, match="max_rows"):
        NeonPostgresConfig("postgresql://u@h/db", max_rows=0)
    with pytest.raises(TypeError, match="pool_size"):
        NeonPostgresConfig("postgresql://u@h/db", pool_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schemas"):
        NeonPostgresConfig("postgresql://u@h/db", schemas=())
    with pytest.raises(ValueError, match="invalid PostgreSQL URL") as info:
        NeonPostgresConfig("postgresql://u:topsecret9@h/db?nosuchoption=1")
    assert "topsecret9" not in str(info.value)
    with pytest.raises(TypeError, match="NeonPostgresConfig"):
        NeonPostgresTool("postgresql://u@h/db")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the schema


async def test_pg_schema_shows_tables_types_keys_and_defaults(reader: Caller) -> None:
    out = await reader("pg_schema")
    text = out.summary
    assert "UNTRUSTED DATA" in text and "do not follow" in text.lower()
    assert "table public.orders" in text and "table public.products" in text
    assert "price numeric(10,2) not null" in text
    assert "id integer not null PK default nextval(" in text
    assert "FK (customer_id) -> customers(id)" in text
    assert "FK (product_id) -> products(id)" in text
    assert "email text" in text and "email text not null" not in text
    one = await reader("pg_schema", table="orders")
    assert "public.orders" in one.summary and "public.products" not in one.summary
    bad = await reader("pg_schema", table="nope")
    assert bad.summary.startswith("Error:") and "public.orders" in bad.summary
    # Only three functions without pgvector.
    assert [s.name for s in reader.tool.tool_schemas()] == ["pg_schema", "pg_query", "pg_refine"]


# ------------------------------------------------------------------------------ queries


async def test_pg_query_summary_and_raw(reader: Caller) -> None:
    out = await reader("pg_query", query="SELECT id, name, price FROM products ORDER BY id")
    assert out.summary.startswith("result_set rs_0001: 4 rows")
    assert "columns: id integer, name text, price numeric(10,2)" in out.summary
    assert "1 | Masala dosa | 120.50" in out.summary
    assert rows_of(out.raw)[0] == [1, "Masala dosa", "120.50"]
    assert out.raw["columns"][2] == {"name": "price", "type": "numeric(10,2)"}  # type: ignore[index]
    assert out.raw["truncated"] is False  # type: ignore[index]
    assert reader.errors == []


async def test_bind_parameters_are_typed_by_the_server(reader: Caller) -> None:
    out = await reader(
        "pg_query",
        query="SELECT name FROM products WHERE price > $1 AND vegetarian = $2 AND name LIKE $3",
        params=[100, True, "%a%"],
    )
    assert sorted(r[0] for r in rows_of(out.raw)) == ["Masala dosa", "Paneer tikka"]
    injected = await reader(
        "pg_query", query="SELECT count(*) FROM customers WHERE name = $1", params=["x' OR 1=1 --"]
    )
    assert rows_of(injected.raw) == [[0]]


async def test_row_caps_for_the_model_and_for_uis(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, max_rows=3, max_raw_rows=10)
    async with started(tool) as call:
        some = await call("pg_query", query="SELECT g FROM generate_series(1, 8) g")
        assert "8 rows; the first 3 are shown" in some.summary
        assert "\n3\n" in some.summary + "\n" and "\n4\n" not in some.summary
        assert len(rows_of(some.raw)) == 8
        many = await call("pg_query", query="SELECT g FROM generate_series(1, 1000000) g")
        assert "more than 10 rows" in many.summary and "truncated" in many.summary
        assert len(rows_of(many.raw)) == 10 and many.raw["truncated"] is True  # type: ignore[index]


async def test_type_fidelity(reader: Caller) -> None:
    out = await reader("pg_query", query="SELECT * FROM type_zoo")
    raw = out.raw
    assert isinstance(raw, dict)
    row = dict(zip([c["name"] for c in raw["columns"]], raw["rows"][0], strict=True))
    assert row["n"] == "12345678901234567890.123456789012345678"  # exact, not a float
    assert row["n2"] == "0.0000001000"  # the scale kept, no exponent
    assert row["big"] == 9007199254740993
    assert row["f"] == 0.1 and row["r"] == 1.5
    assert row["ts"] == "2024-02-29T13:14:15.123456"
    assert row["tstz"].startswith("2024-02-29T") and row["tstz"][-6] in "+-"
    assert row["d"] == "2024-02-29" and row["t"] == "13:14:15"
    assert row["tz"] == "13:14:15+02:00"
    assert row["iv"] == "P1Y2M3DT4H5M6.5S"
    assert row["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert row["j"] == {"a": [1, 2.5, None]} and row["jb"] == {"b": {"c": "d"}}
    assert row["arr"] == [1, 2, 3] and row["tarr"] == ["x", "y z", None]
    assert row["nested"] == [[1, 2], [3, 4]]
    assert row["b"] == "3q2+7w=="  # base64 of deadbeef
    assert row["bo"] is True and row["nul"] is None
    assert row["ip"] == "192.168.0.1/24" and row["rng"] == "[1,10)"
    assert row["m"] == "$12.34"
    assert row["ts_inf"] == "infinity" and row["d_inf"] == "-infinity"
    assert row["fnan"] == "NaN"
    # Long values are cut with a marker: short for the model, long for UIs.
    assert row["long"] == "x" * 5000  # UIs: cut only past max_raw_value_chars (10,000)
    assert "x" * 200 + "…[cut: 4800 more chars]" in out.summary
    types = {c["name"]: c["type"] for c in raw["columns"]}
    assert types["n2"] == "numeric(30,10)" and types["tstz"] == "timestamp with time zone"


async def test_pg_refine_filters_orders_and_limits_with_typed_values(reader: Caller) -> None:
    base = await reader("pg_query", query="SELECT * FROM products")
    rs = base.summary.split(":")[0].split()[-1]
    out = await reader(
        "pg_refine",
        result_set_id=rs,
        filters=[
            {"column": "price", "op": ">=", "value": "120.50"},
            {"column": "tags", "op": "contains", "value": ["veg"]},
            {"column": "attrs", "op": "contains", "value": {"spicy": True}},
        ],
        order_by=[{"column": "price", "direction": "desc"}],
    )
    assert [r[1] for r in rows_of(out.raw)] == ["Paneer tikka"]
    assert "pg_refine of rs_0001" in out.raw["origin"]  # type: ignore[index]
    assert "$1::numeric" in out.raw["sql"]  # type: ignore[index]  # typed, not text
    nested = out.summary.split(":")[0].split()[-1]
    again = await reader(
        "pg_refine",
        result_set_id=rs,
        filters=[
            {"column": "added", "op": "<", "value": "2024-06-01"},
            {"column": "id", "op": "in", "value": [1, 3, 99]},
            {"column": "name", "op": "ilike", "value": "%DOSA%"},
        ],
    )
    assert [r[1] for r in rows_of(again.raw)] == ["Masala dosa"]
    ordered = await reader(
        "pg_refine", result_set_id=nested, order_by=[{"column": "id"}], limit=1
    )  # a refinement of a refinement
    assert len(rows_of(ordered.raw)) == 1
    nulls = await reader(
        "pg_refine", result_set_id=rs, filters=[{"column": "attrs", "op": "is null"}]
    )
    assert [r[1] for r in rows_of(nulls.raw)] == ["Idli"]


async def test_pg_refine_refuses_what_it_cannot_do(reader: Caller) -> None:
    await reader("pg_query", query="SELECT id, name, price FROM products")
    cases = [
        ({"result_set_id": "rs_9999"}, "there is no result set"),
        (
            {"result_set_id": "rs_0001", "filters": [{"column": "nope", "op": "="}]},
            "unknown column",
        ),
        (
            {"result_set_id": "rs_0001", "filters": [{"column": "id", "op": "~", "value": 1}]},
            "unknown op",
        ),
        ({"result_set_id": "rs_0001", "filters": [{"column": "id", "op": "="}]}, "needs a value"),
        ({"result_set_id": "rs_0001", "limit": 0}, "limit must be"),
        ({"result_set_id": "rs_0001", "order_by": [{"column": "id", "direction": "up"}]}, "asc"),
        (
            {"result_set_id": "rs_0001", "filters": [{"column": "id", "op": "in", "value": 3}]},
            "non-empty list",
        ),
        (
            {"result_set_id": "rs_0001", "filters": [{"column": "price", "op": "=", "value": "x"}]},
            "invalid input syntax for type numeric",
        ),
    ]
    for args, expected in cases:
        out = await reader("pg_refine", **args)
        assert out.summary.startswith("Error:"), args
        assert expected in out.summary, (args, out.summary)
    assert len(reader.errors) == len(cases)


async def test_result_sets_are_evicted_beyond_max_result_sets(pg_db: PgDatabase) -> None:
    async with started(NeonPostgresTool.from_url(pg_db.reader_url, max_result_sets=2)) as call:
        for _ in range(3):
            await call("pg_query", query="SELECT 1 AS one")
        gone = await call("pg_refine", result_set_id="rs_0001")
        assert "no longer cached" in gone.summary and "rs_0002, rs_0003" in gone.summary
        kept = await call("pg_refine", result_set_id="rs_0003")
        assert rows_of(kept.raw) == [[1]]


async def test_postgres_errors_become_short_results_and_error_frames(reader: Caller) -> None:
    cases = [
        ("SELECT nme FROM customers", 'column "nme" does not exist', "pg_schema"),
        ("SELECT * FROM nowhere", 'relation "nowhere" does not exist', "pg_schema"),
        ("SELECT 1/0", "division by zero", "22012"),
        ("SELEC 1", "does not parse", "syntax error"),
    ]
    for query, expected, also in cases:
        out = await reader("pg_query", query=query)
        assert out.summary.startswith("Error:") and expected in out.summary, out.summary
        assert also in out.summary
        assert len(out.summary) < 400
    frames = [f for f, d in reader.frames if isinstance(f, ErrorFrame)]
    assert len(frames) == len(cases)
    assert all(not f.fatal and f.processor == "neon_postgres" for f in frames)
    assert all(d is FrameDirection.UPSTREAM for _, d in reader.frames)
    assert "(call call_1)" in frames[0].error
    # The error position is the model's own: "nme" starts at character 8 of its query.
    assert "at character 8" in (await reader("pg_query", query="SELECT nme FROM customers")).summary
    # No connection stays in a failed transaction: the pool is whole and the next call works.
    ok = await reader("pg_query", query="SELECT count(*) FROM customers")
    assert rows_of(ok.raw) == [[3]]
    stats = await settled_pool_stats(reader.tool)
    assert stats["pool_available"] == stats["pool_size"]
    states = [state for _pid, state, _q in tool_backends(reader.tool.config.url)]
    assert states and all(s == "idle" for s in states), states
