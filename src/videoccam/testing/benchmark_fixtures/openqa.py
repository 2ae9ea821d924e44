"""Open-ended QA folders in the test_q.json / test_a.json layout, with painted media.

``write_openqa(root, "msvd-qa")`` writes three questions over two ``.avi`` clips in ``YouTubeClips/``;
``"tgif-qa"`` uses GIFs in ``gifs/``; ``"activitynet-qa"`` names videos without their ``v_`` prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

from videoccam.testing.media import write_test_gif, write_test_video

LAYOUTS = {"msvd-qa": ("YouTubeClips", ".avi", ""), "tgif-qa": ("gifs", ".gif", ""),
           "activitynet-qa": ("videos", ".mp4", "v_"), "msrvtt-qa": ("videos", ".mp4", "")}


def write_openqa(root: str | Path, dataset: str = "msvd-qa") -> Path:
    """Write the fixture under ``root`` and return it."""
    root = Path(root)
    folder, suffix, prefix = LAYOUTS[dataset]
    (root / folder).mkdir(parents=True, exist_ok=True)
    for name in ("clipA", "clipB"):
        path = root / folder / f"{prefix}{name}{suffix}"
        if suffix == ".gif":
            write_test_gif(path, num_frames=12, size=(32, 32))
        else:
            write_test_video(path, num_frames=20, fps=10, size=(32, 32), codec="mpeg4" if suffix == ".avi" else
                             "libx264")
    questions = [{"video_name": "clipA", "question": "what is the man doing?", "question_id": "q0"},
                 {"video_name": "clipA", "question": "what colour is the car?", "question_id": "q1"},
                 {"video_name": "clipB", "question": "who is singing?", "question_id": "q2"}]
    answers = [{"answer": "running", "type": 0, "question_id": "q0"},
               {"answer": "red", "type": 3, "question_id": "q1"},
               {"answer": "a woman", "type": 0, "question_id": "q2"}]
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(json.dumps(answers[::-1]))  # matched by id, not by position
    return root
