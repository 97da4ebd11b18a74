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


def test_every_exception_class_the_package_defines_has_the_root() -> None:
    """Found by walking every module (each optional part's extra is installed for the tests),
    so an exception added later cannot miss the root. Private exceptions (a module's own
    control flow, never raised to a caller) and warnings are not errors."""
    import importlib
    import inspect
    import pkgutil

    missing = []
    for info in pkgutil.walk_packages(rustvani_trio.__path__, "rustvani_trio."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
                and not issubclass(value, Warning)
                and not issubclass(value, rustvani_trio.RustvaniError)
            ):
                missing.append(f"{info.name}.{name}")
    assert missing == []
