"""What can go wrong with a request, as :class:`LLMRequestError`.

:func:`map_exceptions` turns httpx's exceptions into :class:`LLMRequestError` (the style of
httpcore's ``map_exceptions``); :func:`status_error` turns an HTTP error status and its body into
one, with the server's message and advice for the usual mistakes (a wrong key, model or URL).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from ...exceptions import RustvaniError
from ._config import OpenAILLMConfig

__all__ = ["LLMRequestError", "map_exceptions", "parse_retry_after", "status_error"]


class LLMRequestError(RustvaniError):
    """A request failed; ``retryable`` says whether another attempt may help."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


@contextmanager
def map_exceptions(cfg: OpenAILLMConfig) -> Iterator[None]:
    """Raise httpx's exceptions from the block as :class:`LLMRequestError`, naming the URL."""
    try:
        yield
    except httpx.TimeoutException as exc:  # connect, write or pool: reads have no timeout
        raise LLMRequestError(
            f"connection to {cfg.base_url} timed out ({type(exc).__name__}, "
            f"connect_timeout={cfg.connect_timeout}s)",
            retryable=True,
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise LLMRequestError(
            f"invalid base_url {cfg.base_url!r}: {exc}; it should look like "
            "'https://api.openai.com/v1'"
        ) from exc
    except httpx.TransportError as exc:
        raise LLMRequestError(
            f"connection to {cfg.base_url} failed: {type(exc).__name__}: {exc or 'no detail'}",
            retryable=True,
        ) from exc


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


def server_message(body: bytes) -> str:
    """The message in an error body: ``error.message`` of a JSON error, else the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return text[:300]


def status_error(
    status: int, body: bytes, headers: httpx.Headers, cfg: OpenAILLMConfig
) -> LLMRequestError:
    """The error for an HTTP status other than 200, with the server's message."""
    msg = server_message(body)
    if status in (401, 403):
        text = (
            f"authentication failed (HTTP {status}): {msg}. The API key was rejected: check "
            "OPENAI_API_KEY / OpenAILLMConfig.api_key"
            + (" (Azure wants auth_header='api-key')" if status == 401 else "")
        )
    elif status == 404:
        text = (
            f"not found (HTTP 404): {msg}. Check the model {cfg.model!r} and the base_url "
            f"{cfg.base_url!r}"
        )
    elif status == 429:
        text = f"rate limited (HTTP 429): {msg}"
    else:
        text = f"HTTP {status} from {cfg.chat_completions_url()}: {msg}"
    return LLMRequestError(
        text,
        status=status,
        retryable=cfg.retry.should_retry_status(status),
        retry_after=parse_retry_after(headers.get("retry-after")),
    )
