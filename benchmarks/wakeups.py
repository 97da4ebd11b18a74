"""Where a round's scheduling goes: task wake-ups and scheduler batches, per contestant.

``python -m benchmarks.wakeups [--scenario tool|burst] [--turns N]`` runs the scenario of
``benchmarks.run`` for the raw httpx + httpx-sse client and for rustvani-trio against the
scripted server (in its own process), under a trio ``Instrument`` that counts, per round (a
turn), the scheduler batches (each one an I/O wait: an ``epoll_wait`` on Linux) and the task
wake-ups, by task (a processor's tasks by its class). Counts, not times: they do not depend on
how loaded the machine is. benchmarks/README.md ("Fourth round") quotes its output.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import re
import tempfile
from pathlib import Path
from typing import Any

import trio

from benchmarks._processes import Server
from benchmarks._scenarios import GET_TIME_TOOL
from benchmarks.contestants import CONTESTANTS

_SCENARIOS: dict[str, tuple[str, dict[str, Any]]] = {
    # scenario: (the contestants' function for it, its parameters but the base URL and turns)
    "tool": (
        "_tool",
        {
            "tokens": 20,
            "token_delay": 0.0,
            "tool_call": {"name": "get_time", "arguments": "{}"},
            "tools": [GET_TIME_TOOL],
        },
    ),
    "burst": ("_stream", {"tokens": 200, "token_delay": 0.0, "k": 0}),
}
_INSTANCE = re.compile(r"#\d+")


class WakeUps(trio.abc.Instrument):
    """Counts scheduler batches and task wake-ups (by task name, instance numbers removed)."""

    def __init__(self) -> None:
        self.batches = 0
        self.by_task: collections.Counter[str] = collections.Counter()

    def before_io_wait(self, timeout: float) -> None:
        self.batches += 1

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        # "OpenAILLMProcessor#1.process" -> "OpenAILLMProcessor.process"; a function's task
        # by its module and name, shortened to the last two parts
        name = _INSTANCE.sub("", task.name)
        if name.count(".") > 1 and "(" not in name:
            name = ".".join(name.split(".")[-2:])
        self.by_task[name] += 1


def measure(contestant: str, scenario: str, turns: int, base_url: str) -> tuple[WakeUps, int]:
    """Run ``scenario`` once for ``contestant``; its counts and the number of rounds."""
    module: Any = importlib.import_module(CONTESTANTS[contestant][0])
    function, params = _SCENARIOS[scenario]
    counts = WakeUps()
    trio.run(
        getattr(module, function),
        {**params, "turns": turns, "base_url": base_url},
        instruments=[counts],
    )
    return counts, turns + 1  # (turn 0 warms up, and is counted too)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=sorted(_SCENARIOS), default="tool")
    parser.add_argument("--turns", type=int, default=40)
    args = parser.parse_args()
    server = Server(Path(tempfile.mkdtemp(prefix="bench-")) / "server.log")
    server.start()
    try:
        for contestant in ("httpx", "rustvani"):
            counts, rounds = measure(contestant, args.scenario, args.turns, server.base_url)
            wakeups = sum(counts.by_task.values())
            print(
                f"{CONTESTANTS[contestant][1]}, {args.scenario}: per round "
                f"{counts.batches / rounds:.1f} scheduler batches, {wakeups / rounds:.1f} "
                "task wake-ups"
            )
            for task, n in counts.by_task.most_common(8):
                print(f"  {n / rounds:6.1f}  {task}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
