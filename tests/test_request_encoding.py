"""The request body the LLM processor sends: each message of the context is encoded once, for
all the requests that send it, and the body is the same JSON as ``build_request`` gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustvani_trio._context.history import encode_json
from rustvani_trio.context import FunctionSchema, LLMContext
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler

TEXT = st.text(max_size=30)  # any code point: emoji, quotes, backslashes, controls, RTL
MESSAGE = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, TEXT),
    st.builds(lambda t: {"role": "assistant", "content": t}, TEXT),
    st.builds(lambda t: {"role": "system", "content": t}, TEXT),
    st.builds(
        lambda i, a: {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": a}}
            ],
        },
        st.integers(0, 99),
        TEXT,
    ),
)
OPERATION = st.one_of(
    st.tuples(st.just("add"), MESSAGE),
    st.tuples(
        st.just("add"),
        st.builds(
            lambda i: {"role": "tool", "tool_call_id": f"call_{i}", "content": "ok"},
            st.integers(0, 99),
        ),
    ),
    st.tuples(st.just("insert"), st.integers(0, 20), MESSAGE),
    st.tuples(st.just("replace"), st.integers(0, 20), MESSAGE),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("set"), st.lists(MESSAGE, max_size=4)),
    st.tuples(st.just("copy")),
)


def _handler(**config: Any) -> OpenAILLMHandler:
    return OpenAILLMHandler(
        OpenAILLMConfig(api_key="k", base_url="http://127.0.0.1:9/v1", model="m", **config)
    )


def _apply(context: LLMContext, operation: tuple[Any, ...]) -> LLMContext:
    kind, *args = operation
    n = len(context.messages)
    if kind == "add":
        context.add_message(args[0])
    elif kind == "insert":
        context.insert_message(min(args[0], n), args[1])
    elif kind == "replace" and n:
        context.replace_message(args[0] % n, args[1])
    elif kind == "remove" and n:
        context.remove_message(args[0] % n)
    elif kind == "set":
        context.set_messages(args[0])
    elif kind == "copy":
        return context.copy()
    return context


@settings(max_examples=150, deadline=None)
@given(operations=st.lists(OPERATION, max_size=25))
def test_the_encoded_messages_follow_every_change_of_the_context(
    operations: list[tuple[Any, ...]],
) -> None:
    # After each change, the cached encoding is the encoding of the messages as they are now
    # (a stale message, a lost or duplicated one would show here).
    context = LLMContext(messages=[])
    handler = _handler()
    for operation in operations:
        context = _apply(context, operation)
        sent = json.loads(handler._request_content(context, None))
        assert sent == json.loads(json.dumps(handler.build_request(context)))
        assert sent["messages"] == json.loads(json.dumps(list(context.messages)))
        assert context._tool_call_ids() == _ids_of(context)  # (kept the same way)


def _ids_of(context: LLMContext) -> set[str]:
    ids = set()
    for message in context.messages:
        ids.update(call["id"] for call in message.get("tool_calls") or ())
        if "tool_call_id" in message:
            ids.add(message["tool_call_id"])
    return ids


def test_the_body_is_what_build_request_gives_in_httpx_encoding() -> None:
    context = LLMContext(messages=[{"role": "system", "content": "Réponds en français 🙂"}])
    context.add_message({"role": "user", "content": 'a "quote", a \\ and a\nnewline'})
    context.set_tools([FunctionSchema(name="f", description="d")])
    handler = _handler(temperature=0.5, extra_body={"x_script": {"tokens": 3}})
    content = handler._request_content(context, "auto")
    body = handler.build_request(context, tool_choice="auto")
    assert content == encode_json(body).encode()  # byte for byte, model first
    assert content.startswith(b'{"model":"m","messages":[')
    assert "🙂".encode() in content  # UTF-8 as it is, as httpx sends json=


def test_extra_body_may_override_the_model_in_place() -> None:
    context = LLMContext(messages=[{"role": "user", "content": "hi"}])
    handler = _handler(extra_body={"model": "other", "top_k": 5})
    content = handler._request_content(context, None)
    assert content == encode_json(handler.build_request(context)).encode()
    assert json.loads(content)["model"] == "other"


def test_a_message_is_encoded_once_for_all_the_requests_that_send_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rustvani_trio._context import history

    encoded: list[Any] = []
    real = history.encode_json

    def counting(value: Any) -> str:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(history, "encode_json", counting)
    context = LLMContext(messages=[])
    handler = _handler()
    for i in range(5):
        context.add_message({"role": "user", "content": f"turn {i}"})
        handler._request_content(context, None)
    assert [m["content"] for m in encoded] == [f"turn {i}" for i in range(5)]


async def test_the_wire_carries_the_body_as_json_and_a_custom_content_type_wins() -> None:
    from rustvani_trio.frames import LLMContextFrame
    from rustvani_trio.testing import TextReply, open_scripted_server, run_test

    async with open_scripted_server(default_reply=TextReply(["ok"])) as server:
        context = LLMContext(messages=[{"role": "user", "content": "héllo"}])
        for extra_headers, expected in (
            ({}, "application/json"),
            (
                {"content-type": "application/json; charset=utf-8"},
                "application/json; charset=utf-8",
            ),
        ):
            config = OpenAILLMConfig(
                api_key="k",
                base_url=server.base_url,
                model="m",
                context_window_tokens=8000,
                extra_headers=extra_headers,
            )
            llm = OpenAILLMHandler(config).into_processor()
            await run_test([llm], [LLMContextFrame(context=context)])
            request = server.requests[-1]
            assert request.headers["content-type"] == expected
            assert request.json["messages"] == [{"role": "user", "content": "héllo"}]
            assert int(request.headers["content-length"]) == len(request.body)


def test_extra_body_with_a_lone_surrogate_is_refused_where_it_is_given() -> None:
    # A request encodes its body as UTF-8, which has no lone surrogates: every turn would
    # fail, so the config refuses it at once, as it refuses NaN.
    with pytest.raises(ValueError, match="extra_body must hold JSON values only"):
        OpenAILLMConfig(api_key="k", model="m", extra_body={"x": "\ud800"})
    OpenAILLMConfig(api_key="k", model="m", extra_body={"x": "😊 é"})  # (a pair is fine)
