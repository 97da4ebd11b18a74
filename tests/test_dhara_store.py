"""Persistence: snapshots, restore, the in-memory and PostgreSQL session stores, and a
conversation that survives its process (three turns saved to PostgreSQL, pipeline and manager
thrown away, a new one restores, the fourth turn goes on in the right node with the right
state).

PostgreSQL: the local server (127.0.0.1:5432, trust auth, user postgres); each test module run
creates its own throwaway database and drops it. These tests run on the real clock (the store
works in threads, which a jumping virtual clock would not wait for).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
import trio
from test_dhara_support import conversation

from rustvani_trio.context import LLMContext
from rustvani_trio.dhara import (
    DharaError,
    DharaNodeChanged,
    InMemorySessionStore,
    PostgresSessionStore,
    SessionStore,
    SessionStoreError,
)
from rustvani_trio.dhara.examples import pizza
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.testing import open_scripted_server

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"dhara_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover - CI starts the server
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed for these tests: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def talked(manager: Any) -> None:
    """Some conversation: a node change by hand is not possible, so state and messages."""
    manager.state["items"] = [{"pizza": "Hawaiian", "size": "small", "toppings": [], "price": 8.99}]
    manager.state["total"] = 8.99
    manager.context.add_user_message("hello")
    manager.context.add_assistant_message("hi")


# ----------------------------------------------------------------- snapshot and restore


def test_a_snapshot_is_json_and_restores_node_state_messages_and_functions() -> None:
    one = pizza.build_from_file()
    talked(one)
    snapshot = json.loads(json.dumps(one.snapshot()))
    assert snapshot["flow_id"] == "pizza-order" and snapshot["node"] == "greeting"
    two = pizza.build_imperative()  # the other API: same flow id and version
    two.restore(snapshot)
    assert two.current_node == "greeting"
    assert two.state["total"] == 8.99 and two.state["items"][0]["pizza"] == "Hawaiian"
    assert two.context.messages == one.context.messages
    assert two.context.tool_names() == ["browse_menu"]
    assert two.registry.names() == ["browse_menu"]
    # The pipeline never saw two's initial announcement: the restored one replaces it.
    assert two.history[-1] == DharaNodeChanged(previous=None, current="greeting", reason="restored")
    assert [(f.previous, f.current) for f, _ in two._outbox] == [(None, "greeting")]


def test_a_bad_snapshot_is_refused_and_changes_nothing() -> None:
    dhara = pizza.build_from_file()
    talked(dhara)
    good = dhara.snapshot()
    before = (dhara.current_node, dict(dhara.state), dhara.context.messages)
    bad: list[tuple[dict[str, Any], str]] = [
        ({**good, "flow_id": "other"}, "flow 'other'"),
        ({**good, "flow_version": "9"}, "version '9'"),
        ({**good, "node": "kitchen"}, "'kitchen' is not registered"),
        ({**good, "format": "x"}, "not a Dhara snapshot"),
        ({**good, "messages": [{"role": "tool", "tool_call_id": "c1", "content": "x"}]}, "c1"),
        ({**good, "state": {"total": "lots"}}, "'total' is declared number"),
    ]
    for snapshot, message in bad:
        with pytest.raises((DharaError, ValueError, TypeError), match=message):
            dhara.restore(snapshot)
        assert (dhara.current_node, dict(dhara.state), dhara.context.messages) == before


async def test_the_in_memory_store_keeps_copies() -> None:
    store = InMemorySessionStore()
    assert isinstance(store, SessionStore)
    dhara = pizza.build_from_file()
    await dhara.save(store, "s1")
    loaded = await store.load("s1")
    assert loaded == dhara.snapshot()
    assert loaded is not None
    loaded["node"] = "menu"
    assert (await store.load("s1"))["node"] == "greeting"  # type: ignore[index]
    assert await store.load("nobody") is None
    assert not await pizza.build_from_file().load(store, "nobody")
    assert await store.delete("s1") and not await store.delete("s1")
    with pytest.raises(ValueError, match="session id"):
        await store.save("", {})
    with pytest.raises(TypeError):
        await store.save("s2", {"x": object()})


# ----------------------------------------------------------------- PostgreSQL


async def test_the_postgres_store_saves_loads_replaces_and_deletes(database: str) -> None:
    async with PostgresSessionStore.open(database, table="sessions_basic") as store:
        assert isinstance(store, SessionStore)
        dhara = pizza.build_from_file()
        await dhara.save(store, "conv-1")
        talked(dhara)
        await dhara.save(store, "conv-1")  # replaces the row
        loaded = await store.load("conv-1")
        assert loaded == json.loads(json.dumps(dhara.snapshot()))
        assert await store.load("conv-2") is None
        assert await store.delete("conv-1") and not await store.delete("conv-1")
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT count(*) FROM sessions_basic").fetchone()
    assert rows == (0,)


async def test_a_cancelled_save_does_not_hang_and_the_store_goes_on(database: str) -> None:
    async with PostgresSessionStore.open(database, table="sessions_cancel") as store:
        dhara = pizza.build_from_file()
        with trio.move_on_after(0) as scope:
            await dhara.save(store, "conv-c")
        assert scope.cancelled_caught
        await dhara.save(store, "conv-c")
        assert (await store.load("conv-c")) is not None


async def test_postgres_errors_do_not_show_the_password() -> None:
    with pytest.raises(SessionStoreError) as info:
        async with PostgresSessionStore.open(
            "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/x", op_timeout=0.3
        ):
            pass  # pragma: no cover
    assert "s3cr3t-pw" not in str(info.value)
    assert "could not connect" in str(info.value)
    with pytest.raises(ValueError, match="table name"):
        PostgresSessionStore(None, table="x; DROP TABLE y")


class CountingStore:
    """A store wrapper counting saves."""

    def __init__(self, inner: PostgresSessionStore) -> None:
        self.inner = inner
        self.saves = 0

    async def save(self, session_id: str, snapshot: Mapping[str, Any]) -> None:
        self.saves += 1
        await self.inner.save(session_id, snapshot)

    async def load(self, session_id: str) -> dict[str, Any] | None:
        return await self.inner.load(session_id)

    async def delete(self, session_id: str) -> bool:
        return await self.inner.delete(session_id)


async def test_a_conversation_survives_its_process_through_postgres(database: str) -> None:
    session = f"call-{uuid.uuid4().hex[:8]}"
    async with (
        PostgresSessionStore.open(database) as pg,
        open_scripted_server(default_reply=pizza.scripted_model) as server,
    ):
        store = CountingStore(pg)
        # Process one: the opening line and three user turns, saved after each turn.
        async with conversation(
            server, pizza.build_from_file, store=store, session_id=session
        ) as first:
            for line in (
                "Yes, show me the menu please",
                "A large Pepperoni with mushrooms and olives",
                "Also a small Margherita",
            ):
                await first.say(line)
        assert first.dhara.current_node == "menu"
        assert store.saves == 4  # once per turn (the opening line is a turn)
        history = first.context.messages
        del first  # the pipeline and the manager are gone

        # Process two: a new manager, restored from PostgreSQL.
        snapshot = await store.load(session)
        assert snapshot is not None

        def restored(context: LLMContext, registry: FunctionRegistry) -> Any:
            dhara = pizza.build_from_file(context, registry)
            dhara.restore(snapshot)
            return dhara

        requests_before = len(server.requests)
        async with conversation(
            server, restored, store=store, session_id=session, wait_first_turn=False
        ) as second:
            assert second.dhara.current_node == "menu"
            assert second.dhara.state["total"] == pytest.approx(27.98)
            await trio.sleep(0.2)
            assert len(server.requests) == requests_before  # a restored node does not speak first
            await second.say("That's all, confirm please")
        assert second.nodes() == ["menu", "confirm"]
        assert second.of(DharaNodeChanged)[0].reason == "restored"
        fourth = server.requests[-1].json["messages"]
        assert fourth[: len(history)] == history
        assert fourth[-1]["content"].startswith("The order has 2 item(s) and comes to $27.98.")
        saved = await store.load(session)
        assert saved is not None and saved["node"] == "confirm"


# ----------------------------------------------------------------- races and outages


def snapshot_at(revision: int, node: str = "greeting") -> dict[str, Any]:
    snapshot = pizza.build_from_file().snapshot()
    snapshot.update(revision=revision, node=node)
    snapshot["state"]["total"] = float(revision)
    return snapshot


async def test_a_late_save_of_an_older_turn_never_replaces_a_newer_one(database: str) -> None:
    # A save that commits late (cancelled but already sent, retried, or from a worker that
    # lost the session) used to overwrite the newer turn: the row went back in time.
    async with PostgresSessionStore.open(database, table="sessions_stale") as pg:
        for store in (InMemorySessionStore(), pg):
            await store.save("s", snapshot_at(2, "menu"))
            with pytest.raises(SessionStoreError, match="newer snapshot stored \\(revision 2 > 1"):
                await store.save("s", snapshot_at(1))
            loaded = await store.load("s")
            assert loaded is not None and (loaded["revision"], loaded["node"]) == (2, "menu")
            await store.save("s", snapshot_at(2, "confirm"))  # the same revision: replaced
            assert (await store.load("s"))["node"] == "confirm"  # type: ignore[index]


async def test_concurrent_saves_of_one_session_keep_the_newest_turn_whole(database: str) -> None:
    order = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 12, 11]
    refused: list[int] = []
    async with PostgresSessionStore.open(database, table="sessions_race", max_size=6) as store:

        async def save(revision: int) -> None:
            try:
                await store.save("race", snapshot_at(revision, f"node{revision}"))
            except SessionStoreError:
                refused.append(revision)

        async with trio.open_nursery() as nursery:
            for revision in order:
                nursery.start_soon(save, revision)
        loaded = await store.load("race")
    assert loaded is not None and loaded["revision"] == 12
    assert 12 not in refused
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT revision, node, snapshot->>'node', (snapshot->>'revision')::bigint, "
            "(snapshot->'state'->>'total')::float FROM sessions_race WHERE session_id = 'race'"
        ).fetchone()
    assert row == (12, "node12", "node12", 12, 12.0)  # one save's row, whole


async def test_the_database_going_down_is_reported_and_the_conversation_goes_on(
    database: str,
) -> None:
    name = database.rsplit("/", 1)[1]
    # With a password (trust auth ignores it): it must never show in an error.
    dsn = database.replace("postgres@", "postgres:s3cr3t-pw@")

    def database_down(down: bool) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not down).lower()}')
            if down:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

    try:
        async with (
            PostgresSessionStore.open(dsn, table="sessions_down", op_timeout=0.2) as store,
            open_scripted_server(default_reply=pizza.scripted_model) as server,
            conversation(
                server, pizza.build_from_file, store=store, session_id="s", save_timeout=2.0
            ) as conv,
        ):
            await conv.say("Yes, show me the menu please")
            assert (await store.load("s")) is not None
            database_down(True)
            started = trio.current_time()
            await conv.say("A large Pepperoni with mushrooms and olives")
            await conv.say("Also a small Margherita")
            assert trio.current_time() - started < 10
            await trio.sleep(0.3)
            errors = conv.errors()
    finally:
        database_down(False)
    assert conv.dhara.current_node == "menu" and len(conv.dhara.state["items"]) == 2
    assert errors and all(e.startswith("could not save session 's': ") for e in errors), errors
    assert not any("s3cr3t-pw" in e for e in errors)


async def test_a_malformed_connection_string_is_refused_without_logging_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # psycopg_pool's connection warnings quoted a malformed string, password and all.
    caplog.set_level("DEBUG")
    with pytest.raises(SessionStoreError, match="malformed") as info:
        async with PostgresSessionStore.open(
            "postgresql://app:pa%ZZss-s3cr3t@127.0.0.1/x", op_timeout=0.3
        ):
            pass  # pragma: no cover
    assert "s3cr3t" not in str(info.value)
    assert "s3cr3t" not in caplog.text
