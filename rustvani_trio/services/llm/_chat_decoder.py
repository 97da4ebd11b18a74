"""Chat-completions semantics: SSE events in, typed deltas and an accumulated result out.

:class:`ChatStreamDecoder` interprets the events of :class:`~._sse.SSEDecoder` as
``chat.completion.chunk`` payloads. It yields typed deltas (:class:`ContentDelta`,
:class:`ReasoningDelta`, :class:`RefusalDelta`) as they arrive and accumulates everything, tool
calls included, into a :class:`StreamResult`. Push-style and free of I/O, on the hot path.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeAlias

import attrs

from ._sse import SSEDecoder, SSEEvent, SSEProtocolError, excerpt

__all__ = [
    "ChatStreamDecoder",
    "ContentDelta",
    "ReasoningDelta",
    "RefusalDelta",
    "StreamDelta",
    "StreamError",
    "StreamResult",
    "ToolCallAccum",
]

_DONE: Final = "[DONE]"


@attrs.define(frozen=True, slots=True, kw_only=True)
class ContentDelta:
    """A non-empty piece of assistant text (``delta.content``)."""

    text: str


@attrs.define(frozen=True, slots=True, kw_only=True)
class ReasoningDelta:
    """A non-empty piece of reasoning (``delta.reasoning_content`` or ``delta.reasoning``)."""

    text: str


@attrs.define(frozen=True, slots=True, kw_only=True)
class RefusalDelta:
    """A non-empty piece of a refusal (``delta.refusal``)."""

    text: str


StreamDelta: TypeAlias = ContentDelta | ReasoningDelta | RefusalDelta
"""A typed delta produced by :class:`ChatStreamDecoder` as chunks arrive."""


@attrs.define(frozen=True, slots=True, kw_only=True)
class StreamError:
    """An error reported inside the stream (a top-level ``error`` object or an ``event: error``).

    ``raw`` is the error object as received; when the server sent something other than a JSON
    object (a string, or non-JSON data in an ``event: error``) it is ``{"message": <text>}``.
    """

    message: str
    code: str | int | None = None
    type: str | None = None
    raw: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(slots=True, kw_only=True)
class ToolCallAccum:
    """One tool call assembled from its streamed fragments.

    ``index`` is the wire ``index`` (``None`` for servers that omit it); ``id`` and ``name`` are
    the first non-empty values received; ``arguments`` is the concatenated argument text.
    """

    index: int | None = None
    id: str = ""
    name: str = ""
    arguments: str = ""


@attrs.define(slots=True, kw_only=True)
class StreamResult:
    """Everything accumulated from a chat-completions stream so far.

    ``reasoning`` and ``refusal`` are ``None`` when the server never sent the field as a string.
    ``usage`` is the last non-null top-level ``usage`` object, ``error`` the first stream error,
    ``done`` whether ``data: [DONE]`` arrived, ``model`` the first non-empty ``model`` and
    ``chunks`` the number of data events applied (every event before ``[DONE]``, error events
    included).
    """

    text: str = ""
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallAccum] = attrs.Factory(list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: StreamError | None = None
    done: bool = False
    model: str | None = None
    chunks: int = 0


class _PendingCall:
    """A tool call being assembled, with its argument fragments not yet joined."""

    __slots__ = ("accum", "parts")

    def __init__(self, index: int | None) -> None:
        self.accum = ToolCallAccum(index=index)
        self.parts: list[str] = []


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _make_error(obj: object) -> StreamError:
    """Build a :class:`StreamError` from whatever the server put in its error field."""
    if isinstance(obj, dict):
        msg = obj.get("message")
        if isinstance(msg, str) and msg:
            message = msg
        else:
            message = json.dumps(obj, ensure_ascii=False, default=str)
        code = obj.get("code")
        typ = obj.get("type")
        return StreamError(
            message=message,
            code=code if isinstance(code, str) or _is_int(code) else None,
            type=typ if isinstance(typ, str) else None,
            raw=obj,
        )
    message = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)
    return StreamError(message=message, raw={"message": message})


class ChatStreamDecoder:
    """Decode an OpenAI-compatible ``chat.completions`` stream into deltas and a result.

    Feed raw body bytes with :meth:`feed` (or already framed events with :meth:`feed_event`);
    each call returns the :data:`StreamDelta` objects the new chunks produced. The accumulated
    state is in :attr:`result`.

    Rules (they match the shared fixture corpus):

    * the stream stops at ``data: [DONE]`` (``done`` is set; anything after it is ignored);
    * only choice index 0 is decoded (a choice without ``index`` is choice 0); chunks without
      choices or choices without ``delta`` are fine;
    * ``text`` concatenates string ``delta.content`` (``choice.text`` is ignored); ``reasoning``
      concatenates ``delta.reasoning_content`` or, when a delta has no non-empty one,
      ``delta.reasoning``; ``refusal`` concatenates ``delta.refusal``;
    * tool-call fragments are grouped by ``index`` (list in index order); ``id`` and ``name``
      come from the first fragment that has them non-empty and are never concatenated;
      ``arguments`` concatenates the string fragments. A fragment without ``index`` starts a new
      call when it carries a non-empty ``id`` not seen before, else continues the previous call;
    * ``finish_reason`` is the last non-null one; ``usage`` the last non-null top-level object;
    * a chunk with a top-level ``error`` (or any ``event: error``) records a :class:`StreamError`
      (the first one wins) and its choices and usage are still applied; an ``event: error``
      whose data is not JSON becomes an error with that data as the message;
    * any other payload that is not a JSON object raises :class:`SSEProtocolError`.

    This class does not judge truncation: at end of input a caller should treat
    ``not done and finish_reason is None and error is None`` (i.e. ``not is_complete`` and no
    error) as a stream that was cut off.
    """

    __slots__ = (
        "_by_id",
        "_by_index",
        "_calls",
        "_calls_dirty",
        "_last_call",
        "_reasoning_parts",
        "_refusal_parts",
        "_result",
        "_sse",
        "_text_parts",
    )

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._result = StreamResult()
        # Text pieces are joined lazily (in ``result``) so that a long stream stays linear-time.
        self._text_parts: list[str] = []
        self._reasoning_parts: list[str] = []
        self._refusal_parts: list[str] = []
        self._calls: list[_PendingCall] = []
        self._calls_dirty = False
        self._by_index: dict[int, _PendingCall] = {}
        self._by_id: dict[str, _PendingCall] = {}
        self._last_call: _PendingCall | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def sse(self) -> SSEDecoder:
        """The internal :class:`SSEDecoder` used by :meth:`feed` (e.g. for its ``comments``)."""
        return self._sse

    @property
    def result(self) -> StreamResult:
        """The accumulated :class:`StreamResult` (the same object on every access)."""
        self._sync()
        return self._result

    @property
    def is_complete(self) -> bool:
        """``True`` once ``[DONE]`` arrived or a ``finish_reason`` was received."""
        return self._result.done or self._result.finish_reason is not None

    def feed(self, data: bytes) -> list[StreamDelta]:
        """Decode the next piece of the response body; return the deltas it produced.

        Raises :class:`SSEProtocolError` for a non-JSON payload (chunks before it in the same
        piece have already been applied to :attr:`result`).
        """
        if self._result.done:
            return []
        events = self._sse.feed(data)
        if not events:
            return []
        if len(events) == 1:
            return self.feed_event(events[0])
        deltas: list[StreamDelta] = []
        for event in events:
            deltas.extend(self.feed_event(event))
        return deltas

    def close(self) -> list[StreamDelta]:
        """Signal end of the body; return deltas of any event still completed by it."""
        events = self._sse.close()
        deltas: list[StreamDelta] = []
        for event in events:
            deltas.extend(self.feed_event(event))
        return deltas

    def finish(self) -> StreamResult:
        """Close the stream (dropping any final deltas) and return :attr:`result`."""
        self.close()
        return self.result

    def feed_event(self, event: SSEEvent) -> list[StreamDelta]:
        """Apply one SSE event; return the deltas it produced (``[]`` after ``[DONE]``)."""
        result = self._result
        if result.done:
            return []
        data = event.data
        if data == _DONE or (data[:1] != "{" and data.strip() == _DONE):
            result.done = True
            return []
        is_error_event = event.event == "error"
        if not is_error_event and not data.strip():
            return []  # an empty ``data:`` event: some proxies send these as keep-alives
        problem = None
        try:
            payload = json.loads(data)
        except ValueError as exc:
            payload, problem = data, f"is not valid JSON ({exc})"
        else:
            if not isinstance(payload, dict):
                problem = "is not a JSON object"
        if problem is not None:
            if not is_error_event:
                raise SSEProtocolError(
                    f"chat-completions stream: data payload {problem}: {excerpt(data)!r}"
                )
            # An error event whose data is not a JSON object: its text is the message.
            result.chunks += 1
            if result.error is None:
                result.error = _make_error(payload)
            return []
        return self._apply_chunk(payload, is_error_event)

    # -- internals ----------------------------------------------------------------------------

    def _apply_chunk(self, chunk: dict[str, Any], is_error_event: bool) -> list[StreamDelta]:
        result = self._result
        result.chunks += 1
        deltas: list[StreamDelta] = []

        error = chunk.get("error")
        if (error is not None or is_error_event) and result.error is None:
            result.error = _make_error(chunk if error is None else error)

        if result.model is None:
            model = chunk.get("model")
            if isinstance(model, str) and model:
                result.model = model

        usage = chunk.get("usage")
        if isinstance(usage, dict):
            result.usage = usage

        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    index = choice.get("index")
                    if index is None or (index == 0 and _is_int(index)):
                        self._apply_choice(choice, deltas)
        return deltas

    def _apply_choice(self, choice: dict[str, Any], deltas: list[StreamDelta]) -> None:
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            self._result.finish_reason = finish_reason

        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return

        reasoning_content = delta.get("reasoning_content")
        reasoning = delta.get("reasoning")
        if reasoning_content is not None or reasoning is not None:
            piece = None
            if isinstance(reasoning_content, str) and reasoning_content:
                piece = reasoning_content
            elif isinstance(reasoning, str) and reasoning:
                piece = reasoning
            if isinstance(reasoning_content, str) or isinstance(reasoning, str):
                if self._result.reasoning is None:
                    self._result.reasoning = ""  # seen: no longer None, even if empty
                if piece is not None:
                    self._reasoning_parts.append(piece)
                    deltas.append(ReasoningDelta(text=piece))

        content = delta.get("content")
        if isinstance(content, str) and content:
            self._text_parts.append(content)
            deltas.append(ContentDelta(text=content))

        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            if self._result.refusal is None:
                self._result.refusal = ""
            if refusal:
                self._refusal_parts.append(refusal)
                deltas.append(RefusalDelta(text=refusal))

        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for fragment in tool_calls:
                if isinstance(fragment, dict):
                    self._apply_tool_fragment(fragment)

    def _new_call(self, index: int | None) -> _PendingCall:
        call = _PendingCall(index)
        self._calls.append(call)
        self._calls_dirty = True
        if index is not None:
            self._by_index[index] = call
        return call

    def _apply_tool_fragment(self, fragment: dict[str, Any]) -> None:
        function = fragment.get("function")
        if isinstance(function, dict):
            name = function.get("name")
            arguments = function.get("arguments")
        else:
            name = arguments = None
        call_id = fragment.get("id")
        if not isinstance(call_id, str):
            call_id = ""

        index = fragment.get("index")
        call: _PendingCall | None
        if isinstance(index, int) and not isinstance(index, bool):
            call = self._by_index.get(index)
            if call is None:
                call = self._new_call(index)
        elif call_id:
            call = self._by_id.get(call_id)
            if call is None:
                last = self._last_call
                # A previous call still waiting for its id takes this one; otherwise a new id
                # means a new call.
                call = last if last is not None and not last.accum.id else self._new_call(None)
        else:
            call = self._last_call
            if call is None:
                call = self._new_call(None)

        accum = call.accum
        if call_id and not accum.id:
            accum.id = call_id
            self._by_id.setdefault(call_id, call)
        if isinstance(name, str) and name and not accum.name:
            accum.name = name
        if isinstance(arguments, str) and arguments:
            call.parts.append(arguments)
        self._last_call = call

    def _sync(self) -> None:
        """Move the pending text pieces into :attr:`_result`."""
        result = self._result
        if self._text_parts:
            result.text += "".join(self._text_parts)
            self._text_parts.clear()
        if self._reasoning_parts:
            result.reasoning = (result.reasoning or "") + "".join(self._reasoning_parts)
            self._reasoning_parts.clear()
        if self._refusal_parts:
            result.refusal = (result.refusal or "") + "".join(self._refusal_parts)
            self._refusal_parts.clear()
        for call in self._calls:
            if call.parts:
                call.accum.arguments += "".join(call.parts)
                call.parts.clear()
        if self._calls_dirty:
            self._calls_dirty = False
            # Indexed calls in index order, then index-less calls in arrival order.
            ordered = sorted(
                self._calls,
                key=lambda c: (c.accum.index is None, c.accum.index or 0),
            )
            result.tool_calls[:] = [c.accum for c in ordered]
