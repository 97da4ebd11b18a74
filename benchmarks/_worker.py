"""A contestant's worker process: ``python -m benchmarks._worker CONTESTANT``.

It imports only its own contestant, announces what it can run, then executes one command per
stdin line (JSON ``{"scenario": ..., "params": {...}}``), each in a fresh event loop, and
answers with one protocol line on stdout (see :data:`benchmarks._common.MARKER`). The
orchestrator keeps one worker per contestant alive for a whole scenario, so repetitions of
different contestants can alternate (A B A B ...) without paying interpreter start-up.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import traceback
from importlib import metadata
from typing import Any

from benchmarks._common import emit
from benchmarks.contestants import CONTESTANTS

_DISTS = ("trio", "httpx", "httpx-sse", "httpx2", "openai", "pipecat-ai", "rustvani-trio")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in _DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def main(argv: list[str]) -> int:
    name = argv[1]
    module_name = CONTESTANTS[name][0]
    try:
        module: Any = importlib.import_module(module_name)
        caps = module.capabilities(name)
    except ImportError as exc:
        hint = "install the bench extra: pip install -e '.[bench]'"
        emit({"ready": False, "reason": f"{exc} ({hint})"})
        return 0
    emit({"ready": True, "capabilities": caps, "versions": _versions()})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        if command.get("quit"):
            break
        gc.collect()
        try:
            samples = module.run(name, command["scenario"], command["params"])
        except Exception:
            emit({"ok": False, "error": traceback.format_exc(limit=8)})
        else:
            emit({"ok": True, "samples": samples})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
