"""A VideoVista folder: ``VideoVista.json`` and painted videos under ``merged/<category>/<duration group>/``.

Five records over four videos: one video sits in another category's folder than its record says
(Video-CCAM's fallback finds it), one is missing; both Understanding and Reasoning types.
"""

from __future__ import annotations

import json
from pathlib import Path

from videoccam.testing.media import write_test_video

RECORDS = [
    {"video_name": "abc123.0_60.0.mp4", "category": "Howto & Style", "Question": "What is being made?",
     "Answer_Choices": ["Bread", "Soup", "Salad", "Cake"], "Answer": 1, "Type": "Action Recognition",
     "question_id": 101, "time": 45.0},
    {"video_name": "abc123.0_60.0.mp4", "category": "Howto & Style", "Question": "What happens next?",
     "Answer_Choices": ["Serving", "Cleaning", "Eating", "Leaving"], "Answer": 0, "Type": "Event Prediction",
     "question_id": 102, "time": 45.0},
    {"video_name": "def456.60_180.1.mp4", "category": "Sports", "Question": "How many players?",
     "Answer_Choices": ["2", "4", "6", "8", "10"], "Answer": 4, "Type": "Objects Count",
     "question_id": 103, "time": 150.0},
    {"video_name": "ghi789.180_600.0.mp4", "category": "Music", "Question": "Why does the crowd cheer?",
     "Answer_Choices": ["A goal", "A song ends", "A fall"], "Answer": 1, "Type": "Causal Reasoning",
     "question_id": 104, "time": 400.0},
    {"video_name": "zzz000.0_60.2.mp4", "category": "Music", "Question": "What colour?",
     "Answer_Choices": ["Red", "Blue"], "Answer": 0, "Type": "Objects Existence", "question_id": 105, "time": 20.0},
]


def write_videovista(root: str | Path) -> Path:
    """Write the fixture under ``root`` and return it."""
    root = Path(root)
    places = {"abc123.0_60.0.mp4": "Howto & Style/0_60", "def456.60_180.1.mp4": "Sports/60_180",
              "ghi789.180_600.0.mp4": "Travel/180_600"}  # ghi789's record says Music: the fallback finds it
    for name, folder in places.items():
        (root / "merged" / folder).mkdir(parents=True, exist_ok=True)
        write_test_video(root / "merged" / folder / name, num_frames=30, fps=10, size=(32, 32))
    (root / "merged" / "Music").mkdir(parents=True, exist_ok=True)
    (root / "VideoVista.json").write_text(json.dumps(RECORDS, indent=1))
    return root
