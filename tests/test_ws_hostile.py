"""A hostile review of the chat server: a web page from another site, a careless operator, a
client that lies about its framing, floods, or stops reading. Each case was broken (or is
pinned down here because it easily could be); each gets a clear answer and the server stays
up.

Real sockets on loopback; every wait is bounded by ``fail_after``."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import trio
from test_ws_abuse import closed_with, still_serving
from test_ws_server import READY, ready, rtvi, running, until
from trio_websocket import ConnectionClosed, open_websocket_url

from rustvani_trio.frames import Frame, FrameDirection, TranscriptionFrame
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.server import ServerConfig, Session
from rustvani_trio.task import PipelineTask
from rustvani_trio.transports.rtvi import RTVIServerMessageFrame


async def raw_upgrade(
    url: str, *, host: str | None = None, headers: list[tuple[str, str]] | None = None
) -> tuple[int | None, str | None]:
    """A WebSocket handshake made by hand (any Host header); returns the close code and
    reason the server answers with, ``(None, status)`` if it refused the upgrade, or
    ``(None, "open")`` if the session stays open."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request

    name, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(name, int(port))
    conn = WSConnection(ConnectionType.CLIENT)
    request = Request(host=host or f"{name}:{port}", target="/ws", extra_headers=headers or [])
    with trio.fail_after(5):
        async with stream:
            await stream.send_all(conn.send(request))
            patience = trio.CancelScope()
            with patience:
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return None, "EOF"
                    conn.receive_data(data)
                    for event in conn.events():
                        if isinstance(event, RejectConnection):
                            return None, str(event.status_code)
                        if isinstance(event, AcceptConnection):
                            # a refusal closes at once; a session stays open
                            patience.deadline = trio.current_time() + 1
                        if isinstance(event, CloseConnection):
                            return event.code, event.reason
            return None, "open"


# --------------------------------------------------------------------------- 1. origins


async def test_a_page_from_another_site_cannot_drive_a_loopback_session() -> None:
    # Cross-site WebSocket hijacking: any web page the user opens could connect to
    # ws://127.0.0.1:8765/ws (browsers send no preflight for WebSockets) and chat on the
    # user's API key; on loopback the Origin was not looked at.
    async with running() as (server, _stop):
        evil = [("Origin", "https://evil.example")]
        assert await closed_with(server.ws_url, extra_headers=evil) == (4003, "origin not allowed")
        null = [("Origin", "null")]  # sandboxed iframes, file:// pages
        assert (await closed_with(server.ws_url, extra_headers=null))[0] == 4003
        # the server's own page, and clients that are not browsers (no Origin), may
        await still_serving(server.url, server.ws_url, extra_headers=[("Origin", server.url)])
        await still_serving(server.url, server.ws_url)
        # the same page through "localhost" is the same server
        port = server.url.rsplit(":", 1)[1]
        same = [("Origin", f"http://localhost:{port}")]
        assert await raw_upgrade(server.url, host=f"localhost:{port}", headers=same) == (
            None,
            "open",
        )


async def test_dns_rebinding_is_refused_on_loopback() -> None:
    # evil.example resolves to 127.0.0.1: the page's Origin then matches the Host header it
    # sends, and the origin check alone lets it in.
    async with running() as (server, _stop):
        port = server.url.rsplit(":", 1)[1]
        rebound = [("Origin", f"http://evil.example:{port}")]
        code, reason = await raw_upgrade(server.url, host=f"evil.example:{port}", headers=rebound)
        assert code == 4003, (code, reason)
        async with httpx.AsyncClient(trust_env=False) as client:
            page = await client.get(server.url + "/", headers={"Host": f"evil.example:{port}"})
        assert page.status_code == 421  # misdirected: not this server's name


async def test_allowed_hosts_refuse_dns_rebinding_on_any_address() -> None:
    """Served on every address without a token (``--no-auth``), a name rebound to this
    machine would pass the origin check (its Origin matches its Host): ``allowed_hosts``
    names the server, and any other Host is refused (WebSocket 4003, HTTP 421)."""
    config = {"host": "0.0.0.0", "require_token": False, "allowed_hosts": ("chat.example",)}
    async with running(**config) as (server, _stop):
        port = server.url.rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        rebound = [("Origin", f"http://evil.example:{port}")]
        code, _ = await raw_upgrade(url, host=f"evil.example:{port}", headers=rebound)
        assert code == 4003
        own = [("Origin", f"http://chat.example:{port}")]
        assert await raw_upgrade(url, host=f"Chat.Example:{port}", headers=own) == (None, "open")
        async with httpx.AsyncClient(trust_env=False) as client:
            evil = await client.get(url + "/health", headers={"Host": f"evil.example:{port}"})
            ours = await client.get(url + "/health", headers={"Host": f"chat.example:{port}"})
        assert (evil.status_code, ours.status_code) == (421, 200)


def test_allowed_hosts_take_names_without_ports() -> None:
    assert ServerConfig(allowed_hosts=["Chat.Example.", "[::1]"]).allowed_hosts == (
        "chat.example",
        "::1",
    )
    for bad in ("chat.example:8765", "http://chat.example", ""):
        with pytest.raises(ValueError, match="allowed_hosts takes host names"):
            ServerConfig(allowed_hosts=[bad])


async def test_origin_checks_can_be_switched_off_explicitly() -> None:
    async with running(check_origin=False) as (server, _stop):
        evil = [("Origin", "https://evil.example")]
        await still_serving(server.url, server.ws_url, extra_headers=evil)


async def test_null_origin_may_be_allowed_by_name() -> None:
    async with running(allowed_origins=("null",)) as (server, _stop):
        await still_serving(server.url, server.ws_url, extra_headers=[("Origin", "null")])


# --------------------------------------------------------------------------- 2, 9. HTTP


async def test_the_page_and_its_files_carry_a_content_security_policy() -> None:
    async with running() as (server, _stop), httpx.AsyncClient(trust_env=False) as client:
        for path in ("/", "/static/chat.js", "/static/chat.css"):
            response = await client.get(server.url + path)
            assert response.status_code == 200, path
            csp = response.headers.get("content-security-policy", "")
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, path
            assert "frame-ancestors 'none'" in csp
            assert response.headers.get("x-content-type-options") == "nosniff", path
            assert response.headers.get("referrer-policy") == "no-referrer", path
        health = await client.get(server.url + "/health")
        assert health.headers.get("x-content-type-options") == "nosniff"


async def test_no_redirect_built_from_the_host_header() -> None:
    # Starlette answered /health/ with a 307 to http://<Host header>/health.
    async with running() as (server, _stop), httpx.AsyncClient(trust_env=False) as client:
        for path in ("/health/", "/static", "/ws/", "/nope", "/ws"):
            response = await client.get(server.url + path, headers={"Host": "evil.example"})
            assert response.status_code in (404, 421), (path, response.status_code)
            assert "location" not in response.headers, path
        for path in ("/health/", "/static", "/nope", "/ws"):
            response = await client.get(server.url + path)
            assert response.status_code == 404, (path, response.status_code)
            assert "location" not in response.headers, path


# --------------------------------------------------------------------------- 3. handshakes


HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize(
    "request_text",
    [
        HANDSHAKE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        HANDSHAKE.replace("Sec-WebSocket-Version: 13\r\n", ""),
        HANDSHAKE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
        HANDSHAKE.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!"),
        HANDSHAKE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),  # 5 bytes, not 16
    ],
)
async def test_a_bad_handshake_gets_a_4xx_and_the_server_stays_up(request_text: str) -> None:
    async with running() as (server, _stop):
        host = server.url.removeprefix("http://")
        name, port = host.split(":")
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(name, int(port))
            async with stream:
                await stream.send_all(request_text.format(host=host).encode())
                answer = b""
                with trio.move_on_after(1):
                    while b"\r\n" not in answer and (piece := await stream.receive_some()):
                        answer += piece
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer
        assert server.manager.total_sessions == 0
        await still_serving(server.url, server.ws_url)


# --------------------------------------------------------------------------- 6. sizes


async def test_the_message_limit_counts_utf8_bytes() -> None:
    # anycorn counts a text message's characters: 4-byte characters passed 4x the limit.
    async with running(max_message_bytes=64 * 1024) as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                content = "\U0001f600" * 20_000  # 20,000 characters, 80,000 bytes
                msg = {"label": "rtvi-ai", "type": "send-text", "data": {"content": content}}
                await ws.send_message(json.dumps(msg, ensure_ascii=False))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1009
            await server.manager.wait_sessions(0)
            # binary too
            async with open_websocket_url(server.ws_url + "?sample_rate=16000") as ws:
                await ready(ws)
                await ws.send_message(b"\x00" * 70_000)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1009
            await still_serving(server.url, server.ws_url)


async def test_an_endless_oversized_message_is_not_buffered() -> None:
    # After its 1009, anycorn kept appending the rest of the message to its buffer (a
    # client that never ends its message grew the server by what it sent: 200 MB for
    # 200 MB) and waited for a close handshake.
    from test_ws_server import raw_websocket
    from wsproto.events import TextMessage

    async with running(max_message_bytes=64 * 1024) as (server, _stop):
        stream, conn = await raw_websocket(server.url)
        await server.manager.wait_sessions(1)
        first = conn.send(TextMessage(data="x" * 65536, message_finished=False))
        more = conn.send(TextMessage(data="x" * 65536, message_finished=False))  # continuation
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
            await stream.send_all(first)
            for _ in range(3000):  # 200 MB; the server ends the connection long before
                await stream.send_all(more)
        with trio.fail_after(5):
            await server.manager.wait_sessions(0)
        await stream.aclose()
        await still_serving(server.url, server.ws_url)


async def test_no_compression_so_no_decompression_bomb() -> None:
    # With permessage-deflate, 200 KB on the wire expanded to 200 MB in the server before
    # the message limit was looked at.
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request
    from wsproto.extensions import PerMessageDeflate

    async with running() as (server, _stop):
        name, port = server.url.removeprefix("http://").split(":")
        conn = WSConnection(ConnectionType.CLIENT)
        request = Request(host=f"{name}:{port}", target="/ws", extensions=[PerMessageDeflate()])
        with trio.fail_after(5):
            async with await trio.open_tcp_stream(name, int(port)) as stream:
                await stream.send_all(conn.send(request))
                accepted = None
                while accepted is None:
                    conn.receive_data(await stream.receive_some(65536))
                    accepted = next(
                        (e for e in conn.events() if isinstance(e, AcceptConnection)), None
                    )
        assert accepted.extensions == []


# --------------------------------------------------------------------------- 7, 8. bad input


async def next_error(ws: Any) -> dict[str, Any]:
    while True:
        msg = json.loads(await ws.get_message())
        if msg["type"] in ("error", "error-response"):
            return msg  # type: ignore[no-any-return]


async def test_bad_audio_is_answered_and_the_session_goes_on() -> None:
    async with running() as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url + "?sample_rate=16000") as ws:
                await ready(ws)
                await ws.send_message(b"")  # an empty binary frame
                assert "empty" in (await next_error(ws))["data"]["error"]
                await ws.send_message(b"\x00\x01\x02")  # odd length: not 16-bit samples
                assert "bad audio" in (await next_error(ws))["data"]["error"]
                odd = {"base64Audio": "AAEC", "sampleRate": 16000, "numChannels": 1}
                await ws.send_message(rtvi("raw-audio", odd, id="a"))
                reply = await next_error(ws)
                assert reply["id"] == "a" and "bad audio" in reply["data"]["error"]
                slow = {"base64Audio": "AAAA", "sampleRate": 100, "numChannels": 1}
                await ws.send_message(rtvi("raw-audio", slow, id="b"))
                assert "unsupported audio format" in (await next_error(ws))["data"]["error"]
                ready_again = rtvi("client-ready", {"version": "2.2.0", "audio_in": {}}, id="c")
                await ws.send_message(ready_again)
                assert "sample_rate" in (await next_error(ws))["data"]["error"]
                await ws.send_message(rtvi("send-text", {"content": "still there?"}))
                assert "bot-llm-text" in [m["type"] for m in await until(ws, "bot-llm-stopped")]


async def test_deeply_nested_json_is_an_error_not_a_lost_session() -> None:
    # json.loads raised RecursionError (not a ValueError): the reader died, the session
    # ended with 1011.
    async with running() as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message("[" * 200_000 + "]" * 200_000)
                assert "nests too deeply" in (await next_error(ws))["data"]["error"]
                deep = '{"label": "rtvi-ai", "type": "send-text", "id": "d", "data": '
                await ws.send_message(deep + "[" * 200_000 + "]" * 200_000 + "}")
                assert "nests too deeply" in (await next_error(ws))["data"]["error"]
                await ws.send_message(rtvi("send-text", {"content": "still there?"}))
                assert "bot-llm-text" in [m["type"] for m in await until(ws, "bot-llm-stopped")]


async def test_an_empty_protobuf_text_is_not_a_turn() -> None:
    from rustvani_trio.transports._protobuf import PbMessage, PbText, decode_frame, encode_frame

    async with running() as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ws.send_message(encode_frame(PbMessage(data=json.dumps(READY))))
                await ws.get_message()
                await ws.send_message(encode_frame(PbText(text="  ")))
                frame = decode_frame(await ws.get_message())  # type: ignore[arg-type]
                assert isinstance(frame, PbMessage)
                msg = json.loads(frame.data)
                assert msg["type"] == "error" and "empty" in msg["data"]["error"]


# --------------------------------------------------------------------------- 10. the token


async def test_the_token_never_reaches_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(token="s3cret-t0ken", require_token=True) as (server, _stop):
        assert (await closed_with(server.ws_url + "?token=wr0ng-guess"))[0] == 4001
        await still_serving(server.url, server.ws_url + "?token=s3cret-t0ken")
        host = server.url.removeprefix("http://")
        name, port = host.split(":")
        stream = await trio.open_tcp_stream(name, int(port))
        async with stream:  # a broken request carrying the token in its target
            await stream.send_all(b"GET /ws?token=s3cret-t0ken HTTP/1.1\r\nHost: \x00\r\n\r\n")
            with trio.move_on_after(0.5):
                while await stream.receive_some():
                    pass
    # (the test's own client logs its URL: only the server's records count)
    text = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith("trio-websocket")
    )
    assert "s3cret-t0ken" not in text and "wr0ng-guess" not in text


# --------------------------------------------------------------------------- 11. slow reader


class Flood(FrameProcessor):
    """Answers every transcript with a flood of large server messages."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, TranscriptionFrame):
            for i in range(100_000):
                await self.push_frame(RTVIServerMessageFrame(data={"i": i, "pad": "x" * 8000}))
        await self.push_frame(frame, direction)


async def flood_factory(session: Session) -> PipelineTask:
    await trio.lowlevel.checkpoint()
    return PipelineTask(Pipeline([session.input(), Flood(), session.output()]))


async def test_a_client_that_stops_reading_is_dropped_and_its_socket_closed() -> None:
    from test_ws_server import raw_websocket, send_ws

    transport = ServerConfig().transport
    import attrs

    params = attrs.evolve(transport, slow_client_timeout=0.5, max_outbound_messages=8)
    async with running(flood_factory, transport=params) as (server, _stop):
        with trio.fail_after(20):
            stream, conn = await raw_websocket(server.url)
            await send_ws(stream, conn, json.dumps(READY))
            await server.manager.wait_sessions(1)
            (session,) = server.manager.sessions.values()
            await send_ws(stream, conn, rtvi("send-text", {"content": "flood me"}))
            # The client reads nothing now: the session is dropped with a reason ...
            await server.manager.wait_sessions(0)
            assert session.transport.close_code == 1008
            assert "not reading" in session.transport.close_reason
            # ... and the server lets go of the TCP connection (no close handshake with a
            # peer that does not read): reading what is buffered ends in EOF.
            with trio.fail_after(10):
                try:
                    while await stream.receive_some(1 << 20):
                        pass
                except trio.BrokenResourceError:
                    pass  # reset: closed too
            await stream.aclose()
        await still_serving(server.url, server.ws_url)
