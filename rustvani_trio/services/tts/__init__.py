"""Text-to-speech processors. Each provider is a module with its own extra:
:mod:`.deepgram` (``tts-deepgram``), :mod:`.sarvam` (``tts-sarvam``) and the offline
:mod:`.espeak` (``tts-espeak``, for demos and tests). Import the module you use."""
