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

import datetime
import email.utils
import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal, NoReturn, TypeAlias

import httpx

from ..._text import excerpt, hide_secrets, mend_surrogates, redact_url
from ...exceptions import RustvaniError
from ._config import OpenAILLMConfig

__all__ = [
    "ERROR_BODY_BYTES",
    "LLMAnswerCutShort",
    "LLMErrorKind",
    "LLMRequestError",
    "map_exceptions",
    "not_a_stream_error",
    "parse_retry_after",
    "safe_text",
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
      stream, invalid data, a line over the limit, an answer over ``max_answer_chars``, a body
      that could not be decoded, a stream that ended before it was complete);
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
            f"invalid base_url {url!r}: {_detail(exc, cfg)}; it should look like "
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
            f"connection to {url} failed: {type(exc).__name__}: {_detail(exc, cfg)}",
            kind="connection",
            retryable=True,
        ) from exc
    except httpx.DecodingError as exc:
        raise LLMRequestError(
            f"the body from {url} could not be decoded (a broken Content-Encoding?): "
            f"{_detail(exc, cfg)}",
            kind="protocol",
        ) from exc


def _detail(exc: BaseException, cfg: OpenAILLMConfig) -> str:
    return safe_text(redact_url(excerpt(str(exc))), cfg) or "no detail"


def safe_text(text: str, cfg: OpenAILLMConfig) -> str:
    """``text`` without the secrets of ``cfg`` (a server may echo the API key)."""
    return hide_secrets(text, cfg.secret_values())


_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_retry_after(headers: httpx.Headers | Mapping[str, str]) -> float | None:
    """Seconds the server asks to wait, or ``None``: ``retry-after-ms`` (OpenAI's and Azure's,
    in milliseconds) if valid, else ``Retry-After`` (seconds, or an HTTP date; one in the past
    is 0). Anything else (``nan``, ``-1``, ``1_0``) is ignored."""
    millis = (headers.get("retry-after-ms") or "").strip()
    if _SECONDS.fullmatch(millis):
        return float(millis) / 1000
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 says
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - time.time(), 0.0)


def server_message(body: bytes, *, note: str | None = None) -> str:
    """The message in a body, safe to show: ``error.message`` of a JSON error (also of one
    that was cut short), else the text, shortened and escaped. ``note``: why the body is not
    all of it, if it is not."""
    text = body.decode("utf-8", "replace").strip()
    message = text
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # (nested too deeply: shown as the text it is)
        if not text:
            message = "(empty body)"
        elif text[:1] == "{":
            message = _cut_json_message(text) or text
    else:
        err = data.get("error", data) if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(err, str):
            message = err
    shown = excerpt(message)
    if note:
        shown += f" ({note})"
    return shown


_JSON_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)')


def _cut_json_message(text: str) -> str | None:
    """The ``message`` string of a JSON object that was cut short (its opening part only, if
    the cut fell inside it), or ``None``."""
    found = _JSON_MESSAGE.search(text[:1_000_000])
    if found is None:
        return None
    value = found.group(1)
    for end in range(len(value), max(len(value) - 6, -1), -1):  # a cut escape: \u00, say
        try:
            decoded = json.loads(f'"{value[:end]}"', strict=False)
        except ValueError:
            continue
        return mend_surrogates(decoded) if isinstance(decoded, str) else None
    return None


def status_error(
    status: int,
    body: bytes,
    headers: httpx.Headers,
    cfg: OpenAILLMConfig,
    *,
    note: str | None = None,
) -> LLMRequestError:
    """The error for an HTTP status other than 200, with the server's message."""
    msg = server_message(body, note=note)
    location = headers.get("location")
    if 300 <= status <= 399 and location:
        text = (
            f"the server redirected (HTTP {status}) to {excerpt(redact_url(location), 200)}; "
            "set base_url to the new address (redirects are not followed: they would carry "
            "the API key to wherever they point)"
        )
    elif status in (401, 403):
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
        safe_text(text, cfg),
        kind="http",
        status=status,
        retryable=cfg.retry.should_retry_status(status),
        retry_after=parse_retry_after(headers),
    )


def not_a_stream_error(
    content_type: str, body: bytes, cfg: OpenAILLMConfig, *, note: str | None = None
) -> LLMRequestError:
    """The error for a 200 response that is not an event stream: what came back instead."""
    label = content_type.partition(";")[0].strip().lower()
    what = (
        f"{excerpt(label, 60)!s} instead of an event stream"
        if label
        else ("a body without a content type that is no event stream")
    )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # (RecursionError: nested too deeply)
        data = None
    start = body.lstrip()[:1]
    if isinstance(data, dict) and data.get("object") == "chat.completion":
        what = "a complete JSON chat completion instead of a stream (stream=true was ignored)"
    elif (isinstance(data, dict) and "error" in data) or (
        data is None and start == b"{" and b'"error"' in body
    ):
        what = "a JSON error instead of an event stream"
    elif label == "text/html" or start == b"<":
        what = "an HTML page instead of an event stream (a proxy or a wrong base_url?)"
    return LLMRequestError(
        safe_text(
            f"{redact_url(cfg.chat_completions_url())} answered HTTP 200 with {what}: "
            f"{server_message(body, note=note)}",
            cfg,
        ),
        kind="protocol",
        status=200,
    )
