"""What the TTS provider tests share: both scripted providers (Deepgram, Sarvam) behind one
:class:`Provider`, fast connection options, an answer's frames and its audio's length."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest

from rustvani_trio.frames import (
    Frame,
    LLMFullResponseEnd,
    LLMFullResponseStart,
    LLMText,
    OutputAudioRawFrame,
)
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.tts._ws_tts import WebSocketTTSService
from rustvani_trio.services.tts.deepgram import DeepgramTTSConfig, DeepgramTTSService
from rustvani_trio.services.tts.sarvam import SarvamTTSConfig, SarvamTTSService
from rustvani_trio.testing import (
    FakeDeepgramTTS,
    FakeSarvamTTS,
    open_fake_deepgram_tts,
    open_fake_sarvam_tts,
)

KEY = "tts-secret-key-4242"
PER_CHAR = 0.01  # one character of text is 0.01 s of audio in both fakes
FAST = ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)

Fake = FakeDeepgramTTS | FakeSarvamTTS


def options(**kw: Any) -> WebSocketOptions:
    """Short timeouts, no keep-alives, a fast reconnect; ``kw`` overrides."""
    base: dict[str, Any] = dict(
        connect_timeout=2,
        send_timeout=1,
        idle_timeout=0.5,
        close_timeout=1,
        keepalive_interval=None,
        reconnect=FAST,
    )
    base.update(kw)
    return WebSocketOptions(**base)


@attrs.define
class Provider:
    """One provider under test: how to make its fake, serve it, and make its service."""

    name: str
    make_fake: Callable[..., Fake]
    serve: Callable[[Any], Any]
    make_tts: Callable[..., WebSocketTTSService]


def deepgram_tts(fake: Any, opts: WebSocketOptions, **kw: Any) -> WebSocketTTSService:
    assert fake.server is not None
    config = DeepgramTTSConfig(api_key=KEY, base_url=fake.server.url, options=opts, **kw)
    return DeepgramTTSService(config)


def sarvam_tts(fake: Any, opts: WebSocketOptions, **kw: Any) -> WebSocketTTSService:
    assert fake.server is not None
    url = fake.server.url + "/text-to-speech/ws"
    return SarvamTTSService(SarvamTTSConfig(api_key=KEY, url=url, options=opts, **kw))


DEEPGRAM = Provider(
    "deepgram",
    lambda **kw: FakeDeepgramTTS(api_key=KEY, **kw),
    open_fake_deepgram_tts,
    deepgram_tts,
)
SARVAM = Provider(
    "sarvam", lambda **kw: FakeSarvamTTS(api_key=KEY, **kw), open_fake_sarvam_tts, sarvam_tts
)
BOTH = pytest.mark.parametrize("provider", [DEEPGRAM, SARVAM], ids=lambda p: p.name)


@asynccontextmanager
async def serving(provider: Provider, **fake_kw: Any) -> AsyncIterator[Any]:
    """Serve a new fake of ``provider`` (made with ``fake_kw``) for the block."""
    fake = provider.make_fake(**fake_kw)
    async with provider.serve(fake):
        yield fake


def answer(*pieces: str) -> list[Frame]:
    """An LLM answer's frames: its start, a text frame per piece, its end."""
    return [LLMFullResponseStart(), *(LLMText(text=p) for p in pieces), LLMFullResponseEnd()]


def secs_of(*texts: str) -> float:
    """Seconds of audio the fakes make for ``texts`` (Deepgram: their characters)."""
    return sum(len(t) for t in texts) * PER_CHAR


def audio_secs(frames: list[Frame]) -> float:
    return sum(f.duration for f in frames if isinstance(f, OutputAudioRawFrame))
