"""The chat server's settings, and the security defaults that depend on where it listens."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import attrs

from .._validators import at_least, non_negative, optional, positive
from ..exceptions import RustvaniError
from ..transports.websocket import WebSocketParams

__all__ = ["ServerConfig", "ServerConfigError", "is_loopback", "is_loopback_host_header"]


class ServerConfigError(RustvaniError, ValueError):
    """The settings cannot be served safely or at all (e.g. a public address without a
    token)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(value: str) -> bool:
    """Whether a ``Host`` header (``name[:port]``) names this machine's loopback: a page
    whose name only *resolves* to 127.0.0.1 (DNS rebinding) does not."""
    try:
        name = urlsplit("//" + value).hostname
    except ValueError:
        return False
    return name is not None and is_loopback(name)


def _port(_inst: Any, _attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"port must be 0..65535 (0: any free port), got {value!r}")


def _origins(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    return tuple(str(v).rstrip("/") for v in value)


def _hosts(value: Any) -> tuple[str, ...]:
    """Host names as ``urlsplit(...).hostname`` gives them: lower case, no brackets, no
    trailing dot; a port, a path or user-info is refused where the config is built."""
    if isinstance(value, str):
        value = (value,)
    hosts = []
    for item in value:
        host = str(item).strip().lower().rstrip(".").strip("[]")
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                host = ""
        if not host or any(c in host for c in "/@ \t"):
            raise ValueError(f"allowed_hosts takes host names without a port, got {item!r}")
        hosts.append(host)
    return tuple(hosts)


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Settings of :func:`rustvani_trio.server.serve`.

    Security defaults follow the address: on loopback nothing is required; on any other
    address a token is required (and origins are checked) unless switched off explicitly.

    Attributes:
        host, port: where to listen (port 0: any free port).
        token: the bearer token clients must present (``Authorization: Bearer <token>``, or
            ``?token=<token>`` in the URL for browsers); never logged.
        require_token: ``None`` (default): required when a token is set or ``host`` is not
            loopback.
        allowed_origins: origins (``https://app.example``) a browser page may connect from,
            besides the server's own origin. ``"*"`` allows any; ``"null"`` the opaque
            origin of sandboxed frames and ``file://`` pages (refused unless named).
        check_origin: ``None`` or ``True`` (default): a connection carrying an ``Origin``
            header (every browser sends one) is refused (close 4003) unless that origin is
            the server's own (its ``Host``) or allowed, on loopback too: any web page could
            otherwise drive a local session (cross-site WebSocket hijacking). Connections
            without ``Origin`` are not from a browser page; the token is what guards them.
            ``False``: not checked.
        allowed_hosts: names (``chat.example``) that requests must carry in their ``Host``
            header, besides the loopback names on a loopback address. Empty (default): on a
            loopback address only the loopback names; elsewhere any name. Set it when serving
            a non-loopback address without a token, so that a page from a name rebound to this
            server's address (DNS rebinding) is refused.
        max_sessions: concurrent sessions of this process; more are refused (close 1013).
        max_message_bytes: the largest client message; larger ones close the socket (1009).
        ping_interval: seconds between WebSocket pings.
        ping_timeout: a client silent (not even a pong) for ``ping_interval + ping_timeout``
            seconds is taken for gone (half-open connection) and its session ended.
        shutdown_timeout: on shutdown, how long sessions may take to finish their answer
            (EndFrame) before they are cancelled.
        transport: the settings of each session's :class:`WebSocketParams`.
        static_dir: serve the chat page from here instead of the built-in one.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8765, validator=_port)
    token: str | None = attrs.field(default=None, repr=False)
    require_token: bool | None = None
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    check_origin: bool | None = None
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), converter=_hosts)
    max_sessions: int = attrs.field(default=500, validator=at_least(1))
    max_message_bytes: int = attrs.field(default=1 << 20, validator=at_least(1024))
    ping_interval: float = attrs.field(default=10.0, validator=positive)
    ping_timeout: float = attrs.field(default=20.0, validator=positive)
    shutdown_timeout: float = attrs.field(default=10.0, validator=non_negative)
    transport: WebSocketParams = attrs.field(factory=WebSocketParams)
    static_dir: str | None = attrs.field(
        default=None, validator=optional(attrs.validators.instance_of(str))
    )

    def __attrs_post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ServerConfigError("token must not be empty (leave it unset for no token)")
        if self.token_required and self.token is None:
            raise ServerConfigError(
                f"serving on {self.host} (not loopback) needs a token: pass --token or set "
                "RUSTVANI_TOKEN, or switch authentication off explicitly (--no-auth)"
            )

    @property
    def token_required(self) -> bool:
        """Whether clients must present the token."""
        if self.require_token is None:
            return self.token is not None or not is_loopback(self.host)
        return self.require_token

    @property
    def origin_checked(self) -> bool:
        """Whether a browser's ``Origin`` must be the server's own or an allowed one."""
        return self.check_origin is not False

    @property
    def host_checked(self) -> bool:
        """Whether requests must name an allowed host: on a loopback address (the loopback
        names: ``Host: 127.0.0.1:8765``, ``localhost``, ``[::1]``), so that a page from a name
        that was rebound to 127.0.0.1 is refused (DNS rebinding), its ``Origin`` matching its
        ``Host`` notwithstanding; and anywhere once ``allowed_hosts`` is set."""
        return is_loopback(self.host) or bool(self.allowed_hosts)

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this server (see :attr:`host_checked`)."""
        if not self.host_checked:
            return True
        if is_loopback(self.host) and is_loopback_host_header(header):
            return True
        try:
            name = urlsplit("//" + header).hostname
        except ValueError:
            return False
        return name is not None and name.rstrip(".") in self.allowed_hosts
