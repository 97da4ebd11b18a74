"""Tests of the scripted OpenAI-compatible server (real httpx client over loopback).

These tests run in real time with small delays: under ``autojump_clock`` the virtual clock
may jump while loopback bytes are in flight.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from rustvani_trio.testing.server import (
    ErrorReply,
    RawReply,
    RecordedRequest,
    Reply,
    ScriptedServer,
    ScriptedToolCall,
    TextReply,
    ToolCallReply,
    Usage,
    open_scripted_server,
)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world."},
]


def chat_body(*, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": MESSAGES, "stream": stream, **extra}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with open_scripted_server() as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as c:
        yield c


def chat_url(server: ScriptedServer) -> str:
    return server.base_url + "/chat/completions"


def sse_data(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in raw.decode().split("\n") if line.startswith("data: ")]


async def stream_chat(
    client: httpx.AsyncClient, server: ScriptedServer, **extra: Any
) -> tuple[httpx.Response, list[bytes], list[str]]:
    """POST a streamed chat request; return the response, raw pieces and data payloads."""
    async with client.stream("POST", chat_url(server), json=chat_body(**extra)) as response:
        pieces = [piece async for piece in response.aiter_raw()]
    return response, pieces, sse_data(b"".join(pieces))


def deltas(datas: list[str]) -> list[dict[str, Any]]:
    return [
        json.loads(d)["choices"][0]["delta"]
        for d in datas
        if d != "[DONE]" and json.loads(d).get("choices")
    ]


# ---- text streaming -------------------------------------------------------------------------


async def test_text_streams_token_by_token(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    tokens = ["Hel", "lo", ", ", "wor", "ld"]
    server.add_reply(TextReply(tokens, token_delay=0.005))
    response, pieces, datas = await stream_chat(client, server)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    # Each event is its own write: with a delay between tokens they arrive separately.
    assert len(pieces) >= len(tokens)
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == "gpt-test" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert content == tokens
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    # No usage requested: no usage chunk, no usage field.
    assert all("usage" not in c for c in chunks)

    (request,) = await server.wait_for_requests(1)
    with trio.fail_after(1):
        await request.completed.wait()
    assert not request.disconnected.is_set()
    assert request.status == 200


async def test_usage_chunk_only_when_requested(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_replies(
        [
            TextReply(["a", "b", "c"]),
            TextReply(["a", "b", "c"]),
            TextReply(["x"], usage=Usage(prompt_tokens=7, completion_tokens=9)),
        ]
    )
    _, _, plain = await stream_chat(client, server)
    assert all(d == "[DONE]" or "usage" not in json.loads(d) for d in plain)

    options = {"stream_options": {"include_usage": True}}
    _, _, with_usage = await stream_chat(client, server, **options)
    assert with_usage[-1] == "[DONE]"
    usage_chunk = json.loads(with_usage[-2])
    assert usage_chunk["choices"] == []
    chars = sum(len(m["content"]) for m in MESSAGES)
    assert usage_chunk["usage"] == {
        "prompt_tokens": (chars + 3) // 4,
        "completion_tokens": 3,
        "total_tokens": (chars + 3) // 4 + 3,
    }
    # As with OpenAI, the other chunks carry "usage": null.
    assert all(json.loads(d)["usage"] is None for d in with_usage[:-2])

    _, _, explicit = await stream_chat(client, server, **options)
    assert json.loads(explicit[-2])["usage"]["total_tokens"] == 16


async def test_reasoning_deltas_come_first(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_reply(TextReply(["4"], reasoning=["2+2", " is 4"], include_role_chunk=False))
    _, _, datas = await stream_chat(client, server, stream_options={"include_usage": True})
    got = deltas(datas)
    assert got[:3] == [
        {"reasoning_content": "2+2"},
        {"reasoning_content": " is 4"},
        {"content": "4"},
    ]
    usage = json.loads(datas[-2])["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 2}


# ---- tool calls -----------------------------------------------------------------------------


async def test_tool_call_fragments_reassemble(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    weather_args = '{"city": "Paris", "unit": "celsius"}'
    server.add_reply(
        ToolCallReply(
            [
                ScriptedToolCall("get_weather", weather_args),
                ScriptedToolCall("get_time", {"tz": "Europe/Paris"}, id="call_fixed"),
            ],
            text_tokens=["Let me ", "check."],
            args_fragment_size=4,
            token_delay=0.001,
        )
    )
    _, _, datas = await stream_chat(client, server)
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    text = ""
    calls: dict[int, dict[str, Any]] = {}
    seen_order: list[int] = []
    for chunk in chunks[1:-1]:
        delta = chunk["choices"][0]["delta"]
        if "content" in delta:
            assert not calls, "text tokens stream before the calls"
            text += delta["content"]
            continue
        (fragment,) = delta["tool_calls"]
        index = fragment["index"]
        seen_order.append(index)
        if index not in calls:
            # First fragment: id, type, name, empty arguments.
            assert fragment["type"] == "function"
            assert fragment["function"]["arguments"] == ""
            calls[index] = {
                "id": fragment["id"],
                "name": fragment["function"]["name"],
                "arguments": "",
            }
        else:
            assert set(fragment) == {"index", "function"}
            assert set(fragment["function"]) == {"arguments"}
            assert len(fragment["function"]["arguments"]) <= 4
            calls[index]["arguments"] += fragment["function"]["arguments"]

    assert text == "Let me check."
    assert seen_order == sorted(seen_order)  # calls are sent one after the other
    assert calls[0] == {"id": "call_1", "name": "get_weather", "arguments": weather_args}
    assert calls[1]["id"] == "call_fixed"
    assert calls[1]["name"] == "get_time"
    assert json.loads(calls[1]["arguments"]) == {"tz": "Europe/Paris"}


async def test_non_streaming_completion(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    server.add_replies(
        [
            TextReply(["Hello", " there"], reasoning=["hmm"]),
            ToolCallReply([ScriptedToolCall("lookup", '{"q": 1}')]),
        ]
    )
    response = await client.post(chat_url(server), json=chat_body(stream=False))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello there",
        "reasoning_content": "hmm",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3

    body = (await client.post(chat_url(server), json=chat_body(stream=False))).json()
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": 1}'},
        }
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


# ---- errors and raw replies -----------------------------------------------------------------


async def test_error_reply_status_body_and_headers(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_reply(
        ErrorReply(
            429,
            "Rate limit reached",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": "2"},
        )
    )
    response = await client.post(chat_url(server), json=chat_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json() == {
        "error": {
            "message": "Rate limit reached",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


async def test_raw_reply_bytes_arrive_exactly(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    body = b'data: {"weird": true}\n\ndata: [DONE]\n\n' + bytes(range(256))
    sizes = [3, 10, 1, 20]
    server.add_reply(RawReply(body, chunk_sizes=sizes, delay_between_chunks=0.002, status=201))
    async with client.stream("POST", chat_url(server), json=chat_body()) as response:
        assert response.status_code == 201
        assert response.headers["content-type"] == "text/event-stream"
        pieces = [piece async for piece in response.aiter_raw()]
    assert b"".join(pieces) == body
    # HTTP chunks are never merged by the client: every scripted boundary is a boundary.
    received, pos = set(), 0
    for piece in pieces:
        pos += len(piece)
        received.add(pos)
    scripted, pos = set(), 0
    for size in sizes:
        pos += size
        scripted.add(pos)
    assert scripted <= received


# ---- connections, recording, scripting ------------------------------------------------------


async def test_keep_alive_reuses_one_connection(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_replies([TextReply(["a"]), ErrorReply(400, "bad"), TextReply(["b"])])
    for _ in range(2):
        await stream_chat(client, server)
    response = await client.post(chat_url(server), json=chat_body(stream=False))
    assert response.json()["choices"][0]["message"]["content"] == "b"
    requests = await server.wait_for_requests(3)
    assert [r.connection for r in requests] == [1, 1, 1]


async def test_callable_reply_sees_the_request(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    def agent(request: RecordedRequest) -> Reply:
        if any(m.get("role") == "tool" for m in request.messages):
            return TextReply(["It is ", "sunny."])
        return ToolCallReply([ScriptedToolCall("weather", "{}", id="call_w")])

    server.default_reply = agent
    body = (await client.post(chat_url(server), json=chat_body(stream=False))).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["id"] == "call_w"

    messages = [
        *MESSAGES,
        {"role": "assistant", "tool_calls": body["choices"][0]["message"]["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_w", "content": "sunny"},
    ]
    body = (await client.post(chat_url(server), json={"messages": messages, "model": "m"})).json()
    assert body["choices"][0]["message"]["content"] == "It is sunny."
    assert server.requests[1].reply == TextReply(["It is ", "sunny."])


async def test_failing_callable_gives_500(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise AssertionError("unexpected request")

    server.add_reply(broken)
    response = await client.post(chat_url(server), json=chat_body())
    assert response.status_code == 500
    assert "unexpected request" in response.json()["error"]["message"]


async def test_empty_queue_gives_500(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    server.add_reply(TextReply(["only one"]))
    await client.post(chat_url(server), json=chat_body(stream=False))
    response = await client.post(chat_url(server), json=chat_body())
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "scripted server: no reply left for request #2",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert server.pending_replies == 0


async def test_requests_are_recorded(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    server.add_reply(TextReply(["ok"]))
    await client.post(
        chat_url(server) + "?api-version=2024-01-01",
        json=chat_body(stream=False, temperature=0.5),
        headers={"Authorization": "Bearer sk-test", "X-Custom": "yes"},
    )
    (request,) = await server.wait_for_requests(1)
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.query == {"api-version": "2024-01-01"}
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-custom"] == "yes"
    assert request.json["temperature"] == 0.5
    assert request.messages == MESSAGES
    assert json.loads(request.body) == request.json
    assert not request.stream


async def test_models_unknown_paths_and_bad_json(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    models = (await client.get(server.base_url + "/models")).json()
    assert [m["id"] for m in models["data"]] == ["scripted-model"]

    response = await client.post(server.base_url + "/completions", json={})
    assert response.status_code == 404
    assert "unknown path" in response.json()["error"]["message"]

    response = await client.post(chat_url(server), content=b"{not json")
    assert response.status_code == 400
    assert server.requests[-1].json is None
    assert server.requests[-1].body == b"{not json"


async def test_x_script_overrides_the_queue(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_reply(TextReply(["queued"]))
    _, _, datas = await stream_chat(client, server, x_script={"tokens": 3, "token_delay": 0.001})
    assert [d.get("content") for d in deltas(datas)[1:-1]] == ["tok0 ", "tok1 ", "tok2 "]

    script = {"tool_call": {"name": "f", "arguments": {"x": 1}}}
    body = (
        await client.post(chat_url(server), json=chat_body(stream=False, x_script=script))
    ).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'

    response = await client.post(chat_url(server), json=chat_body(x_script={"tokens": "many"}))
    assert response.status_code == 400
    assert server.pending_replies == 1


# ---- faults and disconnects -----------------------------------------------------------------


async def test_client_closing_a_stalled_stream_is_noticed(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_reply(TextReply(["one", "two", "three"], stall_after=1))
    got: list[str] = []
    async with client.stream("POST", chat_url(server), json=chat_body()) as response:
        async for line in response.aiter_lines():
            if '"content":"one"' in line:
                got.append("one")
                break  # leaving the block closes the unfinished response (and its connection)
    assert got == ["one"]
    (request,) = await server.wait_for_requests(1)
    with trio.fail_after(5):
        await request.disconnected.wait()
    assert not request.completed.is_set()


async def test_cancelled_client_is_noticed_while_server_sleeps(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_reply(TextReply(["slow"] * 3, token_delay=30))
    with trio.move_on_after(0.05) as scope:
        async with client.stream("POST", chat_url(server), json=chat_body()) as response:
            async for _ in response.aiter_lines():
                pass
    assert scope.cancelled_caught
    (request,) = await server.wait_for_requests(1)
    with trio.fail_after(5):
        await request.disconnected.wait()


async def test_drop_after_ends_the_stream_early(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_replies([TextReply(["a", "b", "c", "d"], drop_after=2), TextReply(["next"])])
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", chat_url(server), json=chat_body()) as response:
            async for line in response.aiter_lines():
                lines.append(line)
    contents = [
        json.loads(line[6:])["choices"][0]["delta"].get("content")
        for line in lines
        if line.startswith("data: ")
    ]
    assert contents == ["", "a", "b"]  # role chunk, two tokens, then nothing
    (request,) = await server.wait_for_requests(1)
    assert request.completed.is_set()
    # The client recovers on a new connection.
    _, _, datas = await stream_chat(client, server)
    assert datas[-1] == "[DONE]"
    assert server.requests[1].connection == 2
    # Non-streamed: the connection closes without any response.
    server.add_reply(TextReply(["a"], drop_after=0))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(chat_url(server), json=chat_body(stream=False))


async def test_error_after_sends_an_error_event(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.add_replies(
        [
            TextReply(["a", "b", "c"], error_after=1, error_message="boom", error_code="oops"),
            TextReply(["a"], error_after=0),
            TextReply(["next"]),
        ]
    )
    response, _, datas = await stream_chat(client, server)
    assert response.status_code == 200
    assert "[DONE]" not in datas
    assert [d.get("content") for d in deltas(datas)] == ["", "a"]
    assert json.loads(datas[-1]) == {
        "error": {"message": "boom", "type": "server_error", "code": "oops"}
    }

    # Non-streamed: an HTTP 500 with the same error.
    response = await client.post(chat_url(server), json=chat_body(stream=False))
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"

    # The stream ended properly, so the connection is still good.
    _, _, datas = await stream_chat(client, server)
    assert datas[-1] == "[DONE]"
    assert {r.connection for r in server.requests} == {1}


async def test_server_stops_with_a_stalled_connection(client: httpx.AsyncClient) -> None:
    errors: list[BaseException] = []
    first_token = trio.Event()

    async def read_forever(url: str) -> None:
        try:
            async with client.stream("POST", url, json=chat_body()) as response:
                async for line in response.aiter_lines():
                    if "content" in line:
                        first_token.set()
        except httpx.HTTPError as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, open_scripted_server() as server:
            server.add_reply(TextReply(["x", "y"], stall_after=1))
            nursery.start_soon(read_forever, chat_url(server))
            await first_token.wait()
            # Leaving the server block (first) stops it: the stalled client sees its
            # connection end, and the nursery then waits for the reader to finish.
    assert len(errors) == 1
    assert isinstance(errors[0], httpx.RemoteProtocolError)


async def test_body_errors_are_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with open_scripted_server():
            raise KeyError("from the body")


async def test_serve_with_nursery_start_and_stop(client: httpx.AsyncClient) -> None:
    server = ScriptedServer(default_reply=TextReply(["hi"]), model="m1")
    with pytest.raises(RuntimeError):
        _ = server.base_url
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(server.serve)
        assert base_url == server.base_url == f"http://127.0.0.1:{server.port}/v1"
        for _ in range(2):  # the default reply is never consumed
            body = (await client.post(chat_url(server), json={"messages": []})).json()
            assert body["model"] == "m1"
            assert body["choices"][0]["message"]["content"] == "hi"
        server.stop()


async def raw_exchange(server: ScriptedServer, data: bytes, *, send_eof: bool = False) -> bytes:
    """Send raw bytes on a fresh connection; return everything received until EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(data)
        if send_eof:
            await stream.send_eof()
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                received += chunk
    return received


async def test_misbehaving_clients_do_not_break_the_server(
    server: ScriptedServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.default_reply = TextReply(["a", "b"])
    body = json.dumps(chat_body()).encode()

    garbage = await raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")

    truncated = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n{"
    assert await raw_exchange(server, truncated, send_eof=True) == b""

    # HTTP/1.0: no chunked encoding, the body ends when the server closes.
    http10 = b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%b"
    answer = await raw_exchange(server, http10 % (len(body), body))
    assert b"transfer-encoding" not in answer.lower()
    assert answer.endswith(b"data: [DONE]\n\n")

    # Two pipelined requests on one connection, the second asking to close.
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%b\r\n%b"
    pipelined = request % (len(body), b"", body) + request % (
        len(body),
        b"Connection: close\r\n",
        body,
    )
    answer = await raw_exchange(server, pipelined)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.endswith(b"0\r\n\r\n")

    # Still serving, and nothing worse than debug logs.
    _, _, datas = await stream_chat(client, server)
    assert datas[-1] == "[DONE]"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- clocks and real clients ----------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="relies on synchronous loopback delivery")
async def test_delays_follow_the_trio_clock(autojump_clock: trio.testing.MockClock) -> None:
    # In-process, the server sleeps with trio.sleep: under a MockClock scripted delays pass in
    # virtual time (on Linux, where loopback bytes are readable as soon as they are sent).
    async with (
        open_scripted_server() as server,
        httpx.AsyncClient(timeout=60, trust_env=False) as client,
    ):
        server.add_reply(TextReply(["a", "b", "c"], first_token_delay=10, token_delay=2))
        start = trio.current_time()
        arrivals = []
        async with client.stream("POST", chat_url(server), json=chat_body()) as response:
            async for line in response.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    arrivals.append(trio.current_time() - start)
        assert arrivals == [10, 12, 14]


@pytest.mark.skipif(
    importlib.util.find_spec("openai") is None,
    reason="the openai SDK comes with the bench extra, not the dev one",
)
async def test_openai_sdk_client(server: ScriptedServer) -> None:
    import openai

    server.add_replies(
        [
            ErrorReply(429, "slow down", headers={"Retry-After": "0"}),
            TextReply(["Hel", "lo"]),
            TextReply(["x", "y"], error_after=1),
        ]
    )
    async with httpx.AsyncClient(trust_env=False) as http_client:
        sdk = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="sk-test", http_client=http_client, max_retries=1
        )
        stream = await sdk.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "Hello"
        assert pieces[-1].usage.completion_tokens == 2
        with pytest.raises(openai.APIError, match="scripted stream error"):
            stream = await sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            async for _ in stream:
                pass
    assert [r.status for r in server.requests] == [429, 200, 200]
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"


# ---- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["rustvani_trio.testing", "rustvani_trio.testing.server"])
async def test_command_line_server(tmp_path: Path, client: httpx.AsyncClient, module: str) -> None:
    ready = tmp_path / "ready.txt"
    command = [
        sys.executable,
        "-m",
        module,
        "--port",
        "0",
        "--tokens",
        "5",
        "--token-delay",
        "0.001",
        "--ready-file",
        str(ready),
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with trio.fail_after(10):
            while not ready.exists():  # noqa: ASYNC110 - polling another process's file
                await trio.sleep(0.02)
        base_url = ready.read_text().strip()
        async with client.stream(
            "POST", base_url + "/chat/completions", json=chat_body()
        ) as response:
            raw = b"".join([piece async for piece in response.aiter_raw()])
        datas = sse_data(raw)
        assert [d.get("content") for d in deltas(datas)[1:-1]] == [f"tok{i} " for i in range(5)]
        assert datas[-1] == "[DONE]"
    finally:
        process.terminate()
        with trio.fail_after(5):
            await process.wait()
    outputs = []
    for pipe in (process.stdout, process.stderr):
        assert pipe is not None
        data = b""
        while chunk := await pipe.receive_some():
            data += chunk
        await pipe.aclose()
        outputs.append(data.decode())
    stdout, stderr = outputs
    assert stdout.splitlines() == [f"READY {base_url}"]
    assert "Traceback" not in stderr
    assert "Warning" not in stderr  # e.g. runpy's "found in sys.modules"
    if os.name == "posix":
        assert process.returncode == 0  # SIGTERM is handled: a clean exit


def test_command_line_refuses_bad_values() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rustvani_trio.testing", "--token-delay", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "token_delay must not be negative" in done.stderr
    assert "Traceback" not in done.stderr


def test_importing_the_server_changes_no_warnings_filter() -> None:
    # The command line lives in rustvani_trio.testing.__main__, so that nothing imports the
    # module that ``python -m`` runs: no process-wide warnings filter is needed to hide
    # runpy's "found in sys.modules" warning.
    code = (
        "import warnings; before = list(warnings.filters); "
        "import rustvani_trio.testing.server, rustvani_trio.testing; "
        "assert warnings.filters == before, warnings.filters[:3]"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("build", "error", "fragment"),
    [
        (lambda: TextReply(["a"], error_after=1.5), TypeError, "error_after must be an int"),
        (lambda: TextReply(["a"], drop_after=-1), ValueError, "drop_after must be at least 0"),
        (lambda: TextReply(["a"], stall_after=True), TypeError, "stall_after must be an int"),
        (lambda: TextReply(["a"], token_delay=float("nan")), TypeError, "token_delay"),
        (lambda: TextReply(["a"], first_token_delay=-0.1), ValueError, "first_token_delay"),
        (lambda: TextReply("ab"), TypeError, "not a single string"),
        (
            lambda: ToolCallReply([ScriptedToolCall("f")], args_fragment_size=0),
            ValueError,
            "args_fragment_size",
        ),
        (lambda: ToolCallReply(["f"]), TypeError, "expected ScriptedToolCall"),
        (lambda: ErrorReply(199, "x"), ValueError, "status must be at least 200"),
        (lambda: ErrorReply(1000, "x"), ValueError, "status"),
        (lambda: ErrorReply(429.0, "x"), TypeError, "status must be an int"),
        (lambda: RawReply(b"", status=101), ValueError, "status"),
        (lambda: RawReply(b"", chunk_sizes=[-1]), ValueError, "chunk sizes"),
        (lambda: RawReply(b"", delay_between_chunks=-1), ValueError, "delay_between_chunks"),
    ],
)
def test_reply_fields_are_checked_where_built(
    build: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        build()
