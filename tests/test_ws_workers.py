"""``serve-chat`` as a user runs it: a process that shuts down gracefully on SIGINT/SIGTERM,
and ``--workers N`` processes on one port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from test_ws_server import READY, rtvi, until
from trio_websocket import ConnectionClosed, open_websocket_url

ROOT = Path(__file__).resolve().parents[1]


async def start(*args: str, env: dict[str, str] | None = None) -> tuple[trio.Process, str]:
    """serve-chat on a free port (with ``env``, else this environment without an API key);
    returns the process and its http:// URL."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rustvani_trio", "serve-chat", "--port", "0", *args],
        cwd=ROOT,
        env=env if env is not None else {**os.environ, "OPENAI_API_KEY": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    buffer = b""
    with trio.fail_after(60):
        while b"chat server:" not in buffer:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "serve-chat exited before it listened"
            buffer += chunk
    match = re.search(rb"(http://[0-9.]+:\d+)", buffer)
    assert match is not None
    return proc, match.group(1).decode()


async def session_until_closed(
    ws_url: str, opened: list[Any], closes: list[Any], ready: trio.MemorySendChannel[None]
) -> None:
    async with open_websocket_url(ws_url) as ws:
        await ws.send_message(json.dumps(READY))
        bot = (await until(ws, "bot-ready"))[-1]
        opened.append(bot["data"]["about"]["worker"])
        ready.send_nowait(None)
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            closes.append(exc.reason.code)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_shuts_down_gracefully(sig: signal.Signals) -> None:
    proc, url = await start()
    ws_url = url.replace("http", "ws") + "/ws"
    opened: list[Any] = []
    closes: list[Any] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            ready, wait = trio.open_memory_channel[None](10)
            for _ in range(3):
                nursery.start_soon(session_until_closed, ws_url, opened, closes, ready)
            for _ in range(3):
                await wait.receive()
            proc.send_signal(sig)
        assert await proc.wait() == 0
    assert closes == [1001, 1001, 1001]


async def test_workers_share_one_port() -> None:
    proc, url = await start("--workers", "2")
    ws_url = url.replace("http", "ws") + "/ws"
    opened: list[Any] = []
    closes: list[Any] = []
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                ready, wait = trio.open_memory_channel[None](10)
                for _ in range(8):
                    nursery.start_soon(session_until_closed, ws_url, opened, closes, ready)
                for _ in range(8):
                    await wait.receive()
                async with open_websocket_url(ws_url) as ws:  # and a conversation works
                    await ws.send_message(json.dumps(READY))
                    await until(ws, "bot-ready")
                    await ws.send_message(rtvi("send-text", {"content": "hi"}))
                    await until(ws, "bot-llm-stopped")
                listing = trio.Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                children = {int(p) for p in (await listing.read_text()).split()}
                assert set(opened) <= children and len(children) >= 2
                proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
    assert closes == [1001] * 8
