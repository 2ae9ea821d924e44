"""VideoVista: path fallback, answer index -> letter, the prompt, the official rule, Understanding/Reasoning."""

from __future__ import annotations

import json

import pytest

from videoccam.eval.benchmarks import get_benchmark
from videoccam.eval.benchmarks.videovista import official_letter
from videoccam.testing.benchmark_fixtures.videovista import write_videovista

VIDEOVISTA = get_benchmark("videovista")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_videovista(tmp_path_factory.mktemp("videovista"))


def test_paths_letters_and_prompt(root):
    loaded = VIDEOVISTA.load(root)
    items = {i.question_id: i for i in loaded.items}
    assert items["101"].video == root / "merged" / "Howto & Style" / "0_60" / "abc123.0_60.0.mp4"
    assert items["104"].video == root / "merged" / "Travel" / "180_600" / "ghi789.180_600.0.mp4"  # the fallback
    assert "zzz000.0_60.2.mp4: no such video" in items["105"].error and "1 video(s)" in loaded.missing[0]
    assert items["103"].answer == "(E) 10" and items["101"].answer == "(B) Soup"
    assert items["101"].prompt == ("What is being made?\nOptions:\n(A) Bread\n(B) Soup\n(C) Salad\n(D) Cake\n\n"
                                   "Answer with the option's letter from the given choices directly.")


@pytest.mark.parametrize(("response", "letter"), [("B", "B"), ("(B) Soup", "B"), ("  C.", "C"), ("xA", "A"),
                                                  ("The answer is B", "h"), ("", "")])
def test_official_letter(response, letter):
    assert official_letter(response) == letter


def test_groups_and_the_answers_file(root, tmp_path):
    items = VIDEOVISTA.load(root).items
    responses = {"101": "(B) Soup", "102": "B", "103": "E", "104": "The answer is B", "105": None}
    rows = []
    for item in items:
        response = responses[item.question_id]
        row = {"question_id": item.question_id, "task": item.task, "answer": item.answer, "response": response,
               "meta": item.meta, "error": item.error}
        row["parsed"], row["correct"] = VIDEOVISTA.check(response, row) if response else (None, None)
        rows.append(row)
    scores = VIDEOVISTA.score(rows)
    # official: 101 ok, 102 wrong, 103 "E" is not A-D so its second character "" counts: wrong, 104 wrong
    assert scores["overall"]["official"]["correct"] == 1 and scores["overall"]["official"]["n"] == 4
    assert scores["overall"]["videoccam"]["correct"] == 3  # 101, 103 and "The answer is B" (prefix stripped)
    group = scores["breakdowns"]["group"]
    assert group["Understanding"]["videoccam"]["n"] == 2 and group["Reasoning"]["videoccam"]["n"] == 2
    assert set(scores["breakdowns"]["duration"]) == {"0 min", "2 min", "5 min"}  # 45 s, 150 s, 400 s
    (path,) = VIDEOVISTA.write_official(rows, tmp_path)
    assert json.loads(path.read_text())[0] == {"question_id": 101, "Type": "Action Recognition",
                                               "Model_Answer": "(B) Soup"}
