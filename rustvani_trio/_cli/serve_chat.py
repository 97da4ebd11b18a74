"""``serve-chat``: the chat server (WebSocket + RTVI, the chat page, health) on one port."""

from __future__ import annotations

import argparse
import logging
import os
import sys

VOICE_FACTORY = "rustvani_trio.server.voice:open_voice_factory"
HELP = "serve the browser chat page and RTVI WebSocket sessions (serve-chat --help)"


def configure(parser: argparse.ArgumentParser) -> None:
    """The server's options (see docs/transport.md)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument(
        "--factory",
        default=None,
        metavar="MODULE:NAME",
        help="the pipeline factory: async def make(session) -> PipelineTask, or a function "
        "returning an async context manager that yields one (default: the LLM chat)",
    )
    parser.add_argument(
        "--voice",
        action="store_true",
        help="serve the voice pipeline (Silero VAD, pocketsphinx, espeak-ng, scripted model "
        "without OPENAI_API_KEY): talk to the bot from the page's microphone button",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes serving the port")
    parser.add_argument(
        "--token",
        default=os.environ.get("RUSTVANI_TOKEN"),
        help="bearer token clients must present (default: $RUSTVANI_TOKEN); required "
        "when not on loopback",
    )
    parser.add_argument(
        "--no-auth", action="store_true", help="serve a non-loopback address without a token"
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a page origin allowed to connect (repeatable; '*' for any)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name requests must carry (repeatable): refuses DNS rebinding on a "
        "non-loopback address served without a token",
    )
    parser.add_argument("--max-sessions", type=int, default=500, help="per worker")
    parser.add_argument("--max-message-bytes", type=int, default=1 << 20)
    parser.add_argument("--ping-interval", type=float, default=10.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="INFO")


def _fail(message: str) -> int:
    print(f"serve-chat: {message}", file=sys.stderr, flush=True)
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        from ..server import runner
        from ..server.config import ServerConfig, ServerConfigError
    except ImportError as exc:
        return _fail(str(exc))
    if args.token is not None and not args.token.strip():
        # `--token "$TOKEN"` with TOKEN unset served with no token at all
        return _fail(
            "the token is empty (--token or RUSTVANI_TOKEN): give one, or leave both unset "
            "to serve loopback without a token"
        )
    if args.workers < 1:
        return _fail(f"--workers must be at least 1, got {args.workers}")
    if args.voice and args.factory:
        return _fail("--voice and --factory exclude each other")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            token=args.token,
            require_token=False if args.no_auth else None,
            allowed_origins=tuple(args.allow_origin),
            allowed_hosts=tuple(args.allow_host),
            max_sessions=args.max_sessions,
            max_message_bytes=args.max_message_bytes,
            ping_interval=args.ping_interval,
            ping_timeout=args.ping_timeout,
            shutdown_timeout=args.shutdown_timeout,
        )
    except (ServerConfigError, TypeError, ValueError) as exc:
        return _fail(str(exc))
    if args.voice:
        from ..server.voice import missing_engines

        missing = missing_engines()
        if missing:
            return _fail("--voice needs " + "; ".join(missing))
    factory = args.factory or (VOICE_FACTORY if args.voice else runner.DEFAULT_FACTORY)
    try:
        return runner.run(config, factory, workers=args.workers)
    except KeyboardInterrupt:
        return 130
    except (runner.StartupError, runner.FactoryError) as exc:
        print(f"serve-chat: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        # e.g. the factory's context manager failed as it started: one line, no traceback
        # (--log-level DEBUG logs it in full)
        logging.getLogger("rustvani_trio.server").debug("serve-chat failed", exc_info=True)
        print(f"serve-chat: {runner.one_line(exc)}", file=sys.stderr, flush=True)
        return 1
