"""Testing helpers for voice: speech made with espeak-ng, test signals, scripted
speech-provider servers (Deepgram, Sarvam, 60db) with injectable faults, and a paced audio
sink standing in for a transport's output. The scripted servers and what scripts them are
public as :mod:`rustvani_trio.testing` names (``FakeDeepgramTTS``, ``Faults``, ...); import
them from there."""
