"""The stall watch (a task of the LLM processor's) attacked with many sequential
requests, stalls at the boundary, retries and a processor run twice.

Each test pins when a stall is (or is not) reported, so that a due time left over from a
finished request, a watch that sleeps through a re-arm, or a retry that inherits the stalled
request's time would show.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_hostile_endpoints import (
    NO_RETRY,
    SSE_HEAD,
    Conn,
    chunk,
    delta,
    make_llm,
    raw_server,
    run_turns,
    text_stream,
)

from rustvani_trio.context import LLMContext
from rustvani_trio.frames import ErrorFrame, LLMContextFrame, LLMFullResponseEnd, LLMText
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.services.llm.openai import LLMRequestError, RetryPolicy
from rustvani_trio.testing import run_test

CHUNK = 4.0


async def _tokens(conn: Conn, gaps: list[float], token: str = "x") -> None:
    """A token after each gap, then the answer's end."""
    await conn.send(SSE_HEAD)
    for gap in gaps:
        await trio.sleep(gap)
        await conn.send(chunk(delta({"content": token})))
    for item in text_stream()[1:]:
        await conn.send(chunk(item))
    await conn.send(b"0\r\n\r\n")


async def test_gaps_just_under_chunk_timeout_in_many_turns_are_never_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten turns whose answers have different lengths and gaps just under chunk_timeout: a
    due time left from an earlier request must never cut a later one."""
    plans = [[0.1] * (i % 3 + 1) + [CHUNK - 0.001] * (i % 4) for i in range(10)]

    async def respond(conn: Conn) -> None:
        await _tokens(conn, plans[conn.index])

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, turns=10, chunk_timeout=CHUNK, retry=NO_RETRY)
    assert [e.error for e in turns.errors] == []
    assert turns.text == "x" * sum(len(p) for p in plans)


@pytest.mark.parametrize("gap", [CHUNK, CHUNK + 0.001])
async def test_a_gap_of_chunk_timeout_or_more_is_a_stall_in_any_turn(
    autojump_clock: trio.testing.MockClock, gap: float
) -> None:
    """The third turn's second token comes chunk_timeout (or more) after its first: a stall,
    reported exactly chunk_timeout after the first, with kind timeout."""
    stamps: list[float] = []

    async def respond(conn: Conn) -> None:
        if conn.index < 2:
            await _tokens(conn, [0.5, 3.0])
            return
        await conn.send(SSE_HEAD)
        await conn.send(chunk(delta({"content": "y"})))
        stamps.append(trio.current_time())
        await trio.sleep(gap)
        await conn.send(chunk(delta({"content": "z"})))
        await trio.sleep(300)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, turns=3, chunk_timeout=CHUNK, retry=NO_RETRY)
    (error,) = turns.errors
    assert isinstance(error.exception, LLMRequestError)
    assert error.exception.kind == "timeout"
    assert "stalled" in error.error
    assert turns.text == "xxxxy"
    ends = turns.stamp.times(LLMFullResponseEnd)
    assert ends[2] - stamps[0] == pytest.approx(CHUNK)


async def test_a_retry_after_a_stall_gets_its_own_full_timeouts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first attempt stalls after tool-call data (nothing emitted: retried); the retry
    takes just under first_token_timeout for its first token and just under chunk_timeout
    between tokens: it must stand."""

    async def respond(conn: Conn) -> None:
        if conn.index == 0:
            await conn.send(SSE_HEAD)
            call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
            await conn.send(chunk(delta({"tool_calls": [call]})))
            await trio.sleep(300)
            return
        await _tokens(conn, [9.999, CHUNK - 0.001, CHUNK - 0.001])

    retry = RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=0.0)
    async with raw_server(respond) as server:
        turns = await run_turns(
            server.url, chunk_timeout=CHUNK, first_token_timeout=10.0, retry=retry
        )
    assert [e.error for e in turns.errors] == []
    assert turns.text == "xxx"
    assert len(server.requests) == 2


async def test_a_stall_after_text_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        await conn.send(chunk(delta({"content": "a"})))
        await trio.sleep(300)

    retry = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=0.0)
    async with raw_server(respond) as server:
        turns = await run_turns(server.url, chunk_timeout=CHUNK, retry=retry)
    (error,) = turns.errors
    assert "stalled" in error.error
    assert len(server.requests) == 1


async def test_the_processor_run_again_in_a_new_task_watches_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After an EndFrame the same processor runs in a second PipelineTask: its new watch
    reports the stall exactly, and a slow but steady answer is no stall."""
    stamps: list[float] = []

    async def respond(conn: Conn) -> None:
        if conn.index % 2 == 0:
            await _tokens(conn, [CHUNK - 0.01] * 3)
            return
        await conn.send(SSE_HEAD)
        await conn.send(chunk(delta({"content": "s"})))
        stamps.append(trio.current_time())
        await trio.sleep(300)

    async with raw_server(respond) as server:
        pipeline = Pipeline([make_llm(server.url, chunk_timeout=CHUNK, retry=NO_RETRY)])
        for run in range(2):
            frames = [
                LLMContextFrame(context=LLMContext([{"role": "user", "content": "hi"}]))
                for _ in range(2)
            ]
            before = trio.current_time()
            result = await run_test(pipeline, frames, time_limit=300)
            errors = [e for e in result.upstream_of(ErrorFrame)]
            assert len(errors) == 1, (run, [e.error for e in errors])
            assert "stalled" in errors[0].error
            text = "".join(f.text for f in result.downstream if type(f) is LLMText)
            assert text == "xxxs"
            assert stamps[-1] > before
