"""The key every cloud speech provider's config shares (ProviderConfig): read from the
provider's own environment variable, refused when empty, never in the repr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rustvani_trio.services.stt._ws_options import ProviderConfig
from rustvani_trio.services.stt.sarvam import SarvamSTTConfig
from rustvani_trio.services.stt.sixtydb import SixtyDbSTTConfig
from rustvani_trio.services.tts.deepgram import DeepgramTTSConfig
from rustvani_trio.services.tts.sarvam import SarvamTTSConfig

CONFIGS: list[tuple[type[ProviderConfig], str]] = [
    (SarvamSTTConfig, "SARVAM_API_KEY"),
    (SixtyDbSTTConfig, "SIXTYDB_API_KEY"),
    (SarvamTTSConfig, "SARVAM_API_KEY"),
    (DeepgramTTSConfig, "DEEPGRAM_API_KEY"),
]
KEY = "sk-provider-secret-0123"


@pytest.mark.parametrize(("cls", "var"), CONFIGS)
def test_from_env_reads_the_providers_variable(
    cls: type[ProviderConfig], var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, other in CONFIGS:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(var, KEY)
    config = cls.from_env()
    assert type(config) is cls
    assert config.api_key == KEY
    assert KEY not in repr(config)


@pytest.mark.parametrize(("cls", "var"), CONFIGS)
def test_a_missing_key_names_the_config_and_the_variable(
    cls: type[ProviderConfig], var: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.api_key is empty \(set {var}\)$"):
        cls.from_env()
    with pytest.raises(ValueError, match=var):
        cls(api_key="  \n")


def test_from_env_passes_the_other_fields_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)
    config = DeepgramTTSConfig.from_env(voice="aura-2-thalia-en", sample_rate=16000)
    assert (config.api_key, config.voice, config.sample_rate) == (KEY, "aura-2-thalia-en", 16000)


PROVIDER_MODULES = [
    ("rustvani_trio.services.tts.deepgram", "tts-deepgram"),
    ("rustvani_trio.services.tts.sarvam", "tts-sarvam"),
    ("rustvani_trio.services.stt.sarvam", "stt-sarvam"),
    ("rustvani_trio.services.stt.sixtydb", "stt-60db"),
]

_IMPORT_WITHOUT_TRIO_WEBSOCKET = """
import importlib, json, sys
sys.modules["trio_websocket"] = None  # as if trio-websocket were not installed
out = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        out[name] = [type(exc).__name__, str(exc)]
    else:
        out[name] = None
    for loaded in [m for m in sys.modules if m.startswith("rustvani_trio.services")]:
        del sys.modules[loaded]  # the next module is imported afresh
import rustvani_trio.testing  # the testing package needs no provider extra
print(json.dumps(out))
"""


def test_a_provider_without_trio_websocket_names_its_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_TRIO_WEBSOCKET, *(m for m, _ in PROVIDER_MODULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    for module, extra in PROVIDER_MODULES:
        assert results[module] is not None, f"{module} imported without trio-websocket"
        kind, message = results[module]
        assert kind == "ImportError"  # not a bare ModuleNotFoundError for trio_websocket
        assert f"pip install 'rustvani-trio[{extra}]'" in message, message


SPEECH_FAKES = [
    "FakeDeepgramTTS",
    "FakeSarvamTTS",
    "FakeSarvamSTT",
    "FakeSixtyDbSTT",
    "Faults",
    "FakeSocket",
    "ServerHandle",
    "audio_for",
    "open_fake_deepgram_tts",
    "open_fake_sarvam_tts",
    "open_fake_sarvam_stt",
    "open_fake_sixtydb_stt",
]


def test_the_speech_fakes_are_public_in_rustvani_trio_testing() -> None:
    import rustvani_trio.testing as testing
    from rustvani_trio.testing import FakeDeepgramTTS, Faults, open_fake_deepgram_tts
    from rustvani_trio.testing._speech import deepgram

    assert FakeDeepgramTTS is deepgram.FakeDeepgramTTS
    assert open_fake_deepgram_tts is deepgram.open_fake_deepgram_tts
    assert Faults().silent is False
    for name in SPEECH_FAKES:
        assert name in testing.__all__, name
        value = getattr(testing, name)
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    assert set(SPEECH_FAKES) <= set(dir(testing))


_TESTING_WITHOUT_WSPROTO = """
import sys
sys.modules["wsproto"] = None  # as if no speech extra were installed
sys.modules["trio_websocket"] = None
import rustvani_trio.testing as testing  # works: the speech fakes load on first use
try:
    testing.FakeDeepgramTTS
except ImportError as exc:
    print(type(exc).__name__, exc)
"""


def test_the_testing_package_imports_without_the_speech_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _TESTING_WITHOUT_WSPROTO],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ImportError "), done.stdout
    assert "pip install 'rustvani-trio[tts-deepgram]'" in done.stdout


async def test_a_fake_that_sends_after_the_client_closed_ends_that_connection_quietly() -> None:
    # A script still sending (audio, say) after the client closed the connection must end
    # that connection's script, not take the whole fake server down with wsproto's error.
    pytest.importorskip("wsproto")
    import trio_websocket

    from rustvani_trio.testing._speech._wsserver import FakeSocket, open_ws_server
    from rustvani_trio.testing._speech.harness import wait_until

    scripts_done: list[str] = []

    async def script(sock: FakeSocket) -> None:
        assert await sock.receive() is None  # the client closed
        try:
            await sock.send("too late")
        finally:
            scripts_done.append(sock.path)

    async with open_ws_server(script) as server:
        url = f"ws://{server.host}:{server.port}"
        async with trio_websocket.open_websocket_url(url + "/first") as ws:
            await ws.aclose()
        await wait_until(lambda: bool(scripts_done))
        async with trio_websocket.open_websocket_url(url + "/second") as ws:
            await ws.aclose()  # the server still accepts connections
        await wait_until(lambda: len(scripts_done) == 2)
    assert scripts_done == ["/first", "/second"]
