"""The stall watch (issue 14, second round): the LLM processor watches a streaming request
for stalls in a task of its own instead of moving the request's deadline at every progress
event. A stall is still reported exactly ``chunk_timeout`` after the last progress, in every
request of a run, and time spent waiting on the pipeline is still no stall.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing
from test_hostile_endpoints import (
    LLM,
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
from rustvani_trio.frames import (
    ErrorFrame,
    Frame,
    FrameDirection,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMText,
)
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm._stream import Answer, StallWatch, http_timeouts, stream_answer
from rustvani_trio.services.llm.openai import OpenAILLMConfig
from rustvani_trio.testing import run_test


async def test_a_stall_in_a_later_request_is_reported_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first answer ends at once (the watch then sleeps until its stall time); the second
    sends a token a second for three seconds, then stops: the stall is reported 4 s after its
    last token, not at the first request's stall time nor late."""
    last: list[float] = []

    async def respond(conn: Conn) -> None:
        if conn.index == 0:
            await conn.stream_events(text_stream("a"))
            return
        await conn.send(SSE_HEAD)
        for _ in range(3):
            await conn.send(chunk(delta({"content": "b"})))
            last.append(trio.current_time())
            await trio.sleep(1.0)
        await trio.sleep(300)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, turns=2, chunk_timeout=4.0, retry=NO_RETRY)
    ends = turns.stamp.times(LLMFullResponseEnd)
    assert turns.text == "abbb"
    assert "stalled" in " ".join(e.error for e in turns.errors)
    assert ends[1] - last[-1] == pytest.approx(4.0)


class SlowSink(FrameProcessor):
    """Takes one frame at a time (``max_buffer=1``) and 5 s per text frame."""

    def __init__(self) -> None:
        super().__init__(name="slow", max_buffer=1)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMText):
            await trio.sleep(5.0)
        await self.push_frame(frame, direction)


async def test_waiting_on_the_pipeline_longer_than_chunk_timeout_is_no_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Six tokens at once into a sink taking 5 s each, with chunk_timeout=4: the LLM waits
    on the pipeline for 25 s, which is not a stall."""

    async def respond(conn: Conn) -> None:
        await conn.stream_events(text_stream(*"abcdef"))

    async with raw_server(respond) as server:
        result = await run_test(
            [make_llm(server.url, chunk_timeout=4.0, retry=NO_RETRY), SlowSink()],
            [LLMContextFrame(context=LLMContext([{"role": "user", "content": "hi"}]))],
            time_limit=300,
        )
    errors = [e for e in result.upstream_of(ErrorFrame) if e.processor == LLM]
    assert errors == []
    assert "".join(f.text for f in result.downstream if type(f) is LLMText) == "abcdef"


async def test_a_watch_whose_task_does_not_run_leaves_the_request_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``stream_answer`` given a watch that is not running moves the request's deadline
    itself: the stall is still reported at chunk_timeout."""
    last: list[float] = []

    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        await conn.send(chunk(delta({"content": "a"})))
        last.append(trio.current_time())
        await trio.sleep(300)

    async def nothing() -> None:
        pass

    async def emit(_delta: object) -> None:
        pass

    async with raw_server(respond) as server, httpx.AsyncClient() as client:
        cfg = OpenAILLMConfig(
            base_url=server.url, api_key="sk-test", model="gpt-4.1", chunk_timeout=4.0
        )
        body = {"model": "gpt-4.1", "messages": [], "stream": True}
        with pytest.raises(Exception, match="stalled"):
            await stream_answer(
                client,
                cfg,
                body,
                Answer(),
                emit=emit,
                first_delta=nothing,
                http_timeouts=http_timeouts(cfg),
                watch=StallWatch(),  # never run
            )
        assert trio.current_time() - last[-1] == pytest.approx(4.0)
