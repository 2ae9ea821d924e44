"""An MVBench folder in the Ask-Anything layout, with painted synthetic media (see the package docstring).

Three task files: ``action_sequence.json`` (a bound task, Charades videos), ``action_antonym.json``
(named ``.webm`` as in the original release, written as ``.mp4`` as newer mirrors have them) and
``episodic_reasoning.json`` (a TVQA frame folder, 3 fps, ``00001.jpg`` ...). Clips are 60 frames at
30 fps, frame ``k`` painted with ``k``.
"""

from __future__ import annotations

import json
from pathlib import Path

from videoccam.testing.media import write_frame_folder, write_test_video

SIZE = (32, 32)


def write_mvbench(root: str | Path, *, bad_records: bool = True) -> Path:
    """Write the fixture under ``root`` and return it.

    ``bad_records``: add a record whose answer is not among its candidates, one without ``question``
    and one whose video does not exist (to the action_sequence task).
    """
    root = Path(root)
    star = root / "video" / "star" / "Charades_v1_480"
    star.mkdir(parents=True, exist_ok=True)
    for name in ("AAA01.mp4", "BBB02.mp4"):
        write_test_video(star / name, num_frames=60, fps=30, size=SIZE)
    ssv2 = root / "video" / "ssv2_video"
    ssv2.mkdir(parents=True, exist_ok=True)
    write_test_video(ssv2 / "1234.mp4", num_frames=60, fps=30, size=SIZE)
    write_frame_folder(root / "video" / "tvqa" / "frames_fps3_hq" / "castle_s01e01_seg01_clip_00", 10, size=SIZE)

    sequence = [
        {"video": "AAA01.mp4", "question": "What did the person do first?", "candidates": ["Sat down.", "Opened "
         "the door.", "Took a cup."], "answer": "Opened the door.", "start": 0.5, "end": 1.5},
        {"video": "BBB02.mp4", "question": "What happened after the person sat?", "candidates": ["Ate.", "Slept.",
         "Read.", "Left."], "answer": "Left.", "start": 1.0, "end": 5.0},  # end past the clip's 2 s
    ]
    if bad_records:
        sequence += [
            {"video": "AAA01.mp4", "question": "Which?", "candidates": ["a", "b"], "answer": "c"},
            {"video": "AAA01.mp4", "candidates": ["a", "b"], "answer": "a"},
            {"video": "GONE.mp4", "question": "Which?", "candidates": ["a", "b"], "answer": "b", "start": 0, "end": 1},
        ]
    antonym = [{"video": "1234.webm", "question": "What is the action?", "candidates": ["pushing", "pulling",
                "not sure"], "answer": "pulling"}]
    episodic = [{"video": "castle_s01e01_seg01_clip_00", "question": "What does Castle hold?", "candidates": [
        "A pen.", "A book.", "A phone.", "A gun.", "A cup."], "answer": "A phone.", "start": 0.0, "end": 3.0}]
    (root / "json").mkdir(parents=True, exist_ok=True)
    for name, records in (("action_sequence", sequence), ("action_antonym", antonym),
                          ("episodic_reasoning", episodic)):
        (root / "json" / f"{name}.json").write_text(json.dumps(records, indent=1))
    return root
