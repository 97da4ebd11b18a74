"""Running the server: :func:`serve` in a trio program, :func:`run` as a command (signals,
``--workers``)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import anycorn
import attrs
import trio

from . import _anycorn_fixes
from .app import create_app
from .config import ServerConfig
from .sessions import PipelineFactory, SessionManager

__all__ = ["RunningServer", "load_factory", "run", "serve"]

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


def _anycorn_config(config: ServerConfig, sock: socket.socket | None) -> anycorn.Config:
    hc = anycorn.Config()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"fd://{sock.fileno()}"] if sock is not None else [f"{host}:{config.port}"]
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


def load_factory(spec: str) -> Callable[[], AbstractAsyncContextManager[PipelineFactory]]:
    """Resolve ``"module:name"``: ``name`` is either ``async def make(session) ->
    PipelineTask``, or a function returning an async context manager that yields one (for
    factories that hold resources, e.g. a shared HTTP client, for the server's lifetime)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a factory is given as 'module:name', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    plain_function = inspect.isfunction(obj) or inspect.ismethod(obj)
    call = obj if plain_function else type(obj).__call__
    if inspect.iscoroutinefunction(call):

        @contextlib.asynccontextmanager
        async def plain() -> AsyncIterator[PipelineFactory]:
            yield obj

        return plain
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj  # type: ignore[no-any-return]


async def _serve_until_signalled(
    config: ServerConfig, factory_spec: str, sock: socket.socket | None, announce: bool
) -> None:
    opener = load_factory(factory_spec)
    stop = trio.Event()
    signals = (signal.SIGTERM,) if sock is not None else (signal.SIGINT, signal.SIGTERM)
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in received:
                    if stop.is_set():
                        logger.warning("second signal: stopping now")
                        nursery.cancel_scope.cancel()
                        return
                    logger.info("%s: shutting down gracefully", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(watch)
            async with opener() as factory, trio.open_nursery() as serving:
                running = await serving.start(partial(serve, factory, config, stop=stop, sock=sock))
                if announce:
                    print(
                        f"rustvani-trio chat server: {running.url}/  (WebSocket {running.ws_url})",
                        flush=True,
                    )
            nursery.cancel_scope.cancel()  # served and shut down: stop watching for signals


def _worker_main(sock: socket.socket, config: ServerConfig, factory_spec: str, level: int) -> None:
    """One worker process: serve on the shared socket until SIGTERM (SIGINT goes to the
    parent, which passes it on as SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=level, format=f"%(asctime)s [{os.getpid()}] %(name)s: %(message)s")
    trio.run(_serve_until_signalled, config, factory_spec, sock, False)


def run(config: ServerConfig, factory_spec: str = DEFAULT_FACTORY, *, workers: int = 1) -> int:
    """Serve until SIGINT or SIGTERM (a second one stops at once); returns the exit status.
    With ``workers > 1``, that many processes serve the same port (the kernel spreads the
    connections); each holds up to ``config.max_sessions`` sessions."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        trio.run(_serve_until_signalled, config, factory_spec, None, True)
        return 0
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.create_server((config.host, config.port), family=family, backlog=1024)
    port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    procs = [
        ctx.Process(target=_worker_main, args=(sock, config, factory_spec, level), daemon=True)
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    host = f"[{config.host}]" if family == socket.AF_INET6 else config.host
    print(f"rustvani-trio chat server: http://{host}:{port}/  ({workers} workers)", flush=True)

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for proc in procs:
        proc.join()
    sock.close()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        print(f"workers exited with {failed}", file=sys.stderr)
    return 1 if failed else 0
