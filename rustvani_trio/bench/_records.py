"""One benchmarked request: what was measured, how it failed, and its JSON form."""

from __future__ import annotations

import itertools
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any

import attrs

from ._stats import rounded

__all__ = ["ErrorInfo", "Redactor", "RequestRecord", "redact_url"]

_MAX_MESSAGE = 300


def redact_url(url: str) -> str:
    """``url`` without a password or user name (``https://***@host/v1``)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


@attrs.frozen
class Redactor:
    """Removes secrets (the API key, a URL's password) from text before it is stored."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Iterable[str | None]) -> Redactor:
        """A redactor for the non-empty ``values`` (longest first)."""
        forms = set()
        for value in values:
            if value:
                # As it is, and as a message may quote it (repr escapes, JSON escapes).
                forms |= {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
        return cls(tuple(sorted(forms, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


@attrs.frozen
class ErrorInfo:
    """Why a request failed.

    ``kind`` is ``"http"`` (the server answered with an error status, ``status``),
    ``"timeout"`` (no first token, or no next chunk, within the request timeout; or no
    connection in time), ``"connection"`` (no connection), ``"stream"`` (the stream broke
    after it started: an error event, a dropped connection, an invalid or unfinished stream),
    ``"no_tool_call"`` (with ``--tools``: the model answered without calling the tool) or
    ``"other"``.
    """

    kind: str
    message: str
    status: int | None = None

    @property
    def label(self) -> str:
        """The class the report counts it under: ``http_429``, ``timeout``, ``stream`` ..."""
        return f"http_{self.status}" if self.kind == "http" else self.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.label,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
        }


@attrs.define(eq=False)
class RequestRecord:
    """What one request (one user turn, through the pipeline or as a raw stream) measured.

    Times are absolute ``trio.current_time()`` values until :meth:`to_json` makes them
    relative: ``start`` is when the request began (the user's message queued to the pipeline,
    or the raw request about to be sent), ``token_times`` the arrival of each output delta of
    the answer (content, reasoning or refusal), ``end`` when the answer was complete.
    """

    index: int
    path: str
    phase: str
    scheduled: float | None = None
    start: float = 0.0
    token_times: list[float] = attrs.Factory(list)
    end: float | None = None
    output_tokens_usage: int | None = None
    prompt_tokens_usage: int | None = None
    error: ErrorInfo | None = None
    warnings: list[str] = attrs.Factory(list)
    precall_tokens: int = 0
    tool_call_at: float | None = None
    interrupt_at: float | None = None
    closed_at: float | None = None
    interrupt_outcome: str | None = None
    token_limit: int | None = None
    """The most output tokens the request asked for: a usage above it is not believed."""
    finished: bool = False
    """The request ran to its end (it is ``False`` for one a stopped run left in flight)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def interrupted(self) -> bool:
        return self.interrupt_at is not None

    def fail(self, error: ErrorInfo) -> None:
        """Record ``error`` (the first failure wins; later ones become warnings)."""
        if self.error is None:
            self.error = error
        else:
            self.warnings.append(f"{error.label}: {error.message}")

    def take_usage(self, completion: object, prompt: object) -> None:
        """Keep the server's reported token counts (whole numbers only)."""
        if _count(completion):
            self.output_tokens_usage = completion  # type: ignore[assignment]
        if _count(prompt):
            self.prompt_tokens_usage = prompt  # type: ignore[assignment]

    def usage_problem(self) -> str | None:
        """Why the server's completion_tokens cannot be the answer's token count, if it
        cannot: more than the request allowed, or none for an answer that streamed text."""
        used, deltas = self.output_tokens_usage, len(self.token_times)
        if used is None:
            return None
        if self.token_limit is not None and used > self.token_limit:
            why = f"more than the {self.token_limit} the request allowed"
        elif used == 0 and deltas:
            why = f"none, for {deltas} streamed deltas"
        else:
            return None
        return f"the server's usage said completion_tokens={used} ({why}); deltas counted instead"

    @property
    def output_tokens(self) -> int:
        """Output tokens of the answer: the server's usage when reported (and plausible),
        else the deltas."""
        if self.output_tokens_usage is not None and self.usage_problem() is None:
            return self.output_tokens_usage
        return len(self.token_times)

    @property
    def token_source(self) -> str:
        usable = self.output_tokens_usage is not None and self.usage_problem() is None
        return "usage" if usable else "counted"

    def metrics(self) -> dict[str, Any]:
        """The request's own figures (ms, tokens/s); ``None`` where they do not apply.

        E2E, TPOT and tokens/s need a complete answer, so an interrupted request has none.
        """
        ms = 1000.0
        times = self.token_times
        ttft = (times[0] - self.start) * ms if times else None
        complete = self.ok and not self.interrupted and self.end is not None
        e2e = (self.end - self.start) * ms if complete and self.end is not None else None
        tokens = self.output_tokens
        tpot = None
        if e2e is not None and ttft is not None and tokens > 1:
            tpot = (e2e - ttft) / (tokens - 1)
        tok_s = tokens / (e2e / ms) if e2e is not None and e2e > 0 and tokens else None
        tool_rtt = None
        if self.tool_call_at is not None and times and times[0] >= self.tool_call_at:
            tool_rtt = (times[0] - self.tool_call_at) * ms
        close = None
        if self.interrupt_at is not None and self.closed_at is not None:
            close = max(0.0, self.closed_at - self.interrupt_at) * ms
        return {
            "ttft_ms": ttft,
            "itl_ms": [(b - a) * ms for a, b in itertools.pairwise(times)],
            "tpot_ms": tpot,
            "e2e_ms": e2e,
            "output_tok_s": tok_s,
            "tool_rtt_ms": tool_rtt,
            "interrupt_close_ms": close,
        }

    def to_json(self, origin: float) -> dict[str, Any]:
        """The record for the JSON file: times in ms, relative to ``origin`` (the level's
        measured start) for ``start_ms``, and to the request's start for the rest."""
        ms = 1000.0

        def rel(t: float | None) -> float | None:
            return None if t is None else rounded((t - self.start) * ms)

        values = self.metrics()
        out: dict[str, Any] = {
            "index": self.index,
            "path": self.path,
            "phase": self.phase,
            "ok": self.ok,
            "aborted": not self.finished,
            "start_ms": rounded((self.start - origin) * ms),
            "schedule_lag_ms": (
                None if self.scheduled is None else rounded((self.start - self.scheduled) * ms)
            ),
            "token_ms": [rounded((t - self.start) * ms) for t in self.token_times],
            "end_ms": rel(self.end),
            "output_tokens": self.output_tokens,
            "token_source": self.token_source,
            "prompt_tokens": self.prompt_tokens_usage,
            "precall_tokens": self.precall_tokens,
            "tool_call_ms": rel(self.tool_call_at),
            "interrupt_ms": rel(self.interrupt_at),
            "closed_ms": rel(self.closed_at),
            "interrupt_outcome": self.interrupt_outcome,
            "error": None if self.error is None else self.error.to_json(),
            "warnings": [*self.warnings, *filter(None, [self.usage_problem()])],
        }
        for key, value in values.items():
            if key == "itl_ms":
                out[key] = [rounded(v) for v in value]
            else:
                out[key] = None if value is None else rounded(value)
        return out


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def clip(message: str) -> str:
    """``message`` shortened for the report."""
    message = " ".join(message.split())
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"
