"""Private testing helpers for voice: speech made with espeak-ng, test signals, scripted
speech-provider servers (Deepgram, Sarvam, 60db) with injectable faults, and a paced audio
sink standing in for a transport's output. Exported through :mod:`rustvani_trio.testing`
by the lead; import from here meanwhile."""
