"""Safety layer 3 of the Postgres tool: a real PostgreSQL parser checks every statement.

The parser is ``pgparse`` (BSD-3-Clause), a thin wrapper of libpg_query, which is PostgreSQL's
own grammar compiled into a library: the tree it returns is the one the server would build, so
comments, dollar quotes, unicode escapes and odd spacing cannot hide a statement from it (a
lexer or a regular expression can be fooled; the grammar cannot). ``pglast`` would do the same
but is GPL-3.0, which this MIT project cannot ship.

:func:`check_statement` accepts exactly one SELECT (``WITH ... SELECT``, ``VALUES`` and
``TABLE`` are SELECTs in the grammar) with no ``INTO``, no locking clause, no data-modifying
statement anywhere (writable CTEs included) and no call of a denied function anywhere in the
tree: file and large-object access, ``dblink``, ``set_config``, sleeps, advisory locks,
signalling other backends, sequences, functions that run a query given as text, and more
(:data:`DENIED_FUNCTIONS`, :data:`DENIED_PREFIXES`). The walk covers the whole tree, so a
function in ``FROM`` (``LATERAL pg_ls_dir(...)``), in a sub-select or called by attribute
notation (``(expr).pg_read_file`` is ``pg_read_file(expr)``) is found like any other. Queries
longer than :data:`MAX_QUERY_CHARS` are refused before parsing: libpg_query overflows its C
stack on very deep expressions (a segmentation fault, not an error).

This layer is defence in depth, not the boundary on its own: a function can also be reached
through an operator, a view or a user-defined function, which only the role (layer 4) and the
read-only transaction (layer 2) stop.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import attrs

from ..exceptions import RustvaniError

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_PREFIXES",
    "DENIED_RELATIONS",
    "MAX_QUERY_CHARS",
    "CheckedStatement",
    "QueryRefused",
    "check_statement",
]

#: Functions refused by name (compared lowercased, with or without a schema).
DENIED_FUNCTIONS: frozenset[str] = frozenset(
    {
        # server files and programs
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_current_logfile",
        # settings and session state
        "set_config",
        "pg_reload_conf",
        "pg_rotate_logfile",
        # other backends
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_log_backend_memory_contexts",
        # sequences and transaction ids (writes, or an xid assigned)
        "nextval",
        "setval",
        "currval",
        "lastval",
        "txid_current",
        "pg_current_xact_id",
        "pg_export_snapshot",
        # notifications, collations, WAL, recovery, backups
        "pg_notify",
        "pg_import_system_collations",
        "pg_switch_wal",
        "pg_promote",
        "pg_create_restore_point",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_drop_replication_slot",
        "pg_copy_physical_replication_slot",
        "pg_copy_logical_replication_slot",
        "pg_truncate_visibility_map",
        "pg_prewarm",
        "pg_sequence_last_value",
        # functions that run a query given as text
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xml_and_xmlschema",
        "ts_stat",
        "ts_rewrite",  # (its two-argument form runs the query given as text)
        "connectby",  # tablefunc's crosstab* and connectby run queries given as text
        "http",  # pgsql-http: http(('GET', url, ...)::http_request)
        "loread",
        "lowrite",
        # server configuration files
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_show_all_file_settings",
        "pg_logdir_ls",
        # writes a READ ONLY transaction does not stop (index maintenance, the OID counter,
        # WAL), and session state DISCARD ALL does not reset (the random seed)
        "brin_summarize_new_values",
        "brin_summarize_range",
        "brin_desummarize_range",
        "gin_clean_pending_list",
        "pg_nextoid",
        "pg_stop_making_pinned_objects",
        "pg_log_standby_snapshot",
        "setseed",
        # every setting, custom ones included (see _SECRET_SETTINGS)
        "pg_show_all_settings",
    }
)

#: Functions refused by prefix: whole families (``lo_import``, ``dblink_exec``, ...).
DENIED_PREFIXES: tuple[str, ...] = (
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "lo_",
    "dblink",
    "pg_sleep",
    "pg_advisory",
    "pg_try_advisory",
    "pg_stat_reset",
    "pg_backup_",
    "pg_wal_replay_",
    "pg_replication_",
    "pg_logical_",
    "pg_create_",
    "binary_upgrade_",
    "crosstab",
    "pg_rotate_logfile",
    "pg_stat_statements_reset",
    "heap_force_",  # pg_surgery
    # extensions that reach outside the transaction: pg_background runs SQL in a worker with
    # its own transaction; pgsql-http and pg_net (net.http_get) make HTTP requests from the
    # server (a way to send data out, or to reach internal services)
    "pg_background",
    "http_",
)

#: Catalogs that hold secrets (password hashes, user-mapping options): refused by name even
#: though a non-superuser role cannot read them anyway.
DENIED_RELATIONS: frozenset[str] = frozenset(
    {
        "pg_authid",
        "pg_shadow",
        "pg_user_mapping",
        "pg_user_mappings",
        "pg_largeobject",
        "pg_statistic",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
        "pg_file_settings",
        "pg_subscription",
        # settings, where secrets live (see _check_setting)
        "pg_settings",
        "pg_db_role_setting",
    }
)

#: Longer statements are refused before parsing (see :func:`check_statement`).
MAX_QUERY_CHARS = 20_000

_READ_STATEMENT = "SelectStmt"
_WRITE_STATEMENTS = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt"})


class QueryRefused(RustvaniError, ValueError):
    """The statement was refused before it reached the database; ``reason`` says why in words
    a model can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class CheckedStatement:
    """A statement that passed the check: ``sql`` is the statement's own text (without a
    trailing semicolon), ``writes`` whether it modifies data (only when writes are allowed)."""

    sql: str
    writes: bool = False


def _parse(sql: str) -> list[dict[str, Any]]:
    pgparse: Any = importlib.import_module("pgparse")  # (a compiled module without type hints)

    try:
        tree = pgparse.parse(sql)
    except pgparse.PGQueryError as exc:
        where = f" at character {exc.position}" if getattr(exc, "position", 0) else ""
        raise QueryRefused(f"the SQL does not parse: {exc.message}{where}") from None
    except RecursionError:  # (pgparse decodes libpg_query's JSON tree recursively)
        raise QueryRefused(
            "the query is nested too deeply (hundreds of levels of operators, sub-selects or "
            "parentheses); write it flatter"
        ) from None
    if not isinstance(tree, list):  # pragma: no cover - pgparse always returns a list
        raise QueryRefused("the SQL could not be parsed")
    return tree


def _nodes(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(node type, node body)`` pair of the tree, iteratively (deep trees are fine)."""
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key[:1].isupper():
                    yield key, value
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _names(items: Any) -> list[str]:
    out: list[str] = []
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("String"), dict):
                out.append(str(item["String"].get("sval", "")))
    return out


_SECRET_SETTINGS = (
    "custom settings (a name with a dot) are where secrets are kept (ALTER DATABASE ... SET "
    "app.settings.jwt_secret = ...), so only built-in settings can be read, by a literal name: "
    "current_setting('TimeZone')"
)


def _check_setting(body: dict[str, Any]) -> None:
    """``current_setting`` only of a built-in setting named by a literal."""
    args = body.get("args") or []
    first = args[0] if isinstance(args, list) and args else None
    const = first.get("A_Const") if isinstance(first, dict) else None
    name = const.get("sval", {}).get("sval") if isinstance(const, dict) else None
    if not isinstance(name, str) or "." in name:
        raise QueryRefused(f"this current_setting() call is not allowed: {_SECRET_SETTINGS}")


def function_denied(name: str) -> bool:
    """Whether a function name (unqualified, any case) is on the deny-list."""
    low = name.lower()
    return low in DENIED_FUNCTIONS or low.startswith(DENIED_PREFIXES)


def _check_tree(tree: Any, *, allow_writes: bool) -> bool:
    """Walk the whole tree; raise :class:`QueryRefused` on the first refused node. Returns
    whether a data-modifying statement was found (only possible with ``allow_writes``)."""
    writes = False
    for kind, body in _nodes(tree):
        if kind.endswith("Stmt") and kind != _READ_STATEMENT:
            if allow_writes and kind in _WRITE_STATEMENTS:
                writes = True
                continue
            what = kind.removesuffix("Stmt").upper()
            raise QueryRefused(
                f"only a read-only SELECT is allowed, and this query contains a {what} "
                "statement (data-modifying statements in WITH are refused too)"
            )
        if not isinstance(body, dict):
            continue
        if kind == "SelectStmt":
            if body.get("intoClause"):
                raise QueryRefused("SELECT ... INTO creates a table and is not allowed")
            if body.get("lockingClause") and not allow_writes:
                raise QueryRefused("locking clauses (FOR UPDATE / FOR SHARE ...) are not allowed")
        elif kind == "FuncCall":
            names = _names(body.get("funcname"))
            if names and function_denied(names[-1]):
                why = (
                    _SECRET_SETTINGS
                    if names[-1].lower() == "pg_show_all_settings"
                    else "it reaches files, settings, locks, other sessions or runs other "
                    "statements"
                )
                raise QueryRefused(f"the function {'.'.join(names)}() is not allowed ({why})")
            if names and names[-1].lower() == "current_setting":
                _check_setting(body)
        elif kind in ("ColumnRef", "A_Indirection"):
            # Attribute notation calls a function: ``t.func`` and ``(expr).func`` are
            # ``func(t)`` and ``func(expr)``. (A single name is a column, never a call.)
            names = _names(body.get("fields"))[1:] or _names(body.get("indirection"))
            for name in names:
                if name.lower() == "current_setting":  # (a name computed at run time)
                    raise QueryRefused(
                        f"current_setting by attribute notation is not allowed: {_SECRET_SETTINGS}"
                    )
                if function_denied(name):
                    raise QueryRefused(
                        f"the name {name!r} is not allowed in a query (attribute notation "
                        f"calls the function {name}())"
                    )
        elif kind == "RangeVar":
            rel = str(body.get("relname", "")).lower()
            if rel in DENIED_RELATIONS:
                why = f" ({_SECRET_SETTINGS})" if "setting" in rel else " (it holds secrets)"
                raise QueryRefused(f"the catalog {rel} is not readable through this tool{why}")
    return writes


def check_statement(sql: str, *, allow_writes: bool = False) -> CheckedStatement:
    """Check ``sql`` with PostgreSQL's grammar; raise :class:`QueryRefused` unless it is one
    allowed statement. With ``allow_writes`` a single INSERT / UPDATE / DELETE (or a SELECT with
    data-modifying CTEs) is allowed too; DDL and utility statements never are."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("the query is empty")
    if "\x00" in sql:
        raise QueryRefused("the query contains a NUL character")
    if len(sql) > MAX_QUERY_CHARS:
        # libpg_query recurses once per level of an expression like 1+1+1+... and overflows
        # the C stack (a segmentation fault, not an error) from about 60,000 levels on an
        # 8 MB stack; a length cap bounds the depth (at most one level per two characters)
        # far below that. Deeper than a few hundred levels is refused anyway (_parse).
        raise QueryRefused(
            f"the query is too long ({len(sql)} characters; at most {MAX_QUERY_CHARS}); "
            "write a shorter one (bind long value lists as params)"
        )
    tree = _parse(sql)
    if not tree:
        raise QueryRefused("the query is empty (only comments or semicolons)")
    if len(tree) != 1:
        raise QueryRefused(
            f"exactly one statement is allowed, and this query has {len(tree)} "
            "(remove the semicolons between statements)"
        )
    stmt = tree[0].get("stmt", {})
    top = next(iter(stmt), "")
    if top != _READ_STATEMENT and not (allow_writes and top in _WRITE_STATEMENTS):
        what = top.removesuffix("Stmt").upper() or "unknown"
        allowed = "SELECT, INSERT, UPDATE or DELETE" if allow_writes else "a read-only SELECT"
        raise QueryRefused(
            f"only {allowed} is allowed (WITH ... SELECT, VALUES and TABLE count as SELECT); "
            f"this is a {what} statement"
        )
    writes = _check_tree(tree, allow_writes=allow_writes)
    # The statement's own text: libpg_query gives byte offsets; a single statement may be
    # followed by a semicolon, which is left out so the text can be embedded (in DECLARE, or
    # as a sub-select when refining).
    raw = sql.encode()
    start = int(tree[0].get("stmt_location", 0))
    length = int(tree[0].get("stmt_len", 0))
    text = raw[start : start + length] if length else raw[start:]
    return CheckedStatement(text.decode().strip(), writes=writes)
