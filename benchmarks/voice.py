"""Voice benchmarks: voice-to-voice and barge-in latency, and the cost of the audio parts.

    python -m benchmarks.voice                # about a minute on the 2-core reference machine
    python -m benchmarks.voice --reps 1       # quicker
    python -m benchmarks.voice --only websocket   # one scenario (writes nothing)
    python -m benchmarks.voice --quick --out /tmp/v   # a smoke run: each scenario once,
                                              # fewer micro samples; writes only with --out

Real time, real engines, everything on this machine (no network):

* **offline**: Silero VAD -> pocketsphinx (a grammar) -> scripted model -> espeak-ng -> a
  paced output (``testing._speech.paced``, standing in for the transport's output).
* **providers**: Silero VAD -> Sarvam STT -> scripted model -> Deepgram TTS -> paced output,
  against our scripted Sarvam and Deepgram servers on loopback at *fixed* delays, so the
  framework's own share is what remains after subtracting them.
* **websocket**: the offline pipeline of ``serve-chat --voice`` behind the real server
  (anycorn, one WebSocket session on loopback), a trio-websocket client sending 16 kHz PCM
  in real time, 20 ms a message, as the chat page does. Times are taken at the client:
  the audio it sent and the bot audio it received over the socket.

A question is spoken (espeak-ng), answered aloud, and one second into the answer the user
says "stop". Voice to voice: the last audible sample of the question to the first bot audio
sent. Barge-in: the first audible sample of "stop" to the last bot audio sent (through the
socket: the last bot audio received before ``bot-interrupted``).
Writes ``benchmarks/results/voice.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

from rustvani_trio.audio.pcm import silence
from rustvani_trio.audio.resample import Resampler
from rustvani_trio.audio.vad import VadParams
from rustvani_trio.context import LLMContext
from rustvani_trio.processor import FrameProcessor
from rustvani_trio.testing._speech.audio import speak, white_noise
from rustvani_trio.testing._speech.offline import Conversation, answer_for, converse
from rustvani_trio.testing._speech.paced import PacedAudioOutput

STT_DELAY = 0.15  # the scripted Sarvam answers a flush after this
LLM_FIRST = 0.30  # the scripted model's first token
LLM_TOKEN = 0.02  # between tokens
TTS_FIRST = 0.20  # the scripted Deepgram's first audio of each sentence


def first_sentence_tokens() -> int:
    sentence = answer_for("paris").split(". ")[0] + "."
    return len(sentence.split(" "))


def measured(talk: Conversation, fixed: float) -> dict[str, float]:
    """A pipeline run's figures, with the fixed delays (known in advance) that are in them."""
    return {
        "voice_to_voice": talk.voice_to_voice,
        "fixed_delays": fixed,
        "barge_in": talk.barge_in,
        "barge_in_after_vad": talk.barge_in_after_vad,
        "interruption_delay": talk.interruption_delay,
    }


async def provider_run(question: bytes, barge: bytes) -> dict[str, float]:
    from rustvani_trio.aggregators import create_context_aggregators
    from rustvani_trio.audio.vad.silero import SileroVADProcessor
    from rustvani_trio.services.stt.sarvam import SarvamSTTConfig, SarvamSTTService
    from rustvani_trio.services.tts.deepgram import DeepgramTTSConfig, DeepgramTTSService
    from rustvani_trio.testing._speech._common import Faults
    from rustvani_trio.testing._speech.deepgram import FakeDeepgramTTS, open_fake_deepgram_tts
    from rustvani_trio.testing._speech.sarvam_stt import FakeSarvamSTT, open_fake_sarvam_stt

    stt_fake = FakeSarvamSTT(
        transcripts=["what is the weather in paris", "stop"], reply_delay=STT_DELAY
    )
    tts_fake = FakeDeepgramTTS(
        secs_per_char=0.06,
        chunk_bytes=960,
        synthesize_on_speak=True,
        faults=Faults(first_delay=TTS_FIRST),
    )
    async with open_fake_sarvam_stt(stt_fake), open_fake_deepgram_tts(tts_fake):
        assert stt_fake.server is not None and tts_fake.server is not None

        def build(
            context: LLMContext, llm: FrameProcessor, output: PacedAudioOutput
        ) -> list[FrameProcessor]:
            user, assistant = create_context_aggregators(context)
            assert stt_fake.server is not None and tts_fake.server is not None
            stt = SarvamSTTService(SarvamSTTConfig(api_key="test-key", url=stt_fake.server.url))
            tts = DeepgramTTSService(
                DeepgramTTSConfig(api_key="test-key", base_url=tts_fake.server.url)
            )
            return [SileroVADProcessor(), stt, user, llm, tts, output, assistant]

        talk = await converse(
            question,
            barge_in=barge,
            build=build,
            token_delay=LLM_TOKEN,
            first_token_delay=LLM_FIRST,
        )
    fixed = (
        VadParams().stop_secs
        + STT_DELAY
        + LLM_FIRST
        + (first_sentence_tokens() - 1) * LLM_TOKEN
        + TTS_FIRST
    )
    return measured(talk, fixed)


async def offline_run(question: bytes, barge: bytes) -> dict[str, float]:
    talk = await converse(
        question, barge_in=barge, token_delay=LLM_TOKEN, first_token_delay=LLM_FIRST
    )
    fixed = VadParams().stop_secs + LLM_FIRST + (first_sentence_tokens() - 1) * LLM_TOKEN
    return measured(talk, fixed)


async def websocket_run(question: bytes, barge: bytes) -> dict[str, float]:
    from rustvani_trio.server import ServerConfig, serve
    from rustvani_trio.server.voice import open_voice_factory
    from rustvani_trio.testing._speech.client import open_voice_client
    from rustvani_trio.testing._speech.scenario import Silence, Speech, Until

    voice = open_voice_factory(token_delay=LLM_TOKEN, first_token_delay=LLM_FIRST)
    async with voice as factory, trio.open_nursery() as nursery:
        stop = trio.Event()
        server = await nursery.start(partial(serve, factory, ServerConfig(port=0), stop=stop))
        async with open_voice_client(server.ws_url) as client:
            await client.connect()
            await client.say(
                [
                    Silence(0.3),
                    Speech(question, "question"),
                    Until(client.first_audio, after=1.0),
                    Speech(barge, "barge-in"),
                    Silence(0.5),
                ]
            )
            # the answer to "stop" spoken to its end
            await client.wait_for(lambda: len(client.of("bot-stopped-speaking")) >= 2, 60)
        stop.set()
    assert client.transcripts() == ["what is the weather in paris", "stop"], client.summary()
    interrupted = client.of("bot-interrupted")[0].time
    last = max(r.time for r in client.of("<audio>") if r.time <= interrupted)
    return {
        "voice_to_voice": client.voice_to_voice,
        "fixed_delays": VadParams().stop_secs
        + LLM_FIRST
        + (first_sentence_tokens() - 1) * LLM_TOKEN,
        "barge_in": client.barge_in,
        "last_audio_to_interrupted": interrupted - last,
        "audio_after_interruption": float(len(client.audio_after_interruption())),
    }


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def micro(quick: bool = False) -> dict[str, Any]:
    from rustvani_trio.audio.vad.silero import SileroVADAnalyzer

    results: dict[str, Any] = {}
    repeat = 1 if quick else 3
    speech = speak("what is the weather in paris, and is it going to rain tomorrow")
    chunks = [speech[i : i + 1024] for i in range(0, len(speech) - 1024, 1024)]
    analyzer = SileroVADAnalyzer()
    per_chunk = [
        t
        for c in chunks * repeat
        for t in timed(lambda c=c: analyzer.voice_confidence(c), 1)  # type: ignore[misc]
    ]
    results["vad_chunk_ms_p50"] = statistics.median(per_chunk) * 1000
    results["vad_chunk_ms_p95"] = sorted(per_chunk)[int(len(per_chunk) * 0.95)] * 1000

    async def hop() -> list[float]:
        samples = []
        for c in chunks:
            t = time.perf_counter()
            await trio.to_thread.run_sync(analyzer.voice_confidence, c)
            samples.append(time.perf_counter() - t)
        return samples

    results["vad_chunk_in_thread_ms_p50"] = statistics.median(trio.run(hop)) * 1000
    one_second = white_noise(1.0, sample_rate=48000)
    for rin, rout in ((48000, 16000), (22050, 16000), (16000, 24000)):
        pcm = one_second if rin == 48000 else white_noise(1.0, sample_rate=rin)
        cost = statistics.median(
            timed(lambda: Resampler(rin, rout).process(pcm), 1 if quick else 5)  # noqa: B023
        )
        results[f"resample_{rin}_{rout}_ms_per_s"] = cost * 1000
    try:
        from rustvani_trio.services.stt.pocketsphinx import PocketsphinxSTTService
        from rustvani_trio.testing._speech.offline import GRAMMAR, WORDS

        decoder = PocketsphinxSTTService(GRAMMAR, words=WORDS)._decoder
        assert decoder is not None
        padded = silence(0.3, 16000) + speech

        def decode() -> None:
            decoder.start_utt()
            for i in range(0, len(padded), 640):
                decoder.process_raw(padded[i : i + 640], False, False)
            decoder.end_utt()

        results["pocketsphinx_ms_per_s"] = (
            statistics.median(timed(decode, repeat)) * 1000 / (len(padded) / 32000)
        )
    except ImportError:
        pass
    t = time.perf_counter()
    pcm = speak(
        "This sentence is here to measure how fast espeak speaks it, nothing more.",
        sample_rate=22050,
    )
    results["espeak_realtime_factor"] = (len(pcm) / 2 / 22050) / (time.perf_counter() - t)
    return results


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[f"{key}_median"] = statistics.median(values)
        out[f"{key}_max"] = max(values)
    out["framework_share_median"] = out["voice_to_voice_median"] - out["fixed_delays_median"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where voice.json goes (default: benchmarks/results; a --quick run writes only here)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one repetition of each scenario, fewer micro samples",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["offline", "providers", "websocket"],
        help="run only this scenario (repeatable; nothing is written)",
    )
    args = parser.parse_args()
    if args.quick:
        args.reps = 1
    out: Path | None = args.out
    if out is None and not args.quick:
        out = Path(__file__).parent / "results"  # a quick run never replaces the results
    question = speak("what is the weather in paris")
    barge = speak("stop")
    results: dict[str, Any] = {
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "delays": {
            "stt": STT_DELAY,
            "llm_first_token": LLM_FIRST,
            "llm_token": LLM_TOKEN,
            "tts_first_audio": TTS_FIRST,
            "vad": VadParams().__repr__(),
        },
    }
    scenarios = {"offline": offline_run, "providers": provider_run, "websocket": websocket_run}
    chosen = args.only or list(scenarios)
    for name in chosen:
        runs = [trio.run(scenarios[name], question, barge) for _ in range(args.reps)]
        results[name] = {"runs": runs, **summary(runs)}
    if not args.only:
        results["micro"] = micro(quick=args.quick)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "voice.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| scenario | voice to voice (median / max) | fixed delays | framework + VAD share "
        "| barge-in (median / max) | after the interruption |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in chosen:
        r = results[name]
        ms = {k: round(v * 1000) for k, v in r.items() if isinstance(v, float)}
        if name == "websocket":
            after = (
                f"{r['audio_after_interruption_max']:.0f} audio messages after bot-interrupted; "
                f"the last audio {r['last_audio_to_interrupted_median'] * 1000:.0f} ms before it"
            )
        else:
            after = f"bot stopped {r['interruption_delay_median'] * 1000:.1f} ms after the VAD"
        print(
            f"| {name} | {ms['voice_to_voice_median']} / {ms['voice_to_voice_max']} ms"
            f" | {ms['fixed_delays_median']} ms | {ms['framework_share_median']} ms"
            f" | {ms['barge_in_median']} / {ms['barge_in_max']} ms | {after} |"
        )
    print()
    for key, value in results.get("micro", {}).items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
