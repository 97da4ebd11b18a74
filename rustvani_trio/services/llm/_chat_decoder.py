"""Chat-completions semantics: SSE events in, typed deltas and an accumulated result out.

:class:`ChatStreamDecoder` interprets the events of :class:`~._sse.SSEDecoder` as
``chat.completion.chunk`` payloads. It yields typed deltas (:mod:`._chat_types`) as they arrive
and accumulates everything, tool calls included, into a ``StreamResult``. Push-style and free
of I/O, on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from ..._text import excerpt, has_surrogate_escape, mend_surrogates
from ._chat_types import (
    ContentDelta,
    ReasoningDelta,
    RefusalDelta,
    StreamDelta,
    StreamError,
    StreamResult,
    ToolCallAccum,
    content_delta,
    make_error,
)
from ._sse import MAX_EVENT_CHARS, SSEDecoder, SSEEvent, SSEProtocolError

__all__ = ["MAX_TOOL_CALLS", "ChatStreamDecoder"]

_DONE: Final = "[DONE]"
#: ``json.loads`` without its layers (``loads``, ``decode``, ``raw_decode`` and two regex
#: matches for white space): the C scanner itself, for a payload that starts with ``{``. A
#: payload it does not read to the end goes through ``json.loads`` again, for its error.
_Scan = Callable[[str, int], tuple[Any, int]]
_scan_once: _Scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_TOO_DEEP: Final = "is not valid JSON (it nests too deeply)"
_new = object.__new__
_set_content = vars(ContentDelta)["text"].__set__  # (content_delta, inline)
#: The most tool calls one answer may hold (each becomes a task in the tool round): far above
#: what a model sends, far below what would hurt.
MAX_TOOL_CALLS: Final = 1024


class _PendingCall:
    """A tool call being assembled, with its argument fragments not yet joined."""

    __slots__ = ("accum", "parts")

    def __init__(self, index: int | None) -> None:
        self.accum = ToolCallAccum(index=index)
        self.parts: list[str] = []


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
    * a lone surrogate escaped in a string (``"\\ud800"``, which ``json.loads`` accepts) becomes
      U+FFFD, so text, tool calls and errors are always valid Unicode;
    * a chunk with a top-level ``error`` (or any ``event: error``) records a :class:`StreamError`
      (the first one wins) and its choices and usage are still applied; an ``event: error``
      whose data is not JSON becomes an error with that data as the message, and one without
      data an error without a message;
    * any other payload that is not a JSON object raises :class:`SSEProtocolError`, and so does
      an answer with more than :data:`MAX_TOOL_CALLS` tool calls;
    * with ``max_answer_chars``, the event that takes the answer's characters (:attr:`chars`:
      text, reasoning, refusal, tool-call ids, names and arguments) past it sets
      :attr:`over_limit` and :attr:`ended` and yields no deltas; everything after it is
      ignored, so the decoder never holds more than the limit and one event.

    This class does not judge truncation: at end of input a caller should treat
    ``not done and finish_reason is None and error is None`` (i.e. ``not is_complete`` and no
    error) as a stream that was cut off.

    Reading :attr:`result` joins the text received since the last read: a caller that streams
    reads :attr:`progress`, :attr:`ended` and :attr:`finished` per read (plain attributes)
    and :attr:`result` once at the end, so a long answer costs the same per event as a short
    one.
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
        "_tool_data",
        "chars",
        "ended",
        "finished",
        "max_answer_chars",
        "over_limit",
        "progress",
    )

    def __init__(
        self, *, max_event_chars: int = MAX_EVENT_CHARS, max_answer_chars: int | None = None
    ) -> None:
        self._sse = SSEDecoder(max_event_chars=max_event_chars, typed_without_data=True)
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
        self._tool_data = 0  # tool-call fragments that carried an id, a name or arguments
        #: Events that carried content, reasoning, a refusal or tool-call data: what a stall
        #: is measured by (keep-alive comments, empty deltas and role-only chunks do not
        #: count).
        self.progress = 0
        #: Whether the stream needs no more input: ``[DONE]`` or an error arrived.
        self.ended = False
        #: Whether a ``finish_reason`` arrived (only usage and ``[DONE]`` normally follow).
        self.finished = False
        #: The most characters of answer to accept (``None``: no limit; may be set before the
        #: first feed).
        self.max_answer_chars = max_answer_chars
        #: Characters of answer received: text, reasoning, refusal, tool-call ids, names and
        #: arguments.
        self.chars = 0
        #: Whether an event took :attr:`chars` past :attr:`max_answer_chars` (the stream is
        #: over: :attr:`ended` is set too).
        self.over_limit = False

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
    def done(self) -> bool:
        """Whether ``data: [DONE]`` arrived."""
        return self._result.done

    @property
    def error(self) -> StreamError | None:
        """The first error the stream reported, if any."""
        return self._result.error

    @property
    def is_complete(self) -> bool:
        """``True`` once ``[DONE]`` arrived or a ``finish_reason`` was received."""
        return self._result.done or self._result.finish_reason is not None

    def feed(self, data: bytes) -> list[StreamDelta]:
        """Decode the next piece of the response body; return the deltas it produced.

        Raises :class:`SSEProtocolError` for a non-JSON payload (chunks before it in the same
        piece have already been applied to :attr:`result`).
        """
        if self._result.done or self.over_limit:
            return []
        events = self._sse.feed_raw(data)
        if not events:
            return []
        if len(events) == 1:
            event = events[0]
            return self._apply_event(event[1], event[0] == "error")
        deltas: list[StreamDelta] = []
        for event in events:
            deltas.extend(self._apply_event(event[1], event[0] == "error"))
            if self.over_limit:
                break
        return deltas

    def close(self) -> list[StreamDelta]:
        """Signal end of the body; return deltas of any event still completed by it."""
        deltas: list[StreamDelta] = []
        for event in self._sse.close_raw():
            deltas.extend(self._apply_event(event[1], event[0] == "error"))
        return deltas

    def finish(self) -> StreamResult:
        """Close the stream (dropping any final deltas) and return :attr:`result`."""
        self.close()
        return self.result

    def feed_event(self, event: SSEEvent) -> list[StreamDelta]:
        """Apply one SSE event; return the deltas it produced (``[]`` after ``[DONE]``)."""
        return self._apply_event(event.data, event.event == "error")

    # -- internals ----------------------------------------------------------------------------

    def _apply_event(self, data: str, is_error_event: bool) -> list[StreamDelta]:
        """:meth:`feed_event` for an event's data, and whether its type is ``error``."""
        result = self._result
        if result.done or self.over_limit:
            return []
        if data == _DONE or (data[:1] != "{" and data.strip() == _DONE):
            result.done = self.ended = True
            return []
        if not is_error_event and not data.strip():
            return []  # an empty ``data:`` event: some proxies send these as keep-alives
        problem = None
        try:
            if data[:1] == "{":
                try:
                    payload, end = _scan_once(data, 0)
                except StopIteration:  # (json.loads turns this into its ValueError)
                    end = -1
                if end != len(data):  # an error, or white space or data after the object
                    payload = json.loads(data)
            else:
                payload = json.loads(data)
        except ValueError as exc:
            payload, problem = data, f"is not valid JSON ({exc})"
        except RecursionError:  # (json.loads' too: nesting deeper than the interpreter's stack)
            payload, problem = data, _TOO_DEEP
        else:
            if "\\" in data and has_surrogate_escape(data):  # (memchr first: cheap)
                # A surrogate escape (rare: emoji from a server that escapes all non-ASCII,
                # or a lone one): the slow path, so that no lone surrogate gets further.
                try:
                    payload = mend_surrogates(payload)
                except RecursionError:  # (it walks what the scanner decoded recursively)
                    payload, problem = data, _TOO_DEEP
            if problem is None and not isinstance(payload, dict):
                problem = "is not a JSON object"
        if problem is not None:
            if not is_error_event:
                raise SSEProtocolError(
                    f"chat-completions stream: data payload {problem}: '{excerpt(data, 120)}'"
                )
            # An error event whose data is not a JSON object: its text is the message.
            result.chunks += 1
            if result.error is None:
                result.error = make_error(payload)
                self.ended = True
            return []
        return self._apply_chunk(payload, is_error_event)

    def _apply_chunk(self, chunk: dict[str, Any], is_error_event: bool) -> list[StreamDelta]:
        result = self._result
        result.chunks += 1
        deltas: list[StreamDelta] = []

        error = chunk.get("error")
        if (error is not None or is_error_event) and result.error is None:
            result.error = make_error(chunk if error is None else error)
            self.ended = True

        if result.model is None:
            model = chunk.get("model")
            if isinstance(model, str) and model:
                result.model = model

        usage = chunk.get("usage")
        if isinstance(usage, dict):
            result.usage = usage

        choices = chunk.get("choices")
        if isinstance(choices, list):
            tool_data = self._tool_data
            for choice in choices:
                if isinstance(choice, dict):
                    index = choice.get("index")
                    if index is None or (index == 0 and type(index) is int):  # (not a bool)
                        delta = choice.get("delta")
                        if (
                            type(delta) is dict
                            and len(delta) == 1
                            and choice.get("finish_reason") is None
                        ):
                            # The common chunk, a piece of text and nothing else: what
                            # _apply_choice does for it, without its call and lookups.
                            content = delta.get("content")
                            if type(content) is str:
                                if content:
                                    self.chars += len(content)
                                    self._text_parts.append(content)
                                    item = _new(ContentDelta)
                                    _set_content(item, content)
                                    deltas.append(item)
                                continue
                        self._apply_choice(choice, deltas)
            if deltas or self._tool_data != tool_data:
                self.progress += 1
                limit = self.max_answer_chars
                if limit is not None and self.chars > limit:
                    self.over_limit = self.ended = True
                    return []
        return deltas

    def _apply_choice(self, choice: dict[str, Any], deltas: list[StreamDelta]) -> None:
        finish_reason = choice.get("finish_reason")
        if isinstance(finish_reason, str) and finish_reason:
            self._result.finish_reason = finish_reason
            self.finished = True

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
                    self.chars += len(piece)
                    self._reasoning_parts.append(piece)
                    deltas.append(ReasoningDelta(text=piece))

        content = delta.get("content")
        if isinstance(content, str) and content:
            self.chars += len(content)
            self._text_parts.append(content)
            deltas.append(content_delta(content))

        refusal = delta.get("refusal")
        if isinstance(refusal, str):
            if self._result.refusal is None:
                self._result.refusal = ""
            if refusal:
                self.chars += len(refusal)
                self._refusal_parts.append(refusal)
                deltas.append(RefusalDelta(text=refusal))

        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for fragment in tool_calls:
                if isinstance(fragment, dict):
                    self._apply_tool_fragment(fragment)

    def _new_call(self, index: int | None) -> _PendingCall:
        if len(self._calls) >= MAX_TOOL_CALLS:
            raise SSEProtocolError(
                f"the answer has more than {MAX_TOOL_CALLS} tool calls; the stream was abandoned"
            )
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
            self._tool_data += 1
            self.chars += len(call_id)
        if isinstance(name, str) and name and not accum.name:
            accum.name = name
            self._tool_data += 1
            self.chars += len(name)
        if isinstance(arguments, str) and arguments:
            call.parts.append(arguments)
            self._tool_data += 1
            self.chars += len(arguments)
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
