"""Bot audio through the WebSocket transport, on a virtual clock: the answer ends when it was
heard, and audio of an interrupted answer still queued for a slow socket is never sent."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from test_transport import Speaker, build, rtvi, types

from rustvani_trio.transports.memory import MemoryConnection
from rustvani_trio.transports.websocket import WebSocketParams


async def test_the_answer_ends_when_its_audio_has_played(autojump_clock: Any) -> None:
    """LLMFullResponseEnd (and bot-llm-stopped) leave the output when the client has played
    the audio, not when the last chunk was sent ahead of playback."""
    params = WebSocketParams()
    s = build(bot=Speaker(1.0), params=params)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "speak"}))
        first = last = stopped = 0.0
        while not stopped:
            msg = await s.conn.client_receive()
            now = trio.current_time()
            if isinstance(msg, bytes):
                first = first or now
                last = now
            elif msg["type"] == "bot-llm-stopped":
                stopped = now
        # the last chunk went out one lead before the end of playback; the end follows it
        assert last - first == pytest.approx(1.0 - params.audio_out_lead, abs=0.025)
        assert stopped - first == pytest.approx(1.0, abs=0.025)
        nursery.cancel_scope.cancel()


async def test_queued_audio_of_an_interrupted_answer_is_not_sent(autojump_clock: Any) -> None:
    """A client that reads late: the paced audio piles up in the outbound queue. An
    interruption drops it there; at most the one chunk being written still arrives before
    bot-interrupted."""
    conn = MemoryConnection(capacity=0)  # every send waits for the client to read
    s = build(bot=Speaker(5.0), conn=conn)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "speak"}))
        while not isinstance(await s.conn.client_receive(), bytes):
            pass
        await trio.sleep(1.0)  # not reading: about 50 chunks wait in the queue
        s.conn.client_send(rtvi("client-message", {"t": "interrupt"}, id="i"))
        await trio.sleep(0.1)
        after = await s.conn.client_until("bot-interrupted")
        audio_after = [m for m in after if isinstance(m, bytes)]
        assert len(audio_after) <= 1, types(after)
        assert s.transport.audio_dropped >= 40
        # and nothing of the old answer follows
        with trio.move_on_after(1.0):
            while True:
                msg = await s.conn.client_receive()
                assert not isinstance(msg, bytes)
        nursery.cancel_scope.cancel()
