"""Options of a provider connection: the key, timeouts, limits and the reconnect policy
(private)."""

from __future__ import annotations

import os
import random
from typing import Any, ClassVar, Self

import attrs

from ..._validators import non_negative, positive

__all__ = ["ProviderConfig", "ReconnectPolicy", "WebSocketOptions"]


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """The base of a cloud provider's config: the API key, read from ``env_var`` by
    :meth:`from_env`, refused at construction when empty. Subclasses set ``env_var`` and add
    their own fields (all with defaults)."""

    #: the environment variable :meth:`from_env` reads the key from (named in the error)
    env_var: ClassVar[str]

    api_key: str = attrs.field(repr=False)

    @api_key.validator
    def _check_key(self, _attr: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{type(self).__name__}.api_key is empty (set {self.env_var})")

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """The config with the key read from the environment variable ``env_var``
        (``SARVAM_API_KEY``, ``DEEPGRAM_API_KEY``, ...); ``overrides`` set other fields."""
        return cls(api_key=os.environ.get(cls.env_var, ""), **overrides)


@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """Backoff between connection attempts: ``initial_delay * multiplier**n`` up to
    ``max_delay``, each randomised by +-``jitter`` (a fraction); ``max_attempts`` failed
    attempts in a row and the service gives up (until it is used again)."""

    max_attempts: int = attrs.field(default=5, validator=positive)
    initial_delay: float = attrs.field(default=0.5, validator=non_negative)
    max_delay: float = attrs.field(default=10.0, validator=non_negative)
    multiplier: float = attrs.field(default=2.0, validator=positive)
    jitter: float = attrs.field(default=0.2, validator=non_negative)

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` failed attempts in a row."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, failures - 1))
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))


@attrs.frozen(kw_only=True)
class WebSocketOptions:
    """Timeouts and limits of a provider connection (seconds).

    Attributes:
        connect_timeout: TCP, TLS and the WebSocket handshake together.
        send_timeout: one send; longer means the provider stopped reading.
        idle_timeout: how long the provider may stay silent while a reply is awaited (audio
            after text was flushed, a transcript after a flush) before the connection is
            taken for dead and reopened.
        keepalive_interval: send the provider's keep-alive after this long without sending
            anything (``None``: never), so idle sockets are not closed by the provider.
        close_timeout: a clean close (and the provider's last replies) at EndFrame.
        max_queued: outbound messages kept while (re)connecting; the oldest are dropped
            beyond it (and the loss is reported).
        send_buffer_bytes: the socket's send buffer (``None``: the system's); small values
            make a provider that stopped reading show up sooner.
        reconnect: the backoff policy.
    """

    connect_timeout: float = attrs.field(default=10.0, validator=positive)
    send_timeout: float = attrs.field(default=5.0, validator=positive)
    idle_timeout: float = attrs.field(default=10.0, validator=positive)
    keepalive_interval: float | None = attrs.field(default=None)
    close_timeout: float = attrs.field(default=2.0, validator=positive)
    max_queued: int = attrs.field(default=1000, validator=positive)
    send_buffer_bytes: int | None = None
    reconnect: ReconnectPolicy = attrs.Factory(ReconnectPolicy)
