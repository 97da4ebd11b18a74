"""``serve``: the scripted OpenAI-compatible server as a process of its own."""

from __future__ import annotations

from collections.abc import Sequence

HELP = "run the scripted OpenAI-compatible server (serve --help lists its options)"
PASSTHROUGH = True


def run(argv: Sequence[str]) -> int:
    from ..testing.__main__ import main

    return main(list(argv), prog="python -m rustvani_trio serve")
