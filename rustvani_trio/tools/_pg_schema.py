"""Schema introspection for ``pg_schema``: tables and views of the chosen schemas, columns with
types, nullability and defaults, primary and foreign keys, pgvector columns with their
dimensions and index kind; rendered as compact text a model reads well.

Only relations the connected role may SELECT from are listed: the model sees what it can
query, nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import psycopg
from psycopg import RawCursor

__all__ = ["ColumnInfo", "SchemaInfo", "TableInfo", "introspect"]

_VECTOR_TYPES = ("vector", "halfvec")

_TABLES = """
SELECT c.oid::int8, n.nspname, c.relname, c.relkind, GREATEST(c.reltuples, -1)::int8
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attrelid::int8, a.attname, format_type(a.atttypid, a.atttypmod),
       format_type(a.atttypid, NULL), t.typname, a.atttypmod, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS = """
SELECT con.conrelid::int8, con.contype,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
             ORDER BY k.i),
       CASE WHEN con.contype = 'f' THEN con.confrelid::regclass::text END,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
             ORDER BY k.i)
FROM pg_catalog.pg_constraint con
WHERE con.conrelid = ANY($1::oid[]) AND con.contype IN ('p', 'f')
ORDER BY con.conrelid, con.contype DESC, con.conname
"""

_VECTOR_INDEXES = """
SELECT i.indrelid::int8, a.attname, am.amname, opc.opcname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
JOIN pg_catalog.pg_opclass opc ON opc.oid = i.indclass[0]
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = ANY($1::oid[]) AND am.amname IN ('hnsw', 'ivfflat')
"""

_EXTENSION = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'vector'"

_METRIC_OF_OPCLASS = {"cosine": "cosine", "l2": "l2", "ip": "inner_product", "l1": "l1"}


@attrs.frozen
class ColumnInfo:
    """One column: ``type`` with its modifier (``numeric(10,2)``), ``base_type`` without it
    (what a bound value is cast to), ``dims`` for vector columns."""

    name: str
    type: str
    base_type: str
    not_null: bool
    default: str | None = None
    dims: int | None = None
    index: str | None = None  # e.g. "hnsw cosine"

    @property
    def is_vector(self) -> bool:
        """Whether this is a pgvector column."""
        return self.base_type.rsplit(".", 1)[-1] in _VECTOR_TYPES


@attrs.define
class TableInfo:
    """A table or view of the schema."""

    schema: str
    name: str
    kind: str  # "table" / "view" / "materialized view" / "foreign table"
    rows_estimate: int
    columns: list[ColumnInfo] = attrs.Factory(list)
    primary_key: tuple[str, ...] = ()
    foreign_keys: list[tuple[tuple[str, ...], str, tuple[str, ...]]] = attrs.Factory(list)

    @property
    def qualified(self) -> str:
        """``schema.name``."""
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> ColumnInfo | None:
        """The column called exactly ``name``."""
        return next((c for c in self.columns if c.name == name), None)


@attrs.frozen
class SchemaInfo:
    """What ``pg_schema`` shows, and what refine / vector search validate names against."""

    schemas: tuple[str, ...]
    tables: tuple[TableInfo, ...]
    pgvector: str | None = None  # the extension's version when installed

    def table(self, name: str) -> TableInfo | None:
        """The table called ``name`` (``table`` or ``schema.table``, exact spelling)."""
        for t in self.tables:
            if name in (t.name, t.qualified):
                return t
        return None

    def vector_columns(self) -> list[tuple[TableInfo, ColumnInfo]]:
        """Every pgvector column, with its table."""
        return [(t, c) for t in self.tables for c in t.columns if c.is_vector]

    def render(self, only: str | None = None) -> str:
        """The compact text for the model (one table when ``only`` names one)."""
        tables = [t for t in self.tables if only is None or only in (t.name, t.qualified)]
        vec = f"; pgvector {self.pgvector}" if self.pgvector else ""
        lines = [f"schemas: {', '.join(self.schemas)} ({len(tables)} relations{vec})"]
        for t in tables:
            est = f", ~{t.rows_estimate} rows" if t.rows_estimate >= 0 else ""
            lines.append(f"{t.kind} {t.qualified}{est}")
            for c in t.columns:
                parts = [f"  {c.name} {c.type}"]
                if c.not_null:
                    parts.append("not null")
                if c.name in t.primary_key:
                    parts.append("PK")
                if c.default is not None:
                    parts.append(f"default {c.default}")
                if c.dims is not None or c.is_vector:
                    idx = f", {c.index} index" if c.index else ", no index"
                    parts.append(f"[vector: {c.dims or '?'} dims{idx}]")
                lines.append(" ".join(parts))
            for cols, target, tcols in t.foreign_keys:
                lines.append(f"  FK ({', '.join(cols)}) -> {target}({', '.join(tcols)})")
        return "\n".join(lines)


def _rows(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    cur = RawCursor(conn)
    cur.execute(sql, list(params), prepare=False)
    return cur.fetchall()


_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}


def introspect(
    conn: psycopg.Connection[Any], schemas: Sequence[str], *, timeout_ms: int
) -> SchemaInfo:
    """Read the schema on ``conn`` (in a worker thread), in a read-only transaction that is
    rolled back, bounded by ``timeout_ms`` per statement."""
    conn.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {int(timeout_ms)}", prepare=False)
    try:
        tables: dict[int, TableInfo] = {}
        for oid, nsp, rel, kind, est in _rows(conn, _TABLES, [list(schemas)]):
            tables[oid] = TableInfo(nsp, rel, _KINDS.get(kind, "table"), est)
        oids = list(tables)
        ext_rows = _rows(conn, _EXTENSION, [])
        ext: str | None = str(ext_rows[0][0]) if ext_rows else None
        indexes: dict[tuple[int, str], str] = {}
        if ext is not None and oids:
            for rel_oid, col, am, opc in _rows(conn, _VECTOR_INDEXES, [oids]):
                metric = next((m for k, m in _METRIC_OF_OPCLASS.items() if f"_{k}_" in opc), "")
                indexes[(rel_oid, col)] = f"{am} {metric}".strip()
        for rel_oid, name, typ, base, typname, mod, notnull, default in _rows(
            conn, _COLUMNS, [oids]
        ):
            vector = typname in _VECTOR_TYPES
            tables[rel_oid].columns.append(
                ColumnInfo(
                    name,
                    typ,
                    base,
                    bool(notnull),
                    default,
                    dims=mod if vector and mod > 0 else None,
                    index=indexes.get((rel_oid, name)) if vector else None,
                )
            )
        for rel_oid, kind, cols, target, tcols in _rows(conn, _CONSTRAINTS, [oids]):
            table = tables[rel_oid]
            if kind == "p":
                table.primary_key = tuple(cols)
            else:
                table.foreign_keys.append((tuple(cols), str(target), tuple(tcols)))
        return SchemaInfo(tuple(schemas), tuple(tables.values()), ext)
    finally:
        conn.execute("ROLLBACK", prepare=False)
