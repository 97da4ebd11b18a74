"""Speech-to-text processors. Each provider is a module with its own extra:
:mod:`.sarvam` (``stt-sarvam``), :mod:`.sixtydb` (``stt-60db``) and the offline
:mod:`.pocketsphinx` (``stt-pocketsphinx``, for demos and tests). Import the module you use."""
