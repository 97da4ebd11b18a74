"""The four functions of the Postgres tool (a mixin of :class:`NeonPostgresTool`).

Every call: the database must be ready (or the answer is "database unavailable"); the SQL,
written by the model or built from structured arguments, passes the parser check (layer 3);
it runs in a worker thread on a pooled connection (layers 1 and 2); the summary is wrapped as
untrusted data (layer 5). A refused statement or a PostgreSQL error becomes a short tool result
the model can act on and a non-fatal ErrorFrame.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
import trio

from ..frames import ErrorFrame, FrameDirection
from ..services.llm.function_registry import FunctionCallParams, ToolCallOutput
from ._pg_errors import describe_error, is_unavailable
from ._pg_exec import CURSOR_SQL_OFFSET, Executor, Layers, QueryResult, Statement, run_statement
from ._pg_guard import CheckedStatement, QueryRefused, check_statement
from ._pg_refine import build_refine, build_vector_search, vector_text
from ._pg_results import ResultCache, raw_result, summarize
from ._pg_schema import SchemaInfo
from ._pg_values import redact, render_table, scrub, wrap_untrusted

if TYPE_CHECKING:
    from .postgres import NeonPostgresConfig

__all__ = ["PgFunctions"]

logger = logging.getLogger("rustvani_trio.tools.postgres")

_MAX_PARAMS = 100

Handler = Callable[[Executor, Mapping[str, Any]], Awaitable[ToolCallOutput]]


def _bind_params(value: Any) -> list[str | None]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise QueryRefused("params must be a list of values for $1, $2, ...")
    if len(value) > _MAX_PARAMS:
        raise QueryRefused(f"at most {_MAX_PARAMS} params are allowed")
    out: list[str | None] = []
    for item in value:
        if item is None:
            out.append(None)
        elif isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float):
            if isinstance(item, float) and not math.isfinite(item):
                raise QueryRefused("params must be finite numbers")
            out.append(repr(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            out.append(json.dumps(item))
    return out


class _Failure(Exception):
    """A call failed in a way the model should hear about (already worded)."""


class PgFunctions:
    """pg_schema, pg_query, pg_refine, pg_vector_search."""

    name: str
    config: NeonPostgresConfig
    _layers: Layers
    _schema: SchemaInfo | None
    _results: ResultCache
    _secrets: tuple[str, ...]

    async def _ready(self) -> Executor | str:  # pragma: no cover - defined by the tool
        raise NotImplementedError

    # ------------------------------------------------------------------ the common path

    async def _call(self, fn: Handler, params: FunctionCallParams) -> ToolCallOutput:
        name = params.function_name
        ready = await self._ready()
        if isinstance(ready, str):
            await self._report(params, ready)
            return ToolCallOutput(
                f"Error: {ready}. The database cannot be used right now; try again later or "
                "answer without it."
            )
        try:
            return await fn(ready, params.arguments)
        except QueryRefused as exc:
            text = f"{name} refused the request: {exc.reason}"
        except _Failure as exc:
            text = str(exc)
        except psycopg.Error as exc:
            # (the cursor's text puts the model's SQL at CURSOR_SQL_OFFSET; other functions'
            # SQL is the tool's, whose positions mean nothing to the model)
            offset = CURSOR_SQL_OFFSET if name == "pg_query" and self._layers.cursor else 10**6
            text = describe_error(
                exc,
                timeout_ms=self.config.statement_timeout_ms,
                secrets=self._secrets,
                position_offset=offset,
                wrap=self._layers.wrap,
            )
            if is_unavailable(exc):
                text += ". Try again later"
        text = redact(text, self._secrets)
        await self._report(params, text)
        return ToolCallOutput(f"Error: {text}")

    async def _report(self, params: FunctionCallParams, text: str) -> None:
        message = f"{self.name}: {params.function_name} (call {params.tool_call_id}): {text}"
        logger.info("%s", message)
        await params.push_frame(
            ErrorFrame(error=message, processor=self.name), FrameDirection.UPSTREAM
        )

    def _check(self, sql: str) -> CheckedStatement:
        if self._layers.parser:
            return check_statement(sql, allow_writes=not self.config.read_only)
        return CheckedStatement(sql.strip())

    async def _run(
        self, ex: Executor, checked: CheckedStatement, params: Sequence[Any]
    ) -> QueryResult:
        cfg = self.config
        stmt = Statement(
            sql=checked.sql,
            params=params,
            limit=cfg.fetch_cap,
            timeout_ms=cfg.statement_timeout_ms,
            max_bytes=cfg.max_result_bytes,
            read_only=cfg.read_only,
            writes=checked.writes,
            layers=self._layers,
        )
        return await ex.run(functools.partial(run_statement, stmt=stmt, type_cache=ex.type_cache))

    def _output(
        self, function: str, sql: str, params: Sequence[Any], result: QueryResult, origin: str
    ) -> ToolCallOutput:
        cfg = self.config
        rs = self._results.add(sql, params, result, origin)
        summary = summarize(
            rs,
            result,
            max_rows=cfg.max_rows,
            fetch_cap=cfg.fetch_cap,
            cell_limit=cfg.max_value_chars,
            max_chars=cfg.max_summary_chars,
            wrap=self._layers.wrap,
        )
        raw = raw_result(
            rs,
            result,
            function=function,
            max_rows=cfg.max_raw_rows,
            value_limit=cfg.max_raw_value_chars,
        )
        return ToolCallOutput(scrub(summary, self._secrets), scrub(raw, self._secrets))

    # ------------------------------------------------------------------ the functions

    async def _pg_schema(self, _ex: Executor, args: Mapping[str, Any]) -> ToolCallOutput:
        schema = self._schema
        if schema is None:  # pragma: no cover - ready implies introspected
            raise _Failure("the schema is not loaded")
        only = args.get("table")
        if only is not None and (not isinstance(only, str) or schema.table(only) is None):
            names = ", ".join(t.qualified for t in schema.tables) or "none"
            raise QueryRefused(f"there is no table {only!r}; the tables are: {names}")
        text = schema.render(only)
        if self._layers.wrap:
            text = wrap_untrusted(text, source="the database schema")
        return ToolCallOutput(scrub(text, self._secrets))

    async def _pg_query(self, ex: Executor, args: Mapping[str, Any]) -> ToolCallOutput:
        query = args.get("query", args.get("sql"))
        if not isinstance(query, str) or not query.strip():
            raise QueryRefused("'query' must be a SQL statement (a string)")
        bind = _bind_params(args.get("params"))
        checked = self._check(query)
        result = await self._run(ex, checked, bind)
        if checked.writes:
            return self._write_output(result)
        return self._output("pg_query", checked.sql, bind, result, "pg_query")

    def _write_output(self, result: QueryResult) -> ToolCallOutput:
        cfg = self.config
        head = f"committed: {max(result.rowcount, 0)} row(s) affected"
        if not result.columns:
            return ToolCallOutput(head, {"function": "pg_query", "row_count": result.rowcount})
        table, _shown = render_table(
            [c.name for c in result.columns],
            result.rows[: cfg.max_rows],
            cell_limit=cfg.max_value_chars,
            max_chars=cfg.max_summary_chars,
        )
        body = wrap_untrusted(table, source="the database") if self._layers.wrap else table
        raw = {
            "function": "pg_query",
            "row_count": result.rowcount,
            "columns": [{"name": c.name, "type": c.type} for c in result.columns],
            "rows": result.rows[: cfg.max_raw_rows],
        }
        return ToolCallOutput(
            scrub(f"{head}; returned rows:\n{body}", self._secrets), scrub(raw, self._secrets)
        )

    async def _pg_refine(self, ex: Executor, args: Mapping[str, Any]) -> ToolCallOutput:
        rs_id = args.get("result_set_id")
        rs = self._results.get(rs_id)
        if rs is None:
            raise QueryRefused(self._results.describe_missing(rs_id))
        sql, params = build_refine(
            rs.sql,
            rs.params,
            rs.column_types(),
            filters=args.get("filters"),
            order_by=args.get("order_by"),
            limit=args.get("limit"),
            cap=self.config.fetch_cap,
        )
        checked = self._check(sql)
        result = await self._run(ex, checked, params)
        return self._output("pg_refine", checked.sql, params, result, f"pg_refine of {rs.id}")

    async def _pg_vector_search(self, ex: Executor, args: Mapping[str, Any]) -> ToolCallOutput:
        cfg, schema = self.config, self._schema
        vectors = schema.vector_columns() if schema is not None and schema.pgvector else []
        listed = ", ".join(f"{t.qualified}.{c.name}" for t, c in vectors) or "none"
        name = args.get("table")
        table = schema.table(name) if schema is not None and isinstance(name, str) else None
        if table is None:
            raise QueryRefused(f"unknown table {name!r}; the vector columns are: {listed}")
        col_name = args.get("vector_column")
        column = table.column(col_name) if isinstance(col_name, str) else None
        if column is None or not column.is_vector:
            raise QueryRefused(
                f"{col_name!r} is not a vector column; the vector columns are: {listed}"
            )
        if args.get("query_vector") is not None:
            vector = args["query_vector"]
        elif isinstance(args.get("query"), str) and args["query"].strip():
            vector = await self._embed(args["query"])
        else:
            raise QueryRefused("give `query` (text) or `query_vector` (a list of numbers)")
        metric = args.get("distance_metric") or _metric_of(column.index) or "cosine"
        top_k = args.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= cfg.fetch_cap:
            raise QueryRefused(f"top_k must be an integer from 1 to {cfg.fetch_cap}")
        types = {c.name: c.base_type for c in table.columns}
        select = args.get("select_columns") or [c.name for c in table.columns if not c.is_vector]
        if not isinstance(select, list) or not all(
            isinstance(c, str) and c in types for c in select
        ):
            raise QueryRefused(
                f"select_columns must name columns of {table.qualified}: {', '.join(types)}"
            )
        sql, params = build_vector_search(
            table.schema,
            table.name,
            column.name,
            column.base_type,
            vector_text(vector, column.dims),
            metric=str(metric),
            top_k=top_k,
            select=select,
            columns=types,
            filters=args.get("filters"),
        )
        checked = self._check(sql)
        result = await self._run(ex, checked, params)
        origin = f"pg_vector_search on {table.qualified}.{column.name} ({metric})"
        return self._output("pg_vector_search", checked.sql, params, result, origin)

    async def _embed(self, text: str) -> list[float]:
        embedder = self.config.embedder
        if embedder is None:
            raise QueryRefused(
                "searching by text needs an embedder, and none is configured; give "
                "`query_vector` instead"
            )
        try:
            if inspect.iscoroutinefunction(embedder) or inspect.iscoroutinefunction(
                getattr(embedder, "__call__", None)  # noqa: B004 - an async __call__
            ):
                out: Any = await embedder(text)  # type: ignore[misc]
            else:
                out = await trio.to_thread.run_sync(embedder, text, abandon_on_cancel=True)
                if inspect.isawaitable(out):
                    out = await out
            return [float(x) for x in out]
        except Exception as exc:
            raise _Failure(f"the embedder failed: {type(exc).__name__}: {exc}") from exc


def _metric_of(index: str | None) -> str | None:
    if not index:
        return None
    parts = index.split()
    return parts[1] if len(parts) > 1 else None
