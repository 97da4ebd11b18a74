"""``serve``: the scripted OpenAI-compatible server as a process of its own."""

from __future__ import annotations

from collections.abc import Sequence

HELP = "run the scripted OpenAI-compatible server (serve --help lists its options)"
PASSTHROUGH = True


def run(argv: Sequence[str]) -> int:
    from ..testing import server

    return server.main(list(argv))
