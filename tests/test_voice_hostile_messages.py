"""A speech provider's own text (error messages) reaches ErrorFrames and logs escaped and
bounded: a line break cannot forge a log line, terminal escapes never reach a terminal, a
10 kB message does not become a 10 kB ErrorFrame, and a key echoed back is hidden."""

from __future__ import annotations

import pytest

pytest.importorskip("trio_websocket")

from rustvani_trio.frames import LLMFullResponseEnd, LLMFullResponseStart, LLMText
from rustvani_trio.services.stt._ws import ReconnectPolicy, WebSocketOptions
from rustvani_trio.services.tts.sarvam import SarvamTTSConfig, SarvamTTSService
from rustvani_trio.testing import FakeSarvamTTS, Faults, open_fake_sarvam_tts
from rustvani_trio.testing._speech.harness import live_pipeline

KEY = "sarvam-hostile-secret-key"
OPTIONS = WebSocketOptions(
    connect_timeout=2,
    idle_timeout=1,
    close_timeout=1,
    reconnect=ReconnectPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05),
)


async def test_a_provider_error_is_escaped_bounded_and_redacted() -> None:
    hostile = f"bad text\nERROR forged line \x1b[2J key {KEY} " + "x" * 10_000
    fake = FakeSarvamTTS(api_key=KEY, faults=Faults(error=hostile))
    async with open_fake_sarvam_tts(fake):
        assert fake.server is not None
        config = SarvamTTSConfig(api_key=KEY, url=fake.server.url + "/tts", options=OPTIONS)
        async with live_pipeline([SarvamTTSService(config)]) as live:
            await live.send(LLMFullResponseStart(), LLMText(text="Hi."), LLMFullResponseEnd())
            error = await live.wait_for_error()
    text = error.error
    assert text.startswith("Sarvam TTS: bad text\\nERROR forged line ")
    assert "\n" not in text and "\x1b" not in text
    assert KEY not in text and "key ***" in text
    assert len(text) < 1200 and "characters)" in text
