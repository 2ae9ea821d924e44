"""An MLVU (dev) folder: task JSONs of unequal sizes and painted videos under ``video/<N_name>/``.

Multiple choice: ``1_plotQA`` (3 questions), ``4_count`` (1), ``7_topic_reasoning`` (2); generation:
``8_sub_scene`` (1, with scoring points) and ``9_summary`` (1). The other four task files are absent
(a partial download).
"""

from __future__ import annotations

import json
from pathlib import Path

from videoccam.testing.media import write_test_video


def _mc(video: str, question: str, candidates: list[str], answer: str) -> dict:
    return {"video": video, "duration": 200.0, "question": question, "candidates": candidates, "answer": answer,
            "question_type": "plotQA"}


TASKS = {
    "1_plotQA": [_mc("movie1.mp4", "Who enters first?", ["Ann", "Bob", "Cid", "Dee"], "Bob"),
                 _mc("movie1.mp4", "What is on the table?", ["A cup", "A book", "A hat", "A key"], "A key"),
                 _mc("movie2.mp4", "Where are they?", ["Park", "Shop", "Home", "Bus"], "Park")],
    "4_count": [_mc("count1.mp4", "How many dogs?", ["1", "2", "3", "4"], "3")],
    "7_topic_reasoning": [_mc("topic1.mp4", "What is the topic?", ["Cooking", "Sport", "Music", "Art"], "Music"),
                          _mc("topic1.mp4", "What is the mood?", ["Sad", "Happy", "Angry", "Calm"], "Calm")],
    "8_sub_scene": [{"video": "sub1.mp4", "duration": 300.0, "question": "Describe the scene where the man falls.",
                     "answer": "The man slips on ice and falls.", "question_type": "subPlot",
                     "scoring_points": ["slips", "on ice", "falls"]}],
    "9_summary": [{"video": "sum1.mp4", "duration": 300.0, "question": "Please summarize this video.",
                   "answer": "A cooking show about bread.", "question_type": "summary"}],
}


def write_mlvu(root: str | Path) -> Path:
    """Write the fixture under ``root`` and return it."""
    root = Path(root)
    (root / "json").mkdir(parents=True, exist_ok=True)
    for stem, records in TASKS.items():
        (root / "json" / f"{stem}.json").write_text(json.dumps(records, indent=1))
        for video in {r["video"] for r in records}:
            (root / "video" / stem).mkdir(parents=True, exist_ok=True)
            write_test_video(root / "video" / stem / video, num_frames=20, fps=10, size=(32, 32))
    return root
