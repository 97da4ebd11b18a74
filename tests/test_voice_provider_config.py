"""The key every cloud speech provider's config shares (ProviderConfig): read from the
provider's own environment variable, refused when empty, never in the repr."""

from __future__ import annotations

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
