"""The public API: one flat namespace (``import rustvani_trio as rt``), the seed's module paths,
and a cheap import (the OpenAI handler and its httpx load on first use)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rustvani_trio as rt


def test_every_public_name_resolves() -> None:
    for name in rt.__all__:
        assert getattr(rt, name) is not None, name
    assert sorted(rt.__all__) == dir(rt)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = rt.Nope  # type: ignore[attr-defined]


def test_the_root_names_are_the_seed_paths_objects() -> None:
    from rustvani_trio.context import LLMContext
    from rustvani_trio.services.llm.function_registry import FunctionRegistry
    from rustvani_trio.services.llm.openai import OpenAILLMConfig, OpenAILLMHandler
    from rustvani_trio.tools.base import BuiltinTool

    assert rt.LLMContext is LLMContext
    assert rt.FunctionRegistry is FunctionRegistry
    assert rt.OpenAILLMHandler is OpenAILLMHandler
    assert rt.OpenAILLMConfig is OpenAILLMConfig
    assert rt.BuiltinTool is BuiltinTool


def test_importing_the_package_does_not_import_httpx() -> None:
    code = (
        "import sys, rustvani_trio as rt\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore')], 1\n"
        "rt.OpenAILLMConfig\n"
        "assert 'httpx' in sys.modules, 2\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_optional_parts_are_in_the_namespace_and_loaded_on_first_use() -> None:
    code = (
        "import sys, rustvani_trio as rt\n"
        "for m in ('rustvani_trio.tools.postgres', 'rustvani_trio.dhara', 'psycopg'):\n"
        "    assert m not in sys.modules, m\n"
        "assert rt.NeonPostgresTool.__module__ == 'rustvani_trio.tools.postgres'\n"
        "assert rt.DharaManager.__module__.startswith('rustvani_trio.dhara')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_missing_extra_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    real = importlib.import_module

    def without_postgres(name: str, package: str | None = None) -> object:
        if name == ".tools.postgres":
            raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_postgres)
    monkeypatch.delitem(rt.__dict__, "NeonPostgresConfig", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"db-postgres.*pip install"):
        _ = rt.NeonPostgresConfig
