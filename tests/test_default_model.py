"""The bundled default model: present, small, loads, and answers the shipped example questions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from videoccam.assets import default_model_path
from videoccam.cli import main
from videoccam.synth import ANSWERS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def bundled():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = default_model_path()
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def test_bundled_model_is_complete_and_small():
    path = default_model_path()
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size <= 20 * 2**20, size
    assert (path / "model.safetensors").is_file()
    card = (path / "README.md").read_text()
    # the two stages (the default or the long recipe's configs), with the training seed's overrides
    # when it is not 0 (tools/bundle_default_model.py)
    assert re.search(r"^videoccam train synth-stills(-where)?( \S+)* && videoccam train synth-ccam(-long)?( \S+)*$",
                     card, re.MULTILINE), card
    assert "videoccam synth --out" in card
    assert "| family |" in card


def test_bundled_model_answers_the_shipped_examples(bundled):
    model, processor = bundled
    examples = json.loads((EXAMPLES / "questions.json").read_text())
    assert {e["family"] for e in examples} == set(ANSWERS)
    convs = [[{"role": "user", "content": "<video>\n" + e["question"]}] for e in examples]
    media = [[str(EXAMPLES / e["video"])] for e in examples]
    answers = model.chat(convs, media, processor, video_kwargs={"num_frames": 16}, max_new_tokens=8,
                         do_sample=False)
    # the bundle is above chance on every family (its model card), so every example must be right
    for example, answer in zip(examples, answers, strict=True):
        assert answer.strip() == example["answer"], example


def test_chat_command_uses_the_bundled_model_by_default(capsys):
    example = next(e for e in json.loads((EXAMPLES / "questions.json").read_text()) if e["family"] == "first")
    assert main(["chat", "--video", str(EXAMPLES / example["video"]), example["question"]]) == 0
    assert capsys.readouterr().out.strip() == example["answer"]
