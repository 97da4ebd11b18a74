"""The contestants. Each module runs in its own worker process (``benchmarks._worker``), so
no framework's imports, event loop, heap or garbage collector touch another's.

A contestant module exposes ``capabilities() -> {scenario: None | "why it is skipped"}`` and
``run(scenario, params) -> Samples``; each command runs in a fresh event loop (``trio.run``
or ``asyncio.run``).
"""

from __future__ import annotations

CONTESTANTS: dict[str, tuple[str, str]] = {
    # key: (module, display label)
    "httpx": ("benchmarks.contestants.trio_floor", "httpx-sse (trio)"),
    "channels": ("benchmarks.contestants.trio_floor", "trio channels"),
    "openai": ("benchmarks.contestants.openai_sdk", "openai SDK (asyncio)"),
    "rustvani": ("benchmarks.contestants.rustvani", "rustvani-trio"),
    "pipecat": ("benchmarks.contestants.pipecat_", "pipecat 1.14"),
}
"""Every contestant: its worker module and the label used in the table and the plot."""

LLM_SCENARIOS = ("burst", "paced", "interrupt", "tool", "concurrency", "slowsink", "voice")
ALL_SCENARIOS = ("burst", "paced", "hop", "interrupt", "tool", "concurrency", "slowsink", "voice")
