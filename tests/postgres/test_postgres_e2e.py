"""End to end: the seed's usage (``OpenAILLMHandler(config).add_tool(NeonPostgresTool...)``)
in a pipeline, over real HTTP to the scripted OpenAI-compatible server, on real databases.
What the model sees (the tool messages of its next request) and what a UI gets (the raw
frames) are both checked; so are a database that is down, the tool timeout and a CancelFrame
stopping the statement on the server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import trio

from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    FunctionCallRawResult,
    FunctionCallResult,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler, RetryPolicy
from rustvani_trio.task import PipelineTask
from rustvani_trio.testing import (
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
    run_test,
)
from rustvani_trio.tools._pg_embedded import hashing_embedder
from rustvani_trio.tools.postgres import NeonPostgresTool

from .helpers import (
    READER_PASSWORD,
    VEC_DIMS,
    PgDatabase,
    eventually,
    query_is_running,
    tool_backends,
)

LONG_QUERY = "SELECT count(*) FROM generate_series(1, 10000000000)"


def call(name: str, **args: Any) -> ToolCallReply:
    return ToolCallReply([ScriptedToolCall(name, json.dumps(args))])


def config(server: ScriptedServer, **overrides: Any) -> OpenAILLMConfig:
    return OpenAILLMConfig(
        api_key="sk-test",
        model="gpt-test",
        base_url=server.base_url,
        retry=RetryPolicy(max_attempts=1),
        **overrides,
    )


def context(question: str) -> LLMContext:
    return LLMContext(
        [
            {"role": "system", "content": "Answer from the database."},
            {"role": "user", "content": question},
        ]
    )


def tool_message(body: Any) -> str:
    last = body["messages"][-1]
    assert last["role"] == "tool"
    return str(last["content"])


async def test_a_turn_with_schema_query_refine_and_vector_search_by_text(
    vec_db: PgDatabase,
) -> None:
    tool = NeonPostgresTool.from_url(vec_db.reader_url, embedder=hashing_embedder(VEC_DIMS))
    async with open_scripted_server() as server:
        server.add_replies(
            [
                call("pg_schema"),
                call(
                    "pg_query", query="SELECT id, title, category, price FROM documents ORDER BY id"
                ),
                call(
                    "pg_refine",
                    result_set_id="rs_0001",
                    filters=[{"column": "category", "op": "=", "value": "food"}],
                    order_by=[{"column": "price", "direction": "asc"}],
                ),
                call(
                    "pg_vector_search",
                    table="documents",
                    vector_column="embedding",
                    query="vegetarian curry",
                    top_k=2,
                    select_columns=["id", "title"],
                ),
                TextReply(["The vegetarian curry ", "is the closest match."]),
            ]
        )
        llm = OpenAILLMHandler(config(server))
        llm.add_tool(tool)
        processor = llm.into_processor()
        with trio.fail_after(30):
            result = await run_test(
                processor, [LLMContextFrame(context=context("Which dishes are vegetarian?"))]
            )
        requests = server.requests
    assert [r.json["messages"][-1]["role"] for r in requests] == ["user"] + ["tool"] * 4
    offered = [t["function"]["name"] for t in requests[0].json["tools"]]
    assert offered == ["pg_schema", "pg_query", "pg_refine", "pg_vector_search"]
    vector_tool = requests[0].json["tools"][3]["function"]
    assert "public.documents.embedding (8 dims, hnsw cosine index)" in vector_tool["description"]
    assert "Give `query` (text, embedded for you)" in vector_tool["description"]

    # What the model saw.
    schema_text, query_text, refine_text, vector_text = (tool_message(r.json) for r in requests[1:])
    assert "embedding vector(8) [vector: 8 dims, hnsw cosine index]" in schema_text
    assert "pgvector 0.8" in schema_text and "UNTRUSTED DATA" in schema_text
    assert query_text.startswith("result_set rs_0001: 5 rows") and "UNTRUSTED DATA" in query_text
    assert refine_text.startswith("result_set rs_0002: 3 rows")
    assert refine_text.index("vegetarian dosa") < refine_text.index("spicy chicken curry")
    assert vector_text.startswith("result_set rs_0003: 2 rows")
    assert "columns: id integer, title text, _distance double precision" in vector_text
    first_row = vector_text.split("\n")[4]  # (count, marker, columns, header)
    assert first_row.startswith("1 | vegetarian curry with paneer | ")

    # What a UI got: the same calls, with rows.
    raws = result.downstream_of(FunctionCallRawResult)
    assert [r.function_name for r in raws] == ["pg_query", "pg_refine", "pg_vector_search"]
    assert [len(r.raw["rows"]) for r in raws] == [5, 3, 2]
    assert raws[1].raw["rows"][0][3] == "120.00"  # numeric, exact
    distances = [row[2] for row in raws[2].raw["rows"]]
    assert distances == sorted(distances) and distances[0] < 0.5
    results = result.downstream_of(FunctionCallResult)
    assert [r.result for r in results][1:] == [query_text, refine_text, vector_text]
    assert result.upstream_of(ErrorFrame) == []
    assert len(result.downstream_of(LLMFullResponseEnd)) == 1
    # The password is in no frame and in no request.
    everything = [repr(f) for f in result.downstream + result.upstream]
    everything += [json.dumps(r.raw) for r in raws] + [json.dumps(r.json) for r in requests]
    assert not any(READER_PASSWORD in text for text in everything)


async def test_seed_usage_from_env_and_a_database_that_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone:pw-not-shown@127.0.0.1:1/nodb")
    async with open_scripted_server() as server:
        server.add_replies([call("pg_query", query="SELECT 1"), TextReply(["Sorry."])])
        llm = OpenAILLMHandler(config(server))
        llm.add_tool(NeonPostgresTool.from_env(connect_timeout=2))  # the seed's usage
        processor = llm.into_processor()
        with trio.fail_after(30):
            result = await run_test(processor, [LLMContextFrame(context=context("How many?"))])
        answer = tool_message(server.requests[1].json)
    assert answer.startswith("Error: database unavailable")
    errors = [f.error for f in result.upstream_of(ErrorFrame)]
    assert any("failed to start" in e and "database unavailable" in e for e in errors)
    assert any("pg_query" in e and "database unavailable" in e for e in errors)
    assert not any("pw-not-shown" in e for e in errors)
    assert len(result.downstream_of(LLMFullResponseEnd)) == 1  # the turn went on and ended


async def test_the_tool_timeout_stops_the_statement_on_the_server(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=60_000)
    async with open_scripted_server() as server:
        server.add_replies([call("pg_query", query=LONG_QUERY), TextReply(["Too slow."])])
        llm = OpenAILLMHandler(config(server, tool_timeout=0.5)).add_tool(tool)
        with trio.fail_after(30):
            result = await run_test(llm.into_processor(), [LLMContextFrame(context=context("?"))])
        answer = tool_message(server.requests[1].json)
    assert "timed out" in answer
    assert any("timed out" in f.error for f in result.upstream_of(ErrorFrame))
    backends = await trio.to_thread.run_sync(tool_backends, pg_db.admin_url)
    assert all(state == "idle" for _pid, state, _q in backends), backends


async def test_a_cancel_frame_stops_the_statement_and_closes_the_pool(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=60_000)
    async with open_scripted_server() as server:
        server.add_replies([call("pg_query", query=LONG_QUERY)])
        llm = OpenAILLMHandler(config(server)).add_tool(tool)
        task = PipelineTask(Pipeline([llm.into_processor()]))
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            await task.queue_frame(LLMContextFrame(context=context("?")))
            await eventually(lambda: query_is_running(pg_db.admin_url))
            begun = time.perf_counter()
            await task.queue_frame(CancelFrame())
        elapsed = time.perf_counter() - begun
    assert elapsed < 2.0, f"the run took {elapsed:.3f}s to end after the CancelFrame"
    assert task.has_finished

    async def closed() -> bool:  # the pool's connections close
        return not await trio.to_thread.run_sync(tool_backends, pg_db.admin_url)

    await eventually(closed, within=5)
    assert tool.pool_stats() == {}


async def test_an_interruption_stops_the_statement_and_the_tool_goes_on(pg_db: PgDatabase) -> None:
    tool = NeonPostgresTool.from_url(pg_db.reader_url, statement_timeout_ms=60_000)
    async with open_scripted_server() as server:
        server.add_replies(
            [
                call("pg_query", query=LONG_QUERY),
                call("pg_query", query="SELECT count(*) AS n FROM products"),
                TextReply(["Four."]),
            ]
        )
        llm = OpenAILLMHandler(config(server)).add_tool(tool)
        task = PipelineTask(Pipeline([llm.into_processor()]))
        raws: list[FunctionCallRawResult] = []
        task.add_event_handler(
            "on_frame_reached_downstream",
            lambda _t, f: raws.append(f) if isinstance(f, FunctionCallRawResult) else None,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(task.run)
            await task.queue_frame(LLMContextFrame(context=context("?")))
            await eventually(lambda: query_is_running(pg_db.admin_url))
            begun = time.perf_counter()
            await task.queue_frame(InterruptionFrame())

            async def idle() -> bool:
                return not await query_is_running(pg_db.admin_url)

            await eventually(idle, within=5)
            elapsed = time.perf_counter() - begun
            await task.queue_frame(LLMContextFrame(context=context("How many products?")))
            await eventually(lambda: _true_if(bool(raws)), within=10)
            await task.queue_frame(EndFrame())
    assert elapsed < 0.5, f"the statement ran {elapsed:.3f}s after the interruption"
    assert [r.raw["rows"] for r in raws] == [[[4]]]


async def _true_if(value: bool) -> bool:
    return value
