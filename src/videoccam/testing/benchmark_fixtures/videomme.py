"""A Video-MME folder: the parquet with its 11 columns, painted videos, one SRT with ``<font>`` tags.

Two videos x three questions: ``fFjv93ACGo8`` (short, 60 frames at 10 fps, with subtitles) and
``KtLrRwY9sOw`` (long, 40 frames at 10 fps, no subtitle file). ``layout`` puts the videos in
``data/`` (the dataset's archives) or ``video/`` (Video-CCAM's layout).
"""

from __future__ import annotations

from pathlib import Path

from videoccam.testing.media import write_test_video

SRT = """1
00:00:00,500 --> 00:00:02,000
<font color="white" size=".72c">Hello there,
my friend.</font>

2
00:00:02,000 --> 00:00:04,500
<font color="white" size=".72c">The red ball rolls.</font>

3
00:00:05,000 --> 00:00:05,900
Goodbye.
"""

QUESTIONS = [
    ("001", "short", "Knowledge", "Humanity & History", "fFjv93ACGo8", "Counting Problem",
     "How many balls are there?", ["A. One.", "B. Two.", "C. Three.", "D. Four."], "B"),
    ("001", "short", "Knowledge", "Humanity & History", "fFjv93ACGo8", "Attribute Perception",
     "What colour is the ball?", ["A. Red.", "B. Blue.", "C. Green.", "D. Black."], "A"),
    ("001", "short", "Knowledge", "Humanity & History", "fFjv93ACGo8", "Temporal Reasoning",
     "What happens last?", ["A. A greeting.", "B. A ball rolls.", "C. A farewell.", "D. Nothing."], "C"),
    ("002", "long", "Sports Competition", "Basketball", "KtLrRwY9sOw", "Action Recognition",
     "What sport is played?", ["A. Tennis.", "B. Golf.", "C. Basketball.", "D. Chess."], "C"),
    ("002", "long", "Sports Competition", "Basketball", "KtLrRwY9sOw", "OCR Problems",
     "What is written on the board?", ["A. 12.", "B. 24.", "C. 36.", "D. 48."], "D"),
    ("002", "long", "Sports Competition", "Basketball", "KtLrRwY9sOw", "Information Synopsis",
     "What is the video about?", ["A. A game.", "B. A recipe.", "C. A lecture.", "D. A trip."], "A"),
]


def write_videomme(root: str | Path, layout: str = "data") -> Path:
    """Write the fixture under ``root`` (videos in ``root/<layout>/``) and return ``root``."""
    import pandas as pd

    root = Path(root)
    (root / layout).mkdir(parents=True, exist_ok=True)
    write_test_video(root / layout / "fFjv93ACGo8.mp4", num_frames=60, fps=10, size=(32, 32))
    write_test_video(root / layout / "KtLrRwY9sOw.mp4", num_frames=40, fps=10, size=(32, 32))
    (root / "subtitle").mkdir(exist_ok=True)
    (root / "subtitle" / "fFjv93ACGo8.srt").write_text(SRT)
    rows = [{"video_id": v, "duration": d, "domain": dom, "sub_category": sub, "url": f"https://www.youtube.com/watch?v={y}",
             "videoID": y, "question_id": f"{v}-{k % 3 + 1}", "task_type": t, "question": q, "options": o, "answer": a}
            for k, (v, d, dom, sub, y, t, q, o, a) in enumerate(QUESTIONS)]
    (root / "videomme").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "videomme" / "test-00000-of-00001.parquet")
    return root
