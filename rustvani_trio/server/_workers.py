"""``--workers N``: a supervisor process and the workers it starts on one shared listening
socket (the kernel spreads the connections). It replaces a worker that dies while serving,
passes signals on, and leaves no worker behind."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import trio

from .config import ServerConfig
from .runner import _listening_url, _serve_until_signalled, one_line

__all__ = ["Supervisor"]

logger = logging.getLogger("rustvani_trio.server")


def _set_parent_death_signal() -> None:
    """Linux: this process gets SIGTERM when its parent dies (even by SIGKILL), so no
    worker outlives its supervisor."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return


def _worker_main(
    sock: socket.socket,
    config: ServerConfig,
    factory_spec: str,
    level: int,
    parent: int,
    ready: Connection,
) -> None:
    """One worker process: serve on the shared socket until SIGTERM (SIGINT goes to the
    parent, which passes it on as SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before prctl: do not serve alone
        return
    logging.basicConfig(level=level, format=f"%(asctime)s [{os.getpid()}] %(name)s: %(message)s")

    def say_ready() -> None:
        ready.send_bytes(b"ready")
        ready.close()

    try:
        trio.run(
            partial(
                _serve_until_signalled,
                config,
                factory_spec,
                sock,
                announce=False,
                worker=True,
                ready=say_ready,
            )
        )
    except Exception as exc:
        # The supervisor says it, once for all workers.
        with contextlib.suppress(OSError):
            ready.send_bytes(b"error:" + one_line(exc).encode())
        sys.exit(1)


class Supervisor:
    """The parent of ``--workers N``: starts the workers on the shared socket, replaces one
    that dies while serving, passes signals on, and leaves no worker behind."""

    RESTARTS = 5
    """Replacements allowed within ``RESTART_WINDOW`` seconds before it gives up."""
    RESTART_WINDOW = 60.0
    KILL_AFTER = 10.0
    """Seconds after a second signal before the workers left are killed."""

    def __init__(
        self, sock: socket.socket, config: ServerConfig, factory_spec: str, workers: int
    ) -> None:
        self.sock = sock
        self.config = config
        self.factory_spec = factory_spec
        self.workers = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.level = logging.getLogger().getEffectiveLevel()
        self.procs: dict[int, tuple[BaseProcess, Connection]] = {}
        self.signals = 0
        self.restarts: list[float] = []

    def _start_one(self) -> None:
        receiver, sender = self.ctx.Pipe(duplex=False)
        args = (self.sock, self.config, self.factory_spec, self.level, os.getpid(), sender)
        proc = self.ctx.Process(target=_worker_main, args=args, daemon=True)
        proc.start()
        sender.close()
        assert proc.pid is not None
        self.procs[proc.pid] = (proc, receiver)

    def _forward(self, signum: int, _frame: Any) -> None:
        self.signals += 1
        for proc, _ready in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for _ in range(self.workers):
                self._start_one()
            url = _listening_url(self.config, self.sock)
            print(f"rustvani-trio chat server: {url}/  ({self.workers} workers)", flush=True)
            return self._watch()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _watch(self) -> int:
        second_signal_at: float | None = None
        while self.procs:
            if self.signals >= 2 and second_signal_at is None:
                second_signal_at = time.monotonic()
            if (
                second_signal_at is not None
                and time.monotonic() > second_signal_at + self.KILL_AFTER
            ):
                return 1
            sentinels = [proc.sentinel for proc, _ready in self.procs.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            for pid, (proc, ready) in list(self.procs.items()):
                if proc.is_alive():
                    continue
                proc.join()
                del self.procs[pid]
                report = b""
                with contextlib.suppress(EOFError, OSError):
                    report = ready.recv_bytes() if ready.poll() else b""
                ready.close()
                if self.signals:
                    continue  # shutting down: workers are meant to exit
                if report != b"ready":
                    error = report.removeprefix(b"error:").decode(errors="replace") or (
                        f"a worker failed before serving (exit status {proc.exitcode})"
                    )
                    print(f"serve-chat: {error}", file=sys.stderr, flush=True)
                    return 1
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < self.RESTART_WINDOW]
                if len(self.restarts) >= self.RESTARTS:
                    print(
                        f"serve-chat: workers died {len(self.restarts) + 1} times within "
                        f"{self.RESTART_WINDOW:.0f} s (last: pid {pid}, exit status "
                        f"{proc.exitcode}); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                self.restarts.append(now)
                logger.warning(
                    "worker %s exited with status %s while serving; starting another",
                    pid,
                    proc.exitcode,
                )
                self._start_one()
        return 0

    def _stop_all(self) -> None:
        """Whatever is still running: SIGTERM, a bounded wait, then SIGKILL."""
        for proc, _ready in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout + 5
        for proc, ready in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
            ready.close()
        self.procs.clear()
