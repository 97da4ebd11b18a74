"""``python -m rustvani_trio chat``: Ctrl-C interrupts an answer, or quits quietly at the
prompt; the prompt says how to quit (issue 9, item 21).

The chat reads lines in a worker thread; these tests give it an ``input`` function fed from a
queue and deliver a real SIGINT to the process while the chat's signal receiver listens.
"""

from __future__ import annotations

import functools
import queue
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
import trio
import trio.testing

from rustvani_trio._cli import scene_chat
from rustvani_trio.services.llm.openai import OpenAILLMConfig
from rustvani_trio.testing import TextReply, open_scripted_server

_STOP = "\x00stop"


class FakeTerminal:
    """``input()`` for the chat, fed line by line from the test; each prompt is announced on
    a channel (the chat calls it from a worker thread)."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self._prompted, self.prompts = trio.open_memory_channel[str](100)

    def __call__(self, prompt: str) -> str:
        trio.from_thread.run_sync(self._prompted.send_nowait, prompt)
        line = self.lines.get()
        if line == _STOP:
            raise EOFError
        return line

    async def next_prompt(self) -> None:
        assert await self.prompts.receive() == "user> "


async def test_ctrl_c_during_an_answer_interrupts_it_and_the_chat_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminal = FakeTerminal()
    async with open_scripted_server() as server:
        # The first answer streams two tokens, then stalls: Ctrl-C must cut it short.
        server.add_reply(TextReply(["Once", " upon", " a", " time"], stall_after=2))
        server.add_reply(TextReply(["Fine."]))
        config = OpenAILLMConfig(api_key="k", base_url=server.base_url, model="m")
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def converse() -> None:
                    context = await scene_chat._converse(config, None, input_fn=terminal)
                    nursery.cancel_scope.cancel()
                    contexts.append(context)

                contexts: list[object] = []
                nursery.start_soon(converse)
                await terminal.next_prompt()
                terminal.lines.put("Tell me a story")
                await server.wait_for_requests(1)
                seen = ""
                while "upon" not in seen:  # stdout has no event to wait on
                    await trio.sleep(0.01)
                    seen += capsys.readouterr().out
                signal.raise_signal(signal.SIGINT)
                await terminal.next_prompt()  # the prompt is back
                terminal.lines.put("And now?")
                await server.wait_for_requests(2)
                await terminal.next_prompt()
                terminal.lines.put("/quit")
                await trio.sleep_forever()
    out = seen + capsys.readouterr().out
    assert "[interrupted]" in out and "Fine." in out
    (context,) = contexts
    assert isinstance(context, scene_chat.LLMContext)
    assistant = [
        (i, m["content"]) for i, m in enumerate(context.messages) if m["role"] == "assistant"
    ]
    assert [text for _, text in assistant] == ["Once upon", "Fine."]
    assert context.is_interrupted(assistant[0][0])


async def test_ctrl_c_at_the_prompt_quits_quietly() -> None:
    terminal = FakeTerminal()
    async with open_scripted_server() as server:
        config = OpenAILLMConfig(api_key="k", base_url=server.base_url, model="m")
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(scene_chat._converse, config, None, input_fn=terminal)
                )
                await terminal.next_prompt()
                await trio.sleep(0.05)
                signal.raise_signal(signal.SIGINT)
        terminal.lines.put(_STOP)  # release the abandoned reader thread
    assert server.requests == []


def test_the_chat_command_says_how_to_quit_and_ends_on_ctrl_d() -> None:
    env_without_key = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "rustvani_trio", "chat"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=env_without_key,
    )
    assert proc.returncode == 0, proc.stderr
    assert "/quit or Ctrl-D ends the chat" in proc.stdout
    assert "Traceback" not in proc.stderr


def _read_until(fd: int, seen: bytearray, done: Callable[[bytes], bool], timeout: float) -> bool:
    """Read the pty into ``seen`` until ``done(seen)`` (True), or EOF or ``timeout`` (False)."""
    import os
    import select
    import time

    deadline = time.monotonic() + timeout
    while not done(bytes(seen)):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        seen.extend(chunk)
    return True


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_ctrl_c_typed_in_a_real_terminal_interrupts_then_quits_the_chat_command() -> None:
    """The real command in a pseudo-terminal, Ctrl-C typed as a user types it (the terminal
    turns it into SIGINT): during the answer it interrupts it and the prompt comes back; at
    the prompt it quits with status 0, without a traceback."""
    import os
    import pty
    import signal as signals

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, with the pty as its controlling terminal
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "", "TERM": "dumb"}
        os.execve(sys.executable, [sys.executable, "-m", "rustvani_trio", "chat"], env)
    seen = bytearray()
    status = None
    try:
        assert _read_until(fd, seen, lambda b: b.count(b"user> ") == 1, 60), bytes(seen)
        os.write(fd, b"hello there\r")
        assert _read_until(fd, seen, lambda b: b"assistant> " in b, 60), bytes(seen)
        os.write(fd, b"\x03")
        assert _read_until(fd, seen, lambda b: b.count(b"user> ") == 2, 60), bytes(seen)
        assert b"[interrupted]" in seen  # (the scripted answer is paced: it was mid-stream)
        os.write(fd, b"\x03")
        _read_until(fd, seen, lambda b: False, 60)  # to EOF
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signals.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    text = bytes(seen).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
