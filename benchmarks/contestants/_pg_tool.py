"""rustvani-trio's tool round trip with a real query: the ``tool`` scenario's "1 pg_query"
row, beside the plain tool round ("1 call").

The same pipeline as the plain round (``user -> LLM -> sink -> assistant``), but the tool is
:class:`~rustvani_trio.tools.postgres.NeonPostgresTool` and the model's call is a real
``pg_query`` (a parametrised SELECT over a 1,000-row table, 20 rows back) on a real PostgreSQL:
``DATABASE_URL`` (an admin connection) or the local server. Every safety layer is on: the parser
check, the read-only transaction with its statement timeout, the server-side cursor, the
rollback, ``DISCARD ALL``, the row cap and the untrusted-data summary. A throwaway database
and its read-only role are made before the measured turns and dropped after (not measured);
the tool starts (connects and introspects) before the measured turns too.

The difference between the two rows is what a real query through the tool adds to a tool
round: the thread hop, the statements above, and the summary.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from .._common import Samples, now

# (rustvani-trio and the db-postgres extra are imported when the row runs, in the worker: the
# orchestrator imports this module only for TOOL_CALL)

SEED = """
CREATE TABLE products (
    id int PRIMARY KEY,
    name text NOT NULL,
    price numeric(10,2) NOT NULL,
    added timestamptz NOT NULL
);
INSERT INTO products
SELECT g, 'product ' || g, (g % 500) + 0.99, '2024-01-01'::timestamptz + g * interval '1 hour'
FROM generate_series(1, 1000) g;
"""

#: The model's call (x_script.tool_call) in this row.
TOOL_CALL = {
    "name": "pg_query",
    "arguments": (
        '{"query": "SELECT id, name, price, added FROM products WHERE price > $1 '
        'ORDER BY price, id LIMIT 20", "params": [250]}'
    ),
}

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


async def pg_tool_round(params: dict[str, Any]) -> Samples:
    """The measured turns (see the module docstring)."""
    import attrs
    import trio

    from rustvani_trio.aggregators import LLMAssistantAggregator
    from rustvani_trio.services.llm.function_registry import FunctionCallParams, ToolCallOutput
    from rustvani_trio.tools._pg_embedded import seeded_database
    from rustvani_trio.tools.postgres import NeonPostgresTool

    from .rustvani import Sink, _llm, _Run, _user, _user_says

    out: Samples = {"total_ms": [], "ttft_answer_ms": []}
    server = os.environ.get("DATABASE_URL") or DEFAULT_URL
    with contextlib.ExitStack() as stack:
        _admin, reader = await trio.to_thread.run_sync(
            stack.enter_context, seeded_database(server, SEED, prefix="rvt_bench")
        )
        llm: Any = _llm(params)
        ask_tool = llm.handler.config
        ask_text = attrs.evolve(
            ask_tool,
            extra_body={
                "x_script": {"tokens": params["tokens"], "token_delay": params["token_delay"]}
            },
        )
        tool = NeonPostgresTool.from_url(reader)
        llm.handler.add_tool(tool)
        # As in the plain round, the tool swaps the handler's config so that the next
        # request asks the scripted server for the text answer.
        registry = llm.handler.registry
        entry = registry.get("pg_query")

        async def pg_query(call: FunctionCallParams) -> ToolCallOutput:
            llm.handler.config = ask_text
            result = await entry.call(call)
            if result.summary.startswith("Error:"):
                raise RuntimeError(f"the benchmark query failed: {result.summary}")
            return result

        registry.unregister("pg_query")
        registry.register("pg_query", pg_query, rich=True)
        user, state = _user()
        assistant = LLMAssistantAggregator(user.context, state=state)
        sink = Sink(forward_text=True)
        run_ = _Run([user, llm, sink, assistant])
        async with trio.open_nursery() as nursery:
            await run_.start(nursery)  # StartFrame: the tool connects and introspects here
            for turn in range(params["turns"] + 1):
                llm.handler.config = ask_tool
                sink.arm()
                t0 = now()
                await run_.task.queue_frame(_user_says("query the products"))
                await sink.done.wait()
                if turn:
                    out["total_ms"].append((sink.stamps[-1] - t0) * 1e3)
                    out["ttft_answer_ms"].append((sink.stamps[0] - t0) * 1e3)
            await run_.end()
    return out
