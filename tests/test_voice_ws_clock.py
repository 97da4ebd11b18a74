"""The two clocks of a provider connection (services/stt/_ws_clock.py), on virtual time: a
late reply is called out once, a reply that keeps coming is not, keep-alives go out only
after an idle interval, and only once the connection is ready."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rustvani_trio.services.stt._ws_clock import ConnectionClock
from rustvani_trio.services.stt._ws_options import WebSocketOptions


class Watched:
    """Runs a clock's watch in a nursery and records what it did, with the time."""

    def __init__(self, clock: ConnectionClock, ready: trio.Event) -> None:
        self.clock = clock
        self.ready = ready
        self.late: list[float] = []
        self.keepalives: list[float] = []

    async def keepalive(self) -> None:
        self.keepalives.append(trio.current_time())

    def late_reply(self) -> None:
        self.late.append(trio.current_time())

    async def run(self) -> None:
        await self.clock.watch(self.ready, self.keepalive, self.late_reply)


async def test_a_late_reply_is_called_out_once_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = ConnectionClock(WebSocketOptions(idle_timeout=2.0))
    watched = Watched(clock, trio.Event())
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watched.run)
        await trio.sleep(10)  # nothing awaited: nothing is late
        assert watched.late == []
        clock.expect_reply()
        for _ in range(3):  # the provider keeps talking: the clock restarts each time
            await trio.sleep(1.5)
            clock.heard()
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert watched.late == [pytest.approx(start + 10 + 4.5 + 2.0)]


async def test_a_completed_reply_is_never_late(autojump_clock: trio.testing.MockClock) -> None:
    clock = ConnectionClock(WebSocketOptions(idle_timeout=1.0))
    watched = Watched(clock, trio.Event())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watched.run)
        clock.expect_reply()
        await trio.sleep(0.5)
        clock.reply_complete()
        clock.heard()  # talking while nothing is awaited does not start the clock
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert watched.late == []
    assert clock.reply_deadline == float("inf")


async def test_keepalives_follow_idle_intervals_once_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = ConnectionClock(WebSocketOptions(keepalive_interval=3.0))
    ready = trio.Event()
    watched = Watched(clock, ready)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watched.run)
        await trio.sleep(5)
        assert watched.keepalives == []  # not ready: nothing may be sent yet
        ready.set()
        await trio.sleep(2)
        clock.sent()  # a send at +7 s postpones the keep-alive due at +8 s to +10 s
        await trio.sleep(4.5)
        nursery.cancel_scope.cancel()
    assert watched.keepalives == [pytest.approx(start + 10)]


async def test_stop_forgets_an_awaited_reply() -> None:
    clock = ConnectionClock(WebSocketOptions())
    clock.expect_reply()
    assert clock.reply_deadline < float("inf")
    clock.stop()
    assert clock.reply_deadline == float("inf")
