"""Every exception the package raises on purpose shares the root RustvaniError and keeps its
built-in base."""

from __future__ import annotations

import pytest

import rustvani_trio
from rustvani_trio.context import (
    ContextInvariantError,
    InvalidMessageError,
    InvalidToolError,
    RoundStateError,
)
from rustvani_trio.processor import ProcessorNotLinkedError
from rustvani_trio.services.llm._sse import SSEProtocolError
from rustvani_trio.services.llm.openai import LLMRequestError
from rustvani_trio.task import PipelineFatalError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ContextInvariantError, ValueError),
        (InvalidMessageError, ValueError),
        (InvalidToolError, ValueError),
        (RoundStateError, RuntimeError),
        (ProcessorNotLinkedError, RuntimeError),
        (SSEProtocolError, ValueError),
        (LLMRequestError, Exception),
        (PipelineFatalError, Exception),
    ],
)
def test_errors_share_the_root_and_keep_their_builtin_base(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, rustvani_trio.RustvaniError)
    assert issubclass(error, builtin)
