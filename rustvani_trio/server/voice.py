"""The voice application of ``serve-chat --voice``: talk to the bot from the chat page.

```
input -> Silero VAD -> pocketsphinx STT -> user aggregator (voice mode) -> LLM -> espeak-ng TTS
      -> output (paced audio) -> assistant aggregator
```

Everything runs on this machine with no key and no network: Silero VAD (``vad-silero``),
pocketsphinx with a small grammar (``stt-pocketsphinx``: it understands only
:data:`~rustvani_trio.testing._speech.offline.PHRASES`), espeak-ng (a Debian package) and,
without ``OPENAI_API_KEY``, a scripted model that answers those phrases. The offline engines
are for a demo and tests, not production: the providers' services
(:class:`~rustvani_trio.services.stt.sarvam.SarvamSTTService`,
:class:`~rustvani_trio.services.tts.deepgram.DeepgramTTSService`, ...) are drop-in
replacements for the STT and TTS boxes (see :func:`voice_pipeline`'s ``stt`` / ``tts``).

Typed messages work too (``send-text`` is a complete voice-mode turn); the answer is spoken.
The user speaking while the bot speaks interrupts it (barge-in).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import trio

from ..aggregators import create_context_aggregators
from ..audio.vad import VadParams
from ..context import LLMContext
from ..pipeline import Pipeline
from ..processor import FrameProcessor
from ..services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
from ..task import PipelineParams, PipelineTask
from .chat import open_http_clients, open_model
from .sessions import PipelineFactory, Session

__all__ = [
    "VOICE_SYSTEM_PROMPT",
    "missing_engines",
    "open_voice_factory",
    "voice_pipeline",
]

logger = logging.getLogger("rustvani_trio.server")

VOICE_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your answers are spoken aloud: keep them short, "
    "plain sentences, no lists or markup."
)

ProcessorFactory = Callable[[], FrameProcessor]


def missing_engines() -> list[str]:
    """What the offline voice pipeline needs and this machine lacks (empty: all there)."""
    from ..audio.vad.silero import available as silero
    from ..services.stt.pocketsphinx import available as pocketsphinx
    from ..services.tts.espeak import available as espeak

    missing = []
    if not silero():
        missing.append("Silero VAD (pip install 'rustvani-trio[vad-silero]')")
    if not pocketsphinx():
        missing.append("pocketsphinx (pip install 'rustvani-trio[stt-pocketsphinx]')")
    if not espeak():
        missing.append("espeak-ng (Debian/Ubuntu: apt-get install espeak-ng)")
    return missing


def _offline_stt() -> FrameProcessor:
    from ..services.stt.pocketsphinx import PocketsphinxSTTService
    from ..testing._speech.offline import GRAMMAR, WORDS

    return PocketsphinxSTTService(GRAMMAR, words=WORDS, name="stt")


def _offline_tts() -> FrameProcessor:
    from ..services.tts.espeak import EspeakTTSService

    return EspeakTTSService(name="tts")


def voice_pipeline(
    session: Session,
    config: OpenAILLMConfig,
    client: httpx.AsyncClient | None = None,
    *,
    stt: ProcessorFactory = _offline_stt,
    tts: ProcessorFactory = _offline_tts,
    vad_params: VadParams | None = None,
    system_prompt: str = VOICE_SYSTEM_PROMPT,
) -> PipelineTask:
    """One session's voice pipeline (see the module's docstring). ``stt`` and ``tts`` build
    the speech boxes: the offline engines by default, any provider's service instead."""
    from ..audio.vad.silero import SileroVADProcessor

    context = LLMContext([{"role": "system", "content": system_prompt}])
    user, assistant = create_context_aggregators(context)  # voice mode: turns end at the stop
    llm = OpenAILLMHandler(config, http_client=client).into_processor(name="llm")
    processors = [
        session.input(),
        SileroVADProcessor(vad_params, name="vad"),
        stt(),
        user,
        llm,
        tts(),
        session.output(),
        assistant,
    ]
    params = PipelineParams(enable_metrics=True, enable_usage_metrics=True)
    return PipelineTask(Pipeline(processors), params=params, name=f"voice-{session.id}")


@contextlib.asynccontextmanager
async def open_voice_factory(
    config: OpenAILLMConfig | None = None,
    *,
    stt: ProcessorFactory = _offline_stt,
    tts: ProcessorFactory = _offline_tts,
    token_delay: float = 0.02,
    first_token_delay: float = 0.1,
) -> AsyncIterator[PipelineFactory]:
    """The factory of ``serve-chat --voice``: offline speech, and the model ``config``
    names, or the real endpoint with ``OPENAI_API_KEY`` set, or else a scripted model on
    loopback that answers the phrases pocketsphinx understands (``token_delay`` /
    ``first_token_delay`` set its pace). ``stt`` / ``tts`` replace the speech boxes (see
    :func:`voice_pipeline`).

    Raises:
        RuntimeError: an offline engine is missing (the message says how to install it).
    """
    missing = missing_engines()
    if missing:
        raise RuntimeError("the voice pipeline needs " + "; ".join(missing))
    from ..testing._speech.offline import PHRASES, scripted_answer

    async with contextlib.AsyncExitStack() as stack:
        real = False
        if config is None:
            reply = scripted_answer(token_delay=token_delay, first_token_delay=first_token_delay)
            config, real = await open_model(stack, reply, context_window_tokens=8192, label="voice")
        next_client = await stack.enter_async_context(open_http_clients(trust_env=real))
        llm_config = config

        async def factory(session: Session) -> PipelineTask:
            # The page reads this from bot-ready: it shows the microphone and what to say.
            session.transport.about["voice"] = {"understands": PHRASES}
            await trio.lowlevel.checkpoint()
            return voice_pipeline(session, llm_config, next_client(), stt=stt, tts=tts)

        yield factory
