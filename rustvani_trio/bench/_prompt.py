"""Synthetic prompts and the benchmark's tool."""

from __future__ import annotations

import json
import random

from ..context import FunctionSchema

__all__ = ["TOOL_NAME", "TOOL_SCHEMA", "make_prompt", "run_tool"]

# Short, common English words: about one token each for the usual BPE tokenizers.
_WORD_TEXT = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death "
    "experience effect use class control care field development role effort rate heart drug "
    "show leader light voice wife police mind price report decision son view relationship "
    "town road arm difference value building action model season society tax director "
    "position player record paper space ground form event official matter center couple site "
    "project activity star table need court oil situation cost industry figure street image"
)
_WORDS = _WORD_TEXT.split()

TOOL_NAME = "get_weather"
TOOL_SCHEMA = FunctionSchema(
    name=TOOL_NAME,
    description="Get the current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
    },
)


def make_prompt(tokens: int, *, seed: int, key: str, tools: bool) -> str:
    """A prompt of about ``tokens`` tokens, different for every ``key`` (so no two requests
    share a cacheable prefix), the same for the same ``seed`` and ``key``."""
    rng = random.Random(f"{seed}:{key}")
    if tools:
        ask = "Use the get_weather tool to find the weather in Paris, then describe it."
    else:
        ask = "Continue the text above with a long story; do not stop early."
    filler = max(0, tokens - len(ask.split()) - 2)
    words = " ".join(rng.choice(_WORDS) for _ in range(filler))
    return f"[{key}] {words}\n\n{ask}" if words else f"[{key}] {ask}"


def run_tool(arguments: str) -> str:
    """The tool's implementation: instant, so the tool round trip is the model's and the
    framework's time."""
    try:
        city = json.loads(arguments or "{}").get("city", "Paris")
    except (ValueError, AttributeError):
        city = "Paris"
    return json.dumps({"city": city, "temperature_c": 21, "sky": "clear"})
