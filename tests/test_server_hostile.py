"""The scripted server against careless scripts and hostile clients (issue 9).

Users point their own tests at this server, so a bad reply is refused where it is built (not
when it is played, as a dropped connection and a traceback in the log), and no request, however
malformed, crashes a connection without an answer or hangs the server.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from rustvani_trio.testing import (
    ErrorReply,
    RawReply,
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    Usage,
    open_scripted_server,
)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with open_scripted_server(default_reply=TextReply(["a", "b"])) as srv:
        yield srv


async def exchange(server: ScriptedServer, data: bytes, *, eof: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; return everything received until it closes."""
    received = b""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(data)
            if eof:
                await stream.send_eof()
            while piece := await stream.receive_some(65536):
                received += piece
    return received


def post(body: bytes, *headers: bytes, length: int | None = None) -> bytes:
    """A POST to the chat path, asking to close the connection after the answer."""
    extra = b"".join(h + b"\r\n" for h in headers)
    size = len(body) if length is None else length
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n%b\r\n%b" % (size, extra, body)
    )


def error_of(answer: bytes) -> tuple[int, str]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["message"]


# --------------------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("build", "error", "fragment"),
    [
        # Each of these was accepted, then made the server drop the connection (h11 refused
        # to send it) with a traceback in the log, or sent something no client can read.
        (lambda: ErrorReply(204, "x"), ValueError, "status 204 cannot carry a body"),
        (lambda: ErrorReply(304, "x"), ValueError, "status 304 cannot carry a body"),
        (lambda: RawReply(b"x", status=205), ValueError, "status 205 cannot carry a body"),
        (
            lambda: ErrorReply(429, "x", headers={"Retry-After": "1\r\nX-Evil: 1"}),
            ValueError,
            "cannot be sent",
        ),
        (lambda: ErrorReply(429, "x", headers={"X-Mark": "\u2713"}), ValueError, "cannot be sent"),
        (lambda: ErrorReply(429, "x", headers={"Bad Name": "1"}), ValueError, "cannot be sent"),
        (
            lambda: ErrorReply(429, "x", headers={"Content-Length": "5"}),
            ValueError,
            "set by the server",
        ),
        (
            lambda: RawReply(b"x", headers={"transfer-encoding": "chunked"}),
            ValueError,
            "set by the server",
        ),
        (lambda: RawReply(b"x", content_type="text/plain\r\nX: y"), ValueError, "cannot be sent"),
        (lambda: ErrorReply(429, "x", headers={"Retry-After": 1}), TypeError, "map str to str"),  # type: ignore[dict-item]
        (lambda: RawReply("text"), TypeError, "body must be bytes"),  # type: ignore[arg-type]
        # ... or sent a value of the wrong JSON type
        (lambda: ScriptedToolCall(None), TypeError, "name must be a non-empty str"),  # type: ignore[arg-type]
        (lambda: ScriptedToolCall(""), TypeError, "name must be a non-empty str"),
        (lambda: ScriptedToolCall("f", id=5), TypeError, "id must be a non-empty str"),  # type: ignore[arg-type]
        (lambda: TextReply(["a"], finish_reason=None), TypeError, "finish_reason must be a str"),  # type: ignore[arg-type]
        (lambda: TextReply(["a"], error_message=3), TypeError, "error_message must be a str"),  # type: ignore[arg-type]
        (lambda: ErrorReply(500, None), TypeError, "message must be a str"),  # type: ignore[arg-type]
        (lambda: Usage("10", 1), TypeError, "prompt_tokens must be an int"),  # type: ignore[arg-type]
        # an empty list of calls streamed "tool_calls": [], which no provider sends
        (lambda: ToolCallReply([]), ValueError, "at least one call"),
        # a huge value in an error is cut short
        (lambda: TextReply(["a", b"x" * 10**6]), TypeError, r"expected strings, got b'xxx"),  # type: ignore[list-item]
    ],
)
def test_replies_refuse_what_the_server_could_not_send(
    build: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment) as info:
        build()
    assert len(str(info.value)) < 300


def test_reply_headers_are_a_read_only_copy() -> None:
    headers = {"Retry-After": "1"}
    reply = ErrorReply(429, "slow down", headers=headers)
    headers["Retry-After"] = "999"
    assert reply.headers == {"Retry-After": "1"}
    with pytest.raises(TypeError):
        reply.headers["Retry-After"] = "2"  # type: ignore[index]


# --------------------------------------------------------------------------- x_script


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ({"tokens": 10**7}, "tokens must be between 0 and 100,000"),  # built a 100 MB answer
        ({"tokens": -1}, "tokens must be between 0 and 100,000"),
        ({"token_dealy": 0.1}, "unknown x_script key(s) 'token_dealy'"),  # ignored before
        ({"tool_call": {"name": None}}, "name must be a non-empty str"),  # became "None"
        ({"tool_call": {"name": "f", "id": 5}}, "id must be a non-empty str"),  # a number id
        ({"tool_call": {"arguments": "{}"}}, "a tool_call needs a 'name'"),
        ({"tool_call": [1]}, "each tool_call must be an object, got int"),
        ({"tool_call": {"name": "f", "argument": "{}"}}, "unknown tool_call key(s) 'argument'"),
        ({"finish_reason": None}, "finish_reason must be a str"),  # became "None"
        ({"token_delay": "Infinity"}, "token_delay must be a number"),
    ],
)
async def test_x_script_errors_name_the_field(
    server: ScriptedServer, script: dict[str, Any], fragment: str
) -> None:
    answer = await exchange(server, post(json.dumps({"x_script": script}).encode()))
    status, message = error_of(answer)
    assert status == 400
    assert message.startswith("scripted server: invalid x_script: ")
    assert fragment in message


@pytest.mark.parametrize("number", [b"Infinity", b"-Infinity", b"NaN", b"1e999"])
async def test_x_script_refuses_non_finite_delays(server: ScriptedServer, number: bytes) -> None:
    body = b'{"stream": false, "x_script": {"tokens": 2, "token_delay": %b}}' % number
    with trio.fail_after(5):  # Infinity slept forever
        status, message = error_of(await exchange(server, post(body)))
    assert status == 400
    assert "token_delay must be a finite number" in message


async def test_x_script_errors_are_short(server: ScriptedServer) -> None:
    script = {"tokens": ["a", ["x" * 100_000]]}  # the error echoed the whole value
    answer = await exchange(server, post(json.dumps({"x_script": script}).encode()))
    status, message = error_of(answer)
    assert status == 400
    assert "expected strings, got ['xxxx" in message
    assert len(message) < 300


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # json.loads raised RecursionError: the connection was dropped without an answer and
        # the log had an ERROR with a traceback
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON (it nests too deeply)"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "it nests too deeply"),
        # these said only "not a JSON object"
        (b"{not json", "not valid JSON (Expecting property name"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "not valid JSON (Exceeds the limit"),
        (b"[1, 2]", "JSON but not an object (got list)"),
        (b"", "the request has no body"),
    ],
)
async def test_a_body_that_is_not_a_json_object_gets_a_400_saying_why(
    server: ScriptedServer, body: bytes, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, message = error_of(await exchange(server, post(body)))
    assert status == 400
    assert fragment in message
    assert len(message) < 400
    (record,) = server.requests
    if body == b"[1, 2]":
        assert (record.json, record.json_error) == ([1, 2], None)
    else:
        assert record.json is None
        assert (record.json_error is None) == (body == b"")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_framing_that_could_hang_or_flood_is_refused(server: ScriptedServer) -> None:
    body = b'{"stream": false}'
    # Content-Length and Transfer-Encoding together: h11 reads a chunked body, this one never
    # ends, and the request waited forever
    both = await exchange(server, post(body, b"Transfer-Encoding: chunked"))
    assert error_of(both) == (
        400,
        "bad request: the request has both Content-Length and Transfer-Encoding",
    )
    # a body over the cap is refused from its Content-Length, before it is read
    huge = await exchange(server, post(b"", length=10**12))
    assert error_of(huge)[0] == 413
    # ... and a chunked one as it grows
    chunk = b"x" * 1_000_000
    flood = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    flood += b"%x\r\n%b\r\n" % (len(chunk), chunk) * 40
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            # the server stops reading at the cap and closes: the rest cannot be sent (a
            # client still sending its body is reset before it can read the 413)
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(flood)
                await stream.send_eof()
                while await stream.receive_some():
                    pass
    assert server.requests == []
    # still serving
    answer = await exchange(server, post(body))
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_a_chunked_request_body_is_read(server: ScriptedServer) -> None:
    body = json.dumps({"stream": False, "messages": [{"role": "user", "content": "hi"}]})
    pieces = [body[:5], body[5:20], body[20:]]
    chunked = b"".join(b"%x\r\n%b\r\n" % (len(p), p.encode()) for p in pieces) + b"0\r\n\r\n"
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    answer = await exchange(server, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert server.requests[0].messages == [{"role": "user", "content": "hi"}]


async def test_a_client_leaving_mid_request_is_logged_as_such(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rustvani_trio.testing.server")
    partial = post(b'{"stream"', length=100)
    assert await exchange(server, partial, eof=True) == b""
    # the server logs before it closes the connection, which ended the exchange
    assert any("client left mid-request" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "bad request" in r.getMessage()]
    assert server.requests == []


async def test_an_async_reply_callable_is_refused_clearly(server: ScriptedServer) -> None:
    async def later(_request: Any) -> TextReply:
        return TextReply(["x"])

    with pytest.raises(TypeError, match="called synchronously"):
        server.add_reply(later)  # type: ignore[arg-type]
    # one hidden behind a plain callable is caught when it is called
    server.add_reply(lambda request: later(request))  # type: ignore[arg-type,return-value]
    with warnings.catch_warnings(record=True) as warned:  # no "coroutine ... never awaited"
        warnings.simplefilter("always")
        status, message = error_of(await exchange(server, post(b'{"stream": false}')))
        gc.collect()
    assert not [w for w in warned if "never awaited" in str(w.message)]
    assert status == 500
    assert "returned an awaitable: reply callables are called synchronously" in message


async def test_many_concurrent_and_pipelined_requests(server: ScriptedServer) -> None:
    body = json.dumps({"stream": True}).encode()
    keep = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
    pipelined = keep % (len(body), body) * 9 + post(body)
    answers: list[bytes] = []

    async def one_connection() -> None:
        answers.append(await exchange(server, pipelined))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one_connection)
    assert len(answers) == 20
    assert all(a.count(b"HTTP/1.1 200 OK") == 10 for a in answers)
    assert all(a.count(b"data: [DONE]") == 10 for a in answers)
    assert len(server.requests) == 200
    assert len({r.connection for r in server.requests}) == 20
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(server.base_url + "/models")
    assert response.status_code == 200


async def test_a_port_in_use_is_an_os_error_not_a_group(server: ScriptedServer) -> None:
    with pytest.raises(OSError, match="in use"):  # an ExceptionGroup around it before
        async with open_scripted_server(port=server.port):
            pass  # pragma: no cover


# --------------------------------------------------------------------------- empty replies, faults


def sse_events(answer: bytes) -> list[Any]:
    """The data of each SSE event of a chunked answer (``"[DONE]"`` as is)."""
    _, _, body = answer.partition(b"\r\n\r\n")
    text = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        if int(size, 16) == 0:
            break
        text += rest[: int(size, 16)]
        body = rest[int(size, 16) + 2 :]
    return [
        line[6:] if line == "data: [DONE]" else json.loads(line[6:])
        for line in text.decode().split("\n")
        if line.startswith("data: ")
    ]


async def test_a_reply_with_zero_tokens(server: ScriptedServer) -> None:
    server.add_replies([TextReply([]), TextReply([], include_role_chunk=False), TextReply([])])
    body = json.dumps({"stream": True, "stream_options": {"include_usage": True}}).encode()
    events = sse_events(await exchange(server, post(body)))
    assert [e if e == "[DONE]" else e["choices"] for e in events] == [
        [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
        [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
        [],
        "[DONE]",
    ]
    assert events[2]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    events = sse_events(await exchange(server, post(json.dumps({"stream": True}).encode())))
    assert len(events) == 2  # the finish chunk and [DONE]
    answer = await exchange(server, post(b'{"stream": false}'))
    completion = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"error_after": 0, "drop_after": 0}, "drop"),  # a tie: stall, then drop, then error
        # the smaller count wins, even past the end (both were clamped to 0: a tie, a drop)
        ({"error_after": 0, "drop_after": 5}, "error"),
        ({"error_after": 3, "drop_after": 5}, "error"),
        ({"error_after": 1, "drop_after": 0}, "drop"),
        ({"stall_after": 0, "drop_after": 0, "error_after": 0}, "stall"),
    ],
)
async def test_faults_on_a_reply_with_zero_tokens(
    server: ScriptedServer, faults: dict[str, int], expected: str
) -> None:
    server.add_reply(TextReply([], **faults))
    body = json.dumps({"stream": True}).encode()
    with trio.move_on_after(0.5) as waited:
        answer = await exchange(server, post(body))
    if expected == "stall":
        assert waited.cancelled_caught
        return
    assert not waited.cancelled_caught
    events = sse_events(answer)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if expected == "drop":
        assert len(events) == 1
        assert not answer.endswith(b"0\r\n\r\n")  # no end of the chunked body
    else:
        assert events[1]["error"]["message"] == "scripted stream error"
        assert len(events) == 2
        assert answer.endswith(b"0\r\n\r\n")
    with trio.fail_after(5):  # set once the server carried the fault out
        await server.requests[0].completed.wait()


# --------------------------------------------------------------------------- the command line


def test_the_command_line_reports_a_port_in_use_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rustvani_trio.testing.__main__ import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)], prog="serve") == 1  # an ExceptionGroup traceback
    err = capsys.readouterr().err
    assert err.startswith(f"serve: error: cannot serve on 127.0.0.1:{port}: [Errno 98]")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--port", "99999"], "a port is 0..65535, got 99999"),  # served on 34463
        (["--port", "-1"], "a port is 0..65535"),
        (["--ready-file", "/no/such/dir/ready"], "--ready-file: no directory"),  # traceback
    ],
)
def test_the_command_line_refuses_bad_options(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rustvani_trio.testing.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert fragment in capsys.readouterr().err


def test_a_port_out_of_range_is_refused_by_the_server_too() -> None:
    with pytest.raises(ValueError, match="port"):
        ScriptedServer(port=70000)
    with pytest.raises(TypeError, match="port must be an int"):
        ScriptedServer(port="80")  # type: ignore[arg-type]


async def test_pipelined_bytes_are_not_buffered_without_bound(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    # While a reply stalls, a client pipelines 40 MB more: h11 buffered it all before; now
    # more than one request of the largest size sent ahead ends the connection.
    server.add_reply(TextReply(["a"], stall_after=0))
    stalled = post(b'{"stream": true}').replace(b"Connection: close\r\n", b"")
    flood = post(b"{" + b" " * (10 * 1024 * 1024) + b"}") * 4
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(stalled)
            (request,) = await server.wait_for_requests(1)
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(flood)
            await request.disconnected.wait()
    assert "sent more than one request's worth of bytes ahead" in caplog.text
    assert len(server.requests) == 1
    assert (await exchange(server, post(b'{"stream": false}'))).startswith(b"HTTP/1.1 200 ")
