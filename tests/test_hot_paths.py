"""The per-token fast paths give what the general ones give (issue 14's second round).

* the chat decoder parses a payload starting with ``{`` with the JSON scanner itself: white
  space or extra data after the object goes through ``json.loads`` again (same result, same
  error);
* the LLM's text frames are built by ``text_maker``: equal to ``cls(text=...)``, with their
  own increasing ids and creation time, refusing what the class refuses;
* the process loop's own record of its scope's cancel (checked per frame) agrees with the
  scope.
"""

from __future__ import annotations

import attrs
import httpx
import pytest
import trio
import trio.testing

from rustvani_trio._frame_base import TextFrame, text_maker
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    LLMContextFrame,
    LLMReasoningText,
    LLMRefusalText,
    LLMText,
    TranscriptionFrame,
)
from rustvani_trio.services.llm._chat_decoder import ChatStreamDecoder
from rustvani_trio.services.llm._chat_types import ContentDelta, content_delta
from rustvani_trio.services.llm._sse import SSEEvent, SSEProtocolError
from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from rustvani_trio.testing import run_test


def _event(data: str) -> SSEEvent:
    return SSEEvent(data=data)


@pytest.mark.parametrize("tail", ["", " ", "\t\r\n  "])
def test_a_payload_with_white_space_after_it_decodes(tail: str) -> None:
    decoder = ChatStreamDecoder()
    deltas = decoder.feed_event(_event('{"choices":[{"index":0,"delta":{"content":"hi"}}]}' + tail))
    assert deltas == [ContentDelta(text="hi")]
    assert decoder.result.text == "hi"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"choices":[]} x', "Extra data"),
        ('{"choices":[]}{}', "Extra data"),
        ('{"choices":[}', "Expecting value"),
        ('{"a":1', "Expecting ',' delimiter"),
        ("{", "Expecting property name"),
        ('{"a":"\x01"}', "Invalid control character"),
    ],
)
def test_a_bad_payload_is_refused_with_json_loads_message(data: str, message: str) -> None:
    with pytest.raises(SSEProtocolError, match=f"is not valid JSON \\({message}"):
        ChatStreamDecoder().feed_event(_event(data))


def test_a_payload_that_is_no_object_is_refused() -> None:
    with pytest.raises(SSEProtocolError, match="is not a JSON object"):
        ChatStreamDecoder().feed_event(_event(" [1]"))


def test_content_delta_is_the_attrs_one() -> None:
    delta = content_delta("x")
    assert delta == ContentDelta(text="x")
    assert type(delta) is ContentDelta
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        delta.text = "y"  # type: ignore[misc]


@pytest.mark.parametrize("cls", [LLMText, LLMReasoningText, LLMRefusalText, TextFrame])
async def test_text_maker_builds_what_the_class_builds(
    cls: type[TextFrame], autojump_clock: trio.testing.MockClock
) -> None:
    make = text_maker(cls)
    before = cls(text="a")
    frame = make("a")
    after = cls(text="a")
    assert type(frame) is cls
    assert frame == before and hash(frame) == hash(before)
    assert before.id < frame.id < after.id
    assert frame.created == trio.current_time()
    assert repr(frame) == repr(before).replace(str(before.id), str(frame.id))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        frame.text = "b"  # type: ignore[misc]


def test_text_maker_outside_a_run_and_refusals() -> None:
    make = text_maker(LLMText)
    assert make("a").created is None
    with pytest.raises(TypeError, match=r"LLMText\.text must be a str, got 3"):
        make(3)  # type: ignore[arg-type]


def test_text_maker_falls_back_for_other_shapes() -> None:
    make = text_maker(TranscriptionFrame)  # more fields: the class's own __init__
    frame = make("hi")
    assert frame == TranscriptionFrame(text="hi")
    assert frame.finalized is True

    @attrs.frozen(kw_only=True)
    class Checked(TextFrame):
        def __attrs_post_init__(self) -> None:
            raise ValueError("post-init ran")

    with pytest.raises(ValueError, match="post-init ran"):
        text_maker(Checked)("x")


async def test_the_processor_sends_the_body_build_request_builds() -> None:
    """The processor serialises the context's read-only messages instead of a thawed copy:
    the bytes sent are those of ``build_request``'s body."""
    sent: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content)
        body = b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}'
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=body + b"\n\ndata: [DONE]\n\n",
        )

    context = LLMContext(
        [
            {"role": "system", "content": "Be brief. é ü \u2028"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"n": 1.5, "ok": true}'},
        ]
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        cfg = OpenAILLMConfig(
            base_url="http://127.0.0.1:1/v1", api_key="sk-test", model="m", extra_body={"x": [1]}
        )
        llm = OpenAILLMHandler(cfg, http_client=client)
        expected = client.build_request(
            "POST", "http://127.0.0.1:1/v1/chat/completions", json=llm.build_request(context)
        ).content
        await run_test([llm.into_processor()], [LLMContextFrame(context=context)])
    assert sent == [expected]
