"""Testing helpers for rustvani-trio and for pipelines built with it.

* :func:`run_test`: run processors inside a real PipelineTask and capture what leaves each end.
* The scripted OpenAI-compatible server (:func:`open_scripted_server` and its replies): real
  HTTP on loopback, for tests, demos and benchmarks.
  ``python -m rustvani_trio.testing`` (or ``python -m rustvani_trio serve``) runs it as a
  process of its own.
* :mod:`rustvani_trio.testing.strategies`: hypothesis strategies for frames and frame sequences
  (import it explicitly; it needs hypothesis, a test-only dependency).
* Scripted speech providers, real WebSocket servers on loopback that speak each provider's
  protocol and inject faults (:class:`Faults`: idle close, abrupt drop, a server that stops
  reading, error messages, slow or no audio): :class:`FakeDeepgramTTS`,
  :class:`FakeSarvamTTS`, :class:`FakeSarvamSTT`, :class:`FakeSixtyDbSTT`, each served by
  its ``open_fake_*`` context manager; the running server is a :class:`ServerHandle`
  (``url``, ``connections`` as :class:`FakeSocket` s with what the client sent,
  ``reject_next`` to refuse handshakes); :func:`audio_for` is the audio the TTS fakes make
  for a text. They need wsproto, installed with any speech extra (``tts-deepgram``, ...),
  and are loaded on first use, so this package imports without it::

      fake = FakeDeepgramTTS(faults=Faults(drop_after_chunks=2))
      async with open_fake_deepgram_tts(fake):
          config = DeepgramTTSConfig(api_key="test-key", base_url=fake.server.url)
"""

from typing import TYPE_CHECKING, Any

from ._harness import RunResult as RunResult
from ._harness import run_test as run_test
from ._recorded import RecordedRequest as RecordedRequest
from ._replies import AUTO_USAGE as AUTO_USAGE
from ._replies import ErrorReply as ErrorReply
from ._replies import RawReply as RawReply
from ._replies import Reply as Reply
from ._replies import ScriptedToolCall as ScriptedToolCall
from ._replies import TextReply as TextReply
from ._replies import ToolCallReply as ToolCallReply
from ._replies import Usage as Usage
from ._replies import numbered_tokens as numbered_tokens
from ._server import ScriptedServer as ScriptedServer
from ._server import open_scripted_server as open_scripted_server

if TYPE_CHECKING:
    from ._speech._common import Faults as Faults
    from ._speech._common import audio_for as audio_for
    from ._speech._wsserver import FakeSocket as FakeSocket
    from ._speech._wsserver import ServerHandle as ServerHandle
    from ._speech.deepgram import FakeDeepgramTTS as FakeDeepgramTTS
    from ._speech.deepgram import open_fake_deepgram_tts as open_fake_deepgram_tts
    from ._speech.sarvam_stt import FakeSarvamSTT as FakeSarvamSTT
    from ._speech.sarvam_stt import open_fake_sarvam_stt as open_fake_sarvam_stt
    from ._speech.sarvam_tts import FakeSarvamTTS as FakeSarvamTTS
    from ._speech.sarvam_tts import open_fake_sarvam_tts as open_fake_sarvam_tts
    from ._speech.sixtydb import FakeSixtyDbSTT as FakeSixtyDbSTT
    from ._speech.sixtydb import open_fake_sixtydb_stt as open_fake_sixtydb_stt

#: the speech fakes, loaded on first use (they need wsproto): name -> module under ._speech
_SPEECH = {
    "Faults": "_common",
    "audio_for": "_common",
    "FakeSocket": "_wsserver",
    "ServerHandle": "_wsserver",
    "FakeDeepgramTTS": "deepgram",
    "open_fake_deepgram_tts": "deepgram",
    "FakeSarvamSTT": "sarvam_stt",
    "open_fake_sarvam_stt": "sarvam_stt",
    "FakeSarvamTTS": "sarvam_tts",
    "open_fake_sarvam_tts": "sarvam_tts",
    "FakeSixtyDbSTT": "sixtydb",
    "open_fake_sixtydb_stt": "sixtydb",
}


def __getattr__(name: str) -> Any:
    module = _SPEECH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        loaded = importlib.import_module(f"._speech.{module}", __name__)
    except ImportError as exc:
        raise ImportError(
            f"rustvani_trio.testing.{name} needs wsproto, installed with any speech extra: "
            "pip install 'rustvani-trio[tts-deepgram]' (or tts-sarvam, stt-sarvam, stt-60db)"
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SPEECH))


__all__ = [
    "AUTO_USAGE",
    "ErrorReply",
    "FakeDeepgramTTS",
    "FakeSarvamSTT",
    "FakeSarvamTTS",
    "FakeSixtyDbSTT",
    "FakeSocket",
    "Faults",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "RunResult",
    "ScriptedServer",
    "ScriptedToolCall",
    "ServerHandle",
    "TextReply",
    "ToolCallReply",
    "Usage",
    "audio_for",
    "numbered_tokens",
    "open_fake_deepgram_tts",
    "open_fake_sarvam_stt",
    "open_fake_sarvam_tts",
    "open_fake_sixtydb_stt",
    "open_scripted_server",
    "run_test",
]
