"""NeonPostgresTool: a model can query a real PostgreSQL database and cannot harm it.

```python
llm = OpenAILLMHandler(config)
llm.add_tool(NeonPostgresTool.from_env())     # reads DATABASE_URL
processor = llm.into_processor()
```

The model gets ``pg_schema``, ``pg_query`` (one read-only SELECT, optional ``$n`` bind
parameters), ``pg_refine`` (narrow a cached result set with structured filters) and, when the
database has pgvector columns, ``pg_vector_search`` (by vector, or by text with an
``embedder``). Summaries go to the model, full rows to user interfaces
(``FunctionCallRawResult``).

Safety is five layers, each enough against a class of attacks on its own (docs/postgres.md):
the extended protocol and a server-side cursor; ``BEGIN READ ONLY`` + ``SET LOCAL
statement_timeout`` + always ROLLBACK, and ``DISCARD ALL`` on every returned connection; a real
PostgreSQL parser (libpg_query) with a deny-list walked over the whole tree; a role that is not
a superuser (refused unless ``allow_superuser=True``); results wrapped as untrusted data.

Needs the ``db-postgres`` extra (psycopg, psycopg-pool, pgparse).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import attrs

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the Postgres tool needs the db-postgres extra: pip install 'rustvani-trio[db-postgres]'"
    ) from _exc
import trio

from .._validators import at_least, positive
from ..exceptions import RustvaniError
from ..services.llm.function_registry import FunctionRegistry
from ._pg_exec import Executor, Layers, make_pool
from ._pg_functions import PgFunctions
from ._pg_guard import QueryRefused
from ._pg_results import ResultCache
from ._pg_role import RoleReport, create_readonly_role, inspect_role, main, role_command_hint
from ._pg_schema import SchemaInfo, introspect
from ._pg_specs import function_schemas
from ._pg_values import adapters, redact, redact_url, secrets_of
from .base import BuiltinTool

__all__ = [
    "Embedder",
    "NeonPostgresConfig",
    "NeonPostgresTool",
    "PostgresToolError",
    "PostgresUnavailableError",
    "QueryRefused",
    "create_readonly_role",
]

logger = logging.getLogger("rustvani_trio.tools.postgres")

#: text -> vector; a plain function (run in a worker thread) or an async one.
Embedder: TypeAlias = Callable[[str], "Sequence[float] | Awaitable[Sequence[float]]"]

_RETRY_INTERVAL = 2.0  # seconds between two attempts to reach a database that is down


class PostgresToolError(RustvaniError, RuntimeError):
    """The tool cannot work as configured (a superuser role, a bad URL, ...)."""


class PostgresUnavailableError(PostgresToolError):
    """The database could not be reached."""


def _check_url(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attr.name} must be a PostgreSQL URL such as postgresql://user@host/db")
    try:
        conninfo_to_dict(value)
    except psycopg.Error as exc:
        raise ValueError(
            f"invalid PostgreSQL URL {redact_url(value)!r}: {redact(str(exc), secrets_of(value))}"
        ) from None


def _check_schemas(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not value or not all(isinstance(s, str) and s for s in value):
        raise ValueError(f"{attr.name} must be a non-empty list of schema names, got {value!r}")


@attrs.frozen
class NeonPostgresConfig:
    """Settings of a :class:`NeonPostgresTool` (only ``url`` is positional).

    Attributes:
        url: the connection URL (``postgresql://user:password@host/db?sslmode=require``); its
            password never appears in frames, errors or logs (nor in this object's repr).
        read_only: True (default): only SELECTs, in read-only transactions, always rolled
            back. False: one INSERT / UPDATE / DELETE per call is also allowed and committed.
        statement_timeout_ms: the limit of every statement (``SET LOCAL statement_timeout``).
        max_rows: rows shown to the model per result (the rest is counted, not shown).
        max_raw_rows: rows fetched and sent to user interfaces (FunctionCallRawResult).
        max_result_sets: result sets kept for ``pg_refine``.
        schemas: the schemas shown by ``pg_schema`` (and granted by the role helper).
        pool_size: connections (and worker threads) at most.
        connect_timeout: seconds to connect (and to wait for a pooled connection).
        embedder: text -> vector, for ``pg_vector_search`` by ``query`` text.
        allow_superuser: connect even as a superuser (not recommended; see docs/postgres.md).
        max_value_chars / max_raw_value_chars: long values are cut, with a marker, at this
            many characters for the model / for user interfaces.
        max_summary_chars: the model's table stops growing past this many characters.
        max_result_bytes: a query whose rows come to more than this many bytes (as
            PostgreSQL sizes them) is stopped on the server and refused, so that no query
            can fill the agent's memory (about three times this much travels as text).
    """

    url: str = attrs.field(validator=_check_url, repr=lambda u: repr(redact_url(u)))
    read_only: bool = attrs.field(default=True, kw_only=True)
    statement_timeout_ms: int = attrs.field(default=10_000, kw_only=True, validator=at_least(1))
    max_rows: int = attrs.field(default=50, kw_only=True, validator=at_least(1))
    max_raw_rows: int = attrs.field(default=1000, kw_only=True, validator=at_least(1))
    max_result_sets: int = attrs.field(default=10, kw_only=True, validator=at_least(1))
    schemas: tuple[str, ...] = attrs.field(
        default=("public",), kw_only=True, converter=tuple, validator=_check_schemas
    )
    pool_size: int = attrs.field(default=4, kw_only=True, validator=at_least(1))
    connect_timeout: float = attrs.field(default=5.0, kw_only=True, validator=positive)
    embedder: Embedder | None = attrs.field(default=None, kw_only=True)
    allow_superuser: bool = attrs.field(default=False, kw_only=True)
    max_value_chars: int = attrs.field(default=200, kw_only=True, validator=at_least(8))
    max_raw_value_chars: int = attrs.field(default=10_000, kw_only=True, validator=at_least(8))
    max_summary_chars: int = attrs.field(default=6_000, kw_only=True, validator=at_least(200))
    max_result_bytes: int = attrs.field(default=16 * 2**20, kw_only=True, validator=at_least(1024))

    @property
    def fetch_cap(self) -> int:
        """Rows fetched per statement (the larger of the two caps)."""
        return max(self.max_rows, self.max_raw_rows)


class NeonPostgresTool(PgFunctions, BuiltinTool):
    """The Postgres tool (see the module docstring). Building it does no I/O; the connection,
    the role check and the schema introspection happen in :meth:`on_start` (at StartFrame),
    bounded in time. A database that is down is reported (an ErrorFrame at start) and each
    call then answers "database unavailable" until it is back; nothing blocks the pipeline."""

    name = "neon_postgres"
    is_cacheable = True

    def __init__(self, config: NeonPostgresConfig) -> None:
        if not isinstance(config, NeonPostgresConfig):
            raise TypeError(f"config must be a NeonPostgresConfig, got {type(config).__name__}")
        self.config = config
        #: Problems of the connected role found at start (a role that can write, ...).
        self.warnings: list[str] = []
        self.role: RoleReport | None = None
        self._secrets = secrets_of(config.url)
        self._layers = Layers()
        self._executor: Executor | None = None
        self._schema: SchemaInfo | None = None
        self._results = ResultCache(config.max_result_sets)
        self._unavailable: str | None = None
        self._failed_at = -float("inf")
        self._attempts = 0
        self._lock = trio.Lock()

    @classmethod
    def from_env(cls, var: str = "DATABASE_URL", **overrides: Any) -> NeonPostgresTool:
        """A tool for the database in the environment variable ``var`` (``DATABASE_URL``);
        keyword arguments set other :class:`NeonPostgresConfig` fields."""
        url = os.environ.get(var, "")
        if not url.strip():
            raise PostgresToolError(
                f"{var} is not set: export {var}=postgresql://USER:PASSWORD@HOST/DB (connect as "
                f"a read-only role; to make one, {role_command_hint()})"
            )
        return cls(NeonPostgresConfig(url, **overrides))

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> NeonPostgresTool:
        """A tool for the database at ``url``."""
        return cls(NeonPostgresConfig(url, **overrides))

    def __repr__(self) -> str:
        return f"NeonPostgresTool({self.config!r})"

    # ------------------------------------------------------------------ introspection

    @property
    def schema(self) -> SchemaInfo | None:
        """The introspected schema (after a successful start)."""
        return self._schema

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's statistics (``pool_size``, ``pool_available``, ``requests_num``,
        ...); empty when not connected."""
        ex = self._executor
        return dict(ex.pool.get_stats()) if ex is not None else {}

    def tool_schemas(self) -> Sequence[Any]:
        cfg = self.config
        return function_schemas(
            self._schema,
            read_only=cfg.read_only,
            embedder=cfg.embedder is not None,
            max_rows=cfg.max_rows,
        )

    def register_all(self, registry: FunctionRegistry) -> None:
        for name, fn in (
            ("pg_schema", self._pg_schema),
            ("pg_query", self._pg_query),
            ("pg_refine", self._pg_refine),
            ("pg_vector_search", self._pg_vector_search),
        ):
            registry.register(name, functools.partial(self._call, fn), rich=True)

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        """Connect, check the role, introspect the schema, open the pool. The first failure
        to reach the database raises (the LLM processor reports it as an ErrorFrame); later
        starts record it and the calls answer "database unavailable"."""
        if self._executor is not None:
            return
        self._attempts += 1
        try:
            await self._connect()
        except PostgresUnavailableError as exc:
            self._unavailable, self._failed_at = str(exc), trio.current_time()
            logger.warning("%s: %s", self.name, exc)
            if self._attempts == 1:
                raise

    async def on_stop(self) -> None:
        """Close the pool (in-flight calls have finished: EndFrame drains)."""
        await self._close(5.0)

    async def on_cancel(self) -> None:
        """Close the pool; the cancelled calls already stopped their statements."""
        await self._close(1.0)

    async def _close(self, pool_timeout: float) -> None:
        executor, self._executor = self._executor, None
        self._schema, self._unavailable, self._attempts = None, None, 0
        self._results.clear()
        if executor is not None:
            close = functools.partial(executor.pool.close, timeout=pool_timeout)
            await trio.to_thread.run_sync(close, abandon_on_cancel=True)

    async def _connect(self) -> None:
        cfg, layers = self.config, self._layers

        def probe() -> tuple[RoleReport, SchemaInfo]:
            with psycopg.Connection.connect(
                cfg.url,
                autocommit=True,
                context=adapters(),
                connect_timeout=max(2, round(cfg.connect_timeout)),
                application_name="rustvani-trio",
            ) as conn:
                report = inspect_role(conn, cfg.schemas)
                if report.can_be_superuser and layers.role_check and not cfg.allow_superuser:
                    raise PostgresToolError(
                        f"refusing to connect as {report.superuser_phrase()}: a superuser can "
                        "read server files, run programs and change settings even inside a "
                        f"read-only transaction. To fix it, {role_command_hint()}. (Or set "
                        "allow_superuser=True to accept the risk.)"
                    )
                return report, introspect(conn, cfg.schemas, timeout_ms=cfg.statement_timeout_ms)

        limit = cfg.connect_timeout + 2 * cfg.statement_timeout_ms / 1000 + 1.0
        try:
            with trio.fail_after(limit):
                report, schema = await trio.to_thread.run_sync(probe, abandon_on_cancel=True)
        except trio.TooSlowError:
            raise PostgresUnavailableError(
                f"database unavailable: {redact_url(cfg.url)} did not answer within {limit:g}s"
            ) from None
        except psycopg.OperationalError as exc:
            raise PostgresUnavailableError(
                f"database unavailable: {redact(str(exc).strip(), self._secrets)}"
            ) from None
        except psycopg.Error as exc:
            raise PostgresToolError(
                f"the database refused the tool's start: {redact(str(exc), self._secrets)}"
            ) from None
        self.role = report
        self.warnings = []
        if report.can_be_superuser:
            self.warnings.append(f"connected as {report.superuser_phrase()} (allow_superuser)")
        elif cfg.read_only and report.risks:
            self.warnings.append(
                f"the role {report.user!r} is not read-only: {'; '.join(report.risks)}. "
                f"The other layers still hold, but {role_command_hint()}"
            )
        for warning in self.warnings:
            logger.warning("%s: %s", self.name, warning)
        pool = make_pool(
            cfg.url, size=cfg.pool_size, connect_timeout=cfg.connect_timeout, name=self.name
        )
        await trio.to_thread.run_sync(functools.partial(pool.open, wait=False))
        self._executor = Executor(pool, size=cfg.pool_size, reset=self._layers.reset)
        self._schema, self._unavailable = schema, None

    async def _ready(self) -> Executor | str:
        """The executor, or why the database cannot be used (retried every few seconds)."""
        if self._executor is not None:
            return self._executor
        async with self._lock:
            if self._executor is None and (
                self._unavailable is None
                or trio.current_time() - self._failed_at >= _RETRY_INTERVAL
            ):
                try:
                    await self._connect()
                except PostgresUnavailableError as exc:
                    self._unavailable, self._failed_at = str(exc), trio.current_time()
        return self._executor or self._unavailable or "database unavailable"


if __name__ == "__main__":
    raise SystemExit(main())
