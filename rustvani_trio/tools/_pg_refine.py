"""SQL built from structured arguments, for ``pg_refine`` and ``pg_vector_search``.

The model never writes SQL here. Names (tables, columns, order) must equal a name the tool
already knows (a result set's columns, an introspected table) and are quoted as identifiers;
operators come from an allow-list; every value is a bind parameter cast to the column's own
type (``$3::numeric``, ``$4::timestamptz``), so ``12.50`` compares as a number and a date as a
date, not everything as text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import sql

from ._pg_guard import QueryRefused

__all__ = ["METRICS", "OPERATORS", "build_refine", "build_vector_search"]

#: op (as the model writes it) -> SQL operator
OPERATORS: dict[str, str] = {
    "=": "=",
    "!=": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "like": "LIKE",
    "ilike": "ILIKE",
    "in": "IN",
    "not in": "NOT IN",
    "is null": "IS NULL",
    "is not null": "IS NOT NULL",
    "contains": "@>",
}

#: metric -> pgvector distance operator
METRICS: dict[str, str] = {"cosine": "<=>", "l2": "<->", "inner_product": "<#>"}

_MAX_IN_VALUES = 1000

Param = str | list[str | None] | None


def _scalar_text(value: Any, column: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise QueryRefused(f"the value for {column!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return value
    raise QueryRefused(
        f"the value for {column!r} must be a string, number or boolean, not {type(value).__name__}"
    )


# Types whose name without a modifier means length 1 (``character`` is char(1), ``bit`` is
# bit(1)): a value cast to them is cut ('ab' -> 'a'). Cast to the unlimited form instead.
_UNSIZED = {"character": "bpchar", "bit": "bit varying"}


def _cast_type(base: str) -> str:
    """The type a bound value is cast to for a column of type ``base``."""
    element, brackets = (base[:-2], "[]") if base.endswith("[]") else (base, "")
    return _UNSIZED.get(element, element) + brackets


def _is_json(base: str) -> bool:
    return base in ("json", "jsonb")


def _bind(value: Any, base: str, column: str) -> Param:
    """A value as the text PostgreSQL casts to ``base``."""
    if _is_json(base):
        return json.dumps(value)
    if base.endswith("[]"):
        if not isinstance(value, list):
            raise QueryRefused(f"the value for the array column {column!r} must be a list")
        return [None if v is None else _scalar_text(v, column) for v in value]
    return _scalar_text(value, column)


def _filters(
    filters: Any,
    columns: Mapping[str, str],
    ref: sql.Composable,
    params: list[Param],
) -> list[sql.Composable]:
    """WHERE conditions from ``[{column, op, value}]``; ``columns`` maps name -> base type."""
    if filters is None:
        return []
    if not isinstance(filters, list):
        raise QueryRefused("filters must be a list of {column, op, value} objects")
    out: list[sql.Composable] = []
    for item in filters:
        if not isinstance(item, dict):
            raise QueryRefused("each filter must be an object {column, op, value}")
        name = item.get("column")
        op = str(item.get("op", "")).strip().lower()
        if not isinstance(name, str) or name not in columns:
            raise QueryRefused(
                f"unknown column {name!r}; the columns are: {', '.join(columns) or 'none'}"
            )
        if op not in OPERATORS:
            raise QueryRefused(f"unknown op {op!r}; allowed: {', '.join(OPERATORS)}")
        base = columns[name]
        col = sql.SQL("{}.{}").format(ref, sql.Identifier(name))
        if op in ("is null", "is not null"):
            out.append(sql.SQL("{} {}").format(col, sql.SQL(OPERATORS[op])))
            continue
        if "value" not in item or item["value"] is None:
            raise QueryRefused(f"op {op!r} on {name!r} needs a value (for NULL use 'is null')")
        value = item["value"]
        params.append(None)  # the value's slot ($n), filled below
        slot = len(params)
        pos = sql.SQL(f"${slot}")
        typ = sql.SQL(_cast_type(base))
        if op in ("like", "ilike"):
            params[slot - 1] = _scalar_text(value, name)
            out.append(sql.SQL("{}::text {} {}::text").format(col, sql.SQL(OPERATORS[op]), pos))
        elif op in ("in", "not in"):
            if not isinstance(value, list) or not value or len(value) > _MAX_IN_VALUES:
                raise QueryRefused(
                    f"op {op!r} needs a non-empty list of at most {_MAX_IN_VALUES} values"
                )
            params[slot - 1] = [_scalar_text(v, name) for v in value]
            neg = sql.SQL("NOT " if op == "not in" else "")
            out.append(sql.SQL("{}{} = ANY({}::{}[])").format(neg, col, pos, typ))
        elif op == "contains":
            if not (_is_json(base) or base.endswith("[]")):
                raise QueryRefused(
                    f"op 'contains' works on jsonb and array columns; {name!r} is {base}"
                )
            params[slot - 1] = _bind(value, base, name)
            out.append(sql.SQL("{} @> {}::{}").format(col, pos, typ))
        else:
            params[slot - 1] = _bind(value, base, name)
            out.append(sql.SQL("{} {} {}::{}").format(col, sql.SQL(OPERATORS[op]), pos, typ))
    return out


def _order(order_by: Any, columns: Mapping[str, str], ref: sql.Composable) -> list[sql.Composable]:
    if order_by is None:
        return []
    items = order_by if isinstance(order_by, list) else [order_by]
    out: list[sql.Composable] = []
    for item in items:
        if isinstance(item, str):
            item = {"column": item}
        if not isinstance(item, dict):
            raise QueryRefused("order_by must be a list of {column, direction} objects")
        name = item.get("column")
        direction = str(item.get("direction", "asc")).lower()
        if not isinstance(name, str) or name not in columns:
            raise QueryRefused(
                f"cannot order by {name!r}; the columns are: {', '.join(columns) or 'none'}"
            )
        if direction not in ("asc", "desc"):
            raise QueryRefused(f"direction must be 'asc' or 'desc', not {direction!r}")
        out.append(
            sql.SQL("{}.{} {}").format(ref, sql.Identifier(name), sql.SQL(direction.upper()))
        )
    return out


def _limit(limit: Any, cap: int) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= cap:
        raise QueryRefused(f"limit must be an integer from 1 to {cap}")
    return limit


def build_refine(
    base_sql: str,
    base_params: Sequence[Param],
    columns: Mapping[str, str],
    *,
    filters: Any,
    order_by: Any,
    limit: Any,
    cap: int,
) -> tuple[str, list[Param]]:
    """``SELECT * FROM (<base>) AS rs WHERE ... ORDER BY ... LIMIT ...``: the cached result
    set's query narrowed; its own parameters come first."""
    params: list[Param] = list(base_params)
    ref = sql.Identifier("rs")
    where = _filters(filters, columns, ref, params)
    order = _order(order_by, columns, ref)
    lim = _limit(limit, cap)
    query = sql.SQL("SELECT * FROM (\n{}\n) AS rs").format(sql.SQL(base_sql))
    if where:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
    if order:
        query = sql.SQL("{} ORDER BY {}").format(query, sql.SQL(", ").join(order))
    if lim is not None:
        query = sql.SQL("{} LIMIT {}").format(query, sql.Literal(lim))
    return query.as_string(None), params


def vector_text(vector: Any, dims: int | None) -> str:
    """A query vector as pgvector's text form, checked: numbers, finite, ``dims`` long."""
    if not isinstance(vector, Sequence) or isinstance(vector, str) or not vector:
        raise QueryRefused("query_vector must be a non-empty list of numbers")
    out: list[str] = []
    for x in vector:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise QueryRefused("query_vector must hold only finite numbers")
        out.append(repr(float(x)))
    if dims is not None and len(out) != dims:
        raise QueryRefused(f"the vector has {len(out)} dimensions; the column has {dims}")
    return "[" + ",".join(out) + "]"


def build_vector_search(
    schema: str,
    table: str,
    column: str,
    vector_type: str,
    vector: str,
    *,
    metric: str,
    top_k: int,
    select: Sequence[str],
    columns: Mapping[str, str],
    filters: Any,
) -> tuple[str, list[Param]]:
    """Nearest rows by ``metric`` (``_distance`` is the distance; for inner_product it is the
    negative inner product, as pgvector's ``<#>`` gives it)."""
    if metric not in METRICS:
        raise QueryRefused(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    params: list[Param] = [vector]
    ref = sql.Identifier("t")
    where: list[sql.Composable] = [sql.SQL("{}.{} IS NOT NULL").format(ref, sql.Identifier(column))]
    where += _filters(filters, columns, ref, params)
    distance = sql.SQL("{}.{} {} $1::{}").format(
        ref, sql.Identifier(column), sql.SQL(METRICS[metric]), sql.SQL(vector_type)
    )
    cols = [sql.SQL("{}.{}").format(ref, sql.Identifier(c)) for c in select]
    query = sql.SQL(
        "SELECT {cols}{sep}{dist} AS _distance FROM {table} AS t WHERE {where} "
        "ORDER BY {dist} LIMIT {k}"
    ).format(
        cols=sql.SQL(", ").join(cols),
        sep=sql.SQL(", " if cols else ""),
        dist=distance,
        table=sql.Identifier(schema, table),
        where=sql.SQL(" AND ").join(where),
        k=sql.Literal(int(top_k)),
    )
    return query.as_string(None), params
