"""The LLM handler against endpoints that misbehave (issue 9, items 1-8 and 11).

Most servers here are raw: a trio TCP listener on 127.0.0.1 that reads one request per
connection and writes HTTP/1.1 bytes by hand, so a test can do what a real proxy or a broken
server does (close before the last chunk, keep a body open after ``[DONE]``, send keep-alive
comments forever, a 48 MiB line). The others use the scripted server's ``RawReply``. Tests that
wait use ``autojump_clock``: loopback bytes are readable as soon as they are sent, so virtual
time only jumps when every task waits on a timer.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import re
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from rustvani_trio.aggregators import LLMAssistantAggregator
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallInProgress,
    FunctionCallResult,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
)
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.services.llm._body import ERROR_BODY_SECONDS
from rustvani_trio.services.llm._chat_decoder import ChatStreamDecoder
from rustvani_trio.services.llm._stream import (
    FINISH_GRACE_SECONDS,
    Answer,
    http_timeouts,
    open_client,
    stream_answer,
)
from rustvani_trio.services.llm.function_registry import FunctionCallParams, FunctionRegistry
from rustvani_trio.services.llm.openai import (
    LLMAnswerCutShort,
    LLMRequestError,
    OpenAILLMConfig,
    OpenAILLMHandler,
    RetryPolicy,
)
from rustvani_trio.testing import (
    ErrorReply,
    RawReply,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    numbered_tokens,
    open_scripted_server,
    run_test,
)

LLM = "llm"
NO_RETRY = RetryPolicy(max_attempts=1)
MiB = 1024 * 1024

# --------------------------------------------------------------------------- a raw server

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"
DONE = b"data: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(payload: dict[str, Any], kind: str | None = None) -> bytes:
    head = f"event: {kind}\n".encode() if kind else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def delta(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def text_stream(*tokens: str) -> list[bytes]:
    """The events of a complete text answer, [DONE] included."""
    return [
        delta({"role": "assistant", "content": ""}),
        *(delta({"content": t}) for t in tokens),
        delta({}, "stop"),
        DONE,
    ]


def tool_stream(call_id: str = "call_1", name: str = "f") -> list[bytes]:
    """The events of a complete tool-call answer, [DONE] included."""
    call = {"index": 0, "id": call_id, "type": "function"}
    return [
        delta({"role": "assistant", "content": None}),
        delta({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        delta({}, "tool_calls"),
        DONE,
    ]


@attrs.define(eq=False)
class Conn:
    """One accepted connection; counts what was written."""

    stream: trio.SocketStream
    server: RawServer
    index: int  # the request's number, from 0

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)
        self.server.sent += len(data)

    async def stream_events(self, events: list[bytes], *, last_chunk: bool = True) -> None:
        await self.send(SSE_HEAD)
        for item in events:
            await self.send(chunk(item))
        if last_chunk:
            await self.send(LAST_CHUNK)


Respond = Callable[[Conn], Awaitable[None]]


@attrs.define(eq=False)
class RawServer:
    respond: Respond
    url: str = ""
    requests: list[bytes] = attrs.Factory(list)
    sent: int = 0  # bytes written on every connection

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            request = await read_request(stream)
            if request is None:
                return
            self.requests.append(request)
            conn = Conn(stream, self, len(self.requests) - 1)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.respond(conn)  # (or the client went away)


async def read_request(stream: trio.SocketStream) -> bytes | None:
    """One request (head and Content-Length body), or ``None`` if the client left."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = await stream.receive_some()
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        piece = await stream.receive_some()
        if not piece:
            return None
        body += piece
    return head + b"\r\n\r\n" + body


@asynccontextmanager
async def raw_server(respond: Respond) -> AsyncIterator[RawServer]:
    server = RawServer(respond)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        server.url = f"http://127.0.0.1:{port}/v1"
        yield server
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- the pipeline


class Stamp(FrameProcessor):
    """Forwards everything; records when each downstream frame passed."""

    def __init__(self) -> None:
        super().__init__(name="stamp")
        self.seen: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is FrameDirection.DOWNSTREAM:
            self.seen.append((trio.current_time(), frame))
        await self.push_frame(frame, direction)

    def times(self, kind: type[Frame]) -> list[float]:
        return [t for t, f in self.seen if isinstance(f, kind)]


def make_llm(url: str, registry: FunctionRegistry | None = None, **config: Any) -> FrameProcessor:
    config.setdefault("model", "gpt-4.1")
    config.setdefault("api_key", "sk-test")
    cfg = OpenAILLMConfig(base_url=url, **config)
    handler = OpenAILLMHandler.with_registry(cfg, registry or FunctionRegistry())
    return handler.into_processor(name=LLM)


def new_context() -> LLMContext:
    return LLMContext([{"role": "user", "content": "Hello?"}])


@attrs.define
class Turns:
    stamp: Stamp
    errors: list[ErrorFrame]
    downstream: list[Frame]

    @property
    def text(self) -> str:
        return "".join(f.text for f in self.downstream if type(f) is LLMText)


async def run_turns(
    url: str, *, turns: int = 1, registry: FunctionRegistry | None = None, **config: Any
) -> Turns:
    stamp = Stamp()
    frames = [LLMContextFrame(context=new_context()) for _ in range(turns)]
    result = await run_test([make_llm(url, registry, **config), stamp], frames, time_limit=300)
    errors = [e for e in result.upstream_of(ErrorFrame) if e.processor == LLM]
    return Turns(stamp, errors, result.downstream)


def one_error(turns: Turns) -> str:
    (error,) = turns.errors
    return error.error


# =========================================================================== 1. after [DONE]


async def test_a_text_answer_stands_when_the_server_closes_after_done_without_the_last_chunk() -> (
    None
):
    async def respond(conn: Conn) -> None:
        await conn.stream_events(text_stream("Hello", " world"), last_chunk=False)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url)
    assert turns.text == "Hello world"
    assert turns.errors == []
    assert len(server.requests) == 1


async def test_a_tool_call_answer_stands_when_the_server_closes_after_done() -> None:
    ran: list[str] = []
    registry = FunctionRegistry()
    registry.register("f", lambda args: ran.append(args) or "ok")

    async def respond(conn: Conn) -> None:
        if conn.index == 0:
            await conn.stream_events(tool_stream(), last_chunk=False)
        else:
            await conn.stream_events(text_stream("done"))

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, registry=registry)
    assert ran == ["{}"]  # the tool ran once: the answer was not retried
    assert len(server.requests) == 2  # the call, then the answer with its result
    assert [f.result for f in turns.downstream if isinstance(f, FunctionCallResult)] == ["ok"]
    assert turns.text == "done"
    assert turns.errors == []


# =========================================================================== 2. no drain wait


async def test_a_body_held_open_after_done_holds_neither_the_turns_end_nor_the_next_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def respond(conn: Conn) -> None:
        await conn.stream_events(text_stream("Hi"), last_chunk=False)
        await trio.sleep(30)  # a proxy that keeps the body open

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, turns=2)
    starts = turns.stamp.times(LLMFullResponseStart)
    ends = turns.stamp.times(LLMFullResponseEnd)
    assert turns.text == "HiHi" and turns.errors == []
    assert ends[0] - starts[0] < 0.01  # the answer is released at once
    assert starts[1] - ends[0] <= 0.25 + 0.01  # the drain is bounded
    assert len(server.requests) == 2


async def test_a_body_held_open_after_done_does_not_hold_the_tool_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[float] = []
    registry = FunctionRegistry()

    def f(_args: str) -> str:
        started.append(trio.current_time())
        return "ok"

    registry.register("f", f)

    async def respond(conn: Conn) -> None:
        if conn.index == 0:
            await conn.stream_events(tool_stream(), last_chunk=False)
            await trio.sleep(30)
        else:
            await conn.stream_events(text_stream("done"))

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, registry=registry)
    (turn_start,) = turns.stamp.times(LLMFullResponseStart)
    assert started[0] - turn_start < 0.01
    assert turns.text == "done" and turns.errors == []


async def test_consecutive_turns_still_reuse_the_connection() -> None:
    async with open_scripted_server(default_reply=TextReply(["a", "b"])) as server:
        turns = await run_turns(server.base_url, turns=3)
    assert turns.text == "ab" * 3
    assert [r.connection for r in server.requests] == [1, 1, 1]


# =========================================================================== 3. stalls


async def _keep_alive(conn: Conn) -> None:
    await conn.send(chunk(b": keep-alive\n\n"))


async def _empty_delta(conn: Conn) -> None:
    await conn.send(chunk(delta({})))


@pytest.mark.parametrize("tick", [_keep_alive, _empty_delta], ids=["comment", "empty-delta"])
async def test_keep_alives_after_the_first_token_do_not_hide_a_stall(
    autojump_clock: trio.testing.MockClock, tick: Callable[[Conn], Awaitable[None]]
) -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        for item in text_stream("Hi")[:2]:
            await conn.send(chunk(item))
        for _ in range(100):
            await trio.sleep(1)
            await tick(conn)

    async with raw_server(respond) as server:
        start = trio.current_time()
        turns = await run_turns(server.url, chunk_timeout=4.0)
        elapsed = trio.current_time() - start
    assert turns.text == "Hi"
    assert "stalled" in one_error(turns) and "chunk_timeout" in one_error(turns)
    assert 4.0 <= elapsed < 5.0


async def test_one_byte_a_second_is_a_stall(autojump_clock: trio.testing.MockClock) -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        for item in text_stream("Hi")[:2]:
            await conn.send(chunk(item))
        for byte in delta({"content": " there, slowly"}):
            await trio.sleep(1)
            await conn.send(chunk(bytes([byte])))

    async with raw_server(respond) as server:
        start = trio.current_time()
        turns = await run_turns(server.url, chunk_timeout=4.0)
        elapsed = trio.current_time() - start
    assert turns.text == "Hi"
    assert "stalled" in one_error(turns)
    assert 4.0 <= elapsed < 5.0


async def test_request_timeout_bounds_a_stream_that_never_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        while True:
            await conn.send(chunk(delta({"content": "la "})))
            await trio.sleep(1)

    async with raw_server(respond) as server:
        start = trio.current_time()
        turns = await run_turns(server.url, chunk_timeout=4.0, request_timeout=10.0)
        elapsed = trio.current_time() - start
    assert "request_timeout=10.0" in one_error(turns)
    assert turns.text.startswith("la la ")
    assert 10.0 <= elapsed < 11.0
    assert len(server.requests) == 1


class SlowSink(FrameProcessor):
    """Takes one LLMText a second (its lane holds one frame: the LLM waits on it)."""

    def __init__(self) -> None:
        super().__init__(name="slow", max_buffer=1)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMText):
            await trio.sleep(1)
        await self.push_frame(frame, direction)


async def test_time_spent_waiting_for_the_pipeline_counts_for_no_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(numbered_tokens(20)))
        llm = make_llm(server.base_url, chunk_timeout=2.0, request_timeout=5.0)
        frames = [LLMContextFrame(context=new_context())]
        result = await run_test([llm, SlowSink()], frames, time_limit=300)
    assert [e.error for e in result.upstream_of(ErrorFrame)] == []
    assert "".join(f.text for f in result.downstream_of(LLMText)) == "".join(numbered_tokens(20))


# =========================================================================== 4. error events


@pytest.mark.parametrize("kind", ["error", None], ids=["event-error", "data-error"])
async def test_an_error_event_on_an_open_connection_is_reported_at_once(
    autojump_clock: trio.testing.MockClock, kind: str | None
) -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        error = {"error": {"message": "The server is overloaded", "type": "server_error"}}
        await conn.send(chunk(event(error, kind)))
        await trio.sleep(300)  # and the connection stays open

    async with raw_server(respond) as server:
        start = trio.current_time()
        turns = await run_turns(server.url)
        elapsed = trio.current_time() - start
    assert "The server is overloaded" in one_error(turns)
    assert elapsed < 0.1
    assert len(server.requests) == 1


# =========================================================================== 5. not a stream


COMPLETION = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
}


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (
            RawReply(b"<html><body>Sign in to the Wi-Fi</body></html>", content_type="text/html"),
            ["HTTP 200", "HTML page", "Sign in to the Wi-Fi"],
        ),
        (
            RawReply(json.dumps(COMPLETION).encode(), content_type="application/json"),
            ["HTTP 200", "complete JSON chat completion", "stream=true"],
        ),
        (
            RawReply(
                b'{"error": {"message": "You exceeded your current quota", '
                b'"type": "insufficient_quota"}}',
                content_type="application/json; charset=utf-8",
            ),
            ["HTTP 200", "JSON error", "You exceeded your current quota"],
        ),
    ],
    ids=["html", "json-completion", "json-error"],
)
async def test_a_200_that_is_not_an_event_stream_says_what_came_back(
    reply: RawReply, words: list[str]
) -> None:
    async with open_scripted_server() as server:
        server.add_reply(reply)
        turns = await run_turns(server.base_url)
    message = one_error(turns)
    for word in words:
        assert word in message, message
    assert "ended before it was complete" not in message
    assert len(server.requests) == 1


# =========================================================================== 6. memory bounds


async def test_an_error_body_is_read_only_up_to_a_limit() -> None:
    size = 48 * MiB

    async def respond(conn: Conn) -> None:
        await conn.send(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\n\r\n" % size
        )
        piece = b"x" * (64 * 1024)
        for _ in range(size // len(piece)):
            await conn.send(piece)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    message = one_error(turns)
    assert "HTTP 500" in message and "the rest was not read" in message
    assert len(message) < 1000
    assert server.sent < size // 2  # the client stopped reading (socket buffers took the rest)


async def test_an_endless_sse_line_is_refused_at_the_limit() -> None:
    size = 48 * MiB

    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        await conn.send(chunk(b'data: {"choices": "'))
        piece = chunk(b"a" * (64 * 1024))
        for _ in range(size // (64 * 1024)):
            await conn.send(piece)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    message = one_error(turns)
    assert "longer than 4194304 characters" in message
    assert server.sent < size // 2


# =========================================================================== 7. server text


FORGED = "bad request\n2025-01-01 INFO rustvani_trio: forged line \x1b[31mred\x1b[0m \u202eevil"


def assert_safe(text: str) -> None:
    for unsafe in ("\n", "\r", "\x1b", "\u202e"):
        assert unsafe not in text, repr(text)


async def test_server_messages_are_escaped_in_errors_and_logs(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.DEBUG, logger="rustvani_trio")
    async with open_scripted_server() as server:
        server.add_replies([ErrorReply(503, FORGED), ErrorReply(400, FORGED)])
        turns = await run_turns(server.base_url)
    message = one_error(turns)
    assert "forged line" in message and "\\n2025-01-01" in message and "\\x1b[31m" in message
    assert_safe(message)
    logged = [r.getMessage() for r in caplog.records]
    assert any("forged line" in line for line in logged)  # the retry was logged ...
    for line in logged:
        assert_safe(line)  # ... on one line, without terminal escapes


async def test_a_huge_server_message_is_shortened() -> None:
    huge = "x" * (10 * MiB)
    async with open_scripted_server() as server:
        server.add_reply(ErrorReply(400, huge))
        turns = await run_turns(server.base_url)
    assert len(one_error(turns)) < 1000


async def test_an_in_stream_error_message_is_shortened_and_escaped() -> None:
    error = {"error": {"message": FORGED + "y" * 100_000}}
    async with open_scripted_server() as server:
        server.add_reply(RawReply(event(error) + DONE))
        turns = await run_turns(server.base_url)
    message = one_error(turns)
    assert "forged line" in message and len(message) < 1000
    assert_safe(message)


# =========================================================================== 8. linear decoding


@pytest.fixture
def joined_chars(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """For every time the decoder joins new pieces into its result, the characters the result
    then holds (text and tool arguments): what that join copied."""
    counts: list[int] = []
    sync = ChatStreamDecoder._sync

    def size(decoder: ChatStreamDecoder) -> int:
        result = decoder._result
        return len(result.text) + sum(len(c.arguments) for c in result.tool_calls)

    def counting(self: ChatStreamDecoder) -> None:
        before = size(self)
        sync(self)
        after = size(self)
        if after != before:
            counts.append(after)

    monkeypatch.setattr(ChatStreamDecoder, "_sync", counting)
    return counts


async def test_a_long_text_answer_is_decoded_in_linear_time(joined_chars: list[int]) -> None:
    tokens = numbered_tokens(3000)
    async with open_scripted_server() as server:
        server.add_reply(TextReply(tokens))
        turns = await run_turns(server.base_url)
    assert turns.text == "".join(tokens)
    # The answer is joined once, not again after every read.
    assert sum(joined_chars) <= 2 * len(turns.text)


async def test_long_tool_arguments_are_decoded_in_linear_time(joined_chars: list[int]) -> None:
    arguments = json.dumps({"text": "word " * 3000})
    registry = FunctionRegistry()
    registry.register("f", lambda args: str(len(args)))
    async with open_scripted_server(default_reply=TextReply(["ok"])) as server:
        server.add_reply(
            ToolCallReply([ScriptedToolCall("f", arguments, "c1")], args_fragment_size=4)
        )
        turns = await run_turns(server.base_url, registry=registry)
    assert [f.result for f in turns.downstream if isinstance(f, FunctionCallResult)] == [
        str(len(arguments))
    ]
    assert sum(joined_chars) <= 2 * len(arguments) + 10


# =========================================================================== 11. credentials


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "url",
    [
        f"http://proxyuser:s3cret-pass@127.0.0.1:{closed_port()}/v1",
        "ftp://proxyuser:s3cret-pass@example.invalid/v1",
    ],
    ids=["connection-refused", "invalid-url"],
)
async def test_credentials_in_base_url_never_reach_errors_or_logs(
    url: str, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.DEBUG, logger="rustvani_trio")
    turns = await run_turns(url, api_key="")  # (the URL's credentials are the auth)
    message = one_error(turns)
    assert "proxyuser" not in message and "s3cret" not in message
    assert "127.0.0.1" in message or "example.invalid" in message
    (error,) = turns.errors
    chain: list[BaseException] = []
    exc: BaseException | None = error.exception
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for item in chain:
        assert "s3cret" not in str(item), repr(item)
    for record in caplog.records:
        assert "s3cret" not in record.getMessage()


async def test_credentials_in_base_url_are_not_shown_in_http_errors() -> None:
    async with open_scripted_server() as server:
        server.add_reply(ErrorReply(404, "no such model"))
        url = server.base_url.replace("http://", "http://proxyuser:s3cret-pass@")
        turns = await run_turns(url, api_key="")
    message = one_error(turns)
    assert "no such model" in message and server.base_url in message
    assert "s3cret" not in message and "proxyuser" not in message
    assert "s3cret" not in repr(OpenAILLMConfig(base_url=url))
    assert server.requests[0].headers["authorization"] == "Basic cHJveHl1c2VyOnMzY3JldC1wYXNz"
    assert server.requests[0].headers["host"] == server.base_url.split("/")[2]


# =========================================================================== review: unicode


async def _answer_in_turns(conn: Conn, first: list[bytes]) -> None:
    """``first`` for the first request, a plain "ok" answer for every later one."""
    await conn.stream_events(first if conn.index == 0 else text_stream("ok"))


def raw_delta(delta_json: str, finish: str = "null") -> bytes:
    """A chunk whose delta is ``delta_json`` exactly as written (escapes kept)."""
    return (
        f'data: {{"choices": [{{"index": 0, "delta": {delta_json}, "finish_reason": {finish}}}]}}'
        "\n\n"
    ).encode()


async def test_a_lone_surrogate_from_the_server_does_not_break_the_conversation() -> None:
    first = [raw_delta('{"content": "caf\\u00e9 \\ud800 ok"}'), delta({}, "stop"), DONE]
    context = new_context()
    async with raw_server(functools.partial(_answer_in_turns, first=first)) as server:
        for _ in range(2):
            llm = make_llm(server.url)
            frames = [LLMContextFrame(context=context)]
            result = await run_test([llm, LLMAssistantAggregator(context)], frames)
            assert result.upstream_of(ErrorFrame) == []
    assert context.messages[1] == {"role": "assistant", "content": "café \ufffd ok"}
    assert len(server.requests) == 2  # the second turn's request was built and sent
    assert "café \ufffd ok" in server.requests[1].decode()


async def test_a_lone_surrogate_in_a_tool_call_does_not_fail_the_round() -> None:
    got: list[str] = []
    registry = FunctionRegistry()
    registry.register("f", lambda args: got.append(args) or "ok")
    call = (
        '{"index": 0, "id": "c\\udc00", '
        '"function": {"name": "f", "arguments": "{\\"a\\": \\"\\ud800\\"}"}}'
    )
    first = [raw_delta(f'{{"tool_calls": [{call}]}}'), delta({}, "tool_calls"), DONE]
    async with raw_server(functools.partial(_answer_in_turns, first=first)) as server:
        turns = await run_turns(server.url, registry=registry)
    assert turns.errors == []
    assert got == ['{"a": "\ufffd"}']
    assert turns.text == "ok"


async def test_a_lone_surrogate_in_a_server_error_is_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="rustvani_trio")
    stream = [b'data: {"error": {"message": "oops \\ud800 \\u001b[31m"}}\n\n']
    async with raw_server(functools.partial(_answer_in_turns, first=stream)) as server:
        turns = await run_turns(server.url)
    message = one_error(turns)
    assert "oops \ufffd \\x1b[31m" in message
    message.encode("utf-8")


async def test_lone_surrogates_in_parsed_arguments_are_replaced() -> None:
    got: list[dict[str, Any]] = []
    registry = FunctionRegistry()
    registry.register("f", lambda params: got.append(dict(params.arguments)) or "ok", rich=True)
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": "\\ud800"}'}}
    first = [delta({"tool_calls": [call]}), delta({}, "tool_calls"), DONE]
    async with raw_server(functools.partial(_answer_in_turns, first=first)) as server:
        turns = await run_turns(server.url, registry=registry)
    assert turns.errors == []
    assert got == [{"a": "\ufffd"}]
    assert turns.text == "ok"


# =========================================================================== review: kinds


async def _respond_with(conn: Conn, raw: bytes, hold: float = 0.0) -> None:
    await conn.send(raw)
    await trio.sleep(hold)  # the connection stays open that long


def _sse(*events: bytes, last_chunk: bool = True) -> bytes:
    return SSE_HEAD + b"".join(chunk(e) for e in events) + (LAST_CHUNK if last_chunk else b"")


@pytest.mark.parametrize(
    ("raw", "kind", "status"),
    [
        (b"HTTP/1.1 500 Oops\r\ncontent-length: 4\r\n\r\noops", "http", 500),
        (_sse(delta({"content": "Hi"})), "protocol", None),  # ended without finish / [DONE]
        (_sse(b"data: {not json\n\n"), "protocol", None),
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\n\r\n<html>",
            "protocol",
            200,
        ),
        (_sse(event({"error": {"message": "overloaded"}})), "stream", None),
        (_sse(b"event: error\ndata: overloaded\n\n"), "stream", None),
        (SSE_HEAD + chunk(b": keep-alive\n\n"), "timeout", None),
        (SSE_HEAD + b"zz\r\n", "connection", None),  # a broken chunked encoding
    ],
    ids=[
        "http",
        "incomplete",
        "invalid-json",
        "not-a-stream",
        "error-chunk",
        "error-event",
        "timeout",
        "connection",
    ],
)
async def test_each_failure_attaches_an_llm_request_error_with_its_kind(
    autojump_clock: trio.testing.MockClock, raw: bytes, kind: str, status: int | None
) -> None:
    async with raw_server(functools.partial(_respond_with, raw=raw, hold=60.0)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY, first_token_timeout=5.0)
    (error,) = turns.errors
    assert isinstance(error.exception, LLMRequestError), error
    assert error.exception.kind == kind, error.error
    assert error.exception.status == status
    assert str(error.exception) in error.error


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (f"http://127.0.0.1:{closed_port()}/v1", "connection"),
        ("ftp://example.invalid/v1", "config"),
    ],
    ids=["refused", "invalid-url"],
)
async def test_connection_and_config_failures_have_their_kind(url: str, kind: str) -> None:
    turns = await run_turns(url, retry=NO_RETRY)
    (error,) = turns.errors
    assert isinstance(error.exception, LLMRequestError)
    assert error.exception.kind == kind


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_an_answer_cut_short_is_told_apart_from_a_failure(reason: str) -> None:
    raw = _sse(delta({"content": "Once upon a"}), delta({}, reason), DONE)
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url)
    assert turns.text == "Once upon a"  # the answer was delivered
    (error,) = turns.errors
    assert not error.fatal
    assert isinstance(error.exception, LLMAnswerCutShort)
    assert not isinstance(error.exception, LLMRequestError)
    assert error.exception.kind == reason == error.exception.finish_reason
    assert f"(finish_reason '{reason}')" in error.error


# =========================================================================== review: what came back


def _response(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"content-length: %d\r\n\r\n" % len(body) + body


QUOTA = b'{"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}}'


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("text/event-stream", QUOTA, ["a JSON error", "You exceeded your current quota"]),
        ("text/event-stream; charset=utf-8", b"<html>Bad gateway</html>", ["HTML page"]),
        ("text/event-stream", b"Internal Server Error", ["Internal Server Error"]),
        (None, QUOTA, ["a JSON error", "You exceeded your current quota"]),
        ("text/event-stream", b"", ["an empty body"]),
        ("text/event-stream", b"\r\n\r\n", ["an empty body"]),
    ],
    ids=["sse-json-error", "sse-html", "sse-text", "no-type-json-error", "empty", "blank"],
)
async def test_a_200_labelled_as_an_event_stream_that_is_none_says_what_it_is(
    autojump_clock: trio.testing.MockClock,
    content_type: str | None,
    body: bytes,
    words: list[str],
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    raw = _response("200 OK", headers, body)
    async with raw_server(functools.partial(_respond_with, raw=raw, hold=300.0)) as server:
        start = trio.current_time()
        turns = await run_turns(server.url, retry=NO_RETRY)
    message = one_error(turns)
    for word in words:
        assert word in message, message
    assert "ended before it was complete" not in message
    assert trio.current_time() - start < 1.0  # the open connection is not waited on


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/octet-stream", "application/x-ndjson", None, "TEXT/Event-Stream"],
)
async def test_an_event_stream_with_a_wrong_or_missing_label_is_read(
    content_type: str | None,
) -> None:
    body = b"\xef\xbb\xbf\n" + b"".join(text_stream("Hello", " there"))
    headers = {"content-type": content_type} if content_type else {}
    raw = _response("200 OK", headers, body)
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == []
    assert turns.text == "Hello there"


async def test_an_event_stream_that_opens_with_a_comment_cut_between_reads_is_read() -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        first, *rest = text_stream("ok")[1:]
        for piece in (b"\n", b":", b" hi\n\n" + first[:2], first[2:6], first[6:], *rest):
            await conn.send(chunk(piece))
            await trio.lowlevel.checkpoint()
        await conn.send(LAST_CHUNK)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == []
    assert turns.text == "ok"


async def test_an_error_event_without_data_is_reported_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    raw = _sse(b"event: error\n\n", last_chunk=False)
    async with raw_server(functools.partial(_respond_with, raw=raw, hold=300.0)) as server:
        start = trio.current_time()
        turns = await run_turns(server.url)
    (error,) = turns.errors
    assert error.error == "the LLM stream reported an error: (the server sent no message)"
    assert isinstance(error.exception, LLMRequestError) and error.exception.kind == "stream"
    assert trio.current_time() - start < 1.0
    assert len(server.requests) == 1


async def test_a_gzip_encoded_event_stream_is_read() -> None:
    body = gzip.compress(b"".join(text_stream("zipped")))
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + chunk(body[:7]) + chunk(body[7:]) + LAST_CHUNK
    )
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == [] and turns.text == "zipped"


@pytest.mark.parametrize("encoding", ["GZIP", " gzip "])
async def test_a_gzip_label_in_any_case_is_decoded(encoding: str) -> None:
    body = gzip.compress(b"".join(text_stream("zipped")))
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: "
        + encoding.encode()
        + b"\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunk(body)
        + LAST_CHUNK
    )
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == [] and turns.text == "zipped"


@pytest.mark.parametrize("encoding", [b"identity", b"Identity", b""])
async def test_an_identity_encoded_event_stream_is_read_as_sent(encoding: bytes) -> None:
    # Read from the transport's byte stream directly (no decoding layer): cut anywhere, a
    # byte at a time here, it is the same answer.
    body = b"".join(text_stream("as", " sent"))
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: "
        + encoding
        + b"\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(chunk(body[i : i + 1]) for i in range(len(body)))
        + LAST_CHUNK
    )
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == [] and turns.text == "as sent"


async def test_a_body_that_cannot_be_decoded_is_a_protocol_error() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + chunk(b"this is not gzip") + LAST_CHUNK
    )
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    (error,) = turns.errors
    assert "could not be decoded" in error.error and "the turn failed" not in error.error
    assert isinstance(error.exception, LLMRequestError) and error.exception.kind == "protocol"


async def test_a_broken_encoding_after_the_finish_reason_leaves_the_answer_standing() -> None:
    packer = zlib.compressobj(wbits=31)  # gzip
    body = packer.compress(b"".join(text_stream("Done")[:-1])) + packer.flush(zlib.Z_SYNC_FLUSH)
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + chunk(body) + chunk(b"\xff" * 64) + LAST_CHUNK
    )
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == [] and turns.text == "Done"


async def test_a_finish_reason_without_done_on_an_open_connection_is_released_soon(
    autojump_clock: trio.testing.MockClock,
) -> None:
    usage = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    raw = _sse(*text_stream("Hi")[:-1], usage, last_chunk=False)
    async with raw_server(functools.partial(_respond_with, raw=raw, hold=300.0)) as server:
        start = trio.current_time()
        turns = await run_turns(server.url, chunk_timeout=30.0)
    assert turns.errors == [] and turns.text == "Hi"
    (end,) = turns.stamp.times(LLMFullResponseEnd)
    assert end - start == pytest.approx(FINISH_GRACE_SECONDS, abs=0.01)


@pytest.mark.parametrize(
    ("status", "location", "shown", "secrets"),
    [
        (
            "308 Permanent Redirect",
            "https://user:pw-hidden@new.example/v1/chat/completions",
            "redirected (HTTP 308) to https://new.example/v1/chat/completions",
            ["pw-hidden", "user:"],
        ),
        (  # a signed URL, or one carrying a key: query values are hidden like user-info
            "302 Found",
            "https://new.example/v1/chat/completions?api_key=sk-topsecret&sig=abc123#frag",
            "to https://new.example/v1/chat/completions?api_key=***&sig=***",
            ["sk-topsecret", "abc123"],
        ),
    ],
    ids=["user-info", "query"],
)
async def test_a_redirect_says_where_to_without_secrets_and_is_not_followed(
    status: str, location: str, shown: str, secrets: list[str]
) -> None:
    raw = _response(status, {"location": location}, b"")
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url)
    message = one_error(turns)
    assert shown in message and "set base_url" in message
    assert not [secret for secret in secrets if secret in message]
    assert len(server.requests) == 1  # neither followed nor retried


async def test_an_error_body_that_trickles_is_reported_with_what_came(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(b"HTTP/1.1 503 Busy\r\ncontent-length: 100000\r\n\r\nupstream busy")
        while True:
            await trio.sleep(1)
            await conn.send(b".")

    async with raw_server(respond) as server:
        start = trio.current_time()
        turns = await run_turns(server.url, retry=NO_RETRY, first_token_timeout=60.0)
    message = one_error(turns)
    assert "HTTP 503" in message and "upstream busy" in message
    assert f"did not come within {ERROR_BODY_SECONDS:g}s" in message
    assert trio.current_time() - start == pytest.approx(ERROR_BODY_SECONDS, abs=0.01)


async def test_the_message_of_a_json_error_body_cut_at_the_limit_is_found() -> None:
    message = "The \u00e9 request is too large " + "x" * (10 * MiB)
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    raw = _response("400 Bad Request", {"content-type": "application/json"}, body)
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(server.url)
    shown = one_error(turns)
    assert "HTTP 400" in shown and ": The \u00e9 request is too large xxx" in shown
    assert '{"error"' not in shown and "the rest was not read" in shown
    assert len(shown) < 1000


# =========================================================================== review: secrets

KEY = "sk-proj-Zq8vN3xLw5RtY7uIo9pAs1dF"


def assert_no_key(text: str) -> None:
    assert KEY[:8] not in text, text  # not even its start (a cut message may end with one)


def _echo_401(conn: Conn) -> Awaitable[None]:
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}."}}).encode()
    headers = {"www-authenticate": f'Bearer realm="{KEY}"', "content-type": "application/json"}
    return conn.send(_response("401 Unauthorized", headers, body))


def _echo_in_a_long_400(conn: Conn) -> Awaitable[None]:
    # The key falls on the 300-character cut of the message.
    body = ("x" * 280 + f" {KEY} was refused").encode()
    return conn.send(_response("400 Bad Request", {}, body))


def _echo_in_the_stream(conn: Conn) -> Awaitable[None]:
    return conn.send(_sse(event({"error": {"message": f"key {KEY} is over its quota"}})))


def _echo_in_invalid_data(conn: Conn) -> Awaitable[None]:
    return conn.send(_sse(f"data: {{oops, your key is {KEY}\n\n".encode()))


def _echo_in_a_redirect(conn: Conn) -> Awaitable[None]:
    return conn.send(_response("302 Found", {"location": f"https://x.example/?key={KEY}"}, b""))


@pytest.mark.parametrize(
    "respond",
    [
        _echo_401,
        _echo_in_a_long_400,
        _echo_in_the_stream,
        _echo_in_invalid_data,
        _echo_in_a_redirect,
    ],
    ids=["401", "long-400", "stream-error", "invalid-data", "redirect"],
)
async def test_a_server_that_echoes_the_api_key_never_gets_it_shown(
    caplog: pytest.LogCaptureFixture, respond: Respond
) -> None:
    # (httpcore's DEBUG trace logs the response's headers as they came: not ours to change.)
    caplog.set_level(logging.DEBUG, logger="rustvani_trio")
    caplog.set_level(logging.INFO, logger="httpx")
    async with raw_server(respond) as server:
        turns = await run_turns(server.url, api_key=KEY, retry=NO_RETRY)
    (error,) = turns.errors
    assert "***" in error.error
    assert_no_key(error.error)
    assert_no_key(str(error.exception))
    for record in caplog.records:
        assert_no_key(record.getMessage())


async def test_header_and_secret_query_values_are_hidden_too() -> None:
    token = "portkey-7f3a9c2e1b"
    body = (
        f"bad headers: x-portkey-api-key={token} sig=sigsecret-42 api-version=2024-10-21, "
        "content type application/json, organization org-1234567890"
    )
    raw = _response("400 Bad Request", {}, body.encode())
    async with raw_server(functools.partial(_respond_with, raw=raw)) as server:
        turns = await run_turns(
            server.url,
            extra_headers={
                "x-portkey-api-key": token,
                "Content-Type": "application/json",
                "OpenAI-Organization": "org-1234567890",
            },
            extra_query={"sig": "sigsecret-42", "api-version": "2024-10-21"},
        )
    message = one_error(turns)
    assert token not in message and "sigsecret" not in message
    # Values whose names say nothing secret stay readable.
    assert "api-version=2024-10-21" in message
    assert "application/json" in message and "org-1234567890" in message


async def test_credentials_in_base_url_are_sent_as_basic_auth_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs every request's URL at INFO
    async with raw_server(functools.partial(_respond_with, raw=_sse(*text_stream("hi")))) as srv:
        url = srv.url.replace("http://", "http://proxy%20user:s3cret-pass@")
        turns = await run_turns(url, api_key="")
    assert turns.text == "hi" and turns.errors == []
    head = srv.requests[0].partition(b"\r\n\r\n")[0]
    assert b"Authorization: Basic cHJveHkgdXNlcjpzM2NyZXQtcGFzcw==" in head.split(b"\r\n")
    assert b"s3cret" not in srv.requests[0].split(b"\r\n", 1)[0]  # the request line
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert "s3cret" not in record.getMessage(), record.getMessage()


def test_credentials_in_base_url_and_a_bearer_key_are_refused_without_showing_either() -> None:
    url = "http://proxyuser:s3cret-pass@proxy.example/v1"
    with pytest.raises(ValueError, match="both would be the Authorization header") as info:
        OpenAILLMConfig(base_url=url, api_key=KEY)
    assert "s3cret" not in str(info.value) and KEY not in str(info.value)
    # Either alone works, and with auth_header="api-key" both are sent.
    config = OpenAILLMConfig(base_url=url, api_key=KEY, auth_header="api-key")
    assert config.headers()["api-key"] == KEY
    assert config.headers()["Authorization"].startswith("Basic ")
    assert config.request_url() == "http://proxy.example/v1/chat/completions"


async def test_a_tool_exception_with_a_huge_multi_line_message_is_shortened_and_escaped() -> None:
    registry = FunctionRegistry()

    def f(_args: str) -> str:
        raise RuntimeError(FORGED + "\n" + "y" * (10 * MiB))

    registry.register("f", f)
    first = [*tool_stream()]
    async with raw_server(functools.partial(_answer_in_turns, first=first)) as server:
        turns = await run_turns(server.url, registry=registry)
    message = one_error(turns)
    assert message.startswith("function 'f' (call call_1) failed: RuntimeError: bad request\\n")
    assert_safe(message)
    assert len(message) < 2000
    assert turns.text == "ok"


# =========================================================================== review: tool calls


def _calls_without_ids() -> list[bytes]:
    """Two calls without ids, their fragments out of index order (index 1 first)."""
    return [
        delta({"tool_calls": [{"index": 1, "function": {"name": "g", "arguments": '{"b"'}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":'}}]}),
        delta({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        delta({}, "tool_calls"),
        DONE,
    ]


def _call_ids(context: LLMContext) -> list[str]:
    return [c["id"] for m in context.messages if m.get("tool_calls") for c in m["tool_calls"]]


async def test_generated_tool_call_ids_are_unique_across_turns() -> None:
    got: list[str] = []
    registry = FunctionRegistry()
    registry.register("f", lambda args: got.append("f" + args) or "ok")
    registry.register("g", lambda args: got.append("g" + args) or "ok")

    async def respond(conn: Conn) -> None:
        await conn.stream_events(_calls_without_ids() if conn.index % 2 == 0 else text_stream("k"))

    context = new_context()
    async with raw_server(respond) as server:
        for _ in range(2):
            frames = [LLMContextFrame(context=context)]
            result = await run_test([make_llm(server.url, registry)], frames)
            assert result.upstream_of(ErrorFrame) == []
    # both calls ran in each turn (concurrently: the order they start in is trio's)
    assert sorted(got[:2]) == sorted(got[2:]) == ['f{"a":1}', 'g{"b":2}']
    ids = _call_ids(context)
    assert len(ids) == 4 and len(set(ids)) == 4
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids), ids
    results = [m["tool_call_id"] for m in context.messages if m["role"] == "tool"]
    assert results == ids


async def test_an_id_the_model_repeats_in_a_later_round_is_made_unique() -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda _args: "ok")
    call = {"index": 0, "id": "call_0", "function": {"name": "f", "arguments": "{}"}}
    twice = [delta({"tool_calls": [call, {**call, "index": 1}]}), delta({}, "tool_calls"), DONE]

    async def respond(conn: Conn) -> None:
        await conn.stream_events(twice if conn.index < 2 else text_stream("done"))

    context = new_context()
    async with raw_server(respond) as server:
        result = await run_test(
            [make_llm(server.url, registry)], [LLMContextFrame(context=context)]
        )
    assert result.upstream_of(ErrorFrame) == []
    assert _call_ids(context) == ["call_0", "call_0_2", "call_0_3", "call_0_4"]
    in_progress = [f.tool_call_id for f in result.downstream_of(FunctionCallInProgress)]
    assert in_progress == ["call_0", "call_0_2", "call_0_3", "call_0_4"]


async def test_a_rich_function_reports_an_error_naming_the_processor() -> None:
    registry = FunctionRegistry()

    async def f(params: FunctionCallParams) -> str:
        assert params.processor_name == LLM
        await params.push_error("the cache is stale")
        return "ok, from the stale cache"

    registry.register("f", f, rich=True)
    first = [*tool_stream()]
    async with raw_server(functools.partial(_answer_in_turns, first=first)) as server:
        turns = await run_turns(server.url, registry=registry)
    (error,) = turns.errors  # (run_turns keeps the errors that name the processor)
    assert error.error == "function 'f' (call call_1): the cache is stale"
    results = [f.result for f in turns.downstream if isinstance(f, FunctionCallResult)]
    assert results == ["ok, from the stale cache"] and turns.text == "ok"


async def test_reading_the_start_of_a_body_cut_into_single_bytes_stays_linear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rustvani_trio.services.llm import _body

    looked_at: list[int] = []
    verdict = _body._verdict

    def counting(head: bytes) -> bool | None:
        looked_at.append(len(head))
        return verdict(head)

    monkeypatch.setattr(_body, "_verdict", counting)
    blank = 20_000

    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD + b"".join(chunk(b"\n") for _ in range(blank)))
        await conn.send(b"".join(chunk(e) for e in text_stream("ok")) + LAST_CHUNK)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == [] and turns.text == "ok"
    assert sum(looked_at) < 50 * blank  # not the quadratic 2e8 of re-reading the whole head


async def test_a_byte_order_mark_cut_between_reads_is_no_reason_to_refuse_the_stream() -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD + chunk(b"\xef"))
        await trio.sleep(0.01)
        await conn.send(chunk(b"\xbb\xbf") + b"".join(chunk(e) for e in text_stream("ok")))
        await conn.send(LAST_CHUNK)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    assert turns.errors == [] and turns.text == "ok"


@pytest.mark.parametrize(
    ("base_url", "why"),
    [
        ("ws://127.0.0.1:9/v1", "must start with https://"),  # httpx went to port 80
        ("http://127.0.0.1:9/v1?api-version=1", "put query parameters in extra_query"),
        ("http://127.0.0.1:9/v1 ", "white space"),  # the path became '/v1 /chat/completions'
        ("http://127.0.0.1:99999/v1", "Port out of range"),  # retried as a connection error
    ],
    ids=["ws", "query", "trailing-space", "port"],
)
async def test_an_unusable_base_url_is_named_and_not_retried(
    autojump_clock: trio.testing.MockClock, base_url: str, why: str
) -> None:
    start = trio.current_time()
    turns = await run_turns(base_url, retry=RetryPolicy(max_attempts=3, initial_delay=1.0))
    (error,) = turns.errors
    shown = base_url.replace("=1", "=***")  # a query's values are hidden (they may be keys)
    assert f"invalid base_url {shown!r}: " in error.error and why in error.error
    assert isinstance(error.exception, LLMRequestError) and error.exception.kind == "config"
    assert trio.current_time() == start  # no retry


@pytest.mark.parametrize(
    "head",
    [SSE_HEAD, b"HTTP/1.1 500 Oops\r\ncontent-length: 1000\r\n\r\nupstream"],
    ids=["waiting-for-the-first-bytes", "reading-an-error-body"],
)
async def test_cancelling_a_request_before_its_body_is_judged_closes_the_connection(
    autojump_clock: trio.testing.MockClock, head: bytes
) -> None:
    closed = trio.Event()

    async def respond(conn: Conn) -> None:
        await conn.send(head)
        while await conn.stream.receive_some():  # until the client closes
            pass
        closed.set()

    async with raw_server(respond) as server:
        cfg = OpenAILLMConfig(base_url=server.url, api_key="sk-test")
        async with open_client(cfg) as client:
            with trio.move_on_after(2.0) as scope:  # an interruption, say
                await stream_answer(
                    client,
                    cfg,
                    {"model": "m", "messages": []},
                    Answer(),
                    emit=_ignore,
                    first_delta=_nothing,
                    http_timeouts=http_timeouts(cfg),
                )
            assert scope.cancelled_caught
            cancelled_at = trio.current_time()
            with trio.fail_after(1.0):
                await closed.wait()
    assert trio.current_time() - cancelled_at < 0.01


async def _ignore(_delta: object) -> None:
    pass


async def _nothing() -> None:
    pass


async def test_a_secret_in_base_urls_query_is_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    """base_url may not carry a query (extra_query is the place); the turn says so without
    showing the query's values, and neither does the config's repr."""
    caplog.set_level(logging.DEBUG)
    url = "http://127.0.0.1:9/v1?key=s3cret-value"
    assert "s3cret" not in repr(OpenAILLMConfig(base_url=url))
    turns = await run_turns(url)
    message = one_error(turns)
    assert "extra_query" in message and "s3cret" not in message
    for record in caplog.records:
        assert "s3cret" not in record.getMessage()


# =========================================================================== answer size


def _held_chars(decoder: ChatStreamDecoder) -> int:
    """The characters of answer the decoder holds (joined or not)."""
    result = decoder._result
    held = len(result.text) + len(result.reasoning or "") + len(result.refusal or "")
    held += sum(map(len, decoder._text_parts)) + sum(map(len, decoder._reasoning_parts))
    for call in decoder._calls:
        held += len(call.accum.arguments) + sum(map(len, call.parts))
    return held


def _argument_events(count: int, size: int) -> bytes:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    out = [delta({"tool_calls": [{**call, "function": {"name": "f", "arguments": '{"a": "'}}]})]
    piece = delta({"tool_calls": [{"index": 0, "function": {"arguments": "x" * size}}]})
    out += [piece] * count
    return b"".join(out)


def test_the_decoder_holds_no_more_than_max_answer_chars() -> None:
    decoder = ChatStreamDecoder(max_answer_chars=100_000)
    body = _argument_events(count=100, size=10_000)  # 1 M characters of arguments
    for start in range(0, len(body), 65536):
        decoder.feed(body[start : start + 65536])
    assert decoder.over_limit and decoder.ended
    assert _held_chars(decoder) <= 100_000 + 10_000  # the limit, and at most one more event
    decoder.feed(_argument_events(count=10, size=10_000))  # ignored once over
    assert _held_chars(decoder) <= 100_000 + 10_000


async def test_an_endless_tool_call_is_cut_at_max_answer_chars_and_never_run() -> None:
    size = 24 * MiB
    ran: list[str] = []
    registry = FunctionRegistry()
    registry.register("f", lambda args: ran.append(args) or "ok")

    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        events = _argument_events(count=size // 8192, size=8192)
        for start in range(0, len(events), 65536):
            await conn.send(chunk(events[start : start + 65536]))

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, registry=registry, max_answer_chars=1_000_000)
    (error,) = turns.errors
    assert "max_answer_chars=1000000" in error.error and not error.fatal
    assert isinstance(error.exception, LLMRequestError) and error.exception.kind == "protocol"
    assert ran == [] and len(server.requests) == 1  # not run, not retried
    assert not any(isinstance(f, FunctionCallInProgress) for f in turns.downstream)
    assert server.sent < size // 2  # the client stopped reading


async def test_endless_content_is_cut_at_max_answer_chars_and_what_was_shown_stays() -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        piece = chunk(delta({"content": "la " * 1000}))
        while True:
            await conn.send(piece)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, max_answer_chars=300_000)
    assert "max_answer_chars=300000" in one_error(turns)
    assert 290_000 <= len(turns.text) <= 300_000  # emitted up to the limit, then stopped
    assert turns.text.startswith("la la ")
    assert len(server.requests) == 1
    assert len(turns.stamp.times(LLMFullResponseEnd)) == 1  # the turn was closed


async def test_an_answer_within_max_answer_chars_is_not_cut() -> None:
    async with open_scripted_server() as server:
        server.add_reply(TextReply(["a" * 500, "b" * 500]))
        turns = await run_turns(server.base_url, max_answer_chars=1000)
    assert turns.errors == [] and len(turns.text) == 1000


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1000"])
def test_max_answer_chars_is_checked_where_the_config_is_built(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="max_answer_chars"):
        OpenAILLMConfig(max_answer_chars=bad)


# =========================================================================== drain vs next turn


async def test_a_draining_body_does_not_delay_the_next_turns_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    arrived: list[float] = []

    async def respond(conn: Conn) -> None:
        arrived.append(trio.current_time())
        await conn.stream_events(text_stream("Hi"), last_chunk=False)
        await trio.sleep(30)  # a proxy that keeps the body open after [DONE]

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, turns=3)
    ends = turns.stamp.times(LLMFullResponseEnd)
    assert turns.text == "HiHiHi" and turns.errors == []
    assert arrived[1] == ends[0] and arrived[2] == ends[1]


async def test_a_stall_after_many_tokens_is_reported_no_sooner_than_chunk_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The stall deadline follows the tokens (also those pushed under the running deadline,
    when the pipeline has room): the stall is reported ``chunk_timeout`` after the last one."""
    last: list[float] = []

    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD)
        for _ in range(10):
            await conn.send(chunk(delta({"content": "la "})))
            last.append(trio.current_time())
            await trio.sleep(1.5)  # under chunk_timeout, but more than its eighth
        await trio.sleep(300)

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, chunk_timeout=4.0, retry=NO_RETRY)
        ended = turns.stamp.times(LLMFullResponseEnd)[0]
    assert turns.text == "la " * 10
    assert "stalled" in one_error(turns)
    assert ended - last[-1] == pytest.approx(4.0)


async def test_usage_calibrates_the_context_from_the_estimate_of_the_request_sent() -> None:
    context = new_context()
    estimate = context.estimate_tokens(calibrated=False)
    usage = {"prompt_tokens": 3 * estimate, "completion_tokens": 1, "total_tokens": 1}

    async def respond(conn: Conn) -> None:
        events = text_stream("Hi")
        await conn.stream_events([*events[:-1], event({"choices": [], "usage": usage}), DONE])

    async with raw_server(respond) as server:
        llm = make_llm(server.url)
        await run_test([llm], [LLMContextFrame(context=context)])
    assert context.calibration_factor == 3.0
