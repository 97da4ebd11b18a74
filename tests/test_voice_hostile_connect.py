"""Speech providers that cannot be reached (services/stt/_ws.py): a closed port, a TCP server
that accepts and never answers, a name that does not resolve, a URL that is not one.

Each must be reported as a non-fatal ErrorFrame (without the key), retried with backoff
under the provider's :class:`ReconnectPolicy`, and leave the pipeline running: it still
passes frames and ends cleanly on EndFrame or CancelFrame. Before the fix, the connect
failure was raised inside a nursery, came out as an ExceptionGroup that neither
``except* CONNECT_ERRORS`` nor ``except ConnectFailed`` caught, and crashed the pipeline.

These run on ``autojump_clock``: the timeouts and backoff pass in virtual time (loopback
connects and refusals need none).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

pytest.importorskip("trio_websocket")

from rustvani_trio.frames import (
    ErrorFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    TextFrame,
)
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.stt.sarvam import SarvamSTTConfig, SarvamSTTService
from rustvani_trio.services.stt.sixtydb import SixtyDbSTTConfig, SixtyDbSTTService
from rustvani_trio.services.tts.deepgram import DeepgramTTSConfig, DeepgramTTSService
from rustvani_trio.services.tts.sarvam import SarvamTTSConfig, SarvamTTSService
from rustvani_trio.testing._speech.harness import LivePipeline, live_pipeline

KEY = "hostile/secret+key 42"  # URL-encoded in 60db's query: redacted in that form too
CONNECT_TIMEOUT = 2.0
POLICY = ReconnectPolicy(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter=0.0)
OPTIONS = WebSocketOptions(
    connect_timeout=CONNECT_TIMEOUT,
    send_timeout=1,
    idle_timeout=1,
    close_timeout=1,
    keepalive_interval=None,
    reconnect=POLICY,
)


def deepgram_tts(url: str, options: WebSocketOptions = OPTIONS) -> FrameProcessor:
    return DeepgramTTSService(DeepgramTTSConfig(api_key=KEY, base_url=url, options=options))


def sarvam_tts(url: str, options: WebSocketOptions = OPTIONS) -> FrameProcessor:
    return SarvamTTSService(SarvamTTSConfig(api_key=KEY, url=url + "/tts", options=options))


def sarvam_stt(url: str, options: WebSocketOptions = OPTIONS) -> FrameProcessor:
    return SarvamSTTService(SarvamSTTConfig(api_key=KEY, url=url + "/stt", options=options))


def sixtydb_stt(url: str, options: WebSocketOptions = OPTIONS) -> FrameProcessor:
    return SixtyDbSTTService(SixtyDbSTTConfig(api_key=KEY, url=url + "/ws/stt", options=options))


PROVIDERS: dict[str, Callable[[str, WebSocketOptions], FrameProcessor]] = {
    "Deepgram TTS": deepgram_tts,
    "Sarvam TTS": sarvam_tts,
    "Sarvam STT": sarvam_stt,
    "60db STT": sixtydb_stt,
}


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connects are refused
    return port


@asynccontextmanager
async def silent_tcp_server() -> AsyncIterator[tuple[str, list[float]]]:
    """Accepts TCP connections, reads and never answers; yields its URL and accept times."""
    accepted: list[float] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            while await stream.receive_some(65536):
                pass

    async def handler(stream: trio.SocketStream) -> None:
        accepted.append(trio.current_time())
        await hold(stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        yield f"ws://127.0.0.1:{port}", accepted
        nursery.cancel_scope.cancel()


def check_errors(live: LivePipeline, service: str) -> None:
    assert live.errors
    for error in live.errors:
        assert isinstance(error, ErrorFrame) and not error.fatal
        assert error.error.startswith(f"{service}: "), error.error
        for form in (KEY, "hostile%2Fsecret", "hostile/secret"):
            assert form not in error.error


async def still_flows(live: LivePipeline) -> None:
    """The pipeline is alive: a frame goes through (an answer, for a TTS, is released)."""
    await live.send(LLMFullResponseStart(), LLMText(text="Hello."), LLMFullResponseEnd())
    await live.recorder.wait_for_kind(LLMFullResponseEnd, within=60)
    await live.send(TextFrame(text="still here"))
    await live.recorder.wait_for(
        lambda frames: any(isinstance(f, TextFrame) and f.text == "still here" for f in frames),
        within=60,
    )


@pytest.mark.parametrize("service", list(PROVIDERS))
async def test_a_closed_port_is_reported_retried_and_the_pipeline_goes_on(
    autojump_clock: trio.testing.MockClock, service: str
) -> None:
    url = f"ws://127.0.0.1:{closed_port()}"
    async with live_pipeline([PROVIDERS[service](url, OPTIONS)]) as live:
        first = await live.wait_for_error(within=60)
        assert "could not connect" in first.error or "connect_timeout" in first.error
        # given up after max_attempts (3 attempts, 1 s + 2 s of backoff between them)
        await live.wait_for_error(within=60, count=2)
        assert "attempt 3" in live.errors[-1].error and "giving up" in live.errors[-1].error
        await still_flows(live)
        await live.end()
    assert live.task.finish_reason == "end"
    check_errors(live, service)


@pytest.mark.parametrize("service", list(PROVIDERS))
async def test_a_silent_server_times_out_and_is_retried_with_backoff(
    autojump_clock: trio.testing.MockClock, service: str
) -> None:
    async with silent_tcp_server() as (url, accepted):
        async with live_pipeline([PROVIDERS[service](url, OPTIONS)]) as live:
            start = trio.current_time()
            await live.wait_for_error(within=60)
            await live.wait_for_error(within=60, count=2)
            assert len(accepted) == POLICY.max_attempts
            await still_flows(live)
            await live.end()
        assert live.task.finish_reason == "end"
    check_errors(live, service)
    assert "no connection within connect_timeout=2.0s" in live.errors[0].error
    assert "attempt 3" in live.errors[-1].error
    # attempt n+1 starts connect_timeout + the policy's delay after attempt n
    attempts = accepted[: POLICY.max_attempts]  # a TTS tries again for still_flows' answer
    gaps = [b - a for a, b in zip([start, *attempts], attempts, strict=False)]
    assert gaps[0] == pytest.approx(0, abs=0.01)
    assert gaps[1:] == [
        pytest.approx(CONNECT_TIMEOUT + 1.0, abs=0.01),
        pytest.approx(CONNECT_TIMEOUT + 2.0, abs=0.01),
    ]


async def test_after_giving_up_a_new_use_tries_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with silent_tcp_server() as (url, accepted), live_pipeline([deepgram_tts(url)]) as live:
        await live.wait_for_error(within=60, count=2)
        assert len(accepted) == 3
        await live.send(LLMFullResponseStart(), LLMText(text="Again."), LLMFullResponseEnd())
        await live.wait_for_error(within=60, count=3)
        assert len(accepted) == 4
        await live.end()
    check_errors(live, "Deepgram TTS")


@pytest.mark.parametrize("service", list(PROVIDERS))
async def test_a_cancel_while_connecting_ends_the_run_at_once(
    autojump_clock: trio.testing.MockClock, service: str
) -> None:
    async with silent_tcp_server() as (url, accepted):
        async with live_pipeline([PROVIDERS[service](url, OPTIONS)]) as live:
            while not accepted:  # noqa: ASYNC110 - the server's state has no event
                await trio.sleep(0.001)
            start = trio.current_time()
            await live.task.cancel("user left")
            assert trio.current_time() - start < CONNECT_TIMEOUT
        assert live.task.finish_reason == "cancel: user left"


@pytest.mark.parametrize("service", list(PROVIDERS))
async def test_an_end_while_backing_off_does_not_wait_for_the_backoff(
    autojump_clock: trio.testing.MockClock, service: str
) -> None:
    slow = attrs.evolve(OPTIONS, reconnect=attrs.evolve(POLICY, initial_delay=100.0))
    url = f"ws://127.0.0.1:{closed_port()}"
    async with live_pipeline([PROVIDERS[service](url, slow)]) as live:
        await live.wait_for_error(within=60)  # the first failure; 100 s until the next try
        start = trio.current_time()
        await live.end(within=60)
        assert trio.current_time() - start < slow.close_timeout
    assert live.task.finish_reason == "end"


class _NoSuchHost:
    """A hostname resolver for which no name exists (no real DNS in tests)."""

    async def getaddrinfo(self, host: bytes | str | None, *args: object, **kw: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, *args: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


async def test_a_name_that_does_not_resolve_is_reported_and_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    previous = trio.socket.set_custom_hostname_resolver(_NoSuchHost())  # type: ignore[arg-type]
    try:
        async with live_pipeline([sixtydb_stt("ws://stt.example.invalid")]) as live:
            await live.wait_for_error(within=60, count=2)
            await still_flows(live)
            await live.end()
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
    check_errors(live, "60db STT")
    assert "Name or service not known" in live.errors[0].error
    assert "attempt 3" in live.errors[-1].error


@pytest.mark.parametrize(
    "url",
    ["https://api.example.com", "ws://", "ws://127.0.0.1:99999", "ws://[::1"],
)
async def test_a_bad_url_is_reported_once_and_not_retried(
    autojump_clock: trio.testing.MockClock, url: str
) -> None:
    async with live_pipeline([deepgram_tts(url)]) as live:
        error = await live.wait_for_error(within=60)
        await trio.sleep(30)  # no retry loop: one report
        assert len(live.errors) == 1, [e.error for e in live.errors]
        await still_flows(live)
        await live.end()
    assert "attempt 1" in error.error
    check_errors(live, "Deepgram TTS")


@pytest.mark.parametrize("service", list(PROVIDERS))
async def test_a_provider_that_ends_every_connection_at_once_is_reopened_with_backoff(
    service: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Accepts the handshake, then closes at once (1000), saying nothing, every time. The
    # first such connection is reopened at once (as an idle close is); from the second on
    # the policy's backoff applies, instead of a tight connect loop. The pipeline goes on.
    from rustvani_trio.testing._speech._wsserver import FakeSocket, open_ws_server

    opened: list[float] = []

    async def close_at_once(sock: FakeSocket) -> None:
        opened.append(trio.current_time())
        # (a tight loop would never let the virtual clock move: fail instead of hanging)
        assert len(opened) < 50, "reconnected in a tight loop"
        await sock.close(1000)

    async with open_ws_server(close_at_once) as server:
        url = f"ws://{server.host}:{server.port}"
        async with live_pipeline([PROVIDERS[service](url, OPTIONS)]) as live:
            await trio.sleep(10)
            await live.send(TextFrame(text="still here"))
            await live.recorder.wait_for(
                lambda frames: any(
                    isinstance(f, TextFrame) and f.text == "still here" for f in frames
                )
            )
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    assert len(opened) >= 4, opened
    # initial_delay 1 s, doubling, no jitter: 1, 2, 4, 8 ... after the first quick close
    assert all(gap >= POLICY.initial_delay for gap in gaps[1:]), gaps
    assert len(opened) < 12, opened
