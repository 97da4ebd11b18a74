"""The chat server over real sockets on loopback, with trio-websocket clients: the page and
health, RTVI in both wire forms through the default chat (scripted model over real HTTP),
interruption, disconnects, graceful shutdown, and nothing left behind.

Real time (the network is real); every wait is bounded by a short ``fail_after``."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from rustvani_trio.frames import EndFrame, Frame, FrameDirection, LLMContextFrame
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.server import RunningServer, ServerConfig, Session, serve
from rustvani_trio.server import chat as server_chat
from rustvani_trio.server.chat import open_chat_factory
from rustvani_trio.task import PipelineTask
from rustvani_trio.transports._protobuf import PbMessage, PbText, decode_frame, encode_frame

READY = {"label": "rtvi-ai", "type": "client-ready", "id": "r", "data": {"version": "2.2.0"}}


def rtvi(type_: str, data: Any = None, id: str = "1") -> str:
    msg: dict[str, Any] = {"label": "rtvi-ai", "type": type_, "id": id}
    if data is not None:
        msg["data"] = data
    return json.dumps(msg)


@asynccontextmanager
async def running(
    factory: Callable[[Session], Awaitable[PipelineTask]] | None = None, **config: Any
) -> AsyncIterator[tuple[RunningServer, trio.Event]]:
    """The server in this trio run; the event stops it (and the block waits for the end)."""
    stop = trio.Event()
    config.setdefault("port", 0)
    async with open_chat_factory() as chat, trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve(
                factory or chat, ServerConfig(**config), stop=stop, task_status=task_status
            )
        )
        yield server, stop
        stop.set()


async def until(ws: WebSocketConnection, type_: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        msg = json.loads(await ws.get_message())
        seen.append(msg)
        if msg["type"] == type_:
            return seen


async def ready(ws: WebSocketConnection) -> dict[str, Any]:
    await ws.send_message(json.dumps(READY))
    return (await until(ws, "bot-ready"))[-1]


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


# --------------------------------------------------------------------------- page, health


async def test_page_static_files_and_health() -> None:
    async with running() as (server, _stop), httpx.AsyncClient(trust_env=False) as client:
        page = await client.get(server.url + "/")
        assert page.status_code == 200 and "chat.js" in page.text
        script = await client.get(server.url + "/static/chat.js")
        assert script.status_code == 200 and "client-ready" in script.text
        health = (await client.get(server.url + "/health")).json()
        assert health["status"] == "ok" and health["sessions"] == 0
        assert health["pid"] == os.getpid()
        missing = await client.get(server.url + "/static/nope.js")
        assert missing.status_code == 404


# --------------------------------------------------------------------------- the protocol


async def test_json_wire_chat_with_a_tool_call() -> None:
    async with running() as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                bot = await ready(ws)
                assert bot["id"] == "r" and bot["data"]["version"].startswith("2.")
                await ws.send_message(rtvi("send-text", {"content": "What's the weather in Pune?"}))
                got = await until(ws, "bot-llm-stopped")
    types = kinds(got)
    for wanted in (
        "user-transcription",
        "bot-llm-started",
        "llm-function-call-started",
        "llm-function-call-in-progress",
        "llm-function-call-stopped",
        "server-message",
        "bot-llm-text",
        "bot-output",
        "metrics",
    ):
        assert wanted in types, wanted
    card = next(m["data"] for m in got if m["type"] == "server-message")
    assert card["type"] == "function-call-raw-result"
    assert card["data"] == {"city": "Pune", "temp_c": 31, "sky": "sunny"}
    text = "".join(m["data"]["text"] for m in got if m["type"] == "bot-llm-text")
    assert "Pune: 31 °C, sunny" in text
    assert types.index("llm-function-call-stopped") < types.index("bot-llm-stopped")


async def test_protobuf_wire_chat() -> None:
    async with running() as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ws.send_message(encode_frame(PbMessage(data=json.dumps(READY))))
                first = decode_frame(await ws.get_message())  # type: ignore[arg-type]
                assert isinstance(first, PbMessage)
                assert json.loads(first.data)["type"] == "bot-ready"
                await ws.send_message(encode_frame(PbText(text="hello there")))
                texts = []
                while True:
                    raw = await ws.get_message()
                    assert isinstance(raw, bytes)  # the answer comes in the client's form
                    frame = decode_frame(raw)
                    assert isinstance(frame, PbMessage)
                    msg = json.loads(frame.data)
                    if msg["type"] == "bot-llm-text":
                        texts.append(msg["data"]["text"])
                    if msg["type"] == "bot-llm-stopped":
                        break
    assert "hello there" in "".join(texts)


async def test_interrupt_stops_the_stream() -> None:
    async with running() as (server, _stop):
        with trio.fail_after(15):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "tell me a story"}))
                await until(ws, "bot-llm-text")
                await ws.send_message(rtvi("client-message", {"t": "interrupt"}, id="stop"))
                await until(ws, "bot-interrupted")
                # the session goes on, and nothing of the old answer follows
                await ws.send_message(rtvi("send-text", {"content": "hi"}))
                after = await until(ws, "bot-llm-stopped")
    text = "".join(m["data"]["text"] for m in after if m["type"] == "bot-llm-text")
    assert text.startswith("You said: 'hi'")
    assert "upon" not in text


# --------------------------------------------------------------------------- lifecycle


class Stuck(FrameProcessor):
    """A turn that never ends (a tool stuck on a remote service); records its cancel."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(name="stuck")
        self.record = record

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self.record["working"].set()
            try:
                await trio.sleep_forever()
            finally:
                self.record["cancelled_at"] = trio.current_time()
        await self.push_frame(frame, direction)

    async def on_stop(self, frame: EndFrame) -> None:
        self.record["stopped"] = True


def stuck_factory(record: dict[str, Any]) -> Callable[[Session], Awaitable[PipelineTask]]:
    from rustvani_trio.aggregators import create_context_aggregators
    from rustvani_trio.context import LLMContext

    record["working"] = trio.Event()

    async def factory(session: Session) -> PipelineTask:
        user, assistant = create_context_aggregators(LLMContext(), text_mode=True)
        stuck = Stuck(record)
        record["session"] = session
        await trio.lowlevel.checkpoint()
        return PipelineTask(Pipeline([session.input(), user, stuck, session.output(), assistant]))

    return factory


async def test_a_client_that_disconnects_ends_its_session_at_once() -> None:
    record: dict[str, Any] = {}
    async with running(stuck_factory(record)) as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "work forever"}))
                await until(ws, "user-transcription")
                await record["working"].wait()
            gone = trio.current_time()
            await server.manager.wait_sessions(0)
    assert record["cancelled_at"] - gone < 0.5  # cancelled, not waited for
    assert record["session"].transport.close_code == 1000  # the client's own close


async def test_graceful_shutdown_finishes_the_answer_then_closes_1001() -> None:
    async with running(shutdown_timeout=5) as (server, stop):
        with trio.fail_after(15):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "hello"}))
                await until(ws, "bot-llm-started")
                stop.set()
                got = await until(ws, "bot-llm-stopped")  # the answer is finished first
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        got.append(json.loads(await ws.get_message()))
    assert closed.value.reason.code == 1001
    assert closed.value.reason.reason == "server shutting down"
    assert "bot-llm-text" in kinds(got)


async def test_shutdown_cancels_what_does_not_finish_in_time() -> None:
    record: dict[str, Any] = {}
    async with running(stuck_factory(record), shutdown_timeout=0.3) as (server, stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "work forever"}))
                await until(ws, "user-transcription")
                start = trio.current_time()
                stop.set()
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                took = trio.current_time() - start
    assert closed.value.reason.code == 1001
    assert "cancelled_at" in record and "stopped" not in record
    assert took < 3


async def test_new_connections_are_refused_while_draining() -> None:
    record: dict[str, Any] = {}
    async with running(stuck_factory(record), shutdown_timeout=2) as (server, stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "work forever"}))
                await until(ws, "user-transcription")
                stop.set()
                await trio.sleep(0.05)
                async with httpx.AsyncClient(trust_env=False) as client:
                    with pytest.raises(httpx.TransportError):
                        await client.get(server.url + "/health")  # no longer listening


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_nothing_is_left_after_many_sessions_come_and_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sessions' HTTP clients keep no idle connection to the (in-process) scripted model
    # here: with keep-alive, a second round whose requests overlap more on one of the clients
    # than the first round's did opens and keeps another connection (reuse, not a leak), and
    # the count below would not come back to the baseline.
    monkeypatch.setattr(
        server_chat,
        "open_http_clients",
        functools.partial(server_chat.open_http_clients, keepalive=0),
    )
    # (A ping interval of a second: trio-websocket's client can fail answering a ping that
    # crosses its close; anycorn's ping loop of a closed socket sleeps out its interval.)
    async with running(ping_interval=1.0) as (server, _stop):

        async def polite(i: int) -> None:
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": f"hello {i}"}))
                await until(ws, "bot-llm-stopped")

        async def abrupt(i: int) -> None:
            stream, conn = await raw_websocket(server.url)
            await send_ws(stream, conn, json.dumps(READY))
            await send_ws(stream, conn, rtvi("send-text", {"content": f"hello {i}"}))
            await stream.receive_some(1)  # the answer has started
            await stream.aclose()  # no close frame: the TCP connection just goes

        async def round_of_sessions() -> None:
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(polite, i)
                    nursery.start_soon(abrupt, i)
            await server.manager.wait_sessions(0)

        with trio.fail_after(30):
            # After a first round (which starts what lives as long as the server), the
            # second must leave nothing more.
            await round_of_sessions()
            await trio.sleep(1.5)
            baseline_tasks = trio.lowlevel.current_statistics().tasks_living
            baseline_fds = open_fds()
            await round_of_sessions()
            # polling outside state (the process's tasks and descriptors): no event to wait on
            while (  # noqa: ASYNC110
                trio.lowlevel.current_statistics().tasks_living > baseline_tasks
                or open_fds() > baseline_fds
            ):
                await trio.sleep(0.05)
        assert server.manager.total_sessions == 40
        assert not server.manager.sessions


async def raw_websocket(url: str, path: str = "/ws") -> tuple[trio.SocketStream, Any]:
    """A WebSocket client made by hand (wsproto), for what trio-websocket will not do:
    drop the connection without a close frame, or stop answering pings."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    conn = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(conn.send(Request(host=f"{host}:{port}", target=path)))
    while True:
        conn.receive_data(await stream.receive_some(65536))
        for event in conn.events():
            if isinstance(event, AcceptConnection):
                return stream, conn


async def send_ws(stream: trio.SocketStream, conn: Any, text: str) -> None:
    from wsproto.events import TextMessage

    await stream.send_all(conn.send(TextMessage(data=text)))


# --------------------------------------------------------------------------- under load


def test_the_accept_queue_holds_a_connection_storm() -> None:
    """anycorn calls listen() itself with its own backlog (100 by default, also on a socket
    it is given): 200 clients connecting at once overflowed it, and the dropped ones waited
    for TCP's one-second SYN retransmission (benchmarks/websocket.py)."""
    from rustvani_trio.server.runner import BACKLOG, _anycorn_config

    assert BACKLOG >= 1024
    assert _anycorn_config(ServerConfig(port=0), None).backlog == BACKLOG


async def test_sessions_spread_over_several_http_clients() -> None:
    """One httpx client for every session made httpcore's pool bookkeeping (quadratic in its
    connections) the server's largest cost at 200 sessions; sessions take clients in turn."""
    from rustvani_trio.server.chat import open_http_clients

    async with open_http_clients(3) as next_client:
        handed = [next_client() for _ in range(7)]
        assert len({id(c) for c in handed}) == 3
        assert handed[:3] == handed[3:6] and handed[6] is handed[0]
        assert not any(c.is_closed for c in handed)
    assert all(c.is_closed for c in handed)
    with pytest.raises(ValueError, match="at least 1"):
        async with open_http_clients(0):
            pass


async def test_http_clients_are_handed_out_in_turn_and_not_after_they_closed() -> None:
    async with server_chat.open_http_clients(3) as next_client:
        handed = [next_client() for _ in range(6)]
        assert handed[:3] == handed[3:] and len({id(c) for c in handed[:3]}) == 3
    assert all(client.is_closed for client in handed)
    with pytest.raises(RuntimeError, match="has exited"):
        next_client()
