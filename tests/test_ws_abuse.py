"""Bad input and abuse against the real server: authentication, origins, the session limit,
oversized messages, malformed upgrade requests, half-open connections, early closes, a
factory that fails. Each gets a clear answer; the server stays up."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from test_ws_server import READY, raw_websocket, ready, rtvi, running, stuck_factory, until
from trio_websocket import ConnectionClosed, open_websocket_url

from rustvani_trio.server import ServerConfig, ServerConfigError, Session
from rustvani_trio.task import PipelineTask


async def closed_with(url: str, **kwargs: Any) -> tuple[int | None, str | None]:
    """Connect, say client-ready, and return the close the server answers with."""
    with trio.fail_after(5):
        async with open_websocket_url(url, **kwargs) as ws:
            try:
                # The refusal may arrive before this is sent (the server closes at once).
                await ws.send_message(json.dumps(READY))
                while True:
                    await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason
    return None, None


async def still_serving(url: str, ws_url: str, **kwargs: Any) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        assert (await client.get(url + "/health")).status_code == 200
    with trio.fail_after(5):
        async with open_websocket_url(ws_url, **kwargs) as ws:
            assert (await ready(ws))["type"] == "bot-ready"


# --------------------------------------------------------------------------- security


async def test_token_in_header_or_query_parameter() -> None:
    async with running(token="s3cret", require_token=True) as (server, _stop):
        assert await closed_with(server.ws_url) == (4001, "unauthorized: missing or wrong token")
        assert (await closed_with(server.ws_url + "?token=nope"))[0] == 4001
        bad = [("Authorization", "Bearer nope")]
        assert (await closed_with(server.ws_url, extra_headers=bad))[0] == 4001
        await still_serving(server.url, server.ws_url + "?token=s3cret")
        good = [("Authorization", "Bearer s3cret")]
        await still_serving(server.url, server.ws_url, extra_headers=good)
        assert server.manager.refused == {4001: 3}


async def test_the_token_is_never_shown_to_the_session() -> None:
    seen: dict[str, Any] = {}
    record: dict[str, Any] = {}
    factory = stuck_factory(record)

    async def spy(session: Session) -> PipelineTask:
        seen["query"], seen["headers"] = dict(session.query), dict(session.headers)
        return await factory(session)

    async with running(spy, token="s3cret", require_token=True) as (server, _stop):
        await still_serving(server.url, server.ws_url + "?token=s3cret&lang=en")
        await still_serving(
            server.url, server.ws_url, extra_headers=[("Authorization", "Bearer s3cret")]
        )
    assert seen["query"] == {} and "authorization" not in seen["headers"]
    assert "s3cret" not in repr(ServerConfig(token="s3cret"))


async def test_origin_allow_list() -> None:
    async with running(check_origin=True, allowed_origins=("https://app.example",)) as (
        server,
        _stop,
    ):
        evil = [("Origin", "https://evil.example")]
        assert await closed_with(server.ws_url, extra_headers=evil) == (4003, "origin not allowed")
        await still_serving(
            server.url, server.ws_url, extra_headers=[("Origin", "https://app.example")]
        )
        own = server.url  # the page served by this server
        await still_serving(server.url, server.ws_url, extra_headers=[("Origin", own)])
        await still_serving(server.url, server.ws_url)  # no Origin: not a browser


def test_security_defaults_follow_the_address() -> None:
    loopback = ServerConfig(host="127.0.0.1")
    assert not loopback.token_required
    # origins are checked on loopback too (cross-site WebSocket hijacking), and the Host
    # header must name the loopback (DNS rebinding)
    assert loopback.origin_checked and loopback.host_checked
    with pytest.raises(ServerConfigError, match="needs a token"):
        ServerConfig(host="0.0.0.0")
    public = ServerConfig(host="0.0.0.0", token="t")
    assert public.token_required and public.origin_checked and not public.host_checked
    assert not ServerConfig(check_origin=False).origin_checked
    assert not ServerConfig(host="::", require_token=False).token_required
    assert ServerConfig(host="::1").token_required is False
    assert ServerConfig(token="t").token_required  # a token given on loopback is used
    with pytest.raises(ServerConfigError, match="empty"):
        ServerConfig(token=" ")


# --------------------------------------------------------------------------- limits


async def test_the_session_limit_answers_1013_try_again_later() -> None:
    record: dict[str, Any] = {}
    async with running(stuck_factory(record), max_sessions=2) as (server, _stop):
        with trio.fail_after(10):
            async with (
                open_websocket_url(server.ws_url) as a,
                open_websocket_url(server.ws_url) as b,
            ):
                await ready(a)
                await ready(b)
                code, reason = await closed_with(server.ws_url)
                assert code == 1013 and reason is not None and "try again later" in reason
                async with httpx.AsyncClient(trust_env=False) as client:
                    health = (await client.get(server.url + "/health")).json()
                assert health["sessions"] == 2 and health["max_sessions"] == 2
            await server.manager.wait_sessions(0)
            await still_serving(server.url, server.ws_url)


async def test_an_oversized_message_closes_1009_and_the_server_goes_on() -> None:
    async with running(max_message_bytes=64 * 1024) as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "x" * 100_000}))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1009
            await server.manager.wait_sessions(0)
            await still_serving(server.url, server.ws_url)


async def test_bad_transport_parameters_are_refused() -> None:
    async with running() as (server, _stop):
        code, reason = await closed_with(server.ws_url + "?sample_rate=lots")
        assert code == 1008 and reason is not None and "bad parameter" in reason
        code, _ = await closed_with(server.ws_url + "?sample_rate=100")
        assert code == 1008


# --------------------------------------------------------------------------- broken clients


UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


MALFORMED = [
    UPGRADE.encode() + b"X",  # a trailing byte after the headers (hypercorn issue 225)
    UPGRADE.encode() + b"\x81\xff" + b"\x00" * 20,  # a frame claiming an absurd length
    UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 99").encode(),
    UPGRADE.replace("Upgrade: websocket\r\n", "").encode(),
    b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
    b"NOT HTTP AT ALL\r\n\r\n",
]


async def test_malformed_upgrade_requests_do_not_hurt_the_server() -> None:
    async with running() as (server, _stop):
        host = server.url.removeprefix("http://")
        name, port = host.split(":")
        for request_bytes in MALFORMED:
            with trio.fail_after(5):
                stream = await trio.open_tcp_stream(name, int(port))
                await stream.send_all(request_bytes.replace(b"{host}", host.encode()))
                with trio.move_on_after(0.2):
                    while await stream.receive_some(65536):
                        pass
                await stream.aclose()
            await still_serving(server.url, server.ws_url)


async def test_a_half_open_connection_is_dropped_after_the_ping_timeout() -> None:
    async with running(ping_interval=0.2, ping_timeout=0.5) as (server, _stop):
        with trio.fail_after(5):
            stream, conn = await raw_websocket(server.url)
            from test_ws_server import send_ws

            await send_ws(stream, conn, json.dumps(READY))
            await server.manager.wait_sessions(1)
            start = trio.current_time()
            # The client now goes silent: it neither reads nor answers the server's pings.
            await server.manager.wait_sessions(0)
            assert trio.current_time() - start < 2
            await stream.aclose()


async def test_an_early_close_leaves_nothing() -> None:
    async with running() as (server, _stop):
        with trio.fail_after(5):
            for _ in range(5):
                async with open_websocket_url(server.ws_url):
                    pass  # closed before client-ready
            stream, _conn = await raw_websocket(server.url)
            await stream.aclose()  # no close frame at all
            await server.manager.wait_sessions(0)
        assert server.manager.total_sessions == 6
        await still_serving(server.url, server.ws_url)


async def test_a_failing_factory_closes_1011_and_the_server_goes_on() -> None:
    calls = []

    async def factory(session: Session) -> PipelineTask:
        calls.append(session.id)
        if len(calls) == 1:
            raise RuntimeError("no database")
        from rustvani_trio.pipeline import Pipeline

        await trio.lowlevel.checkpoint()
        return PipelineTask(Pipeline([session.input(), session.output()]))

    async with running(factory) as (server, _stop):
        assert await closed_with(server.ws_url) == (1011, "could not start a session")
        await still_serving(server.url, server.ws_url)


async def test_unknown_paths_are_refused() -> None:
    async with running() as (server, _stop):
        with pytest.raises(Exception, match=r"403|Handshake"):
            async with open_websocket_url(server.ws_url.replace("/ws", "/elsewhere")):
                pass
        await still_serving(server.url, server.ws_url)


async def test_bad_messages_over_the_real_socket() -> None:
    async with running() as (server, _stop):
        with trio.fail_after(10):
            async with open_websocket_url(server.ws_url) as ws:
                await ws.send_message("{oops")
                assert json.loads(await ws.get_message())["type"] == "error"
                await ws.send_message(rtvi("warp", id="w"))
                reply = json.loads(await ws.get_message())
                assert reply["type"] == "error-response" and reply["id"] == "w"
                await ws.send_message(b"\x00\x01\x02")  # not a protobuf frame
                assert json.loads(await ws.get_message())["type"] == "error"
                await ready(ws)
                await ws.send_message(rtvi("send-text", {"content": "still there?"}))
                assert "bot-llm-text" in [m["type"] for m in await until(ws, "bot-llm-stopped")]
