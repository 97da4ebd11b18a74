"""Server-Sent Events framing: response-body bytes in, :class:`SSEEvent` objects out.

:class:`SSEDecoder` follows the WHATWG Server-Sent Events parsing rules, push-style and free of
I/O, and is correct for any split of the byte stream (UTF-8 characters cut between reads, CRLF
cut between reads). :mod:`._chat_decoder` interprets the events as chat-completions chunks.

It sits on the per-token hot path, so the framing works on whole decoded strings
(``str.split`` and ``str.replace``), never byte by byte.
"""

from __future__ import annotations

import codecs
from typing import Final

import attrs

from ...exceptions import RustvaniError

__all__ = ["MAX_EVENT_CHARS", "RawEvent", "SSEDecoder", "SSEEvent", "SSEProtocolError"]

#: The most ``data`` of one event, and (with its field's name) the longest line, a decoder
#: keeps (4 Mi characters): far above any real chunk, far below what would hurt.
MAX_EVENT_CHARS: Final = 4 * 1024 * 1024
#: What a line may have beyond ``max_event_chars``: its field's name, the colon and a space
#: (``"retry: "`` is the longest), so that a value at the limit fits on its line.
_FIELD_SLACK: Final = 8


class SSEProtocolError(RustvaniError, ValueError):
    """The event stream violates the chat-completions protocol.

    Raised by :class:`ChatStreamDecoder` for a ``data`` payload that is neither valid JSON (an
    object) nor the ``[DONE]`` sentinel, and by :class:`SSEDecoder` for a line or an event
    larger than its limit. The stream cannot be interpreted past this point.
    """


@attrs.define(frozen=True, slots=True, kw_only=True)
class SSEEvent:
    """One dispatched Server-Sent Event.

    ``event`` is the event type (``"message"`` unless an ``event:`` field set it), ``data`` the
    ``data:`` lines joined with ``"\\n"``, and ``id`` the last event ID seen on the stream so far
    (it persists across events, as the spec says), or ``None`` if the stream never sent one.
    """

    event: str = "message"
    data: str
    id: str | None = None


RawEvent = tuple[str, str, str | None]
"""An event as :meth:`SSEDecoder.feed_raw` gives it: ``(event, data, id)``, the fields of an
:class:`SSEEvent` without building one (the chat decoder takes one per token)."""


class SSEDecoder:
    """Incremental SSE parser: bytes in, :class:`SSEEvent` objects out.

    Call :meth:`feed` with each piece of the response body as it arrives and :meth:`close` at
    end of stream. The result is the same for every way of splitting the byte stream.

    Parsing follows the WHATWG "event stream interpretation" rules:

    * lines end in LF, CRLF or CR (a CR at the end of one feed and an LF at the start of the next
      are one line end);
    * a leading byte-order mark is dropped;
    * a blank line dispatches the pending event, if it has at least one ``data`` line;
    * ``data`` lines of one event are joined with ``"\\n"``; a single space after the colon is
      stripped; a line without a colon is a field name with an empty value;
    * lines starting with ``:`` are comments; they are ignored but counted in :attr:`comments`;
    * ``event`` sets the event type, ``id`` the last event ID (unless it contains NUL), ``retry``
      the reconnection time (:attr:`retry`, only if all ASCII digits); other fields are ignored.

    Invalid UTF-8 is replaced with U+FFFD rather than raising. The data of one event longer
    than ``max_event_chars``, or a line longer than that and its field's name (8 characters
    more), raises :class:`SSEProtocolError` (memory stays bounded whatever the server sends),
    however the stream is cut into reads.

    With ``typed_without_data=True`` (a departure from the spec, which drops them), an event
    that set a type but no data (``event: error`` and a blank line) is dispatched too, with
    ``data=""``: a server that reports an error that way is heard.
    """

    __slots__ = (
        "_bom_checked",
        "_closed",
        "_data",
        "_data_chars",
        "_event_type",
        "_max",
        "_max_line",
        "_partial",
        "_partial_chars",
        "_pending_cr",
        "_typed_without_data",
        "_utf8",
        "comments",
        "last_event_id",
        "retry",
    )

    def __init__(
        self, *, max_event_chars: int = MAX_EVENT_CHARS, typed_without_data: bool = False
    ) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._max = max_event_chars
        self._max_line = max_event_chars + _FIELD_SLACK
        self._typed_without_data = typed_without_data
        # Pieces of the current, not yet terminated line (never contain CR or LF).
        self._partial: list[str] = []
        self._partial_chars = 0
        self._data_chars = 0  # in ``_data``
        # The last decoded character was a CR: an LF right after it belongs to the same line end.
        self._pending_cr = False
        self._bom_checked = False
        self._closed = False
        self._data: list[str] = []
        self._event_type = ""
        #: Last event ID received (``id:`` field); ``None`` until the stream sends one.
        self.last_event_id: str | None = None
        #: Reconnection time in milliseconds from the last valid ``retry:`` field, if any.
        self.retry: int | None = None
        #: Number of comment lines (lines starting with ``:``) seen so far.
        self.comments = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode the next piece of the byte stream; return the events it completed (maybe none).

        Raises :class:`RuntimeError` after :meth:`close`.
        """
        return [SSEEvent(event=e, data=d, id=i) for e, d, i in self.feed_raw(data)]

    def feed_raw(self, data: bytes) -> list[RawEvent]:
        """:meth:`feed`, with each event as an ``(event, data, id)`` tuple."""
        if self._closed:
            raise RuntimeError("SSEDecoder.feed() called after close()")
        events: list[RawEvent] = []
        text = self._utf8.decode(data)
        if text:
            self._feed_text(text, events)
        return events

    def close(self) -> list[SSEEvent]:
        """Signal end of stream; return any events that were still complete.

        An incomplete UTF-8 sequence at the end becomes U+FFFD. A trailing line without a line
        end is processed as a line (it can update :attr:`comments`, the last event ID or
        :attr:`retry`), but an event is only dispatched by a blank line, so a pending event that
        was not terminated is discarded, as the spec requires. Calling it again returns ``[]``.
        """
        return [SSEEvent(event=e, data=d, id=i) for e, d, i in self.close_raw()]

    def close_raw(self) -> list[RawEvent]:
        """:meth:`close`, with each event as an ``(event, data, id)`` tuple."""
        if self._closed:
            return []
        self._closed = True
        events: list[RawEvent] = []
        text = self._utf8.decode(b"", final=True)
        if text:
            self._feed_text(text, events)
        if self._partial:
            line = "".join(self._partial)
            self._partial.clear()
            self._process_lines([line], events)
        self._data.clear()
        self._event_type = ""
        return events

    def _feed_text(self, text: str, events: list[RawEvent]) -> None:
        """Split decoded ``text`` into lines and process the complete ones."""
        if not self._bom_checked:
            self._bom_checked = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return
        if self._pending_cr:
            self._pending_cr = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return
        if (
            text[-2:] == "\n\n"
            and text.startswith("data:")
            and text.find("\n") == len(text) - 2
            and not self._partial
            and not self._data
            and not self._event_type
            and "\r" not in text
        ):
            # The common read: one whole event of one data line ("data: ...\n\n"), nothing
            # pending. What the lines below make of it, without splitting it into lines.
            value = text[6:-2] if text[5:6] == " " else text[5:-2]
            if len(text) - 2 > self._max_line:
                self._too_large("line")
            if len(value) > self._max:
                self._too_large("event")
            events.append(("message", value, self.last_event_id))
            return
        if "\r" in text:
            # A CR that ends this piece is a line end now; remember it so that an LF opening the
            # next piece is not taken for a second (blank) line.
            self._pending_cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        elif "\n" not in text:
            self._keep_partial(text)
            return
        lines = text.split("\n")
        tail = lines.pop()
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial.clear()
            self._partial_chars = 0
        if tail:
            self._keep_partial(tail)
        self._process_lines(lines, events)

    def _keep_partial(self, piece: str) -> None:
        self._partial.append(piece)
        self._partial_chars += len(piece)
        if self._partial_chars > self._max_line:
            self._too_large("line")

    def _too_large(self, what: str) -> None:
        self._partial.clear()
        self._data.clear()
        raise SSEProtocolError(
            f"an SSE {what} longer than {self._max} characters; the stream was abandoned"
        )

    def _process_lines(self, lines: list[str], events: list[RawEvent]) -> None:
        """Apply complete lines to the pending event, appending dispatched events to ``events``."""
        data = self._data
        limit = self._max_line
        for line in lines:
            if len(line) > limit:  # (as it is refused while it is cut between reads)
                self._too_large("line")
            if not line:
                if data:
                    events.append(
                        (self._event_type or "message", "\n".join(data), self.last_event_id)
                    )
                    data.clear()
                    self._data_chars = 0
                elif self._event_type and self._typed_without_data:
                    events.append((self._event_type, "", self.last_event_id))
                self._event_type = ""
            elif line.startswith("data:"):
                value = line[6:] if line[5:6] == " " else line[5:]
                data.append(value)
                self._data_chars += len(value)
                if self._data_chars > self._max:
                    self._too_large("event")
            elif line[0] == ":":
                self.comments += 1
            else:
                self._process_field(line)

    def _process_field(self, line: str) -> None:
        """Handle a non-comment line other than the common ``data:`` form."""
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_chars += len(value)
            if self._data_chars > self._max:
                self._too_large("event")
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # Any other field name (and a malformed ``retry``) is ignored.
