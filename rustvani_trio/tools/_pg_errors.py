"""PostgreSQL errors as short messages a model can act on (and that carry no secret)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import errors
from psycopg_pool import PoolTimeout

from ._pg_values import redact, wrap_untrusted_line

__all__ = ["describe_error", "is_unavailable"]


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached (not a problem of the query)."""
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, errors.QueryCanceled | errors.LockNotAvailable | errors.DiskFull
    )


def describe_error(
    exc: psycopg.Error,
    *,
    timeout_ms: int,
    secrets: Sequence[str],
    position_offset: int = 0,
    wrap: bool = True,
) -> str:
    """One or two sentences: what PostgreSQL said, and what to do about it.
    ``position_offset`` is subtracted from the error's character position (the text the tool
    put before the model's SQL). With ``wrap``, PostgreSQL's own message (which often quotes
    a row's value: ``invalid input syntax for type integer: "..."``) is one line, cut and
    marked as untrusted data, like the rows."""
    diag = exc.diag
    primary = diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    if isinstance(exc, PoolTimeout):
        text = "database unavailable: no connection could be had in time; try again later"
    elif isinstance(exc, errors.QueryCanceled):
        if "statement timeout" in (primary or ""):
            text = (
                f"the query ran longer than the statement timeout ({timeout_ms} ms) and was "
                "cancelled; make it cheaper (a WHERE clause, a LIMIT, fewer joins)"
            )
        else:
            text = f"the query was cancelled: {primary}"
    elif isinstance(exc, errors.InsufficientPrivilege):
        text = f"{primary}{state}. This tool may only read the tables that pg_schema lists"
    elif isinstance(exc, errors.ReadOnlySqlTransaction):
        text = f"refused: {primary}{state}. The database is read-only for this tool"
    elif is_unavailable(exc):
        text = f"database unavailable: {primary}"
    else:
        said = primary
        if diag.message_hint:
            said += f". Hint: {diag.message_hint.rstrip('.')}"
        text = f"{wrap_untrusted_line(said) if wrap else said}{state}"
        position = int(diag.statement_position or 0) - position_offset
        if position > 0:
            text += f" at character {position}"
        if isinstance(exc, errors.UndefinedTable | errors.UndefinedColumn):
            text += ". Call pg_schema to see the tables and columns"
    return redact(text, secrets)
