"""The function schemas the Postgres tool offers to the model."""

from __future__ import annotations

from ..context import FunctionSchema
from ._pg_refine import METRICS, OPERATORS
from ._pg_schema import SchemaInfo

__all__ = ["function_schemas"]

_FILTERS = {
    "type": "array",
    "description": "conditions, all of which must hold",
    "items": {
        "type": "object",
        "properties": {
            "column": {"type": "string", "description": "a column name, exactly as listed"},
            "op": {"type": "string", "enum": list(OPERATORS)},
            "value": {
                "description": "compared with the column's own type; a list for 'in', "
                "'not in' and for 'contains' on arrays; omit for 'is null' / 'is not null'"
            },
        },
        "required": ["column", "op"],
    },
}

_ORDER = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "column": {"type": "string"},
            "direction": {"type": "string", "enum": ["asc", "desc"]},
        },
        "required": ["column"],
    },
}


def function_schemas(
    schema: SchemaInfo | None, *, read_only: bool, embedder: bool, max_rows: int
) -> list[FunctionSchema]:
    """pg_schema, pg_query, pg_refine, and pg_vector_search when pgvector columns exist."""
    what = (
        "one read-only SQL SELECT (WITH ... SELECT, VALUES and TABLE too)"
        if read_only
        else "one SQL statement: a SELECT, or an INSERT / UPDATE / DELETE (committed)"
    )
    out = [
        FunctionSchema(
            name="pg_schema",
            description="The PostgreSQL database's tables and views: columns with types, "
            "nullability, defaults, primary and foreign keys, vector columns. Call it before "
            "writing a query.",
            parameters={
                "type": "object",
                "properties": {
                    "table": {"type": "string", "description": "only this table (optional)"}
                },
            },
        ),
        FunctionSchema(
            name="pg_query",
            description=f"Run {what} on the PostgreSQL database. Returns a result set id, "
            f"the row count and up to {max_rows} rows; the full rows go to the user's screen. "
            "Put values in `params` and refer to them as $1, $2, ... in the SQL.",
            parameters={
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "the SQL statement"},
                    "params": {
                        "type": "array",
                        "description": "values for $1, $2, ... (strings, numbers, booleans, null)",
                        "items": {},
                    },
                },
                "required": ["query"],
            },
        ),
        FunctionSchema(
            name="pg_refine",
            description="Narrow a result set from pg_query (or an earlier refinement) without "
            "writing SQL: filters on its columns, order, limit. Returns a new result set id.",
            parameters={
                "type": "object",
                "properties": {
                    "result_set_id": {"type": "string", "description": "e.g. 'rs_0001'"},
                    "filters": _FILTERS,
                    "order_by": _ORDER,
                    "limit": {"type": "integer", "minimum": 1},
                },
                "required": ["result_set_id"],
            },
        ),
    ]
    vectors = schema.vector_columns() if schema is not None and schema.pgvector else []
    if vectors:
        listed = "; ".join(
            f"{t.qualified}.{c.name} ({c.dims or '?'} dims"
            + (f", {c.index} index)" if c.index else ")")
            for t, c in vectors
        )
        by_text = (
            "Give `query` (text, embedded for you) or `query_vector`."
            if embedder
            else "Give `query_vector` (a list of numbers as long as the column's dimensions)."
        )
        out.append(
            FunctionSchema(
                name="pg_vector_search",
                description=f"Similarity search with pgvector: the rows nearest to a query, "
                f"nearest first, with a _distance column. Vector columns: {listed}. {by_text}",
                parameters={
                    "type": "object",
                    "properties": {
                        "table": {"type": "string"},
                        "vector_column": {"type": "string"},
                        "query": {"type": "string", "description": "text to search for"},
                        "query_vector": {"type": "array", "items": {"type": "number"}},
                        "top_k": {"type": "integer", "minimum": 1, "default": 5},
                        "distance_metric": {"type": "string", "enum": list(METRICS)},
                        "select_columns": {"type": "array", "items": {"type": "string"}},
                        "filters": _FILTERS,
                    },
                    "required": ["table", "vector_column"],
                },
            )
        )
    return out
