"""``python -m rustvani_trio.testing``: the scripted server as a process of its own.

Every request gets a streamed :class:`~rustvani_trio.testing.TextReply` of numbered tokens,
unless its JSON body carries an ``x_script`` object; the process prints ``READY <base_url>``
once serving and stops cleanly on SIGINT or SIGTERM. The same command line is
``python -m rustvani_trio serve`` (and, for older scripts, ``python -m
rustvani_trio.testing.server``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import trio

from ._replies import TextReply, numbered_tokens
from ._server import ScriptedServer, logger

__all__ = ["main"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:  # 99999 was silently served as 34463 (99999 - 65536)
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {port}")
    return port


def _parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Serve a scripted OpenAI-compatible chat-completions API (a load generator for "
            "benchmarks). Every request gets a streamed TextReply of numbered tokens, unless "
            "its JSON body carries an 'x_script' object."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=0, help="0 picks a free port")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per reply")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument(
        "--first-token-delay", type=float, default=0.0, help="seconds before the first token"
    )
    parser.add_argument("--model", default="scripted-model")
    parser.add_argument("--ready-file", help="write the base URL to this file once serving")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=_LEVELS)
    args = parser.parse_args(argv)
    if args.ready_file and not os.path.isdir(os.path.dirname(os.path.abspath(args.ready_file))):
        parser.error(f"--ready-file: no directory for {args.ready_file!r}")
    try:
        args.reply = TextReply(
            numbered_tokens(args.tokens),
            token_delay=args.token_delay,
            first_token_delay=args.first_token_delay,
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return args


async def _serve(args: argparse.Namespace) -> OSError | None:
    """Serve until a signal; the error when the server could not start (port in use, ...)."""
    server = ScriptedServer(args.host, args.port, default_reply=args.reply, model=args.model)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                base_url: str = await nursery.start(server.serve)
                if args.ready_file:
                    # Write then rename, so that a poller never reads a partial file.
                    tmp = trio.Path(args.ready_file + ".tmp")
                    await tmp.write_text(base_url + "\n")
                    await tmp.replace(args.ready_file)
            except OSError as exc:
                nursery.cancel_scope.cancel()
                return exc
            print(f"READY {base_url}", flush=True)
            async for signum in signals:
                logger.debug("scripted server: signal %d, stopping", signum)
                break
            nursery.cancel_scope.cancel()
    return None


def main(
    argv: Sequence[str] | None = None, *, prog: str = "python -m rustvani_trio.testing"
) -> int:
    """Run the scripted server until SIGINT or SIGTERM; returns the exit status (0, or 1
    when it could not start: the reason is printed on one line)."""
    args = _parse_args(argv, prog)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    error = trio.run(_serve, args)
    if error is not None:
        print(f"{prog}: error: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
