"""Safety layer 4: the role the tool connects as.

A superuser is refused (unless ``allow_superuser=True``): inside a READ ONLY transaction a
superuser can still run ``COPY ... TO PROGRAM``, read server files, import large objects and
change settings. :func:`create_readonly_role` (or ``python -m rustvani_trio.tools.postgres
create-role``) makes the role the tool should use, in one step: LOGIN, no superuser or other
attributes, SELECT on the chosen schemas (and on tables created there later),
``default_transaction_read_only = on`` and a statement timeout as role settings. It is
deliberately not a member of ``pg_read_all_data`` (which reaches every table of every schema).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

import attrs
import psycopg
from psycopg import RawCursor, sql
from psycopg.conninfo import conninfo_to_dict

from ._pg_values import redact

__all__ = [
    "RoleReport",
    "create_readonly_role",
    "inspect_role",
    "main",
    "readonly_role_sql",
    "role_command_hint",
]

_RISKY_MEMBERSHIPS = (
    "pg_write_all_data",
    "pg_read_all_data",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
)


def role_command_hint() -> str:
    """How to create the read-only role, for error messages."""
    return (
        "create a read-only role and connect as it: `python -m rustvani_trio.tools.postgres "
        "create-role --role rvt_reader` (the admin connection is read from DATABASE_URL or "
        "--admin-url; it prints the new role's URL), or call "
        "rustvani_trio.tools.postgres.create_readonly_role(admin_url, 'rvt_reader')"
    )


def readonly_role_sql(
    role: str,
    *,
    password: str | None,
    database: str,
    schemas: Sequence[str] = ("public",),
    statement_timeout_ms: int = 10_000,
    exists: bool = False,
) -> list[sql.Composed]:
    """The statements that create (or, with ``exists``, update) the read-only role."""
    rid = sql.Identifier(role)
    attrs_sql = sql.SQL(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
    )
    pw = sql.SQL(" PASSWORD {}").format(sql.Literal(password)) if password else sql.SQL("")
    verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
    out = [
        sql.SQL("{} {} {}{}").format(verb, rid, attrs_sql, pw),
        sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(rid),
        sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
            rid, sql.Literal(int(statement_timeout_ms))
        ),
        sql.SQL("ALTER ROLE {} SET idle_in_transaction_session_timeout = 60000").format(rid),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), rid),
    ]
    for schema in schemas:
        sid = sql.Identifier(schema)
        out += [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sid, rid),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(sid, rid),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                sid, rid
            ),
        ]
    return out


def _role_url(admin_url: str, role: str, password: str) -> str:
    params = conninfo_to_dict(admin_url)
    params.pop("user", None)
    params.pop("password", None)
    host = str(params.pop("host", "") or "")
    port = str(params.pop("port", "") or "")
    dbname = str(params.pop("dbname", "") or "")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        params["host"] = host
        host = ""
    netloc = f"{urllib.parse.quote(role, safe='')}:{urllib.parse.quote(password, safe='')}@"
    netloc += host + (f":{port}" if port else "")
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    return f"postgresql://{netloc}/{urllib.parse.quote(dbname)}" + (f"?{query}" if query else "")


def create_readonly_role(
    admin_url: str,
    role: str = "rvt_reader",
    *,
    password: str | None = None,
    schemas: Sequence[str] = ("public",),
    statement_timeout_ms: int = 10_000,
) -> str:
    """Create (or update) the read-only role in the database of ``admin_url`` (a role allowed
    to create roles and grant on the schemas) and return the URL to connect as it. A random
    password is generated when none is given. Blocking: call it at setup time (or through
    ``trio.to_thread.run_sync``)."""
    if not role or not isinstance(role, str):
        raise ValueError(f"role must be a non-empty string, got {role!r}")
    password = password or secrets.token_urlsafe(24)
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            cur = RawCursor(conn)
            cur.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", [role])
            exists = cur.fetchone() is not None
            database = conn.info.dbname
            # The server gets a verifier (SCRAM-SHA-256, or what password_encryption says),
            # never the password: statements can be logged and are shown in pg_stat_activity.
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode()).decode()
            with conn.transaction():
                for stmt in readonly_role_sql(
                    role,
                    password=verifier,
                    database=database,
                    schemas=schemas,
                    statement_timeout_ms=statement_timeout_ms,
                    exists=exists,
                ):
                    conn.execute(stmt)
    except psycopg.Error as exc:
        raise RuntimeError(
            f"could not create the role {role!r}: {redact(str(exc), [password])}"
        ) from None
    return _role_url(admin_url, role, password)


@attrs.frozen
class RoleReport:
    """What the connected role can do: ``superuser``, and ``risks`` (each a phrase);
    ``superuser_roles`` are the superusers it is a member of (one ``SET ROLE`` away)."""

    user: str
    superuser: bool
    risks: tuple[str, ...]
    superuser_roles: tuple[str, ...] = ()

    @property
    def can_be_superuser(self) -> bool:
        """Whether the role is a superuser or can become one."""
        return self.superuser or bool(self.superuser_roles)

    def superuser_phrase(self) -> str:
        """``the superuser 'x'`` or ``the role 'y', which can become the superuser 'x'``."""
        if self.superuser:
            return f"the superuser {self.user!r}"
        names = ", ".join(repr(r) for r in self.superuser_roles)
        return f"the role {self.user!r}, which can become the superuser {names} (SET ROLE)"


_REPORT = """
SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication,
  current_setting('default_transaction_read_only'),
  ARRAY(SELECT b.rolname FROM pg_catalog.pg_roles b
        WHERE b.rolname = ANY($2::text[]) AND pg_has_role(current_user, b.oid, 'USAGE')),
  ARRAY(SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
          AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
        ORDER BY 1 LIMIT 5),
  ARRAY(SELECT n.nspname FROM pg_catalog.pg_namespace n
        WHERE n.nspname = ANY($1::text[]) AND has_schema_privilege(n.oid, 'CREATE')),
  has_database_privilege(current_database(), 'CREATE'),
  ARRAY(SELECT s.rolname FROM pg_catalog.pg_roles s
        WHERE s.rolsuper AND s.rolname <> current_user
          AND pg_has_role(current_user, s.oid, 'MEMBER') ORDER BY 1)
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""


def inspect_role(conn: psycopg.Connection[Any], schemas: Sequence[str]) -> RoleReport:
    """What the role of ``conn`` may do that a read-only role should not (blocking)."""
    cur = RawCursor(conn)
    cur.execute(_REPORT, [list(schemas), list(_RISKY_MEMBERSHIPS)], prepare=False)
    row = cur.fetchone()
    if row is None:  # pragma: no cover - current_user always has a pg_roles row
        return RoleReport("?", False, ())
    user, sup, createrole, createdb, bypassrls, repl, ro, members, writable, create = row[:10]
    dbcreate, superuser_roles = row[10:]
    superusers = tuple(str(r) for r in superuser_roles or ())
    risks: list[str] = []
    if createrole:
        risks.append("it can create roles (CREATEROLE)")
    if createdb:
        risks.append("it can create databases (CREATEDB)")
    if bypassrls:
        risks.append("it bypasses row-level security (BYPASSRLS)")
    if repl:
        risks.append("it has REPLICATION")
    if members:
        risks.append(f"it is a member of {', '.join(members)}")
    if writable:
        risks.append(
            f"it can write to tables ({', '.join(writable)}{', ...' * (len(writable) > 4)})"
        )
    if create:
        risks.append(f"it can create objects in schema(s) {', '.join(create)}")
    if dbcreate:
        risks.append("it can create schemas in the database")
    if ro != "on":
        risks.append("its default_transaction_read_only is off")
    return RoleReport(str(user), bool(sup), tuple(risks), superusers)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rustvani_trio.tools.postgres create-role ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m rustvani_trio.tools.postgres",
        description="Set up the read-only role the Postgres tool should connect as.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-role", help="create (or update) the read-only role")
    create.add_argument("--admin-url", help="an admin connection (default: $DATABASE_URL)")
    create.add_argument("--role", default="rvt_reader", help="role name (default rvt_reader)")
    create.add_argument("--password", help="the role's password (default: a random one)")
    create.add_argument("--schema", action="append", help="schema to grant (repeatable)")
    create.add_argument("--statement-timeout-ms", type=int, default=10_000)
    create.add_argument("--print-sql", action="store_true", help="only print the SQL")
    args = parser.parse_args(argv)
    schemas = args.schema or ["public"]
    if args.print_sql:
        for stmt in readonly_role_sql(
            args.role,
            password="<password>",
            database="<database>",
            schemas=schemas,
            statement_timeout_ms=args.statement_timeout_ms,
        ):
            print(stmt.as_string(None) + ";")
        return 0
    admin = args.admin_url or os.environ.get("DATABASE_URL")
    if not admin:
        print("no admin connection: pass --admin-url or set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        url = create_readonly_role(
            admin,
            args.role,
            password=args.password,
            schemas=schemas,
            statement_timeout_ms=args.statement_timeout_ms,
        )
    except RuntimeError as exc:
        print(f"error: {redact(str(exc), [])}", file=sys.stderr)
        return 1
    print(f"role {args.role!r} is ready; connect the tool with:")
    print(f"export DATABASE_URL='{url}'")
    return 0
