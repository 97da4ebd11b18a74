"""Tests for the SSE framing (``services.llm._sse``) and the chat-completions chunk decoding
(``services.llm._chat_decoder``)."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rustvani_trio.services.llm._chat_decoder import MAX_TOOL_CALLS, ChatStreamDecoder
from rustvani_trio.services.llm._chat_types import (
    ContentDelta,
    ReasoningDelta,
    RefusalDelta,
    StreamDelta,
    StreamError,
    StreamResult,
)
from rustvani_trio.services.llm._sse import SSEDecoder, SSEEvent, SSEProtocolError

# The shared corpus lives beside the repository: <parent of repo>/shared/fixtures/openai-sse.
FIXTURE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "openai-sse"
_MISSING = "<fixtures missing>"


def _fixture_names() -> list[str]:
    if not FIXTURE_DIR.is_dir():
        return [_MISSING]
    return sorted(p.name for p in FIXTURE_DIR.glob("*.sse"))


FIXTURES = _fixture_names()


def _require_fixtures() -> None:
    if not FIXTURE_DIR.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURE_DIR}")


@functools.cache
def _expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURE_DIR / "expected.json").read_text(encoding="utf-8"))
    return data


@functools.cache
def _raw(name: str) -> bytes:
    return (FIXTURE_DIR / name).read_bytes()


@functools.cache
def _interesting_cuts(name: str) -> tuple[int, ...]:
    """Cut positions inside multi-byte UTF-8 characters and between CR and LF."""
    raw = _raw(name)
    return tuple(
        i for i in range(1, len(raw)) if raw[i] >= 0x80 or (raw[i] == 0x0A and raw[i - 1] == 0x0D)
    )


def _summary(result: StreamResult) -> dict[str, Any]:
    """The decoded result in the shape of an ``expected.json`` entry."""
    return {
        "text": result.text,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls
        ],
        "finish_reason": result.finish_reason,
        "usage": result.usage,
        "error": None if result.error is None else result.error.message,
        "reasoning": result.reasoning,
        "refusal": result.refusal,
        "done": result.done,
    }


def _decode(pieces: list[bytes]) -> tuple[StreamResult, list[StreamDelta], int]:
    decoder = ChatStreamDecoder()
    deltas: list[StreamDelta] = []
    for piece in pieces:
        deltas.extend(decoder.feed(piece))
    deltas.extend(decoder.close())
    return decoder.result, deltas, decoder.sse.comments


def _split(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def _sse_events(pieces: list[bytes]) -> tuple[list[SSEEvent], int]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events, decoder.comments


# ---------------------------------------------------------------------------------------------
# Fixture corpus
# ---------------------------------------------------------------------------------------------


def test_corpus_and_expected_cover_each_other() -> None:
    _require_fixtures()
    assert len(FIXTURES) > 0
    assert set(FIXTURES) == set(_expected())


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_one_feed(name: str) -> None:
    _require_fixtures()
    result, deltas, _ = _decode([_raw(name)])
    assert _summary(result) == _expected()[name]
    # The deltas are exactly the accumulated text, reasoning and refusal.
    assert "".join(d.text for d in deltas if isinstance(d, ContentDelta)) == result.text
    assert "".join(d.text for d in deltas if isinstance(d, ReasoningDelta)) == (
        result.reasoning or ""
    )
    assert "".join(d.text for d in deltas if isinstance(d, RefusalDelta)) == (result.refusal or "")
    assert all(d.text for d in deltas)


@pytest.mark.parametrize("name", FIXTURES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_fixture_any_split(name: str, data: st.DataObject) -> None:
    _require_fixtures()
    raw = _raw(name)
    position = st.integers(min_value=0, max_value=len(raw))
    interesting = _interesting_cuts(name)
    if interesting:
        position = st.one_of(position, st.sampled_from(interesting))
    cuts = data.draw(st.lists(position, max_size=60), label="cuts")
    pieces = _split(raw, cuts)

    whole_result, whole_deltas, whole_comments = _decode([raw])
    result, deltas, comments = _decode(pieces)
    assert result == whole_result
    assert deltas == whole_deltas
    assert comments == whole_comments
    assert _sse_events(pieces) == _sse_events([raw])


def test_fixture_details() -> None:
    """Spot checks on fields that expected.json does not carry."""
    _require_fixtures()
    result, _, comments = _decode([_raw("08-openrouter-comments-midstream-error.sse")])
    assert comments == 17
    assert result.error == StreamError(
        message="Token limit reached",
        code=400,
        raw={"code": 400, "message": "Token limit reached"},
    )
    result, _, _ = _decode([_raw("09-groq-event-error-no-done.sse")])
    assert result.error is not None
    assert result.error.code == "tool_use_failed"
    assert result.error.type == "invalid_request_error"
    assert result.error.raw["status_code"] == 400
    assert not result.done
    result, _, _ = _decode([_raw("25-claude-gateway-text-then-tools-index-from-1.sse")])
    assert [c.index for c in result.tool_calls] == [1, 2]
    assert result.model == "us.anthropic.claude-sonnet-4-20250514-v1:0"
    result, _, _ = _decode([_raw("11-mistral-tool-no-index-no-type.sse")])
    assert [c.index for c in result.tool_calls] == [None]


# ---------------------------------------------------------------------------------------------
# Generated streams
# ---------------------------------------------------------------------------------------------

# Emoji (4-byte, with a skin-tone modifier), Devanagari, CJK with full-width punctuation
# (U+FF0C, U+3002), typographic dash and quote, ZWJ and a stray U+FEFF.
_EXTRA_CHARS = "😊🌟🚨👍🏽नमस्ते दुनिया我是一个人工智能助手\uff0c\u3002\u2014\u2019\u200d\ufeff"
_piece_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(_EXTRA_CHARS)),
    max_size=12,
)
_comment_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_characters="\r\n"), st.sampled_from(_EXTRA_CHARS)
    ),
    max_size=8,
)
_line_end = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def _sse_stream(draw: st.DrawFn) -> tuple[bytes, list[str], int]:
    """A serialized chat stream: its bytes, the content pieces and the number of comments."""
    pieces = draw(st.lists(_piece_text, max_size=8))
    lines: list[str] = []
    comments = 0
    for piece in pieces:
        for comment in draw(st.lists(_comment_text, max_size=2)):
            lines.append(":" + comment)
            comments += 1
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        indent = draw(st.sampled_from([None, 1]))
        payload = json.dumps(chunk, ensure_ascii=draw(st.booleans()), indent=indent)
        prefix = draw(st.sampled_from(["data: ", "data:"]))
        # With an indent the JSON spans several lines: several data lines joined with "\n".
        lines.extend(prefix + part for part in payload.split("\n"))
        lines.append("")
    done = draw(st.booleans())
    if done:
        lines += ["data: [DONE]", ""]
    out: list[str] = ["\ufeff"] if draw(st.booleans()) else []
    previous_end = ""
    for line in lines:
        end = draw(_line_end)
        if previous_end == "\r" and not line and end == "\n":
            end = "\r\n"  # "\r" + "\n" would be one line end and swallow the blank line
        out.append(line + end)
        previous_end = end
    return "".join(out).encode("utf-8"), pieces, comments


@settings(max_examples=200, deadline=None)
@given(stream=_sse_stream(), data=st.data())
def test_generated_stream_any_split(stream: tuple[bytes, list[str], int], data: Any) -> None:
    raw, pieces, comments = stream
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=20))
    result, deltas, seen_comments = _decode(_split(raw, cuts))
    expected_text = "".join(pieces)
    assert result.text == expected_text
    assert [d.text for d in deltas] == [p for p in pieces if p]
    assert seen_comments == comments
    assert result.chunks == len(pieces)


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(_EXTRA_CHARS + "ab \r\n:"), max_size=30))
def test_sse_data_line_roundtrip_bytewise(text: str) -> None:
    # One data line per line of ``text``, fed one byte at a time.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    raw = "".join(f"data: {line}\r\n" for line in lines).encode() + b"\r\n"
    events, _ = _sse_events([raw[i : i + 1] for i in range(len(raw))])
    # A U+FEFF inside a data value is content, not a byte-order mark.
    assert events == [SSEEvent(data="\n".join(lines))]


# ---------------------------------------------------------------------------------------------
# SSE framing unit tests
# ---------------------------------------------------------------------------------------------


def test_cr_at_end_of_feed_then_lf_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # If the LF counted as its own line end, "a" would be dispatched alone here.
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r\n") == [SSEEvent(data="a\nb")]


def test_cr_then_cr_is_two_line_ends() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SSEEvent(data="a")]


def test_pending_cr_survives_empty_decoded_feed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: \xf0\x9f\x98\x8a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [SSEEvent(data="😊")]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_line_endings(end: str) -> None:
    raw = f"data: x{end}data: y{end}{end}data: z{end}{end}".encode()
    events, _ = _sse_events([raw])
    assert events == [SSEEvent(data="x\ny"), SSEEvent(data="z")]


def test_data_without_space_and_only_one_space_stripped() -> None:
    events, _ = _sse_events([b"data:x\n\ndata:  y\n\ndata\n\ndata:\n\n"])
    assert [e.data for e in events] == ["x", " y", "", ""]


def test_multi_line_data() -> None:
    events, _ = _sse_events([b'data: {"a":\ndata: 1}\n\n'])
    assert events == [SSEEvent(data='{"a":\n1}')]
    assert json.loads(events[0].data) == {"a": 1}


def test_comments_counted_and_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b": OPENROUTER PROCESSING\n\n:\n: x\ndata: y\n\n")
    assert events == [SSEEvent(data="y")]
    assert decoder.comments == 3
    assert decoder.close() == []
    decoder = SSEDecoder()
    decoder.feed(b": trailing comment without a line end")
    assert decoder.comments == 0
    assert decoder.close() == []
    assert decoder.comments == 1


def test_event_id_retry_and_unknown_fields() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(
        b"event: error\nid: 7\nretry: 1500\nfoo: bar\ndata: x\n\n"
        b"retry: soon\ndata: y\n\n"
        b"id: bad\x00id\ndata: z\n\n"
    )
    assert events == [
        SSEEvent(event="error", data="x", id="7"),
        SSEEvent(event="message", data="y", id="7"),
        SSEEvent(event="message", data="z", id="7"),
    ]
    assert decoder.retry == 1500
    assert decoder.last_event_id == "7"


def test_event_without_data_is_not_dispatched() -> None:
    events, _ = _sse_events([b"event: ping\nid: 1\n\ndata: x\n\n"])
    # The event type does not leak into the next event; the id persists.
    assert events == [SSEEvent(data="x", id="1")]


def test_close_discards_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n\ndata: y\n") == [SSEEvent(data="x")]
    assert decoder.close() == []
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x") == []
    assert decoder.close() == []
    assert decoder.close() == []
    with pytest.raises(RuntimeError):
        decoder.feed(b"\n\n")


@settings(max_examples=50, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(_EXTRA_CHARS + "ab \r\n:"), max_size=60),
    cut=st.integers(min_value=0, max_value=60),
)
def test_feed_raw_gives_the_fields_of_feed(text: str, cut: int) -> None:
    # The chat decoder reads events as tuples; they are the SSEEvents of feed, field by field.
    raw = ("event: x\nid: 7\n" + text + "\ndata: end\n\n" + text).encode()
    whole, raw_whole = SSEDecoder(), SSEDecoder()
    events = whole.feed(raw[:cut]) + whole.feed(raw[cut:]) + whole.close()
    tuples = raw_whole.feed_raw(raw[:cut]) + raw_whole.feed_raw(raw[cut:]) + raw_whole.close_raw()
    assert [(e.event, e.data, e.id) for e in events] == tuples
    assert events  # (the "end" event at least)


_EVENT_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)
_PIECE = st.one_of(
    st.builds(lambda t: f"data: {t}\n\n", _EVENT_TEXT),  # the common read
    st.builds(lambda t: f"data:{t}\n\n", _EVENT_TEXT),  # no space after the colon
    st.builds(lambda t: f"event: e\ndata: {t}\n\n", _EVENT_TEXT),  # typed
    st.builds(lambda t: f"id: {t}\n\n", _EVENT_TEXT),  # moves the last event id
    st.builds(lambda t: f": {t}\n\n", _EVENT_TEXT),  # a comment
    st.builds(lambda t: f"data: {t}\r\n\r\n", _EVENT_TEXT),  # CRLF
    st.builds(lambda t: f"data: {t}\n", _EVENT_TEXT),  # an event cut before its blank line
)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(_PIECE, min_size=1, max_size=10))
def test_reads_of_whole_events_decode_as_the_whole_stream(pieces: list[str]) -> None:
    # One read per piece (whole events, mostly: the decoder's shortcut for a read that is
    # exactly one "data: ...\n\n" event) gives the events of the stream fed at once.
    one = SSEDecoder()
    whole = one.feed_raw("".join(pieces).encode()) + one.close_raw()
    each = SSEDecoder()
    events = [e for piece in pieces for e in each.feed_raw(piece.encode())] + each.close_raw()
    assert events == whole


def test_a_whole_event_read_past_the_limit_is_refused() -> None:
    assert SSEDecoder(max_event_chars=5).feed_raw(b"data: 12345\n\n") == [
        ("message", "12345", None)
    ]
    with pytest.raises(SSEProtocolError, match="event longer than 5"):
        SSEDecoder(max_event_chars=5).feed_raw(b"data: 123456\n\n")


def test_utf8_split_byte_by_byte_is_exact() -> None:
    text = "नमस्ते 😊 我是\uff0c\u3002"
    raw = f"data: {text}\n\n".encode()
    events, _ = _sse_events([raw[i : i + 1] for i in range(len(raw))])
    assert events == [SSEEvent(data=text)]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    events, _ = _sse_events([b"data: a\xffb\n\n", b"data: \xe6\x88"])
    assert events == [SSEEvent(data="a\ufffdb")]
    decoder = SSEDecoder()
    decoder.feed(b"data: \xe6\x88")
    assert decoder.close() == []  # truncated character at EOF: U+FFFD, no exception


def test_leading_bom_is_stripped_once() -> None:
    events, _ = _sse_events([b"\xef\xbb", b"\xbfdata: x\n\n"])
    assert events == [SSEEvent(data="x")]
    events, _ = _sse_events([b"data: \xef\xbb\xbfx\n\n"])
    assert events == [SSEEvent(data="\ufeffx")]


# ---------------------------------------------------------------------------------------------
# Chat chunk unit tests
# ---------------------------------------------------------------------------------------------


def _chunk(**delta: Any) -> bytes:
    return _event({"choices": [{"index": 0, "delta": delta}]})


def _event(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def test_content_and_done() -> None:
    decoder = ChatStreamDecoder()
    assert decoder.feed(_chunk(role="assistant", content="")) == []
    assert decoder.feed(_chunk(content="Hi")) == [ContentDelta(text="Hi")]
    assert not decoder.is_complete
    assert decoder.feed(b"data: [DONE]\n\n") == []
    assert decoder.is_complete
    result = decoder.finish()
    assert result.text == "Hi"
    assert result.done
    assert result.reasoning is None
    assert result.refusal is None
    assert result.chunks == 2


def test_content_after_done_is_ignored() -> None:
    decoder = ChatStreamDecoder()
    deltas = decoder.feed(_chunk(content="a") + b"data: [DONE]\n\n" + _chunk(content="b"))
    assert deltas == [ContentDelta(text="a")]
    assert decoder.feed(b"data: not json at all\n\n") == []
    assert decoder.finish().text == "a"


def test_invalid_json_raises_protocol_error_with_excerpt() -> None:
    decoder = ChatStreamDecoder()
    bad = "{not json " + "x" * 500
    with pytest.raises(SSEProtocolError, match=r"not valid JSON.*\{not json x") as info:
        decoder.feed(f"data: {bad}\n\n".encode())
    assert isinstance(info.value, ValueError)
    assert len(str(info.value)) < 400
    with pytest.raises(SSEProtocolError, match="not a JSON object"):
        ChatStreamDecoder().feed(b"data: [1, 2]\n\n")


def test_empty_data_event_is_a_keep_alive() -> None:
    decoder = ChatStreamDecoder()
    deltas = decoder.feed(b"data:\n\n" + _chunk(content="a") + b"data: \n\n" + b"data: [DONE]\n\n")
    assert deltas == [ContentDelta(text="a")]
    result = decoder.finish()
    assert result.done and result.text == "a" and result.error is None


def test_event_error_with_json_and_with_plain_text() -> None:
    decoder = ChatStreamDecoder()
    payload = {"error": {"message": "boom", "type": "server_error", "code": 500}}
    decoder.feed(_chunk(content="x") + _event(payload, event="error"))
    result = decoder.finish()
    assert result.error == StreamError(
        message="boom", code=500, type="server_error", raw=payload["error"]
    )
    assert not result.done
    assert not decoder.is_complete

    decoder = ChatStreamDecoder()
    decoder.feed(b"event: error\ndata: upstream overloaded\n\n")
    error = decoder.finish().error
    assert error == StreamError(
        message="upstream overloaded", raw={"message": "upstream overloaded"}
    )


def test_error_chunk_still_applies_choices_and_usage() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(
        _event(
            {
                "error": "plain string error",
                "choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": "length"}],
                "usage": {"total_tokens": 3},
            }
        )
    )
    decoder.feed(_event({"error": {"message": "second"}}))
    result = decoder.finish()
    assert result.error is not None
    assert result.error.message == "plain string error"  # the first error wins
    assert result.text == "c"
    assert result.finish_reason == "length"
    assert result.usage == {"total_tokens": 3}


def test_only_choice_zero_and_odd_chunks() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(_event({"choices": []}))
    decoder.feed(_event({"id": "x"}))
    decoder.feed(_event({"choices": [{"index": 0, "content_filter_results": {}}]}))
    decoder.feed(_event({"choices": [{"index": 1, "delta": {"content": "other"}}]}))
    decoder.feed(_event({"choices": [{"delta": {"content": "no-index"}}]}))
    decoder.feed(_event({"choices": [{"index": 0, "text": "T", "delta": {"content": "T"}}]}))
    assert decoder.finish().text == "no-indexT"


def test_finish_reason_not_cleared_and_usage_last_non_null() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    decoder.feed(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}))
    decoder.feed(_event({"choices": [], "usage": {"a": 1}}))
    decoder.feed(_event({"choices": [], "usage": None}))
    result = decoder.finish()
    assert result.finish_reason == "stop"
    assert result.usage == {"a": 1}
    assert decoder.is_complete


def test_reasoning_and_refusal() -> None:
    decoder = ChatStreamDecoder()
    deltas = decoder.feed(
        _chunk(reasoning_content="think", reasoning="think")  # duplicated field counted once
        + _chunk(reasoning="ing", reasoning_details=[{"text": "ing"}])
        + _chunk(refusal="")
        + _chunk(refusal="no", content=None)
    )
    assert deltas == [
        ReasoningDelta(text="think"),
        ReasoningDelta(text="ing"),
        RefusalDelta(text="no"),
    ]
    result = decoder.finish()
    assert result.reasoning == "thinking"
    assert result.refusal == "no"
    assert result.text == ""


def test_empty_reasoning_field_counts_as_seen() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(_chunk(reasoning_content=None) + _chunk(refusal=None))
    assert decoder.result.reasoning is None
    assert decoder.result.refusal is None
    decoder.feed(_chunk(reasoning=""))
    assert decoder.result.reasoning == ""


def _tool(**fragment: Any) -> bytes:
    return _chunk(tool_calls=[fragment])


def test_tool_calls_by_index_first_id_and_name_win() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(
        _tool(index=1, id="a", type="function", function={"name": "f", "arguments": ""})
        + _tool(index=1, id="a", function={"name": "f", "arguments": "{"})
        + _tool(index=2, id="b", function={"name": "g"})
        + _tool(index=1, id="", function={"name": "", "arguments": "}"})
        + _tool(index=2, id="b2", function={"name": "g2"})  # conflicting repeat: first wins
        + _tool(index=2, function={"arguments": None})
        + _tool(index=2, function={"arguments": "[]"})
        + _tool(index=1, function={"arguments": ""})
    )
    calls = decoder.finish().tool_calls
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [
        (1, "a", "f", "{}"),
        (2, "b", "g", "[]"),
    ]


def test_tool_calls_without_index() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(
        _tool(id="a", function={"name": "f", "arguments": '{"x"'})
        + _tool(function={"arguments": ": 1}"})
        + _tool(id="a", function={"arguments": ""})
        + _tool(id="b", function={"name": "g", "arguments": "{}"})
    )
    calls = decoder.finish().tool_calls
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [
        (None, "a", "f", '{"x": 1}'),
        (None, "b", "g", "{}"),
    ]


def test_result_is_live_and_incremental() -> None:
    decoder = ChatStreamDecoder()
    result = decoder.result
    decoder.feed(_chunk(content="a") + _tool(index=0, id="t", function={"arguments": "1"}))
    assert decoder.result is result
    assert result.text == "a"
    assert result.tool_calls[0].arguments == "1"
    decoder.feed(_chunk(content="b") + _tool(index=0, function={"arguments": "2"}))
    assert decoder.result.text == "ab"
    assert result.tool_calls[0].arguments == "12"


def test_feed_event_directly() -> None:
    decoder = ChatStreamDecoder()
    deltas = decoder.feed_event(SSEEvent(data='{"choices":[{"delta":{"content":"x"}}]}'))
    assert deltas == [ContentDelta(text="x")]
    assert decoder.feed_event(SSEEvent(data="[DONE]")) == []
    assert decoder.finish().done


def test_done_without_final_blank_line_is_not_dispatched() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(_chunk(content="x") + b"data: [DONE]\n")
    result = decoder.finish()
    assert not result.done  # per the SSE spec an unterminated event is discarded at EOF
    assert result.text == "x"


def test_index_less_call_gets_its_id_late() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(
        _tool(function={"name": "f", "arguments": "{"})
        + _tool(id="late", function={"arguments": "}"})
        + _tool(id="next", function={"name": "g", "arguments": "{}"})
    )
    calls = decoder.finish().tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("late", "f", "{}"),
        ("next", "g", "{}"),
    ]


def test_model_is_first_non_empty() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(_event({"model": "", "choices": []}))
    assert decoder.result.model is None
    decoder.feed(_event({"model": "m-1", "choices": []}) + _event({"model": "m-2", "choices": []}))
    assert decoder.result.model == "m-1"


# --------------------------------------------------------------------------------------------
# progress, ends and size limits (what the streaming request reads per event)
# --------------------------------------------------------------------------------------------


def test_progress_counts_only_events_that_carry_content_or_tool_call_data() -> None:
    decoder = ChatStreamDecoder()
    quiet = (
        _chunk(role="assistant", content="")  # role only
        + _chunk()  # an empty delta
        + b": keep-alive\n\n"  # a comment
        + b"data: \n\n"  # an empty data event
        + _event({"choices": [], "usage": {"prompt_tokens": 1}})  # usage only
        + _tool(index=0, function={"arguments": ""})  # a fragment with nothing in it
    )
    decoder.feed(quiet)
    assert decoder.progress == 0
    decoder.feed(_chunk(content="a") + _chunk(reasoning_content="r") + _chunk(refusal="no"))
    assert decoder.progress == 3
    decoder.feed(_tool(index=0, id="c1", function={"name": "f", "arguments": ""}))
    decoder.feed(_tool(index=0, function={"arguments": "{}"}))
    assert decoder.progress == 5
    decoder.feed(_tool(index=0, id="c1", function={"name": "f"}))  # nothing new
    assert decoder.progress == 5
    decoder.feed(_chunk(content="b", tool_calls=[{"index": 0, "function": {"arguments": " "}}]))
    assert decoder.progress == 6  # one event, however much it carried


def test_done_error_and_ended_are_read_without_joining_the_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    joins: list[int] = []
    sync = ChatStreamDecoder._sync
    monkeypatch.setattr(ChatStreamDecoder, "_sync", lambda self: joins.append(1) or sync(self))
    decoder = ChatStreamDecoder()
    decoder.feed(_chunk(content="x"))
    assert (decoder.done, decoder.error, decoder.ended) == (False, None, False)
    decoder.feed(_event({"error": {"message": "overloaded"}}))
    assert decoder.error is not None and decoder.error.message == "overloaded"
    assert decoder.ended and not decoder.done
    other = ChatStreamDecoder()
    other.feed(b"data: [DONE]\n\n")
    assert other.done and other.ended and other.error is None
    assert joins == []
    assert decoder.result.text == "x"
    assert joins == [1]


@pytest.mark.parametrize(
    "stream",
    [
        b"data: " + b"x" * 103,  # one line, never ended (109: past 100 and its field's name)
        b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 60 + b"\n",  # one event, two lines
        b"event: " + b"e" * 120,  # any field
    ],
    ids=["line", "event", "field"],
)
def test_a_line_or_an_event_over_the_limit_is_refused(stream: bytes) -> None:
    decoder = SSEDecoder(max_event_chars=100)
    with pytest.raises(SSEProtocolError, match="longer than 100 characters"):
        for i in range(0, len(stream), 7):  # in pieces, as a socket delivers them
            decoder.feed(stream[i : i + 7])


def test_lines_and_events_at_the_limit_are_fine() -> None:
    decoder = SSEDecoder(max_event_chars=100)
    stream = (b"data: " + b"x" * 94 + b"\n\n") * 3  # lines of 100 characters
    events = [e for i in range(0, len(stream), 7) for e in decoder.feed(stream[i : i + 7])]
    assert [len(e.data) for e in events] == [94, 94, 94]
    two_lines = b"data: " + b"x" * 50 + b"\ndata:" + b"y" * 50 + b"\n\n"
    (event,) = SSEDecoder(max_event_chars=100).feed(two_lines)
    assert event.data == "x" * 50 + "\n" + "y" * 50  # 100 characters of data: at the limit


# ----------------------------------------------------------------------- lone surrogates


def _raw_event(payload_json: str, event: str | None = None) -> bytes:
    """An event whose data is ``payload_json`` as written (escapes kept as they are)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload_json}\n\n".encode()


def test_lone_surrogate_escapes_become_the_replacement_character() -> None:
    # json.loads accepts "\ud800" and returns a lone surrogate, which no encoder accepts.
    decoder = ChatStreamDecoder()
    deltas = decoder.feed(
        _raw_event(
            '{"model": "m\\ud800", "choices": [{"index": 0, "delta": '
            '{"content": "bad \\ud800 here \\uDC00", "reasoning_content": "r\\udfff", '
            '"refusal": "\\ud83d"}}]}'
        )
        + _raw_event(
            '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, '
            '"id": "c\\udc00", "function": {"name": "f\\ud800", '
            '"arguments": "{\\"a\\": \\"\\ud800\\"}"}}]}}]}'
        )
    )
    assert deltas == [
        ReasoningDelta(text="r\ufffd"),
        ContentDelta(text="bad \ufffd here \ufffd"),
        RefusalDelta(text="\ufffd"),
    ]
    result = decoder.finish()
    assert result.model == "m\ufffd"
    (call,) = result.tool_calls
    assert (call.id, call.name, call.arguments) == ("c\ufffd", "f\ufffd", '{"a": "\ufffd"}')
    for text in (result.text, result.reasoning, result.refusal, call.arguments):
        assert text is not None
        text.encode("utf-8")  # valid Unicode: no surrogate left


def test_valid_surrogate_pairs_and_escaped_backslashes_are_kept() -> None:
    decoder = ChatStreamDecoder()
    deltas = decoder.feed(
        _raw_event('{"choices": [{"index": 0, "delta": {"content": "\\ud83d\\ude00 \\\\ud800"}}]}')
    )
    assert deltas == [ContentDelta(text="\U0001f600 \\ud800")]


def test_lone_surrogates_in_error_events_are_replaced() -> None:
    decoder = ChatStreamDecoder()
    decoder.feed(_raw_event('{"error": {"message": "oops \\ud800"}}'))
    assert decoder.finish().error == StreamError(
        message="oops \ufffd", raw={"message": "oops \ufffd"}
    )
    decoder = ChatStreamDecoder()
    decoder.feed(_raw_event('"string \\udbff"', event="error"))
    error = decoder.finish().error
    assert error is not None and error.message == "string \ufffd"


def test_an_answer_with_too_many_tool_calls_is_refused() -> None:
    calls = [{"index": i, "id": f"c{i}", "function": {"name": "f"}} for i in range(MAX_TOOL_CALLS)]
    decoder = ChatStreamDecoder()
    decoder.feed(_chunk(tool_calls=calls))
    assert len(decoder.result.tool_calls) == MAX_TOOL_CALLS  # up to the limit: fine
    with pytest.raises(SSEProtocolError, match=f"more than {MAX_TOOL_CALLS} tool calls"):
        decoder.feed(_tool(index=MAX_TOOL_CALLS, id="one-more", function={"name": "f"}))


def _chunk_event(delta: dict[str, Any]) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@pytest.mark.parametrize(
    "delta",
    [
        {"content": "x" * 40},
        {"reasoning_content": "x" * 40},
        {"refusal": "x" * 40},
        {"tool_calls": [{"index": 0, "id": "i" * 20, "function": {"name": "n" * 20}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "x" * 40}}]},
    ],
    ids=["content", "reasoning", "refusal", "id-and-name", "arguments"],
)
def test_every_kind_of_answer_text_counts_towards_max_answer_chars(delta: dict[str, Any]) -> None:
    decoder = ChatStreamDecoder(max_answer_chars=100)
    first = _chunk_event({"content": "a" * 70})
    deltas = decoder.feed(first + _chunk_event(delta) + _chunk_event({"content": "late"}))
    assert deltas == [ContentDelta(text="a" * 70)]  # within the limit; then nothing
    assert decoder.over_limit and decoder.ended and not decoder.done
    assert decoder.feed(_chunk_event({"content": "b"})) == []
    assert decoder.chars == 110


def test_an_answer_at_max_answer_chars_exactly_is_whole() -> None:
    decoder = ChatStreamDecoder(max_answer_chars=100)
    deltas = decoder.feed(_chunk_event({"content": "a" * 100}) + b"data: [DONE]\n\n")
    assert deltas == [ContentDelta(text="a" * 100)]
    assert not decoder.over_limit and decoder.done


@pytest.mark.parametrize(
    ("choice", "text", "finish", "progress"),
    [
        ({"index": 0, "delta": {"content": "x"}}, "x", None, 1),
        ({"delta": {"content": "x"}}, "x", None, 1),  # no index: choice 0
        ({"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}, "x", "stop", 1),
        ({"index": 0, "delta": {"content": ""}}, "", None, 0),
        ({"index": 0, "delta": {"content": None}}, "", None, 0),
        ({"index": 0, "delta": {"content": 5}}, "", None, 0),
        ({"index": False, "delta": {"content": "x"}}, "", None, 0),  # a bool is no index
        ({"index": 0.0, "delta": {"content": "x"}}, "", None, 0),
        ({"index": 1, "delta": {"content": "x"}}, "", None, 0),  # another choice
        ({"index": 0, "delta": {"role": "assistant"}}, "", None, 0),
        ({"index": 0, "delta": {"refusal": "no"}}, "", None, 1),
    ],
)
def test_the_shapes_of_a_one_key_delta(
    choice: dict[str, Any], text: str, finish: str | None, progress: int
) -> None:
    # The decoder's shortcut for a delta holding only content, against the general rules.
    decoder = ChatStreamDecoder()
    deltas = decoder.feed(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
    assert decoder.result.text == text
    assert "".join(d.text for d in deltas if isinstance(d, ContentDelta)) == text
    assert decoder.result.finish_reason == finish
    assert decoder.progress == progress
