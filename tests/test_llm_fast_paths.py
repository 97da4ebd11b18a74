"""Hostile tests of the LLM handler's hot paths (9e8c2fd, 4223ce5, 0461077, 3d24de0).

* The body read from the transport's byte stream (``Body.next_chunk``) when it has no content
  encoding: transports that cut it anywhere, yield empty pieces, fail mid-body, hang (and are
  cancelled), iterators without ``aclose``; connection reuse; encodings that go through
  httpx's decoders.
* The SSE decoder's shortcut for a read that is one whole ``data:`` event, against the
  line-by-line path (the same bytes fed a byte at a time never take it).
* The chat decoder's shortcut for a ``{"content": str}`` delta, against ``_apply_choice``
  (the same delta with one more, ignored, key never takes it).
* The request body sent as pre-encoded bytes, against ``build_request``, through every way of
  editing a context, and the tool-call ids kept alongside it.

Transports are either ``httpx.MockTransport`` with a scripted ``AsyncByteStream`` or real HTTP
on loopback (the scripted server, or a raw one from ``test_hostile_endpoints``).
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import pickle
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from conftest import live
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_endpoints import SSE_HEAD, Conn, chunk, raw_server

from rustvani_trio._context.history import encode_json
from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.frames import (
    ErrorFrame,
    FunctionCallInProgress,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMText,
)
from rustvani_trio.services.llm._body import Body, Drains, check_response
from rustvani_trio.services.llm._chat_decoder import ChatStreamDecoder
from rustvani_trio.services.llm._chat_types import StreamDelta
from rustvani_trio.services.llm._sse import SSEDecoder, SSEProtocolError
from rustvani_trio.services.llm._stream import Answer, http_timeouts, stream_answer
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.services.llm.openai import (
    AfterRound,
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
    open_scripted_server,
    run_test,
)

LLM = "llm"
URL = "http://llm.test/v1"
SSE = {"content-type": "text/event-stream"}
NO_RETRY = RetryPolicy(max_attempts=1)
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.001, jitter=0.0)
BODY = b'{"model":"m","messages":[],"stream":true}'


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def delta(value: dict[str, Any], finish: str | None = None) -> bytes:
    return event({"choices": [{"index": 0, "delta": value, "finish_reason": finish}]})


ROLE = delta({"role": "assistant", "content": ""})
FINISH = delta({}, "stop")
DONE = b"data: [DONE]\n\n"


def answer_events(*tokens: str) -> list[bytes]:
    """A whole text answer, one event per piece: role, tokens, finish, [DONE]."""
    return [ROLE, *(delta({"content": t}) for t in tokens), FINISH, DONE]


# =========================================================================== transports


@attrs.define(eq=False)
class Script(httpx.AsyncByteStream):
    """A response body as a transport yields it: ``pieces`` in order. At position ``fail_at``
    (``len(pieces)``: after the last) it raises ``error`` instead of yielding; at ``hang_at``
    it waits for ever (``hanging`` is set then). Counts ``aclose`` calls and notes when its
    iteration was finalized (ended, failed or cancelled)."""

    pieces: Sequence[bytes]
    error: BaseException | None = None
    fail_at: int | None = None
    hang_at: int | None = None
    served: int = 0
    closes: int = 0
    finalized: bool = False
    hanging: trio.Event = attrs.Factory(trio.Event)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for index, piece in enumerate(self.pieces):
                if index == self.fail_at:
                    assert self.error is not None
                    raise self.error
                if index == self.hang_at:
                    self.hanging.set()
                    await trio.sleep_forever()
                await trio.lowlevel.checkpoint()
                self.served += 1
                yield piece
            if self.fail_at == len(self.pieces):
                assert self.error is not None
                raise self.error
        finally:
            self.finalized = True

    async def aclose(self) -> None:
        self.closes += 1


class _PlainIterator:
    """An async iterator that is no generator: no ``aclose``, no ``asend``."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = iter(pieces)

    def __aiter__(self) -> _PlainIterator:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        try:
            return next(self._pieces)
        except StopIteration:
            raise StopAsyncIteration from None


class PlainStream(httpx.AsyncByteStream):
    """A byte stream whose ``__aiter__`` returns a plain async iterator (not a generator)."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = pieces
        self.closes = 0

    def __aiter__(self) -> _PlainIterator:  # type: ignore[override]
        return _PlainIterator(self.pieces)

    async def aclose(self) -> None:
        self.closes += 1


@attrs.define(eq=False)
class Replies:
    """A MockTransport handler: request ``n`` gets ``responses[n]()``."""

    responses: Sequence[Callable[[], httpx.Response]]
    requests: list[httpx.Request] = attrs.Factory(list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses[len(self.requests) - 1]()


def sse_response(
    stream: httpx.AsyncByteStream, headers: dict[str, str] | None = None
) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(200, headers={**SSE, **(headers or {})}, stream=stream)


@attrs.define
class Outcome:
    texts: list[str]
    answer: Answer
    error: LLMRequestError | None


def config(base_url: str = URL, **overrides: Any) -> OpenAILLMConfig:
    return OpenAILLMConfig(base_url=base_url, api_key="sk-test", model="m", **overrides)


async def stream_over(
    client: httpx.AsyncClient, *, drains: Drains | None = None, base_url: str = URL, **cfg: Any
) -> Outcome:
    """One ``stream_answer`` call: what was emitted, the answer, the error if it raised one."""
    settings_ = config(base_url, **cfg)
    texts: list[str] = []

    async def emit(item: StreamDelta) -> None:
        texts.append(item.text)

    async def first() -> None:
        return None

    answer = Answer()
    try:
        await stream_answer(
            client,
            settings_,
            BODY,
            answer,
            emit=emit,
            first_delta=first,
            http_timeouts=http_timeouts(settings_),
            drains=drains,
        )
    except LLMRequestError as exc:
        return Outcome(texts, answer, exc)
    return Outcome(texts, answer, None)


def _llm(client: httpx.AsyncClient, **cfg: Any) -> Any:
    return OpenAILLMHandler(config(**cfg), http_client=client).into_processor(name=LLM)


@asynccontextmanager
async def mock_client(*responses: Callable[[], httpx.Response]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(Replies(responses))) as client:
        yield client


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _with_empties(pieces: list[bytes]) -> list[bytes]:
    return [b"", b"", *itertools.chain.from_iterable((piece, b"") for piece in pieces), b""]


TOKENS = ("Héllo", " 😊", " 世界", ' "q" \\', "\u2028!")
WHOLE = b"".join(answer_events(*TOKENS))
CUTS: dict[str, list[bytes]] = {
    "an-event-a-read": answer_events(*TOKENS),
    "one-read": [WHOLE],
    "a-byte-a-read": _bytewise(WHOLE),
    "empty-reads-between": _with_empties(answer_events(*TOKENS)),
    "empty-reads-then-a-byte-a-read": _with_empties(_bytewise(WHOLE)),
    "three-bytes-a-read": [WHOLE[i : i + 3] for i in range(0, len(WHOLE), 3)],
    "two-events-a-read": [b"".join(answer_events(*TOKENS)[i : i + 2]) for i in range(0, 8, 2)],
}


@pytest.mark.parametrize("encoding", [None, "identity", "IDENTITY", " Identity ", ""])
@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
async def test_any_cut_of_an_unencoded_body_gives_the_same_answer(
    cut: str, encoding: str | None
) -> None:
    stream = Script(CUTS[cut])
    headers = {} if encoding is None else {"content-encoding": encoding}
    async with mock_client(sse_response(stream, headers)) as client:
        outcome = await stream_over(client)
    assert outcome.error is None
    assert outcome.texts == list(TOKENS)
    assert outcome.answer.result.text == "".join(TOKENS)
    assert outcome.answer.result.done and outcome.answer.emitted == len(TOKENS)
    assert stream.closes >= 1  # closed (no drains: nothing reads the rest)


async def test_thousands_of_events_in_one_read_come_out_whole_and_in_order() -> None:
    tokens = [f"t{i} " for i in range(20_000)]
    stream = Script([b"".join(answer_events(*tokens))])
    async with mock_client(sse_response(stream)) as client:
        outcome = await stream_over(client)
    assert outcome.error is None and outcome.texts == tokens


async def test_one_read_holding_an_event_past_the_limit_is_a_protocol_error() -> None:
    huge = delta({"content": "x" * (4 * 1024 * 1024 + 1)})
    stream = Script([ROLE + delta({"content": "ok"}) + huge + FINISH + DONE])
    async with mock_client(sse_response(stream)) as client:
        outcome = await stream_over(client)
    assert outcome.error is not None and outcome.error.kind == "protocol"
    assert "longer than 4194304 characters" in str(outcome.error)
    assert stream.closes >= 1


@pytest.mark.parametrize("cut", ["one-read", "a-byte-a-read", "empty-reads-between"])
async def test_a_transport_iterator_without_aclose_is_read_and_closed(cut: str) -> None:
    stream = PlainStream(CUTS[cut])
    async with mock_client(sse_response(stream)) as client:
        outcome = await stream_over(client)
    assert outcome.error is None and outcome.texts == list(TOKENS)
    assert stream.closes >= 1


async def test_a_body_over_a_plain_iterator_without_the_client_layer() -> None:
    # What Body does with a response whose stream is not httpx's BoundAsyncStream: the
    # iterator has no aclose, which closing the body must not need.
    stream = PlainStream([*_with_empties(_bytewise(WHOLE[:40])), WHOLE[40:]])
    response = httpx.Response(200, headers=SSE, stream=stream)
    body = Body(response)
    await check_response(body, config())
    pieces = [body.take_head()]
    assert body.take_head() == b""  # taken once
    while True:
        try:
            pieces.append(await body.next_chunk())
        except StopAsyncIteration:
            break
    assert b"".join(pieces) == WHOLE
    await body.aclose()
    assert response.is_closed and stream.closes == 1


async def test_a_drain_reads_what_next_chunk_left_and_closes() -> None:
    stream = Script(answer_events("a", "b") + [b": trailing comment\n\n"] * 3)
    response = httpx.Response(200, headers=SSE, stream=stream)
    body = Body(response)
    await check_response(body, config())
    assert body.take_head() == ROLE
    assert await body.next_chunk() == delta({"content": "a"})
    async with trio.open_nursery() as nursery:
        drains = Drains(nursery)
        drains.start(body)
        assert drains.pending == 1
    assert drains.pending == 0
    assert stream.served == len(stream.pieces) and stream.finalized
    assert response.is_closed and stream.closes >= 1


@attrs.define(eq=False)
class EmptyReads(httpx.AsyncByteStream):
    """``pieces``, then an empty read every half second for ever (a transport that wakes
    with nothing: no byte, so no progress)."""

    pieces: Sequence[bytes]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece
        while True:
            await trio.sleep(0.5)
            yield b""


@pytest.mark.parametrize(
    ("pieces", "texts", "words"),
    [
        ([ROLE, delta({"content": "a"})], ["a"], "no content from the server for 4.0s"),
        ([ROLE], [], "no first token within first_token_timeout=6.0s"),
    ],
    ids=["after-a-token", "before-the-first-token"],
)
async def test_empty_reads_are_no_progress(
    autojump_clock: trio.testing.MockClock, pieces: list[bytes], texts: list[str], words: str
) -> None:
    async with mock_client(sse_response(EmptyReads(pieces))) as client:
        start = trio.current_time()
        outcome = await stream_over(client, chunk_timeout=4.0, first_token_timeout=6.0)
        elapsed = trio.current_time() - start
    assert outcome.error is not None and outcome.error.kind == "timeout"
    assert words in str(outcome.error) and outcome.texts == texts
    assert elapsed == pytest.approx(6.0 if not texts else 4.0, abs=0.01)


async def test_a_body_that_ends_at_its_head_without_finishing_is_cut_short() -> None:
    stream = Script([ROLE + delta({"content": "half"})])  # one read, then the end
    replies = Replies([sse_response(stream)])
    async with httpx.AsyncClient(transport=httpx.MockTransport(replies)) as client:
        result = await run_test(
            [_llm(client, retry=FAST_RETRY)],
            [LLMContextFrame(context=LLMContext([{"role": "user", "content": "hi"}]))],
        )
    assert "".join(f.text for f in result.downstream_of(LLMText)) == "half"
    (error,) = [e for e in result.upstream_of(ErrorFrame) if e.processor == LLM]
    assert isinstance(error.exception, LLMRequestError) and error.exception.kind == "protocol"
    assert "ended before it was complete" in error.error
    assert len(replies.requests) == 1 and stream.closes >= 1


# --------------------------------------------------------------------------- failures


ERRORS = {
    "ReadError": lambda: httpx.ReadError("boom"),
    "RemoteProtocolError": lambda: httpx.RemoteProtocolError("peer closed the connection"),
}
PIECES = answer_events("a", "b")  # role, a, b, finish, [DONE]


@pytest.mark.parametrize("name", list(ERRORS))
@pytest.mark.parametrize(
    ("fail_at", "emitted"),
    [(0, []), (1, []), (2, ["a"]), (3, ["a", "b"])],
    ids=["in-the-head", "after-the-role", "after-content", "before-the-finish"],
)
async def test_a_transport_failing_before_the_finish_is_a_connection_error(
    name: str, fail_at: int, emitted: list[str]
) -> None:
    error = ERRORS[name]()
    stream = Script(PIECES, error=error, fail_at=fail_at)
    async with mock_client(sse_response(stream)) as client:
        outcome = await stream_over(client)
    assert outcome.error is not None
    assert outcome.error.kind == "connection" and outcome.error.retryable
    assert str(outcome.error) == f"connection to {URL} failed: {name}: {error}"
    assert outcome.error.__cause__ is error
    assert outcome.texts == emitted and outcome.answer.emitted == len(emitted)
    assert stream.closes >= 1


@pytest.mark.parametrize("name", list(ERRORS))
async def test_a_transport_failing_after_the_finish_reason_leaves_the_answer(name: str) -> None:
    stream = Script(PIECES, error=ERRORS[name](), fail_at=4)  # [DONE] never comes
    async with mock_client(sse_response(stream)) as client:
        outcome = await stream_over(client)
    assert outcome.error is None and outcome.texts == ["a", "b"]
    assert outcome.answer.result.finish_reason == "stop" and not outcome.answer.result.done
    assert stream.closes >= 1


@pytest.mark.parametrize("name", list(ERRORS))
async def test_a_transport_failing_after_done_fails_only_the_drain(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="rustvani_trio")
    stream = Script(PIECES, error=ERRORS[name](), fail_at=len(PIECES))
    async with mock_client(sse_response(stream)) as client, trio.open_nursery() as nursery:
        drains = Drains(nursery)
        outcome = await stream_over(client, drains=drains)
    assert outcome.error is None and outcome.texts == ["a", "b"] and outcome.answer.result.done
    assert drains.pending == 0 and stream.closes >= 1
    assert f"reading the end of a finished body failed ({name})" in caplog.text


async def test_an_error_from_a_gzip_body_mid_stream_is_a_connection_error() -> None:
    # The encoded path (aiter_bytes) fails the same way as the direct one.
    packed = gzip.compress(b"".join(PIECES))
    stream = Script([packed[:20], packed[20:40]], error=httpx.ReadError("boom"), fail_at=2)
    async with mock_client(sse_response(stream, {"content-encoding": "gzip"})) as client:
        outcome = await stream_over(client)
    assert outcome.error is not None and outcome.error.kind == "connection"
    assert str(outcome.error) == f"connection to {URL} failed: ReadError: boom"


async def test_a_failure_before_anything_was_emitted_is_retried_once_over() -> None:
    first = Script(PIECES, error=httpx.ReadError("boom"), fail_at=1)  # only the role came
    second = Script(answer_events("fine"))
    replies = Replies([sse_response(first), sse_response(second)])
    async with httpx.AsyncClient(transport=httpx.MockTransport(replies)) as client:
        result = await run_test(
            [_llm(client, retry=FAST_RETRY)],
            [LLMContextFrame(context=LLMContext([{"role": "user", "content": "hi"}]))],
        )
    assert result.upstream_of(ErrorFrame) == []
    assert "".join(f.text for f in result.downstream_of(LLMText)) == "fine"
    assert len(replies.requests) == 2
    assert replies.requests[0].content == replies.requests[1].content  # encoded once
    assert first.closes >= 1 and second.closes >= 1


@pytest.mark.parametrize("name", list(ERRORS))
async def test_a_failure_after_content_is_reported_not_retried(name: str) -> None:
    stream = Script(PIECES, error=ERRORS[name](), fail_at=3)
    replies = Replies([sse_response(stream)])
    async with httpx.AsyncClient(transport=httpx.MockTransport(replies)) as client:
        result = await run_test(
            [_llm(client, retry=FAST_RETRY)],
            [LLMContextFrame(context=LLMContext([{"role": "user", "content": "hi"}]))],
        )
    assert "".join(f.text for f in result.downstream_of(LLMText)) == "ab"  # not repeated
    assert len(replies.requests) == 1
    (error,) = [e for e in result.upstream_of(ErrorFrame) if e.processor == LLM]
    assert isinstance(error.exception, LLMRequestError)
    assert error.exception.kind == "connection"
    assert error.error == f"LLM request failed: connection to {URL} failed: {name}: " + str(
        ERRORS[name]()
    )


# --------------------------------------------------------------------------- encodings


def _gzip_pieces(data: bytes, size: int) -> list[bytes]:
    packed = gzip.compress(data)
    return [packed[i : i + size] for i in range(0, len(packed), size)]


@pytest.mark.parametrize(
    ("encoding", "pieces"),
    [
        ("gzip, identity", _gzip_pieces(WHOLE, 5)),
        ("identity, gzip", _with_empties(_gzip_pieces(WHOLE, 1))),
        ("GZIP", _gzip_pieces(WHOLE, 4096)),
        ("x-unknown", [WHOLE[:9], WHOLE[9:]]),  # httpx leaves unknown encodings as they are
        ("identity, identity", _bytewise(WHOLE)),
    ],
)
async def test_bodies_through_httpx_decoders_give_the_same_answer(
    encoding: str, pieces: list[bytes]
) -> None:
    stream = Script(pieces)
    async with mock_client(sse_response(stream, {"content-encoding": encoding})) as client:
        outcome = await stream_over(client)
    assert outcome.error is None and outcome.texts == list(TOKENS)
    assert stream.closes >= 1


async def test_a_br_label_goes_to_httpx_which_decides() -> None:
    from httpx._decoders import SUPPORTED_DECODERS

    if "br" in SUPPORTED_DECODERS:  # pragma: no cover - brotli installed: it would decode
        pytest.skip("brotli is installed: a br body would be decoded")
    stream = Script([WHOLE])
    async with mock_client(sse_response(stream, {"content-encoding": "br"})) as client:
        outcome = await stream_over(client)
    assert outcome.error is None and outcome.texts == list(TOKENS)


async def test_a_deflate_body_broken_mid_stream_is_a_protocol_error() -> None:
    packer = zlib.compressobj()
    good = packer.compress(b"".join(PIECES[:3])) + packer.flush(zlib.Z_SYNC_FLUSH)
    stream = Script([good, b"\x00garbage" * 8])
    async with mock_client(sse_response(stream, {"content-encoding": "deflate"})) as client:
        outcome = await stream_over(client)
    assert outcome.error is not None and outcome.error.kind == "protocol"
    assert outcome.texts == ["a", "b"]


# --------------------------------------------------------------------------- cancellation


async def test_cancelling_a_read_of_the_transport_stream_closes_it() -> None:
    stream = Script(PIECES, hang_at=2)
    async with mock_client(sse_response(stream)) as client:
        outcomes: list[Outcome] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                outcomes.append(await stream_over(client))

            nursery.start_soon(run)
            with trio.fail_after(5):
                await stream.hanging.wait()
            nursery.cancel_scope.cancel()
    assert outcomes == []  # cancelled, not an error
    assert stream.finalized  # the cancellation went through the transport's iterator
    assert stream.closes >= 1  # and the response was closed


async def test_cancelling_a_read_on_a_socket_closes_the_connection() -> None:
    hung = trio.Event()
    peer_closed = trio.Event()

    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD + chunk(ROLE) + chunk(delta({"content": "a"})))
        hung.set()
        while await conn.stream.receive_some():  # until the client goes away
            pass
        peer_closed.set()

    async with raw_server(respond) as server, httpx.AsyncClient() as client:
        texts: list[str] = []
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                texts.extend((await stream_over(client, base_url=server.url)).texts)

            nursery.start_soon(run)
            with trio.fail_after(5):
                await hung.wait()
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):
            await peer_closed.wait()  # not left open in the pool


async def test_an_interrupted_answer_closes_its_connection_and_the_next_uses_a_new_one() -> None:
    context = LLMContext([{"role": "user", "content": "hi"}])
    async with open_scripted_server() as server:
        server.add_replies(
            [TextReply([f"w{i} " for i in range(500)], token_delay=0.01), TextReply(["next"])]
        )
        async with httpx.AsyncClient() as client:
            llm = OpenAILLMHandler(config(server.base_url), http_client=client).into_processor(
                name=LLM
            )
            async with live([llm], limit=20) as run:
                await run.send(LLMContextFrame(context=context))
                await run.wait_until(lambda: len(run.downstream_of(LLMText)) >= 3, limit=5)
                await run.send(InterruptionFrame())
                with trio.fail_after(5):
                    await server.requests[0].disconnected.wait()
                await run.send(LLMContextFrame(context=context))
                await run.wait_down(LLMFullResponseEnd)
    assert [r.connection for r in server.requests] == [1, 2]
    assert run.downstream_of(LLMText)[-1].text == "next"


# --------------------------------------------------------------------------- connection reuse


async def test_answers_read_to_done_give_their_connection_back() -> None:
    async with (
        open_scripted_server(default_reply=TextReply(["a", "b"])) as server,
        httpx.AsyncClient() as client,
        trio.open_nursery() as nursery,
    ):
        drains = Drains(nursery)
        for _ in range(3):
            outcome = await stream_over(client, drains=drains, base_url=server.base_url)
            assert outcome.error is None and outcome.texts == ["a", "b"]
    assert [r.connection for r in server.requests] == [1, 1, 1]


async def test_a_body_that_ends_at_the_head_read_gives_its_connection_back() -> None:
    # One write holds the whole body: the head read takes all of it, [DONE] included.
    body = b"".join(answer_events("all", " at once"))
    async with (
        open_scripted_server(default_reply=RawReply(body)) as server,
        httpx.AsyncClient() as client,
        trio.open_nursery() as nursery,
    ):
        drains = Drains(nursery)
        for _ in range(2):
            outcome = await stream_over(client, drains=drains, base_url=server.base_url)
            assert outcome.error is None and outcome.texts == ["all", " at once"]
    assert [r.connection for r in server.requests] == [1, 1]


async def test_a_tool_round_and_its_answer_share_a_connection() -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda _args: "ok")
    async with open_scripted_server() as server:
        server.add_replies(
            [ToolCallReply([ScriptedToolCall("f", '{"x": 1}')]), TextReply(["done"])] * 2
        )
        handler = OpenAILLMHandler.with_registry(config(server.base_url), registry)
        context = LLMContext([{"role": "user", "content": "hi"}])
        result = await run_test(
            [handler.into_processor(name=LLM)],
            [LLMContextFrame(context=context), LLMContextFrame(context=context)],
        )
    assert result.upstream_of(ErrorFrame) == []
    assert [r.connection for r in server.requests] == [1, 1, 1, 1]


async def test_after_a_broken_body_the_next_request_takes_a_new_connection() -> None:
    async with open_scripted_server() as server:
        server.add_replies([TextReply(["a", "b", "c"], drop_after=2), TextReply(["ok"])])
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            drains = Drains(nursery)
            broken = await stream_over(client, drains=drains, base_url=server.base_url)
            whole = await stream_over(client, drains=drains, base_url=server.base_url)
    assert broken.error is not None and broken.error.kind == "connection"
    assert broken.texts == ["a", "b"]
    assert whole.error is None and whole.texts == ["ok"]
    assert [r.connection for r in server.requests] == [1, 2]


# --------------------------------------------------------------------------- regressions


async def _read_in_hook(response: httpx.Response) -> None:
    await response.aread()  # what httpx's docs say a hook must do to see the body


async def _read_errors_in_hook(response: httpx.Response) -> None:
    if response.is_error:
        await response.aread()  # e.g. to log the error body


async def test_a_shared_client_whose_response_hook_reads_the_body() -> None:
    async with (
        open_scripted_server(default_reply=TextReply(["a", "b"])) as server,
        httpx.AsyncClient(event_hooks={"response": [_read_in_hook]}) as client,
    ):
        with trio.fail_after(10):
            outcome = await stream_over(client, base_url=server.base_url, first_token_timeout=1.0)
    assert outcome.error is None and outcome.texts == ["a", "b"]


async def test_a_shared_client_whose_response_hook_reads_an_error_body() -> None:
    reply = ErrorReply(status=401, message="Incorrect API key provided")
    async with open_scripted_server(default_reply=reply) as server:
        hooks = {"response": [_read_errors_in_hook]}
        async with httpx.AsyncClient(event_hooks=hooks) as client:
            with trio.fail_after(10):
                outcome = await stream_over(
                    client, base_url=server.base_url, first_token_timeout=1.0
                )
    assert outcome.error is not None and outcome.error.kind == "http"
    assert outcome.error.status == 401 and "Incorrect API key" in str(outcome.error)


async def test_an_error_mid_body_keeps_its_request() -> None:
    async def respond(conn: Conn) -> None:
        await conn.send(SSE_HEAD + chunk(ROLE) + chunk(delta({"content": "a"})) + b"5\r\nab")

    async with raw_server(respond) as server, httpx.AsyncClient() as client:
        outcome = await stream_over(client, base_url=server.url)
    assert outcome.error is not None and outcome.error.kind == "connection"
    cause = outcome.error.__cause__
    assert isinstance(cause, httpx.RemoteProtocolError)
    assert str(cause.request.url) == server.url + "/chat/completions"


# =========================================================================== SSE framing


_ATOMS = [
    "data:",
    "data: ",
    "data:[DONE]",
    "event: e",
    "event: error",
    "id: 7",
    "id: \x00",
    "retry: 15",
    "retry: x",
    ": ping",
    ":",
    "\n",
    "\n",
    "\n\n",
    "\r",
    "\r\n",
    " ",
    "x",
    "é",
    "😊",
    "\ufeff",
    "\x00",
    '{"a":1}',
]


def _state(decoder: SSEDecoder) -> tuple[Any, ...]:
    return (decoder.comments, decoder.last_event_id, decoder.retry)


def _decode(pieces: Sequence[bytes], **kwargs: Any) -> tuple[Any, ...]:
    decoder = SSEDecoder(**kwargs)
    events = [e for piece in pieces for e in decoder.feed_raw(piece)] + decoder.close_raw()
    return events, _state(decoder)


@settings(max_examples=300, deadline=None)
@given(
    atoms=st.lists(st.sampled_from(_ATOMS), max_size=40),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    typed=st.booleans(),
)
def test_any_reads_decode_as_a_byte_at_a_time(
    atoms: list[str], cuts: list[int], typed: bool
) -> None:
    data = "".join(atoms).encode()
    bounds = sorted({c for c in cuts if c <= len(data)} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    expected = _decode(_bytewise(data), typed_without_data=typed)
    assert _decode([data], typed_without_data=typed) == expected
    assert _decode(pieces, typed_without_data=typed) == expected


_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=12,
)
_READ = st.one_of(
    st.builds("data: {}\n\n".format, _VALUE),  # the shortcut
    st.builds("data:{}\n\n".format, _VALUE),  # the shortcut, no space
    st.builds("\ufeffdata: {}\n\n".format, _VALUE),  # a BOM (only the stream's first counts)
    st.builds("data: {}\r\n\r\n".format, _VALUE),
    st.builds("data: {}\r".format, _VALUE),  # a CR that the next read's LF may complete
    st.builds("\ndata: {}\n\n".format, _VALUE),
    st.builds(": {}\ndata: x\n\n".format, _VALUE),
    st.builds("data: {}\n".format, _VALUE),  # an event left open
    st.builds("data: {}".format, _VALUE),  # a line left open
    st.builds("event: {}\n".format, _VALUE),
    st.builds("id: {}\n".format, _VALUE),
    st.just("\n"),
    st.just("data: [DONE]\n\n"),
)


@settings(max_examples=300, deadline=None)
@given(reads=st.lists(_READ, min_size=1, max_size=12))
def test_whole_event_reads_mixed_with_others_decode_as_a_byte_at_a_time(
    reads: list[str],
) -> None:
    pieces = [read.encode() for read in reads]
    assert _decode(pieces) == _decode(_bytewise(b"".join(pieces)))


@pytest.mark.parametrize("size", [9, 10, 11])
@pytest.mark.parametrize("space", ["", " "])
def test_the_shortcut_and_the_line_path_refuse_the_same_events(size: int, space: str) -> None:
    value = "é" * size
    alone = f"data:{space}{value}\n\n".encode()  # one whole event: the shortcut
    after_a_comment = b": c\n" + alone  # the same event, line by line

    def outcome(data: bytes) -> object:
        try:
            return SSEDecoder(max_event_chars=10).feed_raw(data)
        except SSEProtocolError as exc:
            return str(exc)

    assert outcome(alone) == outcome(after_a_comment)
    if size > 10:
        assert outcome(alone) == (
            "an SSE event longer than 10 characters; the stream was abandoned"
        )
    else:
        assert outcome(alone) == [("message", value, None)]


def test_the_limit_does_not_depend_on_how_the_reads_are_cut() -> None:
    data = b"data: " + b"x" * 10 + b"\n\n"

    def outcome(pieces: list[bytes]) -> object:
        try:
            return _decode(pieces, max_event_chars=10)
        except SSEProtocolError:
            return "refused"

    assert outcome([data[:12], data[12:]]) == outcome([data])


# =========================================================================== chat chunks


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _VALUE,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_VALUE, inner, max_size=2),
    max_leaves=4,
)
_CONTENT = st.one_of(_VALUE, st.just(""), _JSON)
_FINISH = st.sampled_from([None, "stop", "", 0, False, "length"])
_INDEX = st.sampled_from(["absent", 0, 1, None, False, 0.0, "0"])
_ONE_KEY = st.one_of(
    st.builds(lambda v: {"content": v}, _CONTENT),
    st.builds(lambda v: {"reasoning_content": v}, _CONTENT),
    st.builds(lambda v: {"reasoning": v}, _CONTENT),
    st.builds(lambda v: {"refusal": v}, _CONTENT),
    st.builds(lambda v: {"role": v}, _CONTENT),
    st.builds(
        lambda i, a: {"tool_calls": [{"index": 0, "id": i, "function": {"arguments": a}}]},
        _VALUE,
        _VALUE,
    ),
    _JSON,  # any delta at all
)


def _choice(delta_: Any, finish: Any, index: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"delta": delta_, "finish_reason": finish}
    if index != "absent":
        choice["index"] = index
    return choice


def _padded(choice: dict[str, Any]) -> dict[str, Any]:
    """The same choice with a delta the shortcut never takes (one more key, ignored)."""
    delta_ = choice["delta"]
    if isinstance(delta_, dict):
        return {**choice, "delta": {**delta_, "x_ignored": 1}}
    return choice


def _decoded(chunks: list[dict[str, Any]]) -> tuple[Any, ...]:
    decoder = ChatStreamDecoder()
    deltas = []
    for item in chunks:
        deltas.append([(type(d).__name__, d.text) for d in decoder.feed(event(item))])
    result = decoder.result
    return (
        deltas,
        result.text,
        result.reasoning,
        result.refusal,
        result.finish_reason,
        [(c.index, c.id, c.name, c.arguments) for c in result.tool_calls],
        result.chunks,
        decoder.progress,
        decoder.chars,
        decoder.finished,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(
        st.lists(st.tuples(_ONE_KEY, _FINISH, _INDEX), min_size=1, max_size=3), max_size=5
    )
)
def test_a_one_key_delta_decodes_as_the_general_rules_say(
    chunks: list[list[tuple[Any, Any, Any]]],
) -> None:
    plain = [{"choices": [_choice(*c) for c in choices]} for choices in chunks]
    padded = [{"choices": [_padded(_choice(*c)) for c in choices]} for choices in chunks]
    assert _decoded(plain) == _decoded(padded)


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ('"\\ud83d\\ude00"', "\U0001f600"),  # a pair, escaped
        ('"a\\ud800b"', "a\ufffdb"),  # a lone surrogate
        ('"\\udfff"', "\ufffd"),
    ],
)
def test_escaped_surrogates_in_a_content_only_delta(escaped: str, text: str) -> None:
    raw = '{"choices":[{"index":0,"delta":{"content":' + escaped + "}}]}"
    decoder = ChatStreamDecoder()
    (item,) = decoder.feed(f"data: {raw}\n\n".encode())
    assert item.text == text and decoder.result.text == text
    text.encode()  # valid Unicode: no lone surrogate got through


def test_content_deltas_within_and_past_max_answer_chars() -> None:
    decoder = ChatStreamDecoder(max_answer_chars=5)
    assert [d.text for d in decoder.feed(delta({"content": "abc"}))] == ["abc"]
    assert [d.text for d in decoder.feed(delta({"content": "de"}))] == ["de"]  # exactly 5
    assert not decoder.over_limit
    assert decoder.feed(delta({"content": "f"})) == []  # the event past the limit: not emitted
    assert decoder.over_limit and decoder.ended
    assert decoder.feed(delta({"content": "g"})) == []  # and nothing after it is taken
    assert decoder.result.text == "abcdef"  # (it holds the limit and one event at most)


# =========================================================================== request bodies


def _handler(**cfg: Any) -> OpenAILLMHandler:
    return OpenAILLMHandler(config("http://127.0.0.1:9/v1", **cfg))


def _ids_of(context: LLMContext) -> set[str]:
    ids: set[str] = set()
    for message in context.messages:
        ids.update(call["id"] for call in message.get("tool_calls") or ())
        if "tool_call_id" in message:
            ids.add(message["tool_call_id"])
    return ids


def _check_body(handler: OpenAILLMHandler, context: LLMContext, tool_choice: Any = None) -> None:
    sent = handler._request_content(context, tool_choice)
    assert sent == encode_json(handler.build_request(context, tool_choice=tool_choice)).encode()
    assert json.loads(sent)["messages"] == json.loads(json.dumps(list(context.messages)))
    assert context._tool_call_ids() == _ids_of(context)


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=16)
_CALL_ID = st.sampled_from(["call_0", "call_1", "call_0_2", "c\u00e9", "😊"])
_MESSAGE = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, _TEXT),
    st.builds(lambda t: {"role": "assistant", "content": t}, _TEXT),
    st.builds(lambda t: {"role": "developer", "content": t}, _TEXT),
    st.builds(
        lambda t: {"role": "user", "content": [{"type": "text", "text": t}]},
        _TEXT,
    ),
    st.builds(
        lambda i, a: {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "f", "arguments": a}}
            ],
        },
        _CALL_ID,
        _TEXT,
    ),
    st.builds(lambda i, t: {"role": "tool", "tool_call_id": i, "content": t}, _CALL_ID, _TEXT),
)
_OPERATION = st.one_of(
    st.tuples(st.just("add"), _MESSAGE),
    st.tuples(st.just("add_many"), st.lists(_MESSAGE, max_size=3)),
    st.tuples(st.just("user"), _TEXT),
    st.tuples(st.just("assistant"), _TEXT, st.booleans()),
    st.tuples(st.just("tool"), _CALL_ID, _TEXT),
    st.tuples(st.just("insert"), st.integers(-20, 20), _MESSAGE),
    st.tuples(st.just("replace"), st.integers(-20, 20), _MESSAGE, st.booleans()),
    st.tuples(st.just("remove"), st.integers(-20, 20)),
    st.tuples(st.just("set"), st.lists(_MESSAGE, max_size=4)),
    st.tuples(st.just("system"), st.one_of(st.none(), _TEXT)),
    st.tuples(st.just("round"), _CALL_ID, _TEXT, st.booleans()),
    st.tuples(st.just("trim"), st.integers(1, 200)),
    st.tuples(
        st.just("copy"),
    ),
    st.tuples(
        st.just("deepcopy"),
    ),
    st.tuples(
        st.just("pickle"),
    ),
    st.tuples(
        st.just("tools"), st.lists(st.sampled_from(["f", "g", "h é"]), max_size=3, unique=True)
    ),
    st.tuples(st.just("choice"), st.sampled_from([None, "auto", "none", "required"])),
    st.tuples(
        st.just("request"),
    ),  # no change: the cache is read again
)


def _edit(context: LLMContext, operation: tuple[Any, ...]) -> LLMContext | None:
    """Apply ``operation``; return a new context when it makes one (a copy)."""
    kind, *args = operation
    n = context.message_count
    if kind == "add":
        context.add_message(args[0])
    elif kind == "add_many":
        context.add_messages(args[0])
    elif kind == "user":
        context.add_user_message(args[0])
    elif kind == "assistant":
        context.add_assistant_message(args[0], interrupted=args[1])
    elif kind == "tool":
        context.add_tool_message(args[0], args[1])
    elif kind == "insert" and -n <= args[0] <= n:
        context.insert_message(args[0], args[1])
    elif kind == "replace" and n and -n <= args[0] < n:
        context.replace_message(args[0], args[1], interrupted=args[2])
    elif kind == "remove" and n and -n <= args[0] < n:
        context.remove_message(args[0])
    elif kind == "set":
        context.set_messages(args[0])
    elif kind == "system":
        context.system_prompt = args[0]
    elif kind == "round":
        call_id, result, commit = args
        with context.begin_round() as staged:
            staged.set_assistant(
                None,
                [{"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            )
            staged.add_tool_result(call_id, result)
            _check_body(_handler(), context)  # staged content is never sent
            if commit:
                staged.commit()
    elif kind == "trim":
        context.trim(args[0], budget=1.0)
    elif kind == "tools":
        context.set_tools(
            [FunctionSchema(name=name.replace(" ", "_"), description=name) for name in args[0]]
        )
    elif kind == "choice":
        context.set_tool_choice(args[0])
    elif kind == "copy":
        return context.copy()
    elif kind == "deepcopy":
        return copy.deepcopy(context)
    elif kind == "pickle":
        return pickle.loads(pickle.dumps(context))
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    operations=st.lists(st.tuples(st.integers(0, 3), _OPERATION), max_size=30),
    initial=st.lists(_MESSAGE, max_size=4),
)
def test_the_body_sent_is_build_requests_through_every_edit(
    operations: list[tuple[int, tuple[Any, ...]]], initial: list[dict[str, Any]]
) -> None:
    # Several live contexts (copies, pickles): each edit goes to one of them, and every one is
    # checked after every edit, so that a cache shared between a context and its copy, or one
    # left stale by an edit, would show as a body that is not build_request's.
    handler = _handler(temperature=0.5, extra_body={"x_tag": "é😊"}, include_usage=False, seed=3)
    handler.registry.register(
        "f", lambda _a: "ok", schema=FunctionSchema(name="f", description="d")
    )
    contexts = [LLMContext(initial)]
    for target, operation in operations:
        context = contexts[target % len(contexts)]
        made = _edit(context, operation)
        if made is not None:
            contexts.append(made)
        for each in contexts:
            _check_body(handler, each, tool_choice="auto" if target == 3 else None)


def test_a_long_history_edited_at_both_ends_and_in_the_middle() -> None:
    handler = _handler()
    context = LLMContext([{"role": "system", "content": "sys"}])
    for turn in range(300):
        context.add_messages(
            [
                {"role": "user", "content": f"question {turn} é😊"},
                {"role": "assistant", "content": f"answer {turn}"},
            ]
        )
        if turn % 37 == 0:
            _check_body(handler, context)
    _check_body(handler, context)
    context.insert_message(1, {"role": "user", "content": "early"})
    _check_body(handler, context)
    context.remove_message(300)
    context.replace_message(-1, {"role": "assistant", "content": "last, again"})
    _check_body(handler, context)
    context.add_user_message("and then")
    _check_body(handler, context)
    removed = context.trim(500)
    assert removed > 0
    _check_body(handler, context)
    context.system_prompt = None
    context.add_assistant_message("after the trim", interrupted=True)
    _check_body(handler, context)
    assert len(json.loads(handler._request_content(context, None))["messages"]) == (
        context.message_count
    )


def test_a_copy_and_its_original_do_not_share_what_they_derived() -> None:
    handler = _handler()
    call = {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    original = LLMContext([{"role": "user", "content": "hi"}])
    _check_body(handler, original)  # the original's cache is warm
    twin = original.copy()
    original.add_messages(
        [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": "ok"},
        ]
    )
    twin.add_user_message("only in the copy")
    for context in (original, twin, copy.copy(original), pickle.loads(pickle.dumps(twin))):
        _check_body(handler, context)
    assert original._tool_call_ids() == {"call_0"} and twin._tool_call_ids() == set()
    ids = original._tool_call_ids()
    ids.add("mine")  # a copy: changing it changes nothing
    assert original._tool_call_ids() == {"call_0"}


def test_one_message_appended_by_add_message_is_caught_up_with() -> None:
    context = LLMContext([{"role": "user", "content": f"m{i}"} for i in range(50)])
    context._request_messages_json()  # derived from all 50
    history = context._entries
    context.add_assistant_message("one more")
    assert history._upto == 50  # what was derived is kept: only the new message is joined


# --------------------------------------------------------------------------- over HTTP


async def test_every_request_of_a_conversation_carries_build_requests_bytes() -> None:
    # A transition hook edits the context through each public method between tool rounds;
    # what it leaves is what the next request must carry, byte for byte.
    registry = FunctionRegistry()
    registry.register("f", lambda _args: 'ok "é" 😊')
    handler = OpenAILLMHandler.with_registry(config("http://127.0.0.1:9/v1"), registry)
    expected: list[bytes] = []
    edits: list[Callable[[LLMContext], None]] = [
        lambda c: (
            setattr(c, "system_prompt", 'Réponds 🙂 \u2028 \x00 "q" \\'),
            c.add_user_message("emoji 👩\u200d👩\u200d👧 and 𝄞"),
        ),
        lambda c: (
            c.insert_message(1, {"role": "user", "content": "inserted"}),
            c.replace_message(1, {"role": "user", "content": "replaced ✓"}),
        ),
        lambda c: (c.remove_message(1), setattr(c, "system_prompt", None)),
        lambda c: c.set_messages([*c.messages, {"role": "user", "content": "set again"}]),
        lambda c: c.add_messages(
            [{"role": "assistant", "content": "aside"}, {"role": "user", "content": "more"}]
        ),
    ]

    def hook(context: LLMContext) -> AfterRound | None:
        edits[len(expected)](context)
        expected.append(encode_json(handler.build_request(context)).encode())
        return None

    handler.set_transition_hook(hook)
    context = LLMContext([{"role": "user", "content": "start ☃"}])
    first = encode_json(handler.build_request(context)).encode()
    async with open_scripted_server() as server:
        handler.config = config(server.base_url, max_tool_rounds=len(edits) + 1)
        server.add_replies(
            [ToolCallReply([ScriptedToolCall("f", {"n": i})]) for i in range(len(edits))]
        )
        server.add_reply(TextReply(["done"]))
        result = await run_test(
            [handler.into_processor(name=LLM)], [LLMContextFrame(context=context)]
        )
    assert result.upstream_of(ErrorFrame) == []
    assert [r.body for r in server.requests] == [first, *expected]
    assert server.requests[-1].headers["content-type"] == "application/json"
    assert len(server.requests[-1].body) == int(server.requests[-1].headers["content-length"])


async def test_the_last_request_past_max_tool_rounds_carries_tool_choice_none() -> None:
    registry = FunctionRegistry()
    registry.register("f", lambda _args: "ok", schema=FunctionSchema(name="f", description="d"))
    context = LLMContext([{"role": "user", "content": "go"}], tool_choice="required")
    async with open_scripted_server() as server:
        handler = OpenAILLMHandler.with_registry(
            config(server.base_url, max_tool_rounds=1), registry
        )
        server.add_replies([ToolCallReply([ScriptedToolCall("f")]), TextReply(["done"])])
        await run_test([handler.into_processor(name=LLM)], [LLMContextFrame(context=context)])
    last = server.requests[-1].body
    assert last == encode_json(handler.build_request(context, tool_choice="none")).encode()
    assert json.loads(last)["tool_choice"] == "none"


async def test_a_round_rolled_back_by_an_interruption_is_not_sent() -> None:
    started = trio.Event()

    async def stuck(_args: str) -> str:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    registry = FunctionRegistry()
    registry.register("f", stuck)
    handler = OpenAILLMHandler.with_registry(config("http://127.0.0.1:9/v1"), registry)
    context = LLMContext([{"role": "user", "content": "hi"}])
    async with open_scripted_server() as server:
        handler.config = config(server.base_url)
        server.add_replies(
            [ToolCallReply([ScriptedToolCall("f", id="call_0")]), TextReply(["after"])]
        )
        async with live([handler.into_processor(name=LLM)], limit=20) as run:
            await run.send(LLMContextFrame(context=context))
            with trio.fail_after(5):
                await started.wait()
            await run.send(InterruptionFrame())
            await run.send(LLMContextFrame(context=context))
            await run.wait_until(lambda: len(server.requests) == 2, limit=5)
            await run.wait_until(
                lambda: any(f.text == "after" for f in run.downstream_of(LLMText)), limit=5
            )
    assert context.open_round is None
    assert [m["role"] for m in context.messages] == ["user"]  # no call without its result
    assert context._tool_call_ids() == set()
    assert server.requests[1].body == encode_json(handler.build_request(context)).encode()


async def test_a_context_trimmed_to_its_window_is_sent_as_trimmed() -> None:
    context = LLMContext([{"role": "system", "content": "sys"}])
    for i in range(200):
        context.add_user_message(f"question {i} " + "word " * 20)
        context.add_assistant_message(f"answer {i}")
    _check_body(_handler(), context)  # a warm cache, for the trim to invalidate
    async with open_scripted_server(default_reply=TextReply(["ok"])) as server:
        handler = OpenAILLMHandler(config(server.base_url, context_window_tokens=2000))
        result = await run_test(
            [handler.into_processor(name=LLM)], [LLMContextFrame(context=context)]
        )
    assert result.upstream_of(ErrorFrame) == []
    assert context.message_count < 401
    (request,) = server.requests
    assert request.body == encode_json(handler.build_request(context)).encode()


# =========================================================================== tool-call ids


def _call_ids(context: LLMContext) -> list[str]:
    return [c["id"] for m in context.messages if m.get("tool_calls") for c in m["tool_calls"]]


async def test_ids_stay_unique_when_a_hook_replaces_the_history_between_rounds() -> None:
    # The server numbers its calls from call_0 in every answer (twice in one answer, too).
    # After the first round the hook replaces the whole history with one that already holds
    # call_0_3: the ids kept alongside the history must follow the replacement.
    registry = FunctionRegistry()
    registry.register("f", lambda _args: "ok")
    handler = OpenAILLMHandler.with_registry(config("http://127.0.0.1:9/v1"), registry)
    foreign = {"id": "call_0_3", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    rounds = 0

    def hook(context: LLMContext) -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            context.set_messages(
                [
                    *context.messages,
                    {"role": "assistant", "content": None, "tool_calls": [foreign]},
                    {"role": "tool", "tool_call_id": "call_0_3", "content": "old"},
                ]
            )

    handler.set_transition_hook(hook)
    twice = ToolCallReply(
        [ScriptedToolCall("f", id="call_0"), ScriptedToolCall("f", '{"b": 2}', id="call_0")]
    )
    context = LLMContext([{"role": "user", "content": "go"}])
    async with open_scripted_server() as server:
        handler.config = config(server.base_url)
        server.add_replies([twice, twice, TextReply(["done"])])
        result = await run_test(
            [handler.into_processor(name=LLM)], [LLMContextFrame(context=context)]
        )
    assert result.upstream_of(ErrorFrame) == []
    ids = _call_ids(context)
    assert ids == ["call_0", "call_0_2", "call_0_3", "call_0_4", "call_0_5"]
    in_progress = [f.tool_call_id for f in result.downstream_of(FunctionCallInProgress)]
    assert in_progress == ["call_0", "call_0_2", "call_0_4", "call_0_5"]
    results = [m["tool_call_id"] for m in context.messages if m["role"] == "tool"]
    assert results == ids
    context.validate()


async def test_an_id_of_a_rolled_back_round_may_be_used_again() -> None:
    # A round that never reached the context holds no id: the next answer's call_0 is kept.
    context = LLMContext([{"role": "user", "content": "go"}])
    with context.begin_round() as staged:
        staged.set_assistant(
            None,
            [{"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        )
        assert context._tool_call_ids() == set()
    registry = FunctionRegistry()
    registry.register("f", lambda _args: "ok")
    async with open_scripted_server() as server:
        handler = OpenAILLMHandler.with_registry(config(server.base_url), registry)
        server.add_replies(
            [ToolCallReply([ScriptedToolCall("f", id="call_0")]), TextReply(["done"])]
        )
        result = await run_test(
            [handler.into_processor(name=LLM)], [LLMContextFrame(context=context)]
        )
    assert result.upstream_of(ErrorFrame) == []
    assert _call_ids(context) == ["call_0"]
