"""The Python snippets of the README and docs/python.md run, in order, as a reader pastes them into one session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PYTHON_DOC = REPO / "docs" / "python.md"  # the README's Python section continued


def python_snippets() -> list[str]:
    """The README's snippets, then docs/python.md's."""
    return [snippet for page in (README, PYTHON_DOC)
            for snippet in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)]


def test_readme_has_python_snippets():
    assert len(re.findall(r"^```python\n", README.read_text(), re.MULTILINE)) >= 1
    assert len(python_snippets()) >= 4


def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
    """Each snippet runs in the namespace the ones before it left (a NameError here is a missing import)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for i, snippet in enumerate(python_snippets(), 1):
        snippet = snippet.replace("/tmp/videoccam-tiny", str(tmp_path / "videoccam-tiny"))
        snippet = snippet.replace('"examples/', f'"{REPO}/examples/')  # the README runs from the checkout
        try:
            exec(compile(snippet, f"README.md python snippet {i}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - the message names the snippet
            pytest.fail(f"README.md python snippet {i} raised {type(err).__name__}: {err}\n{snippet}")
