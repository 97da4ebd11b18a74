"""Running the server: :func:`serve` in a trio program, :func:`run` as a command (signals;
``--workers`` in :mod:`._workers`)."""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import anycorn
import attrs
import trio

from ..exceptions import RustvaniError
from . import _anycorn_fixes
from .app import create_app
from .config import ServerConfig, ServerConfigError
from .sessions import PipelineFactory, SessionManager

__all__ = [
    "FactoryError",
    "RunningServer",
    "StartupError",
    "load_factory",
    "one_line",
    "run",
    "serve",
]

logger = logging.getLogger("rustvani_trio.server")

DEFAULT_FACTORY = "rustvani_trio.server.chat:open_chat_factory"


@attrs.frozen
class RunningServer:
    """What :func:`serve` reports once it listens."""

    url: str
    """``http://host:port``: the chat page is at ``url + "/"``."""
    manager: SessionManager

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint."""
        return "ws" + self.url[4:] + "/ws"


BACKLOG = 1024
"""The listening socket's accept queue. anycorn's default (100) overflowed when 200 clients
connected at once: the kernel dropped the surplus SYNs, and those clients connected only
after TCP's one-second retransmission."""


def _anycorn_config(config: ServerConfig, sock: socket.socket | None) -> anycorn.Config:
    hc = anycorn.Config()
    # anycorn calls listen() itself, on a socket given to it too: its backlog is the one.
    hc.backlog = BACKLOG
    host = f"[{config.host}]" if ":" in config.host else config.host
    # anycorn closes the socket it serves: it gets a descriptor of its own, the caller's
    # socket stays the caller's to close.
    hc.bind = [f"fd://{os.dup(sock.fileno())}"] if sock is not None else [f"{host}:{config.port}"]
    hc.websocket_max_message_size = config.max_message_bytes
    # The limit in bytes, nothing buffered past it; a socket write that does not complete
    # in slow_client_timeout (the peer does not read) drops the connection.
    _anycorn_fixes.apply()
    setattr(hc, _anycorn_fixes.SEND_TIMEOUT_ATTR, config.transport.slow_client_timeout)
    # No permessage-deflate: the limit applies after decompression, so a compressed
    # message far under it on the wire could expand to hundreds of megabytes first (a
    # decompression bomb). Chat messages are small; PCM audio hardly compresses.
    hc.websocket_permessage_deflate = False
    hc.websocket_ping_interval = config.ping_interval
    # A connection that sends nothing, not even a pong, for this long is closed: the
    # half-open connection's session ends with it.
    hc.read_timeout = config.ping_interval + config.ping_timeout  # type: ignore[assignment]
    hc.graceful_timeout = config.shutdown_timeout + config.transport.close_timeout + 5
    hc.accesslog = None
    hc.errorlog = logging.getLogger("rustvani_trio.server.http")
    return hc


async def serve(
    factory: PipelineFactory,
    config: ServerConfig | None = None,
    *,
    stop: trio.Event | None = None,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve sessions built by ``factory`` until ``stop`` is set, then shut down gracefully
    (no new connections; every session gets an EndFrame and ``shutdown_timeout`` seconds to
    finish its answer, then is cancelled; every socket closed with 1001).

    ``await nursery.start(serve, factory, config)`` reports a :class:`RunningServer` (its
    URL) once listening. ``sock`` is a listening socket to serve on instead of binding.
    """
    config = config or ServerConfig()
    stop = stop if stop is not None else trio.Event()
    manager = SessionManager(config, factory)
    app = create_app(manager, config.static_dir)
    hc = _anycorn_config(config, sock)
    async with trio.open_nursery() as nursery:
        anycorn_done = trio.Event()

        async def run_anycorn(*, task_status: trio.TaskStatus[list[str]]) -> None:
            # trio's TaskStatus is what anyio's is on the trio backend (a structural match
            # that mypy cannot see through anyio's overloads)
            status: Any = task_status
            await anycorn.serve(
                app, hc, shutdown_trigger=stop.wait, mode="asgi", task_status=status
            )
            anycorn_done.set()

        binds: list[str] = await nursery.start(run_anycorn)
        url = binds[0] if binds else f"http://{config.host}:{config.port}"
        logger.info("serving on %s (WebSocket %s/ws)", url, "ws" + url[4:])
        task_status.started(RunningServer(url, manager))
        await stop.wait()  # anycorn stops accepting as this returns
        await manager.shutdown()
        # Every session is closed. What may be left are idle keep-alive connections and
        # anycorn's ping loops of closed sockets (they sleep up to ping_interval): end them.
        with trio.move_on_after(0.5):
            await anycorn_done.wait()
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- factories


class FactoryError(RustvaniError, ValueError):
    """``--factory`` names nothing usable (the message says what and why)."""


_FACTORY_SHAPE = (
    "a factory is async def make(session) -> PipelineTask, or a function returning an "
    "async context manager that yields one"
)


def load_factory(spec: str) -> Callable[[], AbstractAsyncContextManager[PipelineFactory]]:
    """Resolve ``"module:name"``: ``name`` is either ``async def make(session) ->
    PipelineTask``, or a function returning an async context manager that yields one (for
    factories that hold resources, e.g. a shared HTTP client, for the server's lifetime).

    Raises:
        FactoryError: the module cannot be imported, has no such name, or it is not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise FactoryError(f"a factory is given as 'module:name', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FactoryError(f"cannot import {module_name} (--factory {spec}): {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FactoryError(f"{module_name} has no attribute {part!r} (--factory {spec})")
        obj = getattr(obj, part)
    plain_function = inspect.isfunction(obj) or inspect.ismethod(obj)
    call = obj if plain_function else type(obj).__call__
    if inspect.iscoroutinefunction(call):

        @contextlib.asynccontextmanager
        async def plain() -> AsyncIterator[PipelineFactory]:
            yield obj

        return plain
    if not callable(obj):
        raise FactoryError(f"{spec} is not callable: {_FACTORY_SHAPE}")

    def opener() -> AbstractAsyncContextManager[PipelineFactory]:
        try:
            manager = obj()
        except Exception as exc:
            raise FactoryError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
        if not hasattr(manager, "__aenter__") or not hasattr(manager, "__aexit__"):
            kind = type(manager).__name__
            raise FactoryError(
                f"{spec}() returned {kind}, not an async context manager: {_FACTORY_SHAPE}"
            )
        return manager  # type: ignore[no-any-return]

    return opener


async def _serve_until_signalled(
    config: ServerConfig,
    factory_spec: str,
    sock: socket.socket | None,
    *,
    announce: bool,
    worker: bool = False,
    ready: Callable[[], None] | None = None,
) -> None:
    opener = load_factory(factory_spec)
    stop = trio.Event()
    running: RunningServer | None = None
    # A worker's SIGINT goes to its parent, which passes it on as SIGTERM.
    signals = (signal.SIGTERM,) if worker else (signal.SIGINT, signal.SIGTERM)
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in received:
                    if stop.is_set():
                        logger.warning("second signal: stopping now")
                        if running is not None:
                            # every session cancelled, its socket closed with 1001
                            await running.manager.cancel_all()
                        nursery.cancel_scope.cancel()
                        return
                    logger.info("%s: shutting down gracefully", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(watch)
            async with opener() as factory, trio.open_nursery() as serving:
                running = await serving.start(partial(serve, factory, config, stop=stop, sock=sock))
                if ready is not None:
                    ready()
                if announce:
                    url = _listening_url(config, sock) if sock is not None else running.url
                    ws_url = "ws" + url.removeprefix("http")
                    print(f"rustvani-trio chat server: {url}/  (WebSocket {ws_url}/ws)", flush=True)
            nursery.cancel_scope.cancel()  # served and shut down: stop watching for signals


def _listening_url(config: ServerConfig, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if sock.family == socket.AF_INET6 else config.host
    return f"http://{host}:{port}"


def _bind(config: ServerConfig) -> socket.socket:
    """The listening socket (bound here, so that "address in use" is a plain OSError)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    try:
        return socket.create_server((config.host, config.port), family=family, backlog=BACKLOG)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is in use (another server on this port?)"
        raise StartupError(f"cannot listen on {config.host}:{config.port}: {reason}") from None


class StartupError(RustvaniError, RuntimeError):
    """The server could not start (the message is one line for the operator)."""


def one_line(exc: BaseException) -> str:
    """An exception for the operator: the one error inside groups of one, its message."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, FactoryError | StartupError | ServerConfigError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run(config: ServerConfig, factory_spec: str = DEFAULT_FACTORY, *, workers: int = 1) -> int:
    """Serve until SIGINT or SIGTERM (a second one stops at once); returns the exit status.
    With ``workers > 1``, that many processes serve the same port (the kernel spreads the
    connections); each holds up to ``config.max_sessions`` sessions. A worker that dies is
    replaced; one that fails before it serves stops them all (exit status 1).

    Raises:
        StartupError, FactoryError: the server cannot start (one line for the operator).
    """
    if workers < 1:
        raise StartupError(f"--workers must be at least 1, got {workers}")
    load_factory(factory_spec)  # a bad --factory is reported before anything starts
    sock = _bind(config)
    if workers == 1:
        with sock:
            trio.run(partial(_serve_until_signalled, config, factory_spec, sock, announce=True))
        return 0
    from ._workers import Supervisor  # (it imports this module: the worker's entry point)

    with sock:
        return Supervisor(sock, config, factory_spec, workers).run()
