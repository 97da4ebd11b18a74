"""The handler's settings: :class:`OpenAILLMConfig`, :class:`RetryPolicy` and the model table.

Everything is checked where the config is built (types, ranges), so a wrong value fails at the
line that wrote it, not in the middle of a conversation.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import os
import random
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import attrs

from ..._text import excerpt, redact_url
from ..._validators import (
    at_least,
    in_range,
    mapping_of_str,
    non_empty_str,
    non_negative,
    optional,
    positive,
)

__all__ = [
    "CONTEXT_WINDOWS",
    "OpenAILLMConfig",
    "RetryPolicy",
    "base_url_problem",
    "context_window_for_model",
]

# The seed's table: prefixes matched on the lowercased model name after its last "/".
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-3.5", 16_385),
    ("claude-opus-4", 1_048_576),
    ("claude-sonnet-4", 1_048_576),
    ("claude-3", 200_000),
    ("gemini-2", 1_048_576),
    ("gemini-1.5", 1_048_576),
)


def context_window_for_model(model: str) -> int | None:
    """The default context window of ``model`` (``None`` when unknown: no trimming)."""
    short = model.lower().rsplit("/", 1)[-1]
    for prefix, tokens in CONTEXT_WINDOWS:
        if short.startswith(prefix):
            return tokens
    return None


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Retries of a request that failed before anything was streamed.

    Connection errors and HTTP 408, 409, 429 and 5xx are retried up to ``max_attempts`` in all,
    waiting ``initial_delay * multiplier**(n-1)`` (capped at ``max_delay``, with ``jitter`` as a
    fraction of random spread) or the server's ``Retry-After`` when it says more (capped at
    ``max_retry_after``). Nothing is retried once a delta was emitted, so text is never
    duplicated.
    """

    max_attempts: int = attrs.field(default=3, validator=at_least(1))
    initial_delay: float = attrs.field(default=0.5, validator=non_negative)
    multiplier: float = attrs.field(default=2.0, validator=positive)
    max_delay: float = attrs.field(default=8.0, validator=non_negative)
    jitter: float = attrs.field(default=0.25, validator=in_range(0.0, 1.0))
    max_retry_after: float = attrs.field(default=60.0, validator=non_negative)
    retry_statuses: frozenset[int] = frozenset({408, 409, 429})

    def should_retry_status(self, status: int) -> bool:
        """Whether an HTTP status is worth another attempt."""
        return status in self.retry_statuses or 500 <= status <= 599

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        try:
            growth = self.multiplier ** (attempt - 1)
        except OverflowError:  # a float power past 1.8e308: the cap applies long before
            growth = math.inf
        base = min(self.initial_delay * growth, self.max_delay) if self.initial_delay else 0.0
        base *= 1 + self.jitter * (2 * random.random() - 1)
        if retry_after is not None:
            base = max(base, min(retry_after, self.max_retry_after))
        return max(base, 0.0)


# Printable ASCII without white space: what a key may hold (never shown in a message).
_KEY = re.compile(r"[\x21-\x7e]*")
# An HTTP header name (RFC 9110's token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What a header value may not hold: line breaks and other control characters.
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _api_key(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A string that can go into an HTTP header; the message never shows the key."""
    if not isinstance(value, str):
        raise TypeError(f"{attr.name} must be a str, got {type(value).__name__}")
    if _KEY.fullmatch(value):
        return
    if value.strip() != value:
        why = "white space or a line break at its start or end (a .env file with CRLF endings?)"
    else:
        why = "white space or characters other than printable ASCII in it"
    raise ValueError(f"{attr.name} has {why}; check it (the key is not shown here)")


def _headers(inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A mapping of str to str whose names and values can go into an HTTP header (values are
    never shown)."""
    mapping_of_str(inst, attr, value)
    for key, item in value.items():
        if not _TOKEN.fullmatch(key):
            raise ValueError(
                f"{attr.name} has the name {excerpt(key, 60)!r}, which is no HTTP header name "
                "(letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        if _BAD_HEADER_VALUE.search(item) or item.strip() != item:
            raise ValueError(
                f"{attr.name}[{key!r}] has a line break, a control character or white space at "
                "its start or end; strip it (the value is not shown here)"
            )
        if not item.isascii():
            # httpx encodes header values as ASCII: every request would fail.
            raise ValueError(
                f"{attr.name}[{key!r}] has characters other than ASCII, which a header cannot "
                "carry; percent-encode them (the value is not shown here)"
            )


def _json_object(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    """A mapping with str keys and JSON values (merged into the JSON body), which leaves
    ``stream`` and ``messages`` to the handler."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{attr.name} must be a mapping with str keys, got {value!r}")
    for key in ("stream", "messages"):
        if key in value:
            raise ValueError(f"{attr.name} may not set {key!r}: the handler sets it")
    try:
        # As a request encodes it: UTF-8 as it is (a lone surrogate has no UTF-8), no NaN.
        json.dumps(dict(value), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        # (Every request would fail, or send NaN, which is no JSON.)
        raise ValueError(f"{attr.name} must hold JSON values only: {exc}") from None


def _of(kind: type, wanted: str) -> Any:
    """``isinstance(value, kind)`` (bool is no int), else a TypeError saying ``wanted``."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise TypeError(f"{attr.name} must be {wanted}, got {value!r}")

    return check


_SECRET_NAME = re.compile(r"key|token|secret|sig|pass|auth|cred|session|cookie", re.IGNORECASE)


def _userinfo(url: str) -> str:
    """The ``user:password`` of ``url`` ("" when it has none)."""
    try:
        netloc = urlsplit(url.strip()).netloc
    except ValueError:
        return ""
    userinfo, at, _host = netloc.rpartition("@")
    return userinfo if at else ""


@functools.lru_cache(maxsize=64)
def base_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a base_url (an http(s) URL with a host, without white
    space, query or fragment: the endpoint's path is appended to it), or ``None``. Checked
    per request (cached), so that a wrong one fails its turns with a clear error."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        return f"it does not parse ({excerpt(redact_url(str(exc)), 100)})"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it has white space or a control character (from an environment variable?)"
    if parts.scheme.lower() not in ("http", "https"):
        return "it must start with https:// (or http://)"
    if not parts.hostname:
        return "it has no host"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "it has a query or a fragment (put query parameters in extra_query)"
    return None


def _secret_repr(value: str) -> str:
    return "'***'" if value else "''"


def _headers_repr(value: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{key!r}: '***'" for key in value) + "}"


@attrs.frozen(kw_only=True)
class OpenAILLMConfig:
    """Settings of an :class:`OpenAILLMHandler`. Optional sampling fields are left out of the
    request when ``None``.

    Attributes:
        api_key: sent as ``Authorization: Bearer <key>`` (or ``api-key: <key>`` with
            ``auth_header="api-key"``, as Azure wants). Empty: no auth header.
        model: the model name sent in every request.
        base_url: the API root, e.g. ``https://api.openai.com/v1`` (a trailing slash is fine).
        max_tool_rounds: tool rounds per turn before a last request with ``tool_choice: none``.
        context_window_tokens: trim the context to this window (default: the model table).
        trim_budget: the fraction of the window the context may fill.
        extra_headers / extra_query / extra_body: merged into every request (Azure's
            ``api-version`` goes in ``extra_query``).
        include_usage: ask for a usage chunk (``stream_options.include_usage``).
        connect_timeout: seconds to connect. first_token_timeout: seconds from sending the
            request to the first delta. chunk_timeout: the longest a stream may go without
            content or tool-call data (keep-alive comments and empty chunks do not count).
            request_timeout: the longest one request may take from sending it to its last
            event, not counting time spent waiting for the pipeline to take the frames
            (``None``: no limit).
        max_answer_chars: the most characters one response may stream (text, reasoning,
            refusal and tool calls together; default 4,000,000, far above what a model
            writes). Past it the rest is not read, the connection is closed and the turn ends
            with an error; what was already streamed stays, tool calls of that response do
            not run. It bounds the memory a server that does not stop can take.
        tool_timeout: default time limit of one tool call.
        tool_start_timeout / tool_stop_timeout: limits of a built-in tool's on_start / on_stop.
        retry: the :class:`RetryPolicy`.
    """

    api_key: str = attrs.field(default="", validator=_api_key, repr=_secret_repr)
    model: str = attrs.field(default="gpt-4.1", validator=non_empty_str)
    base_url: str = attrs.field(
        default="https://api.openai.com/v1",
        validator=non_empty_str,
        repr=lambda url: repr(redact_url(url)),
    )
    temperature: float | None = attrs.field(default=None, validator=optional(in_range(0.0, 2.0)))
    top_p: float | None = attrs.field(default=None, validator=optional(in_range(0.0, 1.0)))
    frequency_penalty: float | None = attrs.field(
        default=None, validator=optional(in_range(-2.0, 2.0))
    )
    presence_penalty: float | None = attrs.field(
        default=None, validator=optional(in_range(-2.0, 2.0))
    )
    seed: int | None = attrs.field(default=None, validator=optional(_of(int, "an int")))
    max_completion_tokens: int | None = attrs.field(default=None, validator=optional(at_least(1)))
    service_tier: str | None = attrs.field(default=None, validator=optional(_of(str, "a str")))
    reasoning_effort: str | None = attrs.field(default=None, validator=optional(_of(str, "a str")))
    max_tool_rounds: int = attrs.field(default=5, validator=at_least(1))
    context_window_tokens: int | None = attrs.field(default=None, validator=optional(at_least(1)))
    trim_budget: float = attrs.field(default=0.8, validator=in_range(0.05, 1.0))
    extra_headers: Mapping[str, str] = attrs.field(
        factory=dict, validator=_headers, repr=_headers_repr
    )
    extra_query: Mapping[str, str] = attrs.field(factory=dict, validator=mapping_of_str)
    extra_body: Mapping[str, Any] = attrs.field(factory=dict, validator=_json_object)
    auth_header: Literal["bearer", "api-key"] = attrs.field(
        default="bearer", validator=attrs.validators.in_(("bearer", "api-key"))
    )
    include_usage: bool = attrs.field(default=True, validator=_of(bool, "True or False"))
    connect_timeout: float = attrs.field(default=10.0, validator=positive)
    first_token_timeout: float = attrs.field(default=60.0, validator=positive)
    chunk_timeout: float = attrs.field(default=30.0, validator=positive)
    request_timeout: float | None = attrs.field(default=600.0, validator=optional(positive))
    max_answer_chars: int = attrs.field(default=4_000_000, validator=at_least(1))
    tool_timeout: float = attrs.field(default=30.0, validator=positive)
    tool_start_timeout: float = attrs.field(default=10.0, validator=positive)
    tool_stop_timeout: float = attrs.field(default=10.0, validator=positive)
    retry: RetryPolicy = attrs.field(
        factory=RetryPolicy, validator=_of(RetryPolicy, "a RetryPolicy")
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> OpenAILLMConfig:
        """Read ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` and ``OPENAI_MODEL``; keyword arguments
        override them."""
        values: dict[str, Any] = {}
        for field, var in (
            ("api_key", "OPENAI_API_KEY"),
            ("base_url", "OPENAI_BASE_URL"),
            ("model", "OPENAI_MODEL"),
        ):
            if os.environ.get(var):
                values[field] = os.environ[var]
        values.update(overrides)
        return cls(**values)

    def __attrs_post_init__(self) -> None:
        if self.api_key and self.auth_header == "bearer" and _userinfo(self.base_url):
            # Both are an Authorization header: httpx would send the URL's and drop the key.
            raise ValueError(
                "base_url has credentials (user:password@) and api_key is set: both would be "
                "the Authorization header, so one would be lost; send the key another way "
                "(auth_header='api-key', or a header in extra_headers) or leave api_key empty "
                "(the credentials are not shown here)"
            )

    @property
    def context_window(self) -> int | None:
        """``context_window_tokens``, or the model table's default."""
        return self.context_window_tokens or context_window_for_model(self.model)

    def chat_completions_url(self) -> str:
        """The endpoint URL (with any user-info: :func:`redact_url` it before showing it)."""
        return self.base_url.rstrip("/") + "/chat/completions"

    def request_url(self) -> str:
        """The endpoint URL without user-info (which :meth:`headers` sends as Basic auth
        instead), so that it can be logged (httpx logs every request's URL)."""
        return redact_url(self.chat_completions_url())

    def headers(self) -> dict[str, str]:
        """Request headers (auth and extras)."""
        headers = {"Accept": "text/event-stream"}
        userinfo = _userinfo(self.base_url)
        if userinfo:
            user, _, password = userinfo.partition(":")
            pair = f"{unquote(user)}:{unquote(password)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        if self.api_key:
            if self.auth_header == "api-key":
                headers["api-key"] = self.api_key
            else:
                headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.extra_headers)
        return headers

    def secret_values(self) -> tuple[str, ...]:
        """What no message may show: the API key, header and query values whose name says
        secret (``key``, ``token``, ``auth``, ``sig``, ``cookie``, ...), and the base_url's
        user-info. (Other values, such as ``application/json`` or an organization id, may
        appear in a server's message and stay readable.)"""
        values = [self.api_key]
        for extra in (self.extra_headers, self.extra_query):
            values += [v for k, v in extra.items() if _SECRET_NAME.search(k)]
        userinfo = _userinfo(self.base_url)
        if userinfo:
            for part in userinfo.split(":", 1):
                values += [part, unquote(part)]
        return tuple(v for v in dict.fromkeys(values) if v)
