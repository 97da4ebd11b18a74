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
    except KeyboardInterrupt:
        print()
    return 0
