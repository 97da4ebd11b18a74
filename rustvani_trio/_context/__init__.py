"""The implementation of :mod:`rustvani_trio.context`, one concept per module.

* :mod:`.errors`: the context's exceptions;
* :mod:`.values`: checking the JSON values handed to the context, and copying them;
* :mod:`.readonly`: the read-only lists and dicts the context stores and hands out;
* :mod:`.messages`: the shape of one message, and of a whole sequence;
* :mod:`.estimate`: the token heuristic;
* :mod:`.budget`: estimates, calibration and trimming over a whole context;
* :mod:`.history`: the committed messages with their token counts and marks;
* :mod:`.tools`: :class:`FunctionSchema`, tool specs and the tool choice;
* :mod:`.rounds`: :class:`ContextRound`, a tool round staged until committed;
* :mod:`.llm_context`: :class:`LLMContext`, which ties them together.

Import the public names from :mod:`rustvani_trio.context`.
"""
