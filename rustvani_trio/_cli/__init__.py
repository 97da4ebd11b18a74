"""The command line, ``python -m rustvani_trio <command>`` (also the ``rustvani-trio`` script).

Each command lives in a module of its own, imported only when that command runs, so a command
whose extra is not installed costs the others nothing. A command module provides ``HELP`` (one
line), ``configure(parser)`` (its arguments) and ``run(args) -> int`` (the exit status); a
module with ``PASSTHROUGH = True`` gets the raw argument list instead (``run(argv)``), for
commands with a parser of their own.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType

__all__ = ["COMMANDS", "main"]

#: command name -> module (relative to this package)
COMMANDS: dict[str, str] = {
    "demo": ".demo",
    "chat": ".chat",
    "serve": ".serve",
    "bench": ".bench",
    "serve-chat": ".serve_chat",
}


def _load(command: str) -> ModuleType:
    return importlib.import_module(COMMANDS[command], __name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m rustvani_trio", description="rustvani-trio command line"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {name: _load(name) for name in COMMANDS}
    for name, module in modules.items():
        passthrough = getattr(module, "PASSTHROUGH", False)
        command = sub.add_parser(name, help=module.HELP, add_help=not passthrough)
        if not passthrough:
            module.configure(command)
    args, rest = parser.parse_known_args(argv)
    module = modules[args.command]
    if getattr(module, "PASSTHROUGH", False):
        return int(module.run(rest))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(module.run(args))
