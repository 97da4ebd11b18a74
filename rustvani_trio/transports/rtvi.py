"""RTVI, the client protocol of pipecat's client libraries, as the WebSocket transport speaks it.

Every message is a JSON object ``{"label": "rtvi-ai", "type": ..., "id"?: ..., "data"?: ...}``
(protocol 2.x; this server says :data:`PROTOCOL_VERSION`). The transport carries it either as
a JSON text frame or inside pipecat's protobuf ``MessageFrame`` (see ``_protobuf``).

This module holds the protocol's vocabulary: the envelope (:func:`message`,
:func:`parse_inbound`), the frames that carry client and server messages through a pipeline
(:class:`RTVIClientMessageFrame`, :class:`RTVIServerMessageFrame`,
:class:`RTVIServerResponseFrame`), and :class:`RTVIEncoder`, which turns pipeline frames into
outbound messages. The full table of message types is in ``docs/transport.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ..exceptions import RustvaniError
from ..frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DataFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgress,
    FunctionCallRawResult,
    FunctionCallResult,
    FunctionCallStart,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    LLMUsageMetricsData,
    MetricsFrame,
    ProcessingMetricsData,
    TranscriptionFrame,
    TTFBMetricsData,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

__all__ = [
    "CLIENT_TYPES",
    "MESSAGE_LABEL",
    "NODE_CHANGED",
    "PROTOCOL_VERSION",
    "FunctionCallReport",
    "InboundMessage",
    "RTVIClientMessageFrame",
    "RTVIEncoder",
    "RTVIProtocolError",
    "RTVIServerMessageFrame",
    "RTVIServerResponseFrame",
    "message",
    "node_changed_data",
    "parse_inbound",
    "to_json",
]

PROTOCOL_VERSION = "2.2.0"
"""The RTVI protocol version this server speaks (pipecat 1.14's); any 2.x client is served."""

MESSAGE_LABEL = "rtvi-ai"

NODE_CHANGED = "dhara-node-changed"
"""Our ``server-message`` type announcing a conversation-flow node change:
``{"type": "dhara-node-changed", "previous": ..., "current": ..., "reason": ...}``."""

CLIENT_TYPES = frozenset(
    {
        "client-ready",
        "send-text",
        "client-message",
        "disconnect-bot",
        "raw-audio",
        "raw-audio-batch",
    }
)
"""The client-to-server message types this server understands; others get error-response."""

FunctionCallReport = Literal["full", "name", "none"]
"""How much of a tool call the client is told: everything (arguments and results), only the
function's name (``llm-function-call-*`` messages without arguments or results, and no tool
cards), or nothing."""

_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]\s*$")


class RTVIProtocolError(RustvaniError, ValueError):
    """An inbound message breaks the protocol; ``msg_id`` is its id when it had one."""

    def __init__(self, error: str, msg_id: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.msg_id = msg_id


# --------------------------------------------------------------------------- frames


@attrs.frozen(kw_only=True)
class RTVIClientMessageFrame(DataFrame):
    """A ``client-message`` from the client (``{"t": type, "d": data}``), travelling
    downstream. A processor that handles it answers with an :class:`RTVIServerResponseFrame`
    carrying the same ``msg_id``; one that reaches the output transport unanswered gets an
    ``error-response`` (never silently dropped)."""

    msg_id: str
    type: str
    data: Any = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class RTVIServerResponseFrame(DataFrame):
    """The answer to a client message: a ``server-response`` (or, with ``error``, an
    ``error-response``) for ``msg_id``. Push it either way: upstream frames are sent by the
    input transport, downstream ones by the output transport."""

    msg_id: str
    type: str
    data: Any = attrs.field(default=None, eq=False)
    error: str | None = None


@attrs.frozen(kw_only=True)
class RTVIServerMessageFrame(DataFrame):
    """A ``server-message`` to the client; ``data`` must be JSON-serialisable. Push it
    either way, like :class:`RTVIServerResponseFrame`."""

    data: Any = attrs.field(eq=False)


# --------------------------------------------------------------------------- envelope


def message(type_: str, data: Any = None, *, id: str | None = None) -> dict[str, Any]:
    """One outbound RTVI message."""
    out: dict[str, Any] = {"label": MESSAGE_LABEL, "type": type_}
    if id is not None:
        out["id"] = id
    if data is not None:
        out["data"] = data
    return out


_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
"""One encoder for every message (``json.dumps`` with options builds one per call)."""


def to_json(msg: Mapping[str, Any]) -> str:
    """Compact JSON; values JSON cannot hold are written with ``str()`` rather than failing
    (a tool's raw result may hold a date or a decimal)."""
    return _JSON.encode(msg)


@attrs.frozen(kw_only=True)
class InboundMessage:
    """A validated client message."""

    type: str
    id: str | None
    data: Any


def parse_inbound(text: str | bytes) -> InboundMessage:
    """Parse and validate one client message (the envelope only; each type's data is checked
    by its handler).

    Raises:
        RTVIProtocolError: not JSON, not an object, not an RTVI message, no type, or a
            non-string id. ``msg_id`` is set when the id could be read.
    """
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RTVIProtocolError(f"invalid JSON: {exc}"[:200]) from None
    except RecursionError:
        # "[[[[...": json.loads recurses per level; this is not a ValueError
        raise RTVIProtocolError("invalid JSON: it nests too deeply") from None
    if not isinstance(obj, dict):
        raise RTVIProtocolError(f"a message must be a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("id")
    if raw_id is not None and not isinstance(raw_id, str | int):
        raise RTVIProtocolError("'id' must be a string")
    msg_id = None if raw_id is None else str(raw_id)
    if obj.get("label") != MESSAGE_LABEL:
        raise RTVIProtocolError(
            f"not an RTVI message: 'label' must be {MESSAGE_LABEL!r}, got {obj.get('label')!r}",
            msg_id,
        )
    type_ = obj.get("type")
    if not isinstance(type_, str) or not type_:
        raise RTVIProtocolError("'type' must be a non-empty string", msg_id)
    return InboundMessage(type=type_, id=msg_id, data=obj.get("data"))


def node_changed_data(frame: Frame) -> dict[str, Any] | None:
    """The ``server-message`` data for a Dhara node change, or ``None`` when ``frame`` is not
    one. Recognised by shape (a frame named ``DharaNodeChanged`` with ``previous`` and
    ``current``), so the transport needs no import of the optional flow engine."""
    if type(frame).__name__ != "DharaNodeChanged":
        return None
    previous, current = getattr(frame, "previous", None), getattr(frame, "current", None)
    if current is None:
        return None
    reason = getattr(frame, "reason", None)
    return {
        "type": NODE_CHANGED,
        "previous": None if previous is None else str(previous),
        "current": str(current),
        "reason": None if reason is None else str(reason),
    }


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- encoder


class RTVIEncoder:
    """Turns pipeline frames into outbound RTVI messages, keeping the little state that needs
    (the sentence being collected for ``bot-output``, the tool calls in flight).

    :meth:`encode` returns the messages for one frame (often none). After an interruption,
    :meth:`interrupted` returns ``bot-interrupted`` and a cancelled ``llm-function-call-stopped``
    for every call that had not finished.
    """

    def __init__(self, *, function_calls: FunctionCallReport = "full") -> None:
        self.function_calls: FunctionCallReport = function_calls
        self._sentence: list[str] = []
        self._calls: dict[str, str] = {}  # tool_call_id -> function name, while running

    def encode(self, frame: Frame) -> list[dict[str, Any]]:
        """The messages ``frame`` produces (an empty list for frames the client never sees)."""
        simple = _SIMPLE.get(type(frame))
        if simple is not None:
            return [message(simple)]
        if isinstance(frame, LLMText):
            return self._llm_text(frame.text)
        if isinstance(frame, LLMFullResponseStart):
            self._sentence.clear()
            return [message("bot-llm-started")]
        if isinstance(frame, LLMFullResponseEnd):
            return [*self._flush_sentence(), message("bot-llm-stopped")]
        if isinstance(frame, TTSTextFrame):
            return [message("bot-tts-text", {"text": frame.text})]
        if isinstance(frame, MetricsFrame):
            metrics = _metrics(frame)
            return [message("metrics", metrics)] if metrics else []
        if isinstance(frame, FunctionCallStart | FunctionCallInProgress | FunctionCallResult):
            return self._function_call(frame)
        if isinstance(frame, FunctionCallRawResult):
            if self.function_calls != "full":
                return []
            card = {
                "type": "function-call-raw-result",
                "tool_call_id": frame.tool_call_id,
                "function_name": frame.function_name,
                "data": frame.raw,
            }
            return [message("server-message", card)]
        if isinstance(frame, RTVIServerMessageFrame):
            return [message("server-message", frame.data)]
        if isinstance(frame, RTVIServerResponseFrame):
            if frame.error is not None:
                return [message("error-response", {"error": frame.error}, id=frame.msg_id)]
            return [message("server-response", {"t": frame.type, "d": frame.data}, id=frame.msg_id)]
        if isinstance(frame, ErrorFrame):
            return [message("error", {"error": frame.error, "fatal": frame.fatal})]
        if isinstance(frame, TranscriptionFrame):
            return [self.transcription(frame)]
        node = node_changed_data(frame)
        if node is not None:
            return [message("server-message", node)]
        return []

    def transcription(self, frame: TranscriptionFrame) -> dict[str, Any]:
        """``user-transcription`` for a (final or interim) transcript."""
        created = "" if frame.created is None else f"{frame.created:.6f}"
        data: dict[str, Any] = {
            "text": frame.text,
            "user_id": frame.user_id,
            "timestamp": created,
            "final": frame.finalized,
        }
        return message("user-transcription", data)

    def interrupted(self) -> list[dict[str, Any]]:
        """``bot-interrupted``, then the calls the interruption cancelled."""
        out = [message("bot-interrupted")]
        self._sentence.clear()
        if self.function_calls != "none":
            for call_id, name in self._calls.items():
                data: dict[str, Any] = {"tool_call_id": call_id, "cancelled": True}
                data["function_name"] = name
                out.append(message("llm-function-call-stopped", data))
        self._calls.clear()
        return out

    # ------------------------------------------------------------------ helpers

    def _llm_text(self, text: str) -> list[dict[str, Any]]:
        out = [message("bot-llm-text", {"text": text})]
        self._sentence.append(text)
        if _SENTENCE_END.search(text):
            out.extend(self._flush_sentence())
        return out

    def _flush_sentence(self) -> list[dict[str, Any]]:
        text = "".join(self._sentence).strip()
        self._sentence.clear()
        if not text:
            return []
        data = {
            "text": text,
            "aggregated_by": "sentence",
            "will_be_spoken": False,
            "spoken_status": "completed",
        }
        return [message("bot-output", data)]

    def _function_call(
        self, frame: FunctionCallStart | FunctionCallInProgress | FunctionCallResult
    ) -> list[dict[str, Any]]:
        if self.function_calls == "none":
            return []
        full = self.function_calls == "full"
        if isinstance(frame, FunctionCallStart):
            return [
                message("llm-function-call-started", {"function_name": call.function_name})
                for call in frame.calls
            ]
        if isinstance(frame, FunctionCallInProgress):
            self._calls[frame.tool_call_id] = frame.function_name
            data: dict[str, Any] = {
                "tool_call_id": frame.tool_call_id,
                "function_name": frame.function_name,
            }
            if full:
                arguments = _json_or_text(frame.arguments)
                data["arguments"] = arguments if isinstance(arguments, dict) else {}
            return [message("llm-function-call-in-progress", data)]
        self._calls.pop(frame.tool_call_id, None)
        data = {
            "tool_call_id": frame.tool_call_id,
            "function_name": frame.function_name,
            "cancelled": False,
        }
        if full:
            data["result"] = _json_or_text(frame.result)
        return [message("llm-function-call-stopped", data)]


_SIMPLE: dict[type[Frame], str] = {
    UserStartedSpeakingFrame: "user-started-speaking",
    UserStoppedSpeakingFrame: "user-stopped-speaking",
    VADUserStartedSpeakingFrame: "vad-user-started-speaking",
    VADUserStoppedSpeakingFrame: "vad-user-stopped-speaking",
    BotStartedSpeakingFrame: "bot-started-speaking",
    BotStoppedSpeakingFrame: "bot-stopped-speaking",
    TTSStartedFrame: "bot-tts-started",
    TTSStoppedFrame: "bot-tts-stopped",
}


def _metrics(frame: MetricsFrame) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in frame.data:
        if isinstance(item, TTFBMetricsData):
            out.setdefault("ttfb", []).append({"processor": item.processor, "value": item.value})
        elif isinstance(item, ProcessingMetricsData):
            entry = {"processor": item.processor, "value": item.value}
            out.setdefault("processing", []).append(entry)
        elif isinstance(item, LLMUsageMetricsData):
            usage = attrs.asdict(item.value)
            usage = {k: v for k, v in usage.items() if v is not None}
            entry = {"processor": item.processor, "model": item.model, **usage}
            if item.interrupted:
                entry["interrupted"] = True
            out.setdefault("tokens", []).append(entry)
    return out
