"""Result sets: the cache ``pg_refine`` works on, the summary a model reads and the raw result
a user interface gets.

A result set is remembered by its query (the checked SQL and its parameters) and its columns,
not by its rows: refining runs ``SELECT * FROM (<query>) AS rs WHERE ...`` on the database, so
a refinement sees every row of the original result (not only the ones that were fetched) and
compares values with the database's own types.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import attrs

from ._pg_exec import Column, QueryResult
from ._pg_values import cut_value, one_line, render_table, wrap_untrusted

__all__ = ["ResultCache", "ResultSet", "raw_result", "summarize"]


@attrs.frozen
class ResultSet:
    """A cached result set."""

    id: str
    sql: str
    params: tuple[Any, ...]
    columns: tuple[Column, ...]
    row_count: int
    truncated: bool
    origin: str

    def column_types(self) -> dict[str, str]:
        """Column name -> the type bound values are cast to."""
        return {c.name: c.base or c.type for c in self.columns}


class ResultCache:
    """The last ``capacity`` result sets, by id (``rs_0001``, ``rs_0002``, ...)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._sets: collections.OrderedDict[str, ResultSet] = collections.OrderedDict()
        self._counter = 0

    def add(
        self,
        sql: str,
        params: Sequence[Any],
        result: QueryResult,
        origin: str,
    ) -> ResultSet:
        """Remember a result set, forgetting the oldest beyond the capacity."""
        self._counter += 1
        rs = ResultSet(
            id=f"rs_{self._counter:04d}",
            sql=sql,
            params=tuple(params),
            columns=result.columns,
            row_count=len(result.rows),
            truncated=result.truncated,
            origin=origin,
        )
        self._sets[rs.id] = rs
        while len(self._sets) > self.capacity:
            self._sets.popitem(last=False)
        return rs

    def get(self, rs_id: Any) -> ResultSet | None:
        """The result set ``rs_id``, or ``None``."""
        return self._sets.get(rs_id) if isinstance(rs_id, str) else None

    def describe_missing(self, rs_id: Any) -> str:
        """Why ``rs_id`` cannot be refined, in words for the model."""
        known = ", ".join(self._sets) or "none yet"
        numbered = isinstance(rs_id, str) and rs_id.startswith("rs_") and rs_id[3:].isdigit()
        if numbered and 0 < int(rs_id[3:]) <= self._counter:
            return (
                f"result set {rs_id} is no longer cached (only the last {self.capacity} "
                f"are kept); cached: {known}. Run pg_query again."
            )
        return f"there is no result set {rs_id!r}; cached: {known}. Run pg_query first."

    def ids(self) -> list[str]:
        """The cached ids, oldest first."""
        return list(self._sets)

    def clear(self) -> None:
        """Forget every result set (the numbering goes on)."""
        self._sets.clear()


def _count_phrase(rs: ResultSet, shown: int, fetch_cap: int) -> str:
    n = rs.row_count
    if rs.truncated:
        return (
            f"more than {fetch_cap} rows (cut at {fetch_cap}: truncated); the first {shown} are "
            "shown. Narrow it with pg_refine or a WHERE / LIMIT."
        )
    if n == 0:
        return "0 rows"
    if shown < n:
        return f"{n} rows; the first {shown} are shown (truncated for you; the UI has all {n})"
    return f"{n} row{'s' * (n != 1)}"


def summarize(
    rs: ResultSet,
    result: QueryResult,
    *,
    max_rows: int,
    fetch_cap: int,
    cell_limit: int,
    max_chars: int,
    wrap: bool = True,
    note: str = "",
) -> str:
    """What the model reads: the result set's id and size, then (wrapped as untrusted data)
    the columns with their types and the first rows as a compact table."""
    cols = ", ".join(f"{one_line(c.name)} {c.type}" for c in rs.columns) or "(no columns)"
    table, shown = render_table(
        [c.name for c in rs.columns],
        result.rows[:max_rows],
        cell_limit=cell_limit,
        max_chars=max_chars,
    )
    head = f"result_set {rs.id}{note}: {_count_phrase(rs, shown, fetch_cap)}"
    body = f"columns: {cols}\n{table}" if rs.columns else "columns: (none)"
    tail = f"Refine it with pg_refine(result_set_id='{rs.id}', ...)." if rs.columns else ""
    data = wrap_untrusted(body, source="the database") if wrap else body
    return "\n".join(part for part in (head, data, tail) if part)


def raw_result(
    rs: ResultSet, result: QueryResult, *, function: str, max_rows: int, value_limit: int
) -> dict[str, Any]:
    """What a user interface gets (FunctionCallRawResult): every fetched row up to the UI cap,
    long values cut with a marker."""
    rows = [[cut_value(v, value_limit) for v in row] for row in result.rows[:max_rows]]
    return {
        "result_set": rs.id,
        "function": function,
        "origin": rs.origin,
        "sql": rs.sql,
        "columns": [{"name": c.name, "type": c.type} for c in rs.columns],
        "rows": rows,
        "row_count": rs.row_count,
        "truncated": rs.truncated or len(result.rows) > max_rows,
    }
