"""``chat``: an interactive chat with a real endpoint, or the scripted server without a key."""

from __future__ import annotations

import argparse

import trio

HELP = "interactive chat (OPENAI_API_KEY, or the scripted server)"


def configure(parser: argparse.ArgumentParser) -> None:
    """No options: the endpoint comes from OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODEL."""


def run(args: argparse.Namespace) -> int:
    from .scene_chat import chat

    try:
        trio.run(chat)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # A Ctrl-C before the chat's own handler is listening (or after it stopped): quit
        # quietly, but never hide anything else.
        if isinstance(exc, BaseExceptionGroup):
            _interrupts, rest = exc.split(KeyboardInterrupt)
            if rest is not None:
                raise
        print()
        return 130
    return 0
