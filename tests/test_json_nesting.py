"""Hostile JSON on the LLM's fast path (the decoder's own scanner call), in error
bodies and in tool-call arguments.

JSON nested too deeply makes ``json.loads`` (and the scanner, and ``mend_surrogates`` on what
they decoded) raise ``RecursionError``, and an integer past Python's digit limit a plain
``ValueError`` (no ``JSONDecodeError``). Each must become the error of its place (a protocol
error, a server message shown as text, an error result for the model), never an exception
that fails the turn as "the turn failed: RecursionError".
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_hostile_endpoints import (
    DONE,
    NO_RETRY,
    Conn,
    delta,
    raw_server,
    run_turns,
    text_stream,
)

from rustvani_trio.services.llm._chat_decoder import ChatStreamDecoder
from rustvani_trio.services.llm._errors import LLMRequestError, not_a_stream_error, server_message
from rustvani_trio.services.llm._sse import SSEEvent, SSEProtocolError
from rustvani_trio.services.llm.function_registry import FunctionRegistry
from rustvani_trio.services.llm.openai import OpenAILLMConfig

DEEP = 100_000


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


# --------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize(
    "data",
    [
        '{"choices":' + nested(DEEP) + "}",
        '{"choices":' + nested(DEEP) + "} ",  # (through json.loads again)
        " " + nested(DEEP),
        '{"choices":[' + nested(DEEP // 2),  # cut short as well
    ],
)
def test_a_payload_nested_too_deeply_is_a_protocol_error(data: str) -> None:
    with pytest.raises(SSEProtocolError, match=r"is not valid JSON \(it nests too deeply\)"):
        ChatStreamDecoder().feed_event(SSEEvent(data=data))


@pytest.mark.parametrize("depth", [300, 600, 900])
def test_a_nested_payload_with_a_surrogate_escape_is_mended_or_refused(depth: int) -> None:
    """The scanner decodes it; mending its lone surrogate walks it recursively."""
    data = (
        '{"x":' + nested(depth, '"\\ud800"') + ',"choices":[{"index":0,"delta":{"content":"a"}}]}'
    )
    decoder = ChatStreamDecoder()
    try:
        deltas = decoder.feed_event(SSEEvent(data=data))
    except SSEProtocolError as exc:
        assert "nests too deeply" in str(exc)
    else:
        assert [d.text for d in deltas] == ["a"]  # type: ignore[union-attr]


def test_an_error_event_nested_too_deeply_is_reported_with_its_text() -> None:
    decoder = ChatStreamDecoder()
    data = '{"error":' + nested(DEEP) + "}"
    assert decoder.feed_event(SSEEvent(data=data, event="error")) == []
    error = decoder.result.error
    assert error is not None
    assert error.message == data


@pytest.mark.parametrize(
    "data",
    [
        '{"a":1} x',
        '{"a":1}{}',
        "{",
        "{ garbage",
        '{"a":NaN,"b":Infinity,"c":-Infinity}',
        '{"a":1,"a":2}',
        '{"a":"\\ud800"}',
        '{"a":' + "9" * 5000 + "}",  # past int's digit limit: a ValueError, not a decode error
        '{"a":1e999}',
        "\ufeff{}",
        "  {}  ",
        '"text"',
        "[1]",
        "null",
    ],
)
def test_the_decoders_verdict_is_json_loads(data: str) -> None:
    """Whatever ``json.loads`` says of a payload (its value or its error message), the decoder
    says too (as before its own scanner call)."""
    try:
        expected: Any = json.loads(data)
    except ValueError as exc:
        with pytest.raises(SSEProtocolError, match="is not valid JSON") as info:
            ChatStreamDecoder().feed_event(SSEEvent(data=data))
        assert f"({exc})" in str(info.value)
        return
    decoder = ChatStreamDecoder()
    if isinstance(expected, dict):
        assert decoder.feed_event(SSEEvent(data=data)) == []
        assert decoder.result.chunks == 1
    else:
        with pytest.raises(SSEProtocolError, match="is not a JSON object"):
            decoder.feed_event(SSEEvent(data=data))


# --------------------------------------------------------------------------- error bodies


def test_an_error_body_nested_too_deeply_is_shown_as_text() -> None:
    body = b'{"error":' + nested(DEEP).encode() + b"}"
    shown = server_message(body)
    assert shown.startswith('{"error":[[[')


def test_a_200_body_nested_too_deeply_says_what_it_is() -> None:
    cfg = OpenAILLMConfig(base_url="http://127.0.0.1:1/v1", api_key="sk-test", model="gpt-4.1")
    body = b'{"error":' + nested(DEEP).encode() + b"}"
    error = not_a_stream_error("application/json", body, cfg)
    assert isinstance(error, LLMRequestError)
    assert error.kind == "protocol"
    assert "a JSON error instead of an event stream" in str(error)


async def test_an_http_error_nested_too_deeply_is_an_http_error() -> None:
    body = b'{"error":' + nested(DEEP).encode() + b"}"

    async def respond(conn: Conn) -> None:
        await conn.send(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    (error,) = turns.errors
    assert isinstance(error.exception, LLMRequestError)
    assert error.exception.kind == "http"


async def test_a_stream_nested_too_deeply_is_a_protocol_error() -> None:
    async def respond(conn: Conn) -> None:
        bad = b'data: {"choices":' + nested(DEEP).encode() + b"}\n\n"
        await conn.stream_events([bad, DONE])

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, retry=NO_RETRY)
    (error,) = turns.errors
    assert isinstance(error.exception, LLMRequestError)
    assert error.exception.kind == "protocol"
    assert "nests too deeply" in error.error


# --------------------------------------------------------------------------- tool arguments


def _tool_answer(arguments: str) -> list[bytes]:
    call = {"index": 0, "id": "call_1", "type": "function"}
    return [
        delta({"role": "assistant", "content": None}),
        delta({"tool_calls": [{**call, "function": {"name": "f", "arguments": arguments}}]}),
        delta({}, "tool_calls"),
        DONE,
    ]


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ('{"a":' + nested(DEEP) + "}", "nests too deeply"),
        ('{"n":' + "9" * 5000 + "}", "Exceeds the limit"),
        ('{"a":' + nested(700, '"\\ud800"') + "}", None),  # mended, or refused as too deep
    ],
)
async def test_hostile_tool_arguments_become_an_error_result_for_the_model(
    arguments: str, said: str | None
) -> None:
    bodies: list[dict[str, Any]] = []
    registry = FunctionRegistry()
    calls: list[object] = []

    async def f(raw: str) -> str:
        calls.append(raw)
        return "ok"

    registry.register("f", f)

    async def respond(conn: Conn) -> None:
        if conn.index == 0:
            await conn.stream_events(_tool_answer(arguments))
        else:
            await conn.stream_events(text_stream("done"))

    async with raw_server(respond) as server:
        turns = await run_turns(server.url, registry=registry, retry=NO_RETRY)
        for request in server.requests:
            bodies.append(json.loads(request.partition(b"\r\n\r\n")[2]))
    assert [e.error for e in turns.errors] == []
    assert turns.text == "done"
    (tool_message,) = [m for m in bodies[1]["messages"] if m["role"] == "tool"]
    if said is not None:
        assert calls == []
        assert tool_message["content"].startswith("Error: the arguments for 'f' are not valid")
        assert said in tool_message["content"]
