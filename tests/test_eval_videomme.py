"""Video-MME: both video layouts, the prompt, the subtitle rule at the sampled frames, both scorers, output files."""

from __future__ import annotations

import json

import pytest

from videoccam.eval.benchmarks import get_benchmark
from videoccam.eval.benchmarks.videomme import official_extract
from videoccam.eval.runner import LoopOptions, _question, decode_item
from videoccam.testing.benchmark_fixtures.videomme import write_videomme

VIDEOMME = get_benchmark("videomme")


@pytest.fixture(scope="module", params=["data", "video"])
def root(request, tmp_path_factory):
    return write_videomme(tmp_path_factory.mktemp(f"videomme-{request.param}"), layout=request.param)


def test_both_layouts_and_the_prompt(root):
    loaded = VIDEOMME.load(root)
    assert [i.question_id for i in loaded.items] == ["001-1", "001-2", "001-3", "002-1", "002-2", "002-3"]
    assert not loaded.missing and all(i.error is None and i.video.is_file() for i in loaded.items)
    first = loaded.items[0]
    assert first.prompt == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\nHow many balls are there?\nA. One.\nB. Two.\nC. Three.\n"
        "D. Four.\nAnswer with the option's letter from the given choices directly.")
    assert first.answer == "B" and first.task == "Counting Problem" and not first.with_subtitles
    assert first.meta["duration"] == "short" and first.meta["options"][3] == "D. Four."


def test_subtitles_at_the_sampled_frames(root):
    """The lines shown at frame index / fps of the sampled frames, repeats kept, tags stripped; a video
    without an srt gets the header and an empty line."""
    items = VIDEOMME.load(root, subtitles=True).items
    options = LoopOptions(num_frames=6)
    video = decode_item(items[0], 6)
    assert list(video.indices) == [5, 15, 25, 35, 45, 55]  # 0.5, 1.5, ..., 5.5 s
    question = _question(items[0], None, video, 3, options)
    # 0.5 s: none (a cue starting at 0.5 s is not shown yet: start < t <= end); 2.5-4.5 s: the same cue 3 times
    assert question.prompt.startswith("This video's subtitles are listed below:\nHello there, my friend.\n"
                                      "The red ball rolls.\nThe red ball rolls.\nThe red ball rolls.\nGoodbye.\n"
                                      "Select the best answer")
    long_video = decode_item(items[3], 6)
    assert items[3].subtitles is None
    assert _question(items[3], None, long_video, 3, options).prompt.startswith(
        "This video's subtitles are listed below:\n\nSelect the best answer")


@pytest.mark.parametrize(("response", "letter"), [
    ("B", "B"), ("(B) Two.", "B"), ("The best answer is C", "C"), ("Answer: D", "A"),  # "Answer:" is kept: its A
    ("Based on the video, two balls.", "B"),  # the first capital A-D anywhere: "Based" gives B
    ("I think there are two balls in the video, one red and one blue, rolling", None),  # > 10 words, no A-D
    ("none", None), ("The correct option is A", "A"),  # "The correct option is" is never removed (no comma)
])
def test_official_extraction(response, letter):
    assert official_extract(response) == letter


def test_scores_and_the_official_file(root, tmp_path):
    items = VIDEOMME.load(root).items
    responses = ["B", "The answer is A", "I really cannot tell what happens at the end of this video clip sorry",
                 "C.", "(A)", None]
    rows = []
    for item, response in zip(items, responses, strict=True):
        row = {"question_id": item.question_id, "task": item.task, "answer": item.answer, "response": response,
               "meta": item.meta, "error": None if response is not None else "decode failed"}
        row["parsed"], row["correct"] = VIDEOMME.check(response, row) if response is not None else (None, None)
        rows.append(row)
    scores = VIDEOMME.score(rows)
    # official: B ok, A ok, unanswerable (out), C ok, A wrong (answer D); the failed row is not counted
    assert scores["overall"]["official"]["correct"] == 3 and scores["overall"]["official"]["n"] == 4
    # videoccam's letter check: "B" ok, "The answer is A" ok, the long reply wrong, "C." ok, "(A)" wrong
    assert scores["overall"]["videoccam"]["correct"] == 3 and scores["overall"]["videoccam"]["n"] == 5
    assert scores["breakdowns"]["duration"]["short"]["official"]["n"] == 2
    assert scores["breakdowns"]["duration"]["long"]["videoccam"]["correct"] == 1
    (path,) = VIDEOMME.write_official(rows, tmp_path)
    assert path.name == "output_wo_sub.json"
    videos = json.loads(path.read_text())
    assert [v["video_id"] for v in videos] == ["001", "002"] and videos[0]["duration"] == "short"
    assert videos[0]["questions"][0] == {"question_id": "001-1", "task_type": "Counting Problem",
                                         "question": "How many balls are there?",
                                         "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "B",
                                         "response": "B"}


def test_missing_videos_are_named(tmp_path):
    root = write_videomme(tmp_path)
    (root / "data" / "KtLrRwY9sOw.mp4").unlink()
    loaded = VIDEOMME.load(root)
    assert len(loaded.missing) == 1 and "KtLrRwY9sOw" in loaded.missing[0]
    assert [i.error is not None for i in loaded.items] == [False] * 3 + [True] * 3
