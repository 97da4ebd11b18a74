"""The WebSocket machinery shared by the speech providers (STT and TTS), private.

One :class:`WebSocketService` processor keeps one provider connection for the length of a
run, in a *service task* started in the run's nursery at StartFrame:

* connect: TCP (+TLS) and the handshake under ``connect_timeout``; auth in headers or the
  URL, never logged (every message is passed through :meth:`WebSocketService.redact`);
* three tasks per connection: a reader (``on_message``), a writer (an outbound queue, so
  frame handling never waits on the network; each send under ``send_timeout``, so a server
  that stops reading is detected), and the connection's clocks (``_ws_clock``:
  ``idle_timeout`` while a reply is awaited; keep-alives after ``keepalive_interval``
  without a send);
* a connection the provider ends within a second of its opening, having said nothing, is
  reopened at once the first time and with the policy's backoff from the second in a row (no
  tight loop against a provider that closes every connection at once);
* a lost connection is reopened with exponential backoff and jitter; after
  ``max_attempts`` failures (or at once for a rejected key) the error is reported and the
  service waits until something is sent again;
* EndFrame closes cleanly after the subclass's last words (``before_close``); CancelFrame
  aborts.
"""

from __future__ import annotations

import abc
import logging
import random
from collections import deque
from typing import ClassVar
from urllib.parse import quote, quote_plus

import attrs
import trio
import trio_websocket

from ..._text import excerpt
from ...frames import CancelFrame, EndFrame, StartFrame
from ...processor import FrameProcessor
from ._ws_clock import ConnectionClock
from ._ws_connect import (
    CONNECT_ERRORS,
    ConnectFailed,
    connect_failure,
    first_error,
    open_connection,
)
from ._ws_options import ReconnectPolicy, WebSocketOptions

__all__ = ["ReconnectPolicy", "WebSocketOptions", "WebSocketService"]

logger = logging.getLogger("rustvani_trio")
Message = str | bytes


# A connection that ends sooner than this after it was opened, the provider having said
# nothing on it, was ended "at once" (see _service_loop).
_QUICK_SECONDS = 1.0


@attrs.define
class _Outcome:
    """Why a connection ended."""

    error: str | None = None
    retry: bool = True
    #: the provider did not answer within ``idle_timeout`` (the connection was given up)
    late: bool = False
    #: the provider sent something on the connection
    heard: bool = False
    #: the provider ended the connection (closed or dropped it), not we
    ended_by_provider: bool = False
    #: when the connection was open (its handshake done)
    opened: float = 0.0


class WebSocketService(FrameProcessor):
    """Base of the WebSocket speech providers (see the module docstring).

    Subclasses implement :meth:`ws_url` and :meth:`on_message`, and may override
    :meth:`ws_headers`, :meth:`secrets`, :meth:`on_connected` (send the provider's first
    messages with :meth:`send_now`, then :meth:`set_ready`), :meth:`close_error`,
    :meth:`send_keepalive`, :meth:`on_disconnected`, :meth:`on_unreachable` and
    :meth:`before_close`.
    """

    service: ClassVar[str] = "WebSocket provider"

    def __init__(self, *, options: WebSocketOptions | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self._clock = ConnectionClock(options if options is not None else WebSocketOptions())
        self._queue: deque[Message] = deque()
        self._dropped = 0
        self._wake = trio.Event()
        self._demand = trio.Event()
        self._ready = trio.Event()
        self._conn: trio_websocket.WebSocketConnection | None = None
        self._service_scope: trio.CancelScope | None = None
        self._service_done: trio.Event | None = None
        self._session_scope: trio.CancelScope | None = None
        self._closing = False
        self._aborting = False
        self._rng = random.Random()
        self._reply_awaited = False  # a reply is awaited, from the next ready connection
        #: connections opened so far in this run (for tests and logs)
        self.connection_count = 0
        #: whether the connection that ended last was given up because an awaited reply was
        #: late (``idle_timeout``), rather than closed or dropped (read in
        #: :meth:`on_disconnected`)
        self.reply_was_late = False
        self._conn_closing = False  # the last connection's clean close is under way

    @property
    def options(self) -> WebSocketOptions:
        """Timeouts, limits and the reconnect policy."""
        return self._clock.options

    @options.setter
    def options(self, value: WebSocketOptions) -> None:
        self._clock.options = value

    # ------------------------------------------------------------------ subclass API

    @abc.abstractmethod
    def ws_url(self) -> str:
        """The provider's WebSocket URL (``ws://`` or ``wss://``), query included."""

    def ws_headers(self) -> list[tuple[str, str]]:
        """Handshake headers (auth goes here when the provider takes it in a header)."""
        return []

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in errors or logs (API keys)."""
        return ()

    async def on_connected(self) -> None:
        """A connection is open: send the provider's first messages (:meth:`send_now`) and
        call :meth:`set_ready` once queued messages may follow (now, or on a reply)."""
        self.set_ready()

    @abc.abstractmethod
    async def on_message(self, message: Message) -> None:
        """One message from the provider."""

    def close_error(self, code: int, reason: str) -> tuple[str, bool] | None:
        """An error message for a close by the provider, and whether to reconnect;
        ``None`` for a normal close (reconnected quietly when still needed)."""
        if code in (1000, 1001):
            return None
        text = f" ({reason})" if reason else ""
        return f"the connection closed with code {code}{text}", True

    async def send_keepalive(self) -> None:
        """Send the provider's keep-alive (called after ``keepalive_interval`` idle)."""

    def on_disconnected(self) -> None:
        """A connection ended (whatever the reason; :attr:`reply_was_late` tells whether it
        was given up for a late reply): release anything waiting on it, or queue again
        (:meth:`send`) what must go out on the next connection."""

    def on_unreachable(self) -> None:
        """The provider could not be reached (the reconnect policy gave up, the error is
        reported and queued messages are dropped): release anything waiting for it. By
        default :meth:`on_disconnected`."""
        self.on_disconnected()

    async def before_close(self) -> None:
        """At EndFrame, before the clean close: the provider's last messages and replies."""

    # ------------------------------------------------------------------ helpers for subclasses

    def redact(self, text: str) -> str:
        """``text`` with every secret (and its URL-encoded forms) replaced by ``***``."""
        for secret in self.secrets():
            if len(secret) >= 4:
                for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                    text = text.replace(form, "***")
        return text

    async def report(self, message: str) -> None:
        """Push a non-fatal ErrorFrame upstream: ``"<service>: <message>"``, redacted, then
        escaped and cut to 1000 characters (it may carry the provider's own text)."""
        text = excerpt(self.redact(f"{self.service}: {message}"), 1000)
        logger.warning("%s: %s", self.name, text)
        await self.push_error(text)

    def send(self, message: Message) -> None:
        """Queue a message for the provider (sent once connected and ready). While there is
        no ready connection, at most ``max_queued`` are kept (the oldest are dropped, and the
        loss is reported); while there is one, the writer is emptying the queue."""
        if len(self._queue) >= self.options.max_queued and not self.connected:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(message)
        self._wake.set()
        self._demand.set()

    def clear_queue(self) -> None:
        """Forget messages not sent yet."""
        self._queue.clear()

    def queue_room(self) -> int:
        """How many more messages :meth:`send` takes before it drops the oldest."""
        return self.options.max_queued - len(self._queue)

    def unsent(self, messages: list[Message]) -> int:
        """How many of ``messages`` (these very objects, given to :meth:`send`) are still
        queued: not sent yet, on this connection or any other. Told apart by identity: each
        message given to :meth:`send` must be an object of its own (as ``json.dumps``
        makes), not a shared constant."""
        mine = {id(m) for m in messages}
        return sum(1 for m in self._queue if id(m) in mine)

    async def send_now(self, message: Message) -> None:
        """Send at once on the open connection (for :meth:`on_connected`), under
        ``send_timeout``. Raises ``trio_websocket.ConnectionClosed`` when there is none."""
        conn = self._conn
        if conn is None:
            raise trio_websocket.ConnectionClosed(None)
        with trio.fail_after(self.options.send_timeout):
            await conn.send_message(message)
        self._clock.sent()

    def set_ready(self) -> None:
        """Queued messages may go out on this connection."""
        self._ready.set()
        self._wake.set()
        if self._reply_awaited:  # asked for while no connection was ready
            self._reply_awaited = False
            self._clock.expect_reply()

    @property
    def connected(self) -> bool:
        """Whether a connection is open and ready."""
        return self._conn is not None and self._ready.is_set()

    def expect_reply(self) -> None:
        """A reply is awaited: the provider must say something within ``idle_timeout``
        (counted from now, or, while there is no connection, from when the next one is ready:
        what was asked for is sent then)."""
        if self._conn is not None:
            self._clock.expect_reply()
        else:
            self._reply_awaited = True

    def reply_complete(self) -> None:
        """Nothing is awaited any more."""
        self._reply_awaited = False
        self._clock.reply_complete()

    async def reconnect(self) -> None:
        """Drop the current connection (unsent messages are kept) and open a new one."""
        self._demand.set()
        if self._session_scope is not None:
            self._session_scope.cancel()

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self, frame: StartFrame) -> None:
        self._closing = self._aborting = False
        # Nothing is carried over from a run before (one cancelled with messages queued).
        self._queue.clear()
        self._dropped = 0
        self.reply_complete()
        self._demand = trio.Event()
        self._demand.set()  # connect at once, so the first answer does not wait for it
        await self.start_task(self._service)

    async def on_stop(self, frame: EndFrame) -> None:
        self._closing = True  # a close from here on is expected: no reconnect
        with trio.move_on_after(self.options.close_timeout):
            if self.connected:
                await self.before_close()
            # Let the writer send what is queued.
            while self._queue and self.connected:  # noqa: ASYNC110 - the writer empties it
                await trio.sleep(0.005)
        await self._shutdown()

    async def on_cancel(self, frame: CancelFrame) -> None:
        self._closing = self._aborting = True  # no close handshake: the socket is dropped
        if self._service_scope is not None:
            self._service_scope.cancel()

    async def _shutdown(self) -> None:
        self._closing = True
        if self._session_scope is not None:
            self._session_scope.cancel()
        if self._conn is None and not self._conn_closing and self._service_scope is not None:
            # Connecting or backing off: nothing to close cleanly, and neither is waited for.
            self._service_scope.cancel()
        if self._service_scope is not None and self._service_done is not None:
            with trio.move_on_after(self.options.close_timeout + 1):
                self._demand.set()
                await self._service_done.wait()
            self._service_scope.cancel()

    # ------------------------------------------------------------------ the service task

    async def _service(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._service_done = done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._service_scope = scope
                task_status.started()
                await self._service_loop()
        finally:
            self._conn = None
            done.set()

    async def _service_loop(self) -> None:
        policy = self.options.reconnect
        failures = 0
        quick = 0  # connections in a row the provider ended at once, saying nothing
        while not self._closing:
            await self._demand.wait()
            if self._closing:
                return
            try:
                outcome = await self._session()
            except ConnectFailed as failure:
                failures += 1
                if not failure.retry or failures >= policy.max_attempts:
                    await self._give_up(f"{failure} (attempt {failures}); giving up for now")
                    failures = 0
                    continue
                delay = policy.delay(failures, self._rng)
                if failures == 1:  # the first failure of a run of them is reported at once
                    await self.report(
                        f"{failure}; retrying in {delay:.1f}s "
                        f"(up to {policy.max_attempts} attempts)"
                    )
                else:
                    logger.info("%s: %s; retrying", self.name, self.redact(str(failure)))
                await trio.sleep(delay)
                continue
            failures = 0
            if self._closing:
                return
            if outcome.error is not None:
                if outcome.retry:
                    await self.report(f"{outcome.error}; reconnecting")
                else:
                    await self._give_up(outcome.error)
                    quick = 0
                    continue
            if (
                not outcome.ended_by_provider
                or outcome.heard
                or trio.current_time() - outcome.opened >= _QUICK_SECONDS
            ):
                quick = 0  # (our own reconnects, a late reply, a connection that lived)
            else:
                # A provider that ends every connection at once would have us reconnect in a
                # tight loop: from the second such connection in a row on, the policy's
                # backoff applies (the first is reopened at once, as an idle close is).
                quick += 1
                if quick > 1:
                    await trio.sleep(policy.delay(quick - 1, self._rng))

    async def _give_up(self, message: str) -> None:
        lost = len(self._queue)
        self._queue.clear()
        self._demand = trio.Event()  # the next send tries again
        self.reply_complete()
        self.reply_was_late = False
        self.on_unreachable()  # release whatever waited for this provider
        suffix = f" ({lost} message(s) not sent)" if lost else ""
        await self.report(message + suffix)

    async def _session(self) -> _Outcome:
        outcome = _Outcome()
        self._ready = trio.Event()
        try:
            async with trio.open_nursery() as conn_nursery:
                await self._run_connection(conn_nursery, outcome)
        except* (ConnectFailed, *CONNECT_ERRORS) as group:
            # _run_connection raises inside conn_nursery, so a failure arrives in a group.
            raise connect_failure(first_error(group), self.options) from None
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            await self.report(f"{dropped} message(s) were dropped while the connection was down")
        return outcome

    async def _run_connection(self, conn_nursery: trio.Nursery, outcome: _Outcome) -> None:
        try:
            conn = await open_connection(
                conn_nursery, self.ws_url(), self.ws_headers(), self.options, self.redact
            )
        except CONNECT_ERRORS as exc:
            raise connect_failure(exc, self.options) from None
        self._conn = conn
        self.connection_count += 1
        outcome.opened = trio.current_time()
        try:
            with trio.CancelScope() as session:
                self._session_scope = session

                def late_reply() -> None:
                    outcome.error = f"no reply within idle_timeout={self.options.idle_timeout}s"
                    outcome.late = True
                    session.cancel()

                async with trio.open_nursery() as tasks:
                    tasks.start_soon(self._reader, conn, outcome, session)
                    tasks.start_soon(self._writer, conn, outcome, session)
                    tasks.start_soon(
                        self._clock.watch, self._ready, self.send_keepalive, late_reply
                    )
                    try:
                        await self.on_connected()
                    except trio_websocket.ConnectionClosed:
                        pass  # the reader reports why
                    except trio.TooSlowError:
                        outcome.error = "the provider stopped reading (send_timeout)"
                        session.cancel()
        finally:
            self._conn = None
            self._session_scope = None
            self._clock.stop()
            self.reply_was_late = outcome.late
            self.on_disconnected()
            if not self._aborting:
                # (_shutdown leaves the service scope alone meanwhile: cancelling it would stop
                # the connection's reader, and the close would wait out close_timeout for a
                # reply it could no longer read)
                self._conn_closing = True
                try:
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.options.close_timeout),
                    ):
                        await conn.aclose()
                finally:
                    self._conn_closing = False
            conn_nursery.cancel_scope.cancel()

    async def _reader(
        self, conn: trio_websocket.WebSocketConnection, outcome: _Outcome, session: trio.CancelScope
    ) -> None:
        try:
            while True:
                message = await conn.get_message()
                outcome.heard = True
                self._clock.heard()  # the provider is talking: an awaited reply's clock restarts
                try:
                    await self.on_message(message)
                except Exception as exc:
                    logger.debug("%s: on_message failed", self.name, exc_info=exc)
                    await self.report(f"could not handle a message: {type(exc).__name__}: {exc}")
        except trio_websocket.ConnectionClosed as closed:
            outcome.ended_by_provider = not self._closing
            reason = closed.reason
            code = reason.code if reason is not None else 1006
            text = (reason.reason or "") if reason is not None else ""
            if not self._closing and outcome.error is None:
                if code == 1006:
                    outcome.error, outcome.retry = (
                        "the connection dropped without a close frame",
                        True,
                    )
                else:
                    verdict = self.close_error(code, text)
                    if verdict is not None:
                        outcome.error, outcome.retry = verdict
            session.cancel()

    async def _writer(
        self, conn: trio_websocket.WebSocketConnection, outcome: _Outcome, session: trio.CancelScope
    ) -> None:
        await self._ready.wait()
        queue = self._queue
        while True:
            while queue:
                message = queue.popleft()
                try:
                    with trio.fail_after(self.options.send_timeout):
                        await conn.send_message(message)
                except trio.TooSlowError:
                    queue.appendleft(message)  # for the next connection
                    outcome.error = (
                        f"the provider stopped reading (a send took over "
                        f"send_timeout={self.options.send_timeout}s)"
                    )
                    session.cancel()
                    return
                except trio_websocket.ConnectionClosed:
                    queue.appendleft(message)
                    return  # the reader reports why
                self._clock.sent()
            self._wake = trio.Event()
            await self._wake.wait()
