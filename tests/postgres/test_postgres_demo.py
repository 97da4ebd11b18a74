"""The ``postgres`` demo scene, against the local server (a throwaway database: with
DATABASE_URL set the scene does not start the embedded server)."""

from __future__ import annotations

import pytest
import trio

from rustvani_trio._cli import demo, scene_postgres

from .helpers import admin_base_url, server_or_skip


async def test_the_scene_answers_from_the_seeded_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server_or_skip(admin_base_url())
    monkeypatch.setenv("DATABASE_URL", admin_base_url())
    assert demo.SCENES["postgres"] == ".scene_postgres" and scene_postgres.available()
    with trio.fail_after(60):
        await scene_postgres.run()
    out = capsys.readouterr().out
    assert "using DATABASE_URL" in out and "a throwaway database" in out
    assert "[round 2: pg_query(" in out and "[round 3: pg_refine(" in out
    assert "UI gets: 6 rows" in out and "UI gets: 4 rows" in out
    assert (
        "assistant> Vegetarian and under 200: Idli (60.00), Masala dosa (120.50), "
        "Chole bhature (150.00), Paneer tikka (199.99)." in out
    )
    vector_round = "[round 4: pg_vector_search(" in out  # only where the server has pgvector
    assert f"{5 if vector_round else 4} HTTP requests" in out
