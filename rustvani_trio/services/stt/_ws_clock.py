"""The two clocks of a provider connection (private to :mod:`._ws`).

* the *reply clock*: while a reply is awaited (audio after text was flushed, a transcript
  after a flush), the provider must say something within ``idle_timeout``; every message
  from it restarts the clock; past the deadline the connection is taken for dead;
* the *keep-alive clock*: after ``keepalive_interval`` without a send, the provider's
  keep-alive goes out, so that providers that reap idle sockets keep this one.

Both are cancel scopes whose deadlines move, not polling loops.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from ._ws_options import WebSocketOptions

__all__ = ["ConnectionClock"]


class ConnectionClock:
    """The reply and keep-alive clocks of a WebSocket service (see the module docstring).

    :meth:`watch` runs them for one connection; the other methods move their deadlines
    from anywhere (frame handling, the reader, the writer).
    """

    def __init__(self, options: WebSocketOptions) -> None:
        self.options = options
        #: when an awaited reply is late (``inf``: none is awaited)
        self.reply_deadline = math.inf
        self._idle_scope: trio.CancelScope | None = None
        self._keepalive_scope: trio.CancelScope | None = None

    def expect_reply(self) -> None:
        """A reply is awaited: the provider must say something within ``idle_timeout``."""
        self.reply_deadline = trio.current_time() + self.options.idle_timeout
        if self._idle_scope is not None:
            self._idle_scope.deadline = self.reply_deadline

    def heard(self) -> None:
        """The provider said something: the reply clock restarts if a reply is awaited."""
        if self.reply_deadline != math.inf:
            self.expect_reply()

    def reply_complete(self) -> None:
        """Nothing is awaited any more."""
        self.reply_deadline = math.inf
        if self._idle_scope is not None:
            self._idle_scope.deadline = math.inf

    def sent(self) -> None:
        """Something was sent: the keep-alive clock restarts."""
        interval = self.options.keepalive_interval
        if self._keepalive_scope is not None and interval is not None:
            self._keepalive_scope.deadline = trio.current_time() + interval

    def stop(self) -> None:
        """The connection ended: nothing is awaited on it, and its clocks are gone."""
        self.reply_deadline = math.inf
        self._idle_scope = self._keepalive_scope = None

    async def watch(
        self,
        ready: trio.Event,
        send_keepalive: Callable[[], Awaitable[None]],
        on_late_reply: Callable[[], None],
    ) -> None:
        """Run both clocks for one connection: ``on_late_reply()`` once an awaited reply is
        late (then return); ``send_keepalive()`` after each ``keepalive_interval`` without a
        send, once the connection is ``ready``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reply_clock, on_late_reply)
            if self.options.keepalive_interval is not None:
                nursery.start_soon(
                    self._keepalive_clock, ready, send_keepalive, self.options.keepalive_interval
                )

    async def _reply_clock(self, on_late_reply: Callable[[], None]) -> None:
        with trio.CancelScope(deadline=self.reply_deadline) as idle:
            self._idle_scope = idle
            await trio.sleep_forever()
        if idle.cancelled_caught:
            on_late_reply()

    async def _keepalive_clock(
        self, ready: trio.Event, send_keepalive: Callable[[], Awaitable[None]], interval: float
    ) -> None:
        await ready.wait()
        while True:
            with trio.CancelScope(deadline=trio.current_time() + interval) as wait:
                self._keepalive_scope = wait
                await trio.sleep_forever()
            await send_keepalive()
