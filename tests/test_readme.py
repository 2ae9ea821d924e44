"""The README's Python snippets run, in order, as a reader pastes them into one session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)


def test_readme_has_python_snippets():
    assert len(python_snippets()) >= 3


def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
    """Each snippet runs in the namespace the ones before it left (a NameError here is a missing import)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, snippet in enumerate(python_snippets(), 1):
        snippet = snippet.replace("/tmp/videoccam-tiny", str(tmp_path / "videoccam-tiny"))
        try:
            exec(compile(snippet, f"README.md python snippet {i}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - the message names the snippet
            pytest.fail(f"README.md python snippet {i} raised {type(err).__name__}: {err}\n{snippet}")
