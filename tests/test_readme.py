"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _runnable_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if "trio.run(main)" in b]


def test_readme_has_runnable_examples() -> None:
    assert len(_runnable_blocks()) >= 2


@pytest.mark.parametrize("index", range(2))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = _runnable_blocks()[index]
    exec(compile(code, f"README example {index}", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    if index == 0:
        assert out.splitlines() == ["HELLO", "TRIO"]
    else:
        assert "'role': 'assistant', 'content': 'Hi there!'" in out
