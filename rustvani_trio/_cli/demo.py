"""``demo``: scenes that run offline (no API key, no network), one after the other.

A scene is a module with ``TITLE`` (one line), ``REQUIRES`` (the extra it needs, or ``None``),
``available() -> bool`` and ``async def run() -> None``. ``demo`` runs every scene, or the ones
named; a scene whose extra is missing says how to install it instead.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

import trio

HELP = "scripted scenes: a conversation with a tool call, ... (no key, no network)"

#: scene name -> module (relative to this package), in the order ``demo`` runs them
SCENES: dict[str, str] = {
    "chat": ".scene_chat",
    "postgres": ".scene_postgres",
    "dhara": ".scene_dhara",
    "voice": ".scene_voice",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """``demo [SCENE ...]``."""
    parser.add_argument(
        "scenes",
        nargs="*",
        metavar="SCENE",
        help=f"scenes to run (default: all): {', '.join(SCENES)}",
    )


def _scene(name: str) -> ModuleType:
    return importlib.import_module(SCENES[name], __package__)


def run(args: argparse.Namespace) -> int:
    names: list[str] = args.scenes or list(SCENES)
    unknown = [n for n in names if n not in SCENES]
    if unknown:
        print(f"unknown scene(s): {', '.join(unknown)}; scenes: {', '.join(SCENES)}")
        return 2
    for i, name in enumerate(names):
        module = _scene(name)
        if i:
            print()
        if not module.available():
            print(
                f"[scene {name}: needs the {module.REQUIRES!r} extra: "
                f"pip install 'rustvani-trio[{module.REQUIRES}]']"
            )
            continue
        print(f"=== {module.TITLE} ===")
        trio.run(module.run)
    return 0
