"""The settings of one bench run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import httpx

from .._validators import non_empty_str

__all__ = ["SCRIPTED", "BenchConfig", "Level"]

SCRIPTED = "scripted"
"""The ``base_url`` that starts the scripted server in-process (no network needed)."""


def _int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _float_tuple(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(value)


def _positive_ints(_inst: Any, attr: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"{attr.name} must be whole numbers >= 1, got {value!r}")


def _positive_floats(_inst: Any, attr: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    if any(not isinstance(v, int | float) or not 0 < v < math.inf for v in value):
        raise ValueError(f"{attr.name} must be numbers > 0 (and finite), got {value!r}")


def _at_least(low: float) -> Any:
    """A finite number >= ``low`` (an infinite duration, delay or timeout would let the run go
    on forever, and could not be written to the JSON file)."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None and not low <= value < math.inf:
            raise ValueError(f"{attr.name} must be >= {low:g} (and finite), got {value!r}")

    return check


def _http_url(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    # The value is never repeated: it may hold credentials.
    if value == SCRIPTED:
        return
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{attr.name} must be an http:// or https:// URL (or {SCRIPTED!r})")
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ValueError(f"{attr.name} is not a valid URL (check its host and port)") from None
    if not url.host:
        raise ValueError(f"{attr.name} has no host (expected e.g. http://127.0.0.1:8000/v1)")
    if url.query or url.fragment or "?" in value or "#" in value:
        # The requests go to base_url + "/chat/completions": a query would end up in the path.
        raise ValueError(f"{attr.name} must have no query (?...) or fragment (#...)")


def _header_safe(_inst: Any, attr: attrs.Attribute[Any], value: str) -> None:
    # Never repeated: httpx would refuse it in a header, with the key in its message.
    if not isinstance(value, str) or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{attr.name} holds whitespace or control characters (a newline?)")


@attrs.frozen
class Level:
    """One load level: a fixed number of concurrent users, or Poisson arrivals at a rate."""

    mode: str
    """``"concurrency"`` or ``"rate"``."""
    value: float

    @property
    def label(self) -> str:
        """``c=8`` or ``rate=2.5/s``."""
        if self.mode == "concurrency":
            return f"c={int(self.value)}"
        return f"rate={self.value:g}/s"


@attrs.frozen(kw_only=True)
class BenchConfig:
    """What to benchmark and how (the options of ``python -m rustvani_trio bench``).

    Attributes:
        base_url: the API root (``http://host:8000/v1``), or ``"scripted"`` for the scripted
            server in-process with ``scripted_first_token_ms`` / ``scripted_token_interval_ms``.
        model: the model name sent in every request.
        api_key: sent as ``Authorization: Bearer``; never written anywhere (not in the repr).
        api_key_env: the name of the variable the key came from (reported; not the key).
        concurrency: fixed-concurrency levels, run in turn (ignored when ``rate`` is set).
        rate: Poisson arrival rates (requests per second), run in turn, instead.
        requests / duration: each level stops after this many measured requests, or after
            issuing requests for this many seconds (exactly one of them is set).
        warmup: requests per level before the measured ones, excluded from the figures
            (default: the concurrency, at least 2; 2 with a rate).
        prompt_tokens / max_tokens: the synthetic prompt's size and the output limit.
        tools: each request offers a tool that the model must call (``tool_choice:
            "required"``); the answer follows with ``tool_choice: "none"``.
        interrupt_after_ms: interrupt every request this long after it started.
        seed: seeds the prompts, the Poisson arrivals and the scripted faults.
        request_timeout: the longest wait for the first token, and for each next chunk.
        extra_body: merged into every request body (e.g. ``{"ignore_eos": true}``).
        overhead: also run against an instant in-process server, to measure the load
            generator's own overhead; ``overhead_requests`` requests per overhead level.
        window: seconds per window of the throughput statistics.
        max_line_bytes: the longest line of a response the bench reads (an endless line
            fails its request instead of filling the memory). A response also fails when it
            goes past ``4 * output_limit + 64`` non-empty lines (a server that ignores the
            token limit, or never ends its stream).
    """

    base_url: str = attrs.field(validator=[non_empty_str, _http_url])
    model: str = attrs.field(validator=non_empty_str)
    api_key: str = attrs.field(default="", repr=False, validator=_header_safe)
    api_key_env: str | None = None
    concurrency: tuple[int, ...] = attrs.field(
        default=(1,), converter=_int_tuple, validator=_positive_ints
    )
    rate: tuple[float, ...] = attrs.field(
        default=(), converter=_float_tuple, validator=_positive_floats
    )
    requests: int | None = attrs.field(default=40, validator=_at_least(1))
    duration: float | None = attrs.field(default=None, validator=_at_least(0.001))
    warmup: int | None = attrs.field(default=None, validator=_at_least(0))
    prompt_tokens: int = attrs.field(default=256, validator=_at_least(1))
    max_tokens: int = attrs.field(default=128, validator=_at_least(1))
    tools: bool = False
    interrupt_after_ms: float | None = attrs.field(default=None, validator=_at_least(0))
    seed: int = 0
    request_timeout: float = attrs.field(default=60.0, validator=_at_least(0.001))
    connect_timeout: float = attrs.field(default=10.0, validator=_at_least(0.001))
    extra_body: Mapping[str, Any] = attrs.field(factory=dict)
    overhead: bool = True
    overhead_requests: int = attrs.field(default=20, validator=_at_least(2))
    window: float = attrs.field(default=1.0, validator=_at_least(0.001))
    max_line_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_at_least(64))
    scripted_first_token_ms: float = attrs.field(default=200.0, validator=_at_least(0))
    scripted_token_interval_ms: float = attrs.field(default=20.0, validator=_at_least(0))
    scripted_error_rate: float = attrs.field(default=0.0, validator=_at_least(0))

    def __attrs_post_init__(self) -> None:
        if (self.requests is None) == (self.duration is None):
            raise ValueError("set exactly one of requests and duration")
        if not self.rate and not self.concurrency:
            raise ValueError("set concurrency levels or rates")
        if self.scripted_error_rate > 1:
            raise ValueError(
                f"scripted_error_rate is a share (0..1), got {self.scripted_error_rate!r}"
            )

    @property
    def scripted(self) -> bool:
        """Whether the run starts the scripted server itself."""
        return self.base_url == SCRIPTED

    @property
    def output_limit(self) -> int:
        """The most output tokens a request may get: ``max_tokens``, or a larger limit that
        ``extra_body`` sets."""
        limits = [self.max_tokens]
        for key in ("max_tokens", "max_completion_tokens"):
            value = self.extra_body.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                limits.append(value)
        return max(limits)

    def levels(self) -> list[Level]:
        """The load levels, in the order they run."""
        if self.rate:
            return [Level("rate", float(r)) for r in self.rate]
        return [Level("concurrency", float(c)) for c in self.concurrency]

    def warmup_for(self, level: Level) -> int:
        """Warm-up requests of ``level``."""
        if self.warmup is not None:
            return self.warmup
        return max(2, int(level.value)) if level.mode == "concurrency" else 2

    def to_json(self) -> dict[str, Any]:
        """The settings for the report: everything but the key (only its variable's name)."""
        out = attrs.asdict(self, filter=lambda a, _v: a.name != "api_key")
        out["concurrency"] = list(self.concurrency)
        out["rate"] = list(self.rate)
        out["extra_body"] = dict(self.extra_body)
        out["api_key_set"] = bool(self.api_key)
        return out
