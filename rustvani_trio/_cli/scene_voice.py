"""The voice scene of ``demo``: the whole voice loop offline, on a WAV file.

espeak-ng speaks a question into ``question.wav``; it is played into
``VAD -> STT -> user aggregator -> LLM -> TTS -> paced output -> assistant aggregator`` in
real time (Silero VAD, pocketsphinx with a small grammar, the scripted model, espeak-ng);
a second recording ("stop") interrupts the answer one second in. The bot's voice is written
to ``answer.wav``. No key, no network.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

TITLE = "voice: a spoken question answered aloud, then interrupted (offline, WAV in and out)"
REQUIRES: str | None = "vad-silero,stt-pocketsphinx,tts-espeak"


def available() -> bool:
    """The Python parts; espeak-ng (a Debian package) is checked when the scene runs."""
    from ..audio.vad.silero import available as silero
    from ..services.stt.pocketsphinx import available as pocketsphinx

    return silero() and pocketsphinx()


async def run() -> None:
    if shutil.which("espeak-ng") is None:
        print("This scene needs espeak-ng (Debian/Ubuntu: apt-get install espeak-ng).")
        return
    from ..audio.pcm import read_wav, silence, wav_bytes, write_wav
    from ..testing._speech.audio import speak
    from ..testing._speech.offline import PHRASES, converse

    folder = Path(tempfile.gettempdir()) / "rustvani-voice-demo"
    folder.mkdir(exist_ok=True)
    question_wav, answer_wav = folder / "question.wav", folder / "answer.wav"
    write_wav(question_wav, speak("What is the weather in Paris?"), 16000)
    print(f"pocketsphinx understands: {'; '.join(PHRASES)}")
    print(f"question (made by espeak-ng): {question_wav}")
    question = read_wav(question_wav)
    print("playing it in real time, then saying 'stop' one second into the answer...\n")
    talk = await converse(question.pcm, barge_in=speak("stop"))
    messages = talk.context.messages
    for index in range(1, len(messages)):
        marker = " [interrupted]" if talk.context.is_interrupted(index) else ""
        print(f"  {messages[index]['role']:>9}: {messages[index].get('content')}{marker}")
    sent = talk.output.sent
    pcm = b""
    for chunk in sent:  # the bot's audio with the pauses between its answers
        at = chunk.time - sent[0].time
        pcm += silence(
            max(0.0, at - len(pcm) / 2 / chunk.frame.sample_rate), chunk.frame.sample_rate
        )
        pcm += chunk.frame.audio
    answer_wav.write_bytes(wav_bytes(pcm, sent[0].frame.sample_rate))
    v2v, barge_in = talk.voice_to_voice * 1000, talk.barge_in * 1000
    print(f"\nvoice to voice: {v2v:.0f} ms (end of the question to the first bot audio;")
    print("  0.8 s of it is the VAD waiting for the user to be done)")
    print(f"barge-in: {barge_in:.0f} ms (first sound of 'stop' to the last bot audio sent)")
    print(f"the bot's voice: {answer_wav}")
