"""The body of one streamed response: what it is (checked before it is decoded), read within
bounds, and drained for connection reuse once the answer is complete.

The content type alone does not say whether a body is an event stream: proxies label event
streams ``text/plain`` or ``application/octet-stream``, and gateways answer an error as a
JSON object (or an HTML page) labelled ``text/event-stream``. So the first bytes decide:
an SSE field (``data:``, ``event:``, ``id:``, ``retry:``) or a comment (``:``) is an event
stream whatever the label says; anything else (a JSON object, an HTML page, plain text, an
empty body) is not, whatever the label says.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, cast

import httpx
import trio

from ..._text import excerpt, redact_url
from ._config import OpenAILLMConfig
from ._errors import (
    ERROR_BODY_BYTES,
    LLMRequestError,
    not_a_stream_error,
    status_error,
)

__all__ = [
    "DRAIN_SECONDS",
    "ERROR_BODY_SECONDS",
    "SETTLE_ROUNDS",
    "Body",
    "Drains",
    "check_response",
]

logger = logging.getLogger("rustvani_trio")

#: How long the end of a finished body may take to arrive before its connection is dropped.
DRAIN_SECONDS: Final = 0.25
#: How many scheduling rounds (no time) a new request gives the drains still running, so that
#: a body whose end already arrived gives its connection back to the pool first.
SETTLE_ROUNDS: Final = 16
#: How long an error body (or a body that is no event stream) may take to arrive: whatever
#: came by then is reported.
ERROR_BODY_SECONDS: Final = 5.0

_BOM: Final = b"\xef\xbb\xbf"
_BLANK: Final = frozenset(b" \t\r\n")
_SSE_STARTS: Final = (b"data:", b"event:", b"id:", b"retry:", b":")


def _identity(response: httpx.Response) -> bool:
    """Whether the body comes as it is sent (no ``Content-Encoding`` but ``identity``)."""
    encoding = response.headers.get("content-encoding")
    return encoding is None or encoding.strip().lower() in ("", "identity")


class Body:
    """An open streamed response and its one byte iterator (read by one task at a time).

    :meth:`read_head` reads the first bytes (to see what the body is); :attr:`chunks` yields
    them again, then the rest. The hot path (:func:`~._stream.stream_answer`) takes the head
    with :meth:`take_head` and then awaits :attr:`next_chunk` itself, without that layer.

    A body without a content encoding is read from the response's byte stream as the
    transport delivers it (``response.stream``: what ``aiter_raw`` and ``aiter_bytes`` wrap
    in two more layers per read, for byte counting and decoding it does not need); a gzip,
    deflate, brotli or zstd body through ``aiter_bytes``, which decodes it.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        stream = response.stream
        if (
            _identity(response)
            and isinstance(stream, httpx.AsyncByteStream)
            and not response.is_stream_consumed  # (a client's response hook may have read it)
        ):
            response.is_stream_consumed = True  # (as aiter_raw marks it: read once)
            raw: AsyncIterator[bytes] = stream.__aiter__()
        else:
            raw = response.aiter_bytes()  # (replays a body already read)
        self._raw = cast(AsyncGenerator[bytes, None], raw)
        #: The next piece of the body (``StopAsyncIteration`` at its end).
        self.next_chunk = self._raw.__anext__
        self._head = b""
        self.chunks: AsyncGenerator[bytes, None] = self._chunks()

    def take_head(self) -> bytes:
        """What :meth:`read_head` read and nobody took yet (then ``b""``)."""
        head, self._head = self._head, b""
        return head

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        if self._head:
            head, self._head = self._head, b""
            yield head
        async for chunk in self._raw:
            yield chunk

    async def read_head(self) -> tuple[bytes, bool]:
        """The first bytes of the body: enough to tell what it is (up to the error body's
        cap), and whether the body ended there. Linear in what it reads, however the body is
        cut (a byte at a time, say)."""
        head = bytearray()
        blank = 0  # the leading byte-order mark and white space seen so far
        async for chunk in self._raw:
            head += chunk
            if blank == 0 and head.startswith(_BOM):
                blank = len(_BOM)
            while blank < len(head) and head[blank] in _BLANK:
                blank += 1
            if (
                _verdict(bytes(head[blank : blank + 8])) is not None
                or len(head) >= ERROR_BODY_BYTES
            ):
                break
        else:
            self._head = bytes(head)
            return self._head, True
        self._head = bytes(head)
        return self._head, False

    async def read_capped(self, limit: int) -> tuple[bytes, str | None]:
        """Up to ``limit`` bytes of the body (what :meth:`read_head` read included), read for
        at most :data:`ERROR_BODY_SECONDS`, and why it is not all of it, if it is not."""
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(ERROR_BODY_SECONDS):
            async for chunk in self.chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    return (
                        b"".join(parts)[:limit],
                        f"the body was longer than {limit} bytes; the rest was not read",
                    )
            return b"".join(parts), None
        return b"".join(parts), f"the rest of the body did not come within {ERROR_BODY_SECONDS:g}s"

    async def drain(self) -> None:
        """Read the rest (bounded) so that the connection is reused, then close."""
        try:
            with trio.move_on_after(DRAIN_SECONDS) as scope:
                async for _rest in self.chunks:
                    pass
            if scope.cancelled_caught:
                logger.debug("the body went on after [DONE]; its connection is not reused")
        except httpx.HTTPError as exc:
            logger.debug(
                "reading the end of a finished body failed (%s); its connection is not reused",
                type(exc).__name__,
            )
        except Exception as exc:  # best effort: the answer was delivered whatever happens here
            logger.warning("reading the end of a finished body failed: %r", exc, exc_info=exc)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        try:
            try:
                await self.chunks.aclose()
            finally:
                close = getattr(self._raw, "aclose", None)  # (a transport's own iterator)
                if close is not None:
                    await close()
        finally:
            await self.response.aclose()


class Drains:
    """The ends of finished bodies being read (:meth:`Body.drain`) in ``nursery``, a nursery
    that outlives the turn: no turn waits for a drain."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._pending: set[Body] = set()

    @property
    def pending(self) -> int:
        """How many drains are still running."""
        return len(self._pending)

    def start(self, body: Body) -> None:
        """Drain ``body`` (and close it) in the background."""
        self._pending.add(body)
        self._nursery.start_soon(self._drain, body)

    async def _drain(self, body: Body) -> None:
        try:
            await body.drain()
        finally:
            self._pending.discard(body)

    async def settle(self) -> None:
        """Give the running drains a few scheduling rounds, no time: one whose end already
        arrived finishes and gives its connection back for the next request; one that waits
        on the network is left running (the next request takes another connection)."""
        for _ in range(SETTLE_ROUNDS):
            if not self._pending:
                return
            await trio.lowlevel.checkpoint()


def _verdict(head: bytes) -> bool | None:
    """Whether a body that starts with ``head`` is an event stream: ``True`` (an SSE field or
    comment), ``False`` (anything else: JSON, HTML, text), or ``None`` (nothing yet but
    blank lines, or the start of a field name: more bytes will tell)."""
    if _BOM.startswith(head):
        return None  # nothing yet, or a byte-order mark cut between reads
    start = head.removeprefix(_BOM).lstrip()
    if not start:
        return None
    if start.startswith(_SSE_STARTS):
        return True
    if any(marker.startswith(start) for marker in _SSE_STARTS):
        return None  # "dat", say: the rest of "data:" may follow
    return False


async def check_response(body: Body, cfg: OpenAILLMConfig) -> None:
    """Raise :class:`LLMRequestError` for a status other than 200, or for a 200 whose body is
    no event stream (saying what it is, with the server's message)."""
    response = body.response
    if response.status_code != 200:
        raw, note = await body.read_capped(ERROR_BODY_BYTES)
        raise status_error(response.status_code, raw, response.headers, cfg, note=note)
    content_type = response.headers.get("content-type", "")
    labelled = content_type.partition(";")[0].strip().lower() == "text/event-stream"
    head, ended = await body.read_head()
    verdict = _verdict(head)
    if verdict is None and not ended:
        verdict = labelled  # a body that opens with 64 KiB of blank lines: the label decides
    if verdict:
        if not labelled:
            logger.debug(
                "%s sent an event stream labelled %r; it is read as one",
                redact_url(cfg.base_url),
                excerpt(content_type, 60),
            )
        return
    if not head.strip() and ended:
        raise LLMRequestError(
            f"{redact_url(cfg.chat_completions_url())} answered HTTP 200 with an empty body "
            "instead of an event stream",
            kind="protocol",
            status=200,
            retryable=True,
        )
    raw, note = await body.read_capped(ERROR_BODY_BYTES)
    raise not_a_stream_error(content_type, raw, cfg, note=note)
