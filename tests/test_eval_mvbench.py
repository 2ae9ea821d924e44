"""MVBench: layout, bound and frame-folder indices, prompts, Video-CCAM's and the official check, leaderboard file."""

from __future__ import annotations

import json

import pytest

from videoccam.eval.benchmarks import get_benchmark
from videoccam.eval.benchmarks.mvbench import official_check
from videoccam.eval.runner import decode_item
from videoccam.testing.benchmark_fixtures.mvbench import write_mvbench
from videoccam.testing.media import read_test_pattern

MVBENCH = get_benchmark("mvbench")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mvbench(tmp_path_factory.mktemp("mvbench"))


@pytest.fixture(scope="module")
def loaded(root):
    return MVBENCH.load(root)


def by_id(loaded):
    return {item.question_id: item for item in loaded.items}


def test_partial_folder_lists_the_missing_tasks(loaded):
    assert len(loaded.missing) == 17 and "json/action_prediction.json (Action Prediction)" in loaded.missing
    assert sorted({i.task for i in loaded.items}) == ["Action Antonym", "Action Sequence", "Episodic Reasoning"]


def test_prompt_answer_and_bad_records(loaded, root):
    items = by_id(loaded)
    first = items["action_sequence/0"]
    assert first.prompt == ("Question: What did the person do first?\nOptions:\n(A) Sat down.\n(B) Opened the door.\n"
                            "(C) Took a cup.\nAnswer with the option's letter from the given choices directly.")
    assert first.answer == "(B) Opened the door." and first.error is None
    assert first.video_kwargs == {"sample": "mvbench", "start": 0.5, "end": 1.5}
    assert "answer 'c' is not one of its candidates" in items["action_sequence/2"].error
    assert "record 3: missing field 'question'" in items["action_sequence/3"].error
    assert "GONE.mp4: no such video" in items["action_sequence/4"].error and items["action_sequence/4"].video is None
    assert items["action_antonym/0"].video == root / "video" / "ssv2_video" / "1234.mp4"  # the .webm's mp4 sibling


@pytest.mark.parametrize(("qid", "expected"), [
    ("action_sequence/0", [18, 26, 33, 40]),  # start 0.5 s, end 1.5 s at 30 fps: seg 7.5
    ("action_sequence/1", [33, 40, 47, 55]),  # end 5 s is past the last frame (59): seg 29/4
    ("episodic_reasoning/0", [1, 3, 5, 7]),  # frames 00002, 00004, ... of the 1-indexed 3 fps folder
    ("action_antonym/0", [7, 22, 37, 51]),  # no bound: 0..59, seg 14.75 (round half to even)
])
def test_frame_indices_are_videochat2s(loaded, qid, expected):
    video = decode_item(by_id(loaded)[qid], 4)
    assert list(video.indices) == expected
    assert [read_test_pattern(f) for f in video.frames] == expected  # the painted frames themselves


@pytest.mark.parametrize(("response", "videoccam", "official"), [
    ("B", True, True), ("(B)", True, True), ("B.", True, True), ("Answer: (B)", True, False),
    ("(B) Opened the door.", True, True), ("(", True, False),  # a lone "(": Video-CCAM's quirk
    ("The answer is B", True, False), ("The correct answer is B", False, False), ("A", False, False),
    ("b) opened", True, True), ("", False, True),  # official: "(" alone is a substring of "(b)"
    ("B\nBecause the door", False, True),  # Video-CCAM splits on spaces only; the official check reads line 1
])
def test_checks_on_edge_cases(response, videoccam, official):
    row = {"answer": "(B) Opened the door.", "response": response}
    assert MVBENCH.check(response, row)[1] is videoccam
    assert official_check(response, row["answer"])[1] is official


def test_score_reports_both_checks_and_writes_the_leaderboard_file(tmp_path):
    rows = [{"question_id": f"q{k}", "task": task, "answer": "(A) x", "response": response, "error": None,
             "correct": MVBENCH.check(response, {"answer": "(A) x"})[1]}
            for k, (task, response) in enumerate([("T1", "A"), ("T1", "The answer is A"), ("T1", "B"),
                                                  ("T2", "(A)"), ("T2", "C")])]
    rows.append({"question_id": "bad", "task": "T2", "answer": "(A) x", "response": None, "error": "no video",
                 "correct": None})
    scores = MVBENCH.score(rows)
    assert scores["overall"]["videoccam"]["correct"] == 3 and scores["overall"]["videoccam"]["n"] == 5
    assert scores["overall"]["official"]["correct"] == 2  # "The answer is A" -> "(The" fails officially
    assert scores["tasks"]["T1"]["official"]["accuracy"] == pytest.approx(1 / 3)
    MVBENCH.write_official(rows, tmp_path)
    assert json.loads((tmp_path / "upload_leaderboard.json").read_text()) == {"T1": 66.67, "T2": 50.0, "Avg": 60.0}
