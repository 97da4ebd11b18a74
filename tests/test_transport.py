"""The WebSocket transport over an in-memory socket, on a virtual clock: RTVI both ways, the
pipeline's frames as messages, audio in and out (pacing, interruption), and the queue
policies. The real server and real sockets are in test_ws_*.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.frames import (
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FrameDirection,
    FunctionCallEnd,
    FunctionCallInfo,
    FunctionCallInProgress,
    FunctionCallRawResult,
    FunctionCallResult,
    FunctionCallStart,
    InputAudioRawFrame,
    LLMContextFrame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMMessagesAppendFrame,
    LLMText,
    LLMTokenUsage,
    LLMUsageMetricsData,
    MetricsFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTFBMetricsData,
)
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.task import PipelineParams, PipelineTask
from rustvani_trio.transports._protobuf import (
    PbAudio,
    PbInterruption,
    PbMessage,
    PbText,
    decode_frame,
    encode_frame,
)
from rustvani_trio.transports.memory import MemoryConnection
from rustvani_trio.transports.rtvi import (
    PROTOCOL_VERSION,
    RTVIClientMessageFrame,
    RTVIServerMessageFrame,
    RTVIServerResponseFrame,
)
from rustvani_trio.transports.websocket import WebSocketParams, WebSocketTransport

# --------------------------------------------------------------------------- helpers


def rtvi(type_: str, data: Any = None, id: str | None = "1") -> dict[str, Any]:
    msg: dict[str, Any] = {"label": "rtvi-ai", "type": type_}
    if id is not None:
        msg["id"] = id
    if data is not None:
        msg["data"] = data
    return msg


def types(messages: Sequence[Any]) -> list[str]:
    return [m["type"] if isinstance(m, dict) else "<binary>" for m in messages]


READY = rtvi("client-ready", {"version": "2.1.0", "about": {"library": "test"}}, id="r1")


class ScriptedBot(FrameProcessor):
    """Stands in for the LLM: each turn streams ``tokens``, ``delay`` apart."""

    def __init__(self, tokens: Sequence[str] = ("Hello", " there", "."), delay: float = 0.01):
        super().__init__(name="bot")
        self.tokens = list(tokens)
        self.delay = delay
        self.contexts = 0
        self.cancelled = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self.contexts += 1
            await self.push_frame(LLMFullResponseStart())
            for token in self.tokens:
                await trio.sleep(self.delay)
                await self.push_frame(LLMText(text=token))
            await self.push_frame(LLMFullResponseEnd())
            return
        await self.push_frame(frame, direction)

    async def on_cancel(self, frame: Any) -> None:
        self.cancelled = True


class Recorder(FrameProcessor):
    """Records the frames of the given types that pass, and forwards everything."""

    def __init__(self, *kinds: type[Frame]) -> None:
        super().__init__(name="recorder")
        self.kinds = kinds
        self.frames: list[Frame] = []
        self._more = trio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, self.kinds):
            self.frames.append(frame)
            self._more.set()
            self._more = trio.Event()
        await self.push_frame(frame, direction)

    async def wait_for(self, count: int) -> None:
        while len(self.frames) < count:
            await self._more.wait()


class Session:
    def __init__(self, conn: MemoryConnection, transport: WebSocketTransport, task: PipelineTask):
        self.conn, self.transport, self.task = conn, transport, task

    async def ready(self) -> dict[str, Any]:
        self.conn.client_send(READY)
        return (await self.conn.client_until("bot-ready"))[-1]  # type: ignore[no-any-return]


def build(
    *middle: FrameProcessor,
    bot: FrameProcessor | None = None,
    params: WebSocketParams | None = None,
    pipeline_params: PipelineParams | None = None,
    conn: MemoryConnection | None = None,
) -> Session:
    conn = conn or MemoryConnection()
    transport = WebSocketTransport(conn, params, session_id="s1")
    context = LLMContext([{"role": "system", "content": "test"}])
    user, assistant = create_context_aggregators(context, text_mode=True)
    procs = [transport.input(), *middle, user, bot or ScriptedBot(), transport.output(), assistant]
    task = PipelineTask(Pipeline(procs), params=pipeline_params)
    return Session(conn, transport, task)


@pytest.fixture
async def session(request: pytest.FixtureRequest) -> AsyncIterator[Session]:
    """(Tests take ``autojump_clock`` themselves: pytest-trio finds the clock among the
    test's own arguments, not among its fixtures'.)"""
    s = build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        yield s
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- handshake


async def test_client_ready_is_answered_with_bot_ready_carrying_its_id(
    autojump_clock: Any, session: Session
) -> None:
    reply = await session.ready()
    assert reply["id"] == "r1"
    assert reply["label"] == "rtvi-ai"
    assert reply["data"]["version"] == PROTOCOL_VERSION
    assert reply["data"]["about"]["library"] == "rustvani-trio"
    assert reply["data"]["about"]["session_id"] == "s1"


async def test_wrong_version_gets_error_response_and_the_session_goes_on(
    autojump_clock: Any, session: Session
) -> None:
    session.conn.client_send(rtvi("client-ready", {"version": "1.0.0"}, id="old"))
    got = await session.conn.client_until("bot-ready")
    assert types(got) == ["error-response", "bot-ready"]
    assert got[0]["id"] == "old" and "1.0.0" in got[0]["data"]["error"]
    session.conn.client_send(rtvi("send-text", {"content": "hi"}))
    assert "bot-llm-stopped" in types(await session.conn.client_until("bot-llm-stopped"))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("sent", "expected_type", "expected_id", "words"),
    [
        ("{not json", "error", None, "invalid JSON"),
        ("[1, 2]", "error", None, "JSON object"),
        (json.dumps({"type": "send-text", "id": "7"}), "error-response", "7", "label"),
        (json.dumps(rtvi("teleport", id="9")), "error-response", "9", "unknown message type"),
        (json.dumps(rtvi("client-ready", {"version": "2.0.0"}, id=None)), "error", None, "id"),
        (json.dumps(rtvi("send-text", {"content": ""}, id="3")), "error-response", "3", "content"),
        (json.dumps(rtvi("send-text", id="4")), "error-response", "4", "content"),
        (json.dumps(rtvi("client-message", {"d": 1}, id="5")), "error-response", "5", "data.t"),
        (json.dumps(rtvi("client-message", {"t": "x"}, id=None)), "error", None, "id"),
        (json.dumps({"label": "rtvi-ai", "type": 5, "id": "6"}), "error-response", "6", "type"),
        (json.dumps({"label": "rtvi-ai", "type": "x", "id": [1]}), "error", None, "id"),
    ],
)
async def test_bad_input_is_answered_and_the_session_goes_on(
    autojump_clock: Any,
    session: Session,
    sent: str,
    expected_type: str,
    expected_id: str | None,
    words: str,
) -> None:
    session.conn.client_send(sent)
    reply = await session.conn.client_receive()
    assert reply["type"] == expected_type
    assert reply.get("id") == expected_id
    assert words in reply["data"]["error"]
    if expected_type == "error":
        assert reply["data"]["fatal"] is False
    assert (await session.ready())["type"] == "bot-ready"


# --------------------------------------------------------------------------- the answer


async def test_send_text_streams_the_answer(autojump_clock: Any, session: Session) -> None:
    await session.ready()
    session.conn.client_send(rtvi("send-text", {"content": "hello bot"}))
    got = await session.conn.client_until("bot-llm-stopped")
    assert types(got) == [
        "user-transcription",
        "bot-llm-started",
        "bot-llm-text",
        "bot-llm-text",
        "bot-llm-text",
        "bot-output",
        "bot-llm-stopped",
    ]
    assert got[0]["data"]["text"] == "hello bot" and got[0]["data"]["final"] is True
    assert "".join(m["data"]["text"] for m in got if m["type"] == "bot-llm-text") == "Hello there."
    assert got[5]["data"]["text"] == "Hello there."


async def test_send_text_without_run_immediately_only_appends(autojump_clock: Any) -> None:
    recorder = Recorder(LLMMessagesAppendFrame)
    s = build(recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(
            rtvi("send-text", {"content": "later", "options": {"run_immediately": False}})
        )
        await trio.sleep(0.5)
        assert [f.messages for f in recorder.frames] == [({"role": "user", "content": "later"},)]  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()


async def test_interrupt_stops_the_stream(autojump_clock: Any) -> None:
    bot = ScriptedBot([f"t{i} " for i in range(100)], delay=0.1)
    s = build(bot=bot)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "talk"}))
        await s.conn.client_until("bot-llm-text")
        s.conn.client_send(rtvi("client-message", {"t": "interrupt"}, id="int"))
        got = await s.conn.client_until("bot-interrupted")
        await trio.sleep(2)
        s.conn.client_send(rtvi("client-message", {"t": "ping-after"}, id="after"))
        rest = await s.conn.client_until("error-response")
        assert "bot-llm-text" not in types(rest)
        assert any(m.get("id") == "int" and m["type"] == "server-response" for m in got + rest)
        nursery.cancel_scope.cancel()


async def test_a_new_message_interrupts_the_answer(autojump_clock: Any) -> None:
    bot = ScriptedBot([f"t{i} " for i in range(50)], delay=0.1)
    s = build(bot=bot)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "one"}))
        await s.conn.client_until("bot-llm-text")
        s.conn.client_send(rtvi("send-text", {"content": "two"}))
        got = await s.conn.client_until("bot-interrupted")
        got = await s.conn.client_until("bot-llm-started")
        # the typed brackets are not reported as speech
        assert "user-started-speaking" not in types(got)
        assert bot.contexts == 2
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- tool calls


class ToolBot(FrameProcessor):
    """Plays one tool round."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        call = FunctionCallInfo(
            tool_call_id="c1", function_name="get_weather", arguments='{"city": "Pune"}'
        )
        await self.push_frame(LLMFullResponseStart())
        await self.push_frame(FunctionCallStart(calls=(call,)))
        await self.push_frame(
            FunctionCallInProgress(
                tool_call_id="c1", function_name="get_weather", arguments=call.arguments
            )
        )
        await self.push_frame(
            FunctionCallRawResult(
                tool_call_id="c1", function_name="get_weather", raw={"temp_c": 31}
            )
        )
        await self.push_frame(
            FunctionCallResult(
                tool_call_id="c1", function_name="get_weather", result='{"summary": "31 C"}'
            )
        )
        await self.push_frame(FunctionCallEnd())
        await self.push_frame(LLMText(text="Sunny."))
        await self.push_frame(LLMFullResponseEnd())


@pytest.mark.parametrize("report", ["full", "name", "none"])
async def test_function_call_messages(autojump_clock: Any, report: str) -> None:
    s = build(bot=ToolBot(), params=WebSocketParams(function_calls=report))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "weather?"}))
        got = {m["type"]: m for m in await s.conn.client_until("bot-llm-stopped")}
        if report == "none":
            assert not any(t.startswith("llm-function-call") for t in got)
            assert "server-message" not in got
        else:
            assert got["llm-function-call-started"]["data"] == {"function_name": "get_weather"}
            progress = got["llm-function-call-in-progress"]["data"]
            stopped = got["llm-function-call-stopped"]["data"]
            assert progress["tool_call_id"] == stopped["tool_call_id"] == "c1"
            assert stopped["cancelled"] is False
            if report == "full":
                assert progress["arguments"] == {"city": "Pune"}
                assert stopped["result"] == {"summary": "31 C"}
                card = got["server-message"]["data"]
                assert card == {
                    "type": "function-call-raw-result",
                    "tool_call_id": "c1",
                    "function_name": "get_weather",
                    "data": {"temp_c": 31},
                }
            else:
                assert "arguments" not in progress and "result" not in stopped
                assert "server-message" not in got
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- server messages


@attrs.frozen(kw_only=True)
class DharaNodeChanged(DataFrame):
    """The shape of the flow engine's node-change frame (recognised by name and fields)."""

    previous: str | None
    current: str
    reason: str = "function"


class Announcer(FrameProcessor):
    """On a client message: a node change, server messages both ways, an error, metrics and
    a server response."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, RTVIClientMessageFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(DharaNodeChanged(previous="greeting", current="menu"))
        await self.push_frame(RTVIServerMessageFrame(data={"up": True}), FrameDirection.UPSTREAM)
        await self.push_frame(RTVIServerMessageFrame(data={"down": True}))
        await self.push_error("something broke")
        usage = LLMUsageMetricsData(
            processor="llm",
            value=LLMTokenUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
            model="m",
        )
        await self.push_frame(
            MetricsFrame(data=(TTFBMetricsData(processor="llm", value=0.25), usage))
        )
        await self.push_frame(
            RTVIServerResponseFrame(msg_id=frame.msg_id, type=frame.type, data={"echo": frame.data})
        )


async def test_server_messages_node_changes_errors_metrics_and_responses(
    autojump_clock: Any,
) -> None:
    s = build(Announcer())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("client-message", {"t": "hello", "d": [1, 2]}, id="m1"))
        got = await s.conn.client_until("server-response")
        kinds = types(got)
        for wanted in ("server-message", "error", "metrics", "server-response"):
            assert wanted in kinds
        payloads = [m["data"] for m in got if m["type"] == "server-message"]
        assert {
            "type": "dhara-node-changed",
            "previous": "greeting",
            "current": "menu",
            "reason": "function",
        } in payloads
        assert {"up": True} in payloads and {"down": True} in payloads
        error = next(m for m in got if m["type"] == "error")["data"]
        assert "something broke" in error["error"] and error["fatal"] is False
        metrics = next(m for m in got if m["type"] == "metrics")["data"]
        assert metrics["ttfb"] == [{"processor": "llm", "value": 0.25}]
        assert metrics["tokens"][0]["completion_tokens"] == 4
        assert got[-1] == rtvi("server-response", {"t": "hello", "d": {"echo": [1, 2]}}, id="m1")
        nursery.cancel_scope.cancel()


async def test_client_message_handlers_and_unhandled_types(
    autojump_clock: Any, session: Session
) -> None:
    async def double(frame: RTVIClientMessageFrame) -> Any:
        return frame.data * 2

    async def broken(frame: RTVIClientMessageFrame) -> Any:
        raise ValueError("nope")

    session.transport.add_client_message_handler("double", double)
    session.transport.add_client_message_handler("broken", broken)
    await session.ready()
    session.conn.client_send(rtvi("client-message", {"t": "double", "d": 21}, id="a"))
    assert await session.conn.client_receive() == rtvi(
        "server-response", {"t": "double", "d": 42}, id="a"
    )
    session.conn.client_send(rtvi("client-message", {"t": "broken"}, id="b"))
    reply = await session.conn.client_receive()
    assert (
        reply["type"] == "error-response"
        and reply["id"] == "b"
        and "nope" in reply["data"]["error"]
    )
    session.conn.client_send(rtvi("client-message", {"t": "nobody"}, id="c"))
    reply = await session.conn.client_receive()
    assert reply["type"] == "error-response" and reply["id"] == "c"
    assert "no handler" in reply["data"]["error"]


# --------------------------------------------------------------------------- ending


async def test_disconnect_bot_ends_the_pipeline_and_closes_normally(autojump_clock: Any) -> None:
    s = build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("disconnect-bot", id="d"))
    assert s.conn.closed is not None and s.conn.closed[0] == 1000
    assert s.task.finish_reason == "end"


async def test_client_disconnect_cancels_the_session_at_once(autojump_clock: Any) -> None:
    bot = ScriptedBot(["x"] * 1000, delay=10)
    s = build(bot=bot)
    with trio.fail_after(1):  # virtual seconds: far less than one token's delay
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.transport.run, s.task)
            await s.ready()
            s.conn.client_send(rtvi("send-text", {"content": "go"}))
            await s.conn.client_until("bot-llm-started")
            s.conn.client_disconnect()
    assert bot.cancelled
    assert s.task.finish_reason == "cancel: client disconnected"
    assert s.conn.closed is None  # nobody to close to


async def test_end_with_code_closes_after_the_answer(autojump_clock: Any) -> None:
    s = build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "hi"}))
        await s.conn.client_until("bot-llm-started")
        await s.transport.end(1001, "server shutting down")
        got = await s.conn.client_until("bot-llm-stopped")  # the answer finishes first
        assert "bot-llm-text" in types(got)
    assert s.conn.closed == (1001, "server shutting down")


async def test_a_fatal_error_is_reported_and_closes_with_1011(autojump_clock: Any) -> None:
    class Fatal(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            if isinstance(frame, TranscriptionFrame):
                await self.push_error("the database is gone", fatal=True)
            await self.push_frame(frame, direction)

    s = build(Fatal())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "hi"}))
        got = await s.conn.client_until("error")
        assert got[-1]["data"]["fatal"] is True
    assert s.conn.closed is not None and s.conn.closed[0] == 1011


# --------------------------------------------------------------------------- queues


async def test_a_client_that_does_not_read_is_disconnected(autojump_clock: Any) -> None:
    conn = MemoryConnection(capacity=0)  # every send waits for the client, who never reads
    bot = ScriptedBot(["x"] * 500, delay=0.001)
    params = WebSocketParams(max_outbound_messages=16, slow_client_timeout=1.0)
    s = build(bot=bot, params=params, conn=conn)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.transport.run, s.task)
            conn.client_send(rtvi("send-text", {"content": "flood me"}))
    assert s.transport.close_code == 1008
    assert "not reading" in s.transport.close_reason
    assert bot.cancelled


class Slow(FrameProcessor):
    """Answers every client message, slowly; records the input lane's largest backlog."""

    def __init__(self) -> None:
        super().__init__(name="slow", max_buffer=4)
        self.peak = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.peak = max(self.peak, self.statistics().process)
        if isinstance(frame, RTVIClientMessageFrame):
            await trio.sleep(0.05)
            await self.push_frame(
                RTVIServerResponseFrame(msg_id=frame.msg_id, type=frame.type, data=frame.data)
            )
            return
        await self.push_frame(frame, direction)


async def test_a_fast_sender_meets_backpressure_and_nothing_is_lost(autojump_clock: Any) -> None:
    slow = Slow()
    s = build(slow)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        for i in range(100):
            s.conn.client_send(rtvi("client-message", {"t": "n", "d": i}, id=str(i)))
        answers = [await s.conn.client_receive() for _ in range(100)]
        assert [a["data"]["d"] for a in answers] == list(range(100))
        assert slow.peak <= 4 + 1
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- audio out


class Speaker(FrameProcessor):
    """On a turn, speaks ``seconds`` of 24 kHz audio (in 0.5 s frames) instead of text."""

    def __init__(self, seconds: float) -> None:
        super().__init__(name="speaker")
        self.seconds = seconds

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStart())
        for _ in range(round(self.seconds / 0.5)):
            await self.push_frame(OutputAudioRawFrame(audio=b"\x01\x00" * 12000, sample_rate=24000))
        await self.push_frame(LLMFullResponseEnd())


async def receive_audio(
    conn: MemoryConnection, until: float
) -> tuple[list[tuple[float, float]], list[Any]]:
    """(arrival time, audio received so far) per chunk, and the other messages."""
    start = trio.current_time()
    received = 0.0
    timeline: list[tuple[float, float]] = []
    others: list[Any] = []
    with trio.move_on_at(start + until):
        while True:
            msg = await conn.client_receive()
            if isinstance(msg, bytes):
                received += len(msg) / 2 / 24000
                timeline.append((trio.current_time() - start, received))
            else:
                others.append(msg)
    return timeline, others


async def test_audio_goes_out_in_real_time_with_a_small_lead(autojump_clock: Any) -> None:
    params = WebSocketParams()
    s = build(bot=Speaker(2.0), params=params)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "speak"}))
        timeline, others = await receive_audio(s.conn, 3.0)
        first = timeline[0][0]
        for at, total in timeline:
            held = total - (at - first)  # what the client has not played yet
            assert held <= params.audio_out_lead + 1e-6
        assert timeline[-1][1] == pytest.approx(2.0)
        assert timeline[-1][0] - first == pytest.approx(2.0 - params.audio_out_lead, abs=0.03)
        kinds = types(others)
        assert kinds.index("bot-started-speaking") < kinds.index("bot-stopped-speaking")
        fmt = next(m for m in others if m["type"] == "server-message")["data"]
        assert fmt == {"type": "audio-format", "sample_rate": 24000, "num_channels": 1}
        nursery.cancel_scope.cancel()


async def test_an_interruption_silences_audio_within_the_lead(autojump_clock: Any) -> None:
    params = WebSocketParams()
    s = build(bot=Speaker(5.0), params=params)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        s.conn.client_send(rtvi("send-text", {"content": "speak"}))
        timeline, _ = await receive_audio(s.conn, 1.0)
        s.conn.client_send(rtvi("client-message", {"t": "interrupt"}, id="i"))
        after, others = await receive_audio(s.conn, 2.0)
        played = timeline[-1][0] - timeline[0][0] + 1.0 - timeline[-1][0]  # elapsed since first
        total = (after[-1][1] if after else 0.0) + timeline[-1][1]
        assert total - played <= params.audio_out_lead + 0.021  # at most one chunk in flight
        assert "bot-interrupted" in types(others) and "bot-stopped-speaking" in types(others)
        nursery.cancel_scope.cancel()


async def test_protobuf_wire_audio_out(autojump_clock: Any) -> None:
    s = build(bot=Speaker(0.5))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        s.conn.client_send(encode_frame(PbMessage(data=json.dumps(READY))))
        ready = decode_frame(await s.conn.client_receive())
        assert isinstance(ready, PbMessage) and json.loads(ready.data)["type"] == "bot-ready"
        s.conn.client_send(encode_frame(PbText(text="speak")))
        audio = 0
        while audio < 12000 * 2:
            frame = decode_frame(await s.conn.client_receive())
            if isinstance(frame, PbAudio):
                assert frame.sample_rate == 24000 and frame.num_channels == 1
                audio += len(frame.audio)
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- audio in


@pytest.mark.parametrize("form", ["protobuf", "pcm-url", "pcm-client-ready", "raw-audio"])
async def test_client_audio_becomes_input_audio_frames_at_the_clients_rate(
    autojump_clock: Any, form: str
) -> None:
    recorder = Recorder(InputAudioRawFrame)
    rate = 24000 if form != "pcm-client-ready" else 44100
    params = WebSocketParams(audio_in_sample_rate=rate) if form == "pcm-url" else None
    s = build(recorder, params=params)
    pcm = b"\x02\x00" * 480
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        if form == "protobuf":
            s.conn.client_send(encode_frame(PbAudio(audio=pcm, sample_rate=rate, num_channels=1)))
        elif form == "pcm-url":
            s.conn.client_send(pcm)
        elif form == "pcm-client-ready":
            ready = rtvi("client-ready", {"version": "2.2.0", "audio_in": {"sample_rate": rate}})
            s.conn.client_send(ready)
            await s.conn.client_until("bot-ready")
            s.conn.client_send(pcm)
        else:
            data = {
                "base64Audio": base64.b64encode(pcm).decode(),
                "sampleRate": rate,
                "numChannels": 1,
            }
            s.conn.client_send(rtvi("raw-audio", data))
        with trio.fail_after(1):
            await recorder.wait_for(1)
        frame = recorder.frames[0]
        assert isinstance(frame, InputAudioRawFrame)
        assert frame.audio == pcm and frame.sample_rate == rate and frame.num_channels == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"\x01\x02\x03", "binary audio needs its format"),  # raw PCM, no rate declared
        (encode_frame(PbAudio(audio=b"\x00", sample_rate=16000, num_channels=1)), "bad audio"),
        (encode_frame(PbAudio(audio=b"\x00\x00", sample_rate=7, num_channels=1)), "unsupported"),
        (b"\x0a\xff\xff", "invalid binary frame"),
    ],
)
async def test_bad_audio_is_answered(autojump_clock: Any, payload: bytes, words: str) -> None:
    wire = "json" if words.startswith("binary") else "protobuf"
    s = build(params=WebSocketParams(wire=wire))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        s.conn.client_send(payload)
        reply = await s.conn.client_receive()
        if isinstance(reply, bytes):
            decoded = decode_frame(reply)
            assert isinstance(decoded, PbMessage)
            reply = json.loads(decoded.data)
        assert reply["type"] == "error" and words in reply["data"]["error"]
        nursery.cancel_scope.cancel()


async def test_audio_faster_than_real_time_is_read_at_real_time(autojump_clock: Any) -> None:
    recorder = Recorder(InputAudioRawFrame)
    s = build(recorder, params=WebSocketParams(audio_in_sample_rate=16000, max_audio_ahead=0.5))
    second = b"\x00\x00" * 16000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        start = trio.current_time()
        for _ in range(10):
            s.conn.client_send(second)  # ten seconds of audio at once
        with trio.fail_after(30):
            await recorder.wait_for(10)
        # the tenth second is taken when the first nine have played, less the margin
        assert trio.current_time() - start == pytest.approx(9 - 0.5, abs=0.01)
        nursery.cancel_scope.cancel()


async def test_protobuf_interruption_frame_interrupts(autojump_clock: Any) -> None:
    bot = ScriptedBot([f"t{i} " for i in range(100)], delay=0.1)
    s = build(bot=bot)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        s.conn.client_send(encode_frame(PbText(text="talk")))
        while True:
            frame = decode_frame(await s.conn.client_receive())
            if isinstance(frame, PbMessage) and json.loads(frame.data)["type"] == "bot-llm-text":
                break
        s.conn.client_send(encode_frame(PbInterruption()))
        while True:
            frame = decode_frame(await s.conn.client_receive())
            assert isinstance(frame, PbMessage)
            if json.loads(frame.data)["type"] == "bot-interrupted":
                break
        nursery.cancel_scope.cancel()


async def test_error_frames_travel_on_to_the_task(autojump_clock: Any) -> None:
    errors: list[ErrorFrame] = []
    s = build(Announcer())
    s.task.add_event_handler("on_error", lambda _t, frame: errors.append(frame))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        s.conn.client_send(rtvi("client-message", {"t": "x"}, id="1"))
        await s.conn.client_until("server-response")
        assert len(errors) == 1 and "something broke" in errors[0].error
        nursery.cancel_scope.cancel()


async def test_end_frame_from_the_task_closes_1000(autojump_clock: Any) -> None:
    s = build()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.transport.run, s.task)
        await s.ready()
        await s.task.queue_frame(EndFrame())
    assert s.conn.closed == (1000, "")
