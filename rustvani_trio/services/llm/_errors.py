"""What can go wrong with a request, as :class:`LLMRequestError`.

:func:`map_exceptions` turns httpx's exceptions into :class:`LLMRequestError` (the style of
httpcore's ``map_exceptions``); :func:`status_error` turns an HTTP error status and its body into
one, and :func:`not_a_stream_error` a 200 response that is no event stream, each with the
server's message and advice for the usual mistakes (a wrong key, model or URL).

Every message is safe to show and to log: server text is shortened and escaped
(:func:`~._text.excerpt`), URLs lose their user-info, and no header value (the API key) is
ever part of one.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, NoReturn, TypeAlias

import httpx

from ...exceptions import RustvaniError
from ._config import OpenAILLMConfig
from ._text import excerpt, redact_url

__all__ = [
    "ERROR_BODY_BYTES",
    "LLMAnswerCutShort",
    "LLMErrorKind",
    "LLMRequestError",
    "map_exceptions",
    "not_a_stream_error",
    "parse_retry_after",
    "status_error",
]

#: How much of an error body is read (the rest is not: the connection is closed instead).
ERROR_BODY_BYTES = 64 * 1024


#: How a request failed (:attr:`LLMRequestError.kind`).
LLMErrorKind: TypeAlias = Literal["config", "connection", "timeout", "http", "protocol", "stream"]


class LLMRequestError(RustvaniError):
    """A request failed. Attached as the ``exception`` of the ErrorFrame that reports it.

    ``kind`` says how, so that no caller has to parse the message:

    * ``"config"``: it could not be sent as configured (an invalid ``base_url``, a header that
      is not valid HTTP, no client yet);
    * ``"connection"``: connecting failed, or the connection broke;
    * ``"timeout"``: ``connect_timeout``, ``first_token_timeout``, ``chunk_timeout`` or
      ``request_timeout`` passed;
    * ``"http"``: the server answered with an error status (in ``status``);
    * ``"protocol"``: what came back is no complete chat-completions stream (not an event
      stream, invalid data, a line over the limit, a body that could not be decoded, a stream
      that ended before it was complete);
    * ``"stream"``: the server reported an error inside the stream (an error event).

    ``retryable`` says whether another attempt may help, ``retry_after`` is the server's
    ``Retry-After`` in seconds, if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: LLMErrorKind,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: LLMErrorKind = kind
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class LLMAnswerCutShort(RustvaniError):
    """Not a failure: the answer was delivered, but the model stopped before it was done.

    Attached as the ``exception`` of the (non-fatal) ErrorFrame that reports it. ``kind`` is
    the ``finish_reason``: ``"length"`` (the token limit: ``max_completion_tokens`` or the
    context window) or ``"content_filter"`` (the provider's filter).
    """

    def __init__(self, message: str, *, kind: Literal["length", "content_filter"]) -> None:
        super().__init__(message)
        self.kind = kind
        self.finish_reason: str = kind


def _raise_detached(error: LLMRequestError) -> NoReturn:
    """Raise ``error`` without the exception being handled as its context (whose message may
    hold a header value)."""
    try:
        raise error from None
    except LLMRequestError as exc:
        exc.__context__ = None
        raise


@contextmanager
def map_exceptions(cfg: OpenAILLMConfig) -> Iterator[None]:
    """Raise httpx's exceptions from the block as :class:`LLMRequestError`, naming the URL."""
    url = redact_url(cfg.base_url)
    try:
        yield
    except httpx.TimeoutException as exc:  # connect, write or pool: reads have no timeout
        raise LLMRequestError(
            f"connection to {url} timed out ({type(exc).__name__}, "
            f"connect_timeout={cfg.connect_timeout}s)",
            kind="timeout",
            retryable=True,
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise LLMRequestError(
            f"invalid base_url {url!r}: {_detail(exc)}; it should look like "
            "'https://api.openai.com/v1'",
            kind="config",
        ) from exc
    except httpx.LocalProtocolError as exc:
        # Our own request was refused before it was sent; h11's message quotes the offending
        # header, so it is left out (the config refuses such values where it is built).
        _raise_detached(
            LLMRequestError(
                f"the request to {url} could not be sent ({type(exc).__name__}: a header or "
                "the body is not valid HTTP)",
                kind="config",
            )
        )
    except httpx.TransportError as exc:
        raise LLMRequestError(
            f"connection to {url} failed: {type(exc).__name__}: {_detail(exc)}",
            kind="connection",
            retryable=True,
        ) from exc


def _detail(exc: BaseException) -> str:
    return redact_url(excerpt(str(exc))) or "no detail"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date), or ``None``."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def server_message(body: bytes, *, cut: bool = False) -> str:
    """The message in a body, safe to show: ``error.message`` of a JSON error, else the text,
    shortened and escaped. ``cut``: the body was not read to its end."""
    text = body.decode("utf-8", "replace").strip()
    message = text
    try:
        data = json.loads(text)
    except ValueError:
        if not text:
            return "(empty body)"
    else:
        err = data.get("error", data) if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(err, str):
            message = err
    shown = excerpt(message)
    if cut:
        shown += f" (the body was longer than {ERROR_BODY_BYTES} bytes; the rest was not read)"
    return shown


def status_error(
    status: int, body: bytes, headers: httpx.Headers, cfg: OpenAILLMConfig, *, cut: bool = False
) -> LLMRequestError:
    """The error for an HTTP status other than 200, with the server's message."""
    msg = server_message(body, cut=cut)
    if status in (401, 403):
        text = (
            f"authentication failed (HTTP {status}): {msg}. The API key was rejected: check "
            "OPENAI_API_KEY / OpenAILLMConfig.api_key"
            + (" (Azure wants auth_header='api-key')" if status == 401 else "")
        )
    elif status == 404:
        text = (
            f"not found (HTTP 404): {msg}. Check the model {cfg.model!r} and the base_url "
            f"{redact_url(cfg.base_url)!r}"
        )
    elif status == 429:
        text = f"rate limited (HTTP 429): {msg}"
    else:
        text = f"HTTP {status} from {redact_url(cfg.chat_completions_url())}: {msg}"
    return LLMRequestError(
        text,
        kind="http",
        status=status,
        retryable=cfg.retry.should_retry_status(status),
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def not_a_stream_error(
    content_type: str, body: bytes, cfg: OpenAILLMConfig, *, cut: bool = False
) -> LLMRequestError:
    """The error for a 200 response that is not an event stream: what came back instead."""
    kind = content_type.partition(";")[0].strip().lower()
    what = f"{excerpt(kind, 60)!s} instead of an event stream"
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("object") == "chat.completion":
        what = "a complete JSON chat completion instead of a stream (stream=true was ignored)"
    elif isinstance(data, dict) and "error" in data:
        what = "a JSON error instead of an event stream"
    elif kind == "text/html":
        what = "an HTML page instead of an event stream (a proxy or a wrong base_url?)"
    return LLMRequestError(
        f"{redact_url(cfg.chat_completions_url())} answered HTTP 200 with {what}: "
        f"{server_message(body, cut=cut)}",
        kind="protocol",
        status=200,
    )
