"""The processes of a benchmark run: the scripted server, and one worker per contestant."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from benchmarks._common import MARKER

__all__ = ["DISCONNECT_LINE", "REPO", "Server", "Worker"]

REPO = Path(__file__).resolve().parent.parent
DISCONNECT_LINE = "client left during request"
"""What the server logs (at DEBUG) when a client goes away mid-response."""


def _pump(stream: IO[str], sink: queue.Queue[tuple[float, str]]) -> None:
    for line in stream:
        sink.put((time.perf_counter(), line.rstrip("\n")))


class Server:
    """The scripted server, in its own process, for the whole run."""

    def __init__(self, log_path: Path) -> None:
        self.base_url = ""
        self.disconnects: list[float] = []
        self._log_path = log_path
        self._lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()

    def start(self, timeout: float = 30.0) -> None:
        ready = Path(tempfile.mkdtemp(prefix="bench-")) / "ready"
        cmd = [
            sys.executable,
            "-m",
            "rustvani_trio.testing.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tokens",
            "16",
            "--ready-file",
            str(ready),
            "--log-level",
            "DEBUG",
        ]
        self._proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the scripted server did not start; see {self._log_path}")
            time.sleep(0.02)
        self.base_url = ready.read_text().strip()

    def _watch(self) -> None:
        with open(self._log_path, "w", encoding="utf-8") as log:
            while not self._stop.is_set():
                try:
                    stamp, line = self._lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if DISCONNECT_LINE in line:
                    self.disconnects.append(stamp)
                log.write(f"{stamp:.6f} {line}\n")

    def disconnect_after(self, t: float, within: float = 5.0) -> float:
        """Seconds from ``t`` to the first disconnect the server logged after it (NaN if none)."""
        later = [d for d in self.disconnects if t < d <= t + within]
        return min(later) - t if later else math.nan

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (NaN where unknown)."""
        if self._proc is None:
            return math.nan
        try:
            with open(f"/proc/{self._proc.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stop.set()


class Worker:
    """One contestant's worker process, answering one command at a time."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self._log = open(log_dir / f"worker-{name}.log", "a", encoding="utf-8")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._worker", name],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._replies: queue.Queue[tuple[float, str]] = queue.Queue()
        assert self._proc.stdout is not None
        threading.Thread(target=_pump, args=(self._proc.stdout, self._replies), daemon=True).start()

    def _reply(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:g}s")
            try:
                _, line = self._replies.get(timeout=min(left, 1.0))
            except queue.Empty:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: worker exited ({self._proc.returncode}); "
                        f"see {self._log.name}"
                    ) from None
                continue
            if line.startswith(MARKER):
                reply: dict[str, Any] = json.loads(line[len(MARKER) :])
                return reply

    def hello(self, timeout: float = 60.0) -> dict[str, Any]:
        return self._reply(timeout)

    def call(self, scenario: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"scenario": scenario, "params": params}) + "\n")
        self._proc.stdin.flush()
        return self._reply(timeout)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self._proc.kill()
            self._proc.wait()
        self._log.close()

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError):
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self._proc.stdin.flush()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()
