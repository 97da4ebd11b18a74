"""``serve-chat`` in a careless operator's hands: startup errors are one clear line and a
non-zero exit (no traceback), a second signal stops at once, and ``--workers`` notices a
worker dying and leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from test_ws_server import READY, Stuck, rtvi, until
from test_ws_workers import start as start_serve_chat
from trio_websocket import ConnectionClosed, open_websocket_url

from rustvani_trio.aggregators import create_context_aggregators
from rustvani_trio.context import LLMContext
from rustvani_trio.pipeline import Pipeline
from rustvani_trio.server import Session
from rustvani_trio.task import PipelineTask

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENAI_API_KEY": "", "PYTHONPATH": str(Path(__file__).parent)}
ENV.pop("RUSTVANI_TOKEN", None)


async def stuck(session: Session) -> PipelineTask:
    """A session whose every turn hangs (for serve-chat --factory)."""
    user, assistant = create_context_aggregators(LLMContext(), text_mode=True)
    record: dict[str, Any] = {"working": trio.Event()}
    await trio.lowlevel.checkpoint()
    pipeline = Pipeline([session.input(), user, Stuck(record), session.output(), assistant])
    return PipelineTask(pipeline)


def not_a_factory() -> int:
    """Returns neither a PipelineTask maker nor an async context manager."""
    return 42


def serve_chat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rustvani_trio", "serve-chat", *args],
        cwd=ROOT,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------- 12. startup


@pytest.fixture
def taken_port() -> Any:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--factory", "no_such_module:make"], "cannot import no_such_module"),
        (["--factory", "json:nothing"], "json has no attribute 'nothing'"),
        (["--factory", "nocolon"], "'module:name'"),
        (["--factory", "test_ws_hostile_cli:not_a_factory"], "returned int"),
        (["--factory", "test_ws_hostile_cli:not_a_factory", "--workers", "2"], "returned int"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--port", "99999"], "port must be 0..65535"),
        (["--token", ""], "token is empty"),
        (["--token", "   "], "token is empty"),
        (["--max-sessions", "0"], "max_sessions must be at least 1"),
        (["--allow-host", "chat.example:8765"], "allowed_hosts takes host names without a port"),
        (["--voice", "--factory", "json:dumps"], "exclude each other"),
    ],
)
def test_a_startup_error_is_one_clear_line(args: list[str], fragment: str) -> None:
    result = serve_chat("--port", "0", *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("serve-chat: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_clear_line(taken_port: int, workers: str) -> None:
    result = serve_chat("--port", str(taken_port), "--workers", workers)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("serve-chat: cannot listen on 127.0.0.1:"), line
    assert "in use" in line


def test_an_empty_token_from_the_environment_is_refused() -> None:
    result = serve_chat("--port", "0", env={**ENV, "RUSTVANI_TOKEN": ""})
    assert result.returncode == 2
    assert "token is empty" in result.stderr


# --------------------------------------------------------------------------- 4, 5. processes


async def start(*args: str) -> tuple[trio.Process, str]:
    return await start_serve_chat(*args, env=ENV)


async def test_a_second_signal_during_shutdown_stops_at_once() -> None:
    proc, url = await start("--factory", "test_ws_hostile_cli:stuck", "--shutdown-timeout", "60")
    try:
        with trio.fail_after(20):
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                await ws.send_message(rtvi("client-ready", READY["data"], id="r"))
                await until(ws, "bot-ready")
                await ws.send_message(rtvi("send-text", {"content": "work forever"}))
                await until(ws, "user-transcription")
                proc.send_signal(signal.SIGTERM)
                await trio.sleep(0.5)  # draining: the stuck turn would take 60 s
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1001
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()


def children_of(pid: int) -> set[int]:
    """The worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    workers = set()
    for child in map(int, text.split()):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and alive(child):
            workers.add(child)
    return workers


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


async def wait_children(pid: int, count: int, old: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
    # polling another process's state: there is no event to wait on
    while len(kids := children_of(pid) - old) < count:  # noqa: ASYNC110
        await trio.sleep(0.05)
    return kids


async def test_a_dead_worker_is_replaced_and_none_is_left_behind() -> None:
    proc, url = await start("--workers", "2")
    try:
        with trio.fail_after(60):
            first = await wait_children(proc.pid, 2)
            serving: set[int] = set()
            while serving != first:  # both serve (a worker dying before that stops all)
                async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                    await ws.send_message(rtvi("client-ready", READY["data"], id="r"))
                    serving.add((await until(ws, "bot-ready"))[-1]["data"]["about"]["worker"])
            victim = min(first)
            os.kill(victim, signal.SIGKILL)  # a worker crashes (the OOM killer, a bug)
            (replacement,) = await wait_children(proc.pid, 1, old=first)
            async with open_websocket_url(url.replace("http", "ws") + "/ws") as ws:
                await ws.send_message(rtvi("client-ready", READY["data"], id="r"))
                await until(ws, "bot-ready")  # still serving
            workers = children_of(proc.pid)
            assert replacement in workers and victim not in workers
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        assert not [pid for pid in workers if alive(pid)]  # no orphans
    finally:
        if proc.returncode is None:
            proc.kill()


async def test_workers_die_with_a_killed_parent() -> None:
    proc, _url = await start("--workers", "2")
    try:
        with trio.fail_after(30):
            workers = await wait_children(proc.pid, 2)
            proc.kill()  # SIGKILL: the parent cannot pass anything on
            await proc.wait()
            while [pid for pid in workers if alive(pid)]:  # noqa: ASYNC110
                await trio.sleep(0.05)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
