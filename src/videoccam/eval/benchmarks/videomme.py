"""Video-MME (900 videos x 3 questions), with and without subtitles.

Layout: the parquet ``<root>/videomme/test-00000-of-00001.parquet`` (or the one ``*.parquet``
under ``root``); videos in ``<root>/data/<videoID>.mp4`` (the dataset's own archives) or
``<root>/video/<videoID>.mp4`` (Video-CCAM's layout), ``.MP4`` / ``.mkv`` too; subtitles in
``<root>/subtitle/<videoID>.srt`` (744 of the 900 videos have one).

Prompt (Video-CCAM): the official instruction, the question, the four options as given
(``A. ...``), then Video-CCAM's letter instruction in place of "The best answer is:"; with
``--subtitles`` the subtitle block opens it: the lines shown at the sampled frames (the loop reads
them at ``frame index / fps``), under "This video's subtitles are listed below:", an empty line
when the video has no subtitle file. 96 uniformly sampled frames (segment midpoints).

Official scorer (``eval_your_results.py``): answer prefixes removed, a reply of more than 10 words
with no A-D capital is unanswerable and leaves the denominator, otherwise the first A/B/C/D in the
text is the answer; accuracy overall and per duration, domain, sub-category and task type.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videoccam.eval.scoring import MCQ_INSTRUCTION, accuracy, by_group_both, check_answer, scored_rows
from videoccam.eval.types import EvalItem, LoadedBenchmark

logger = logging.getLogger(__name__)

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video. "
               "Respond with only the letter (A, B, C, or D) of the correct option.")
VIDEO_FOLDERS = ("data", "video", "videos")
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm")
COLUMNS = ("video_id", "duration", "domain", "sub_category", "videoID", "question_id", "task_type", "question",
           "options", "answer")
# eval_your_results.py's prefixes (BradyFU/Video-MME), as written there: two pairs lack the comma between
# them, so Python concatenates each pair into one string that never matches; "Answer:" is not in the list
# (so "Answer: D" reads as A). Kept, to score as the official script does.
ANSWER_PREFIXES = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is" "The correct option is",
    "Best answer:" "Best option:",
]
_LETTER = re.compile(r"[ABCD]")


def official_extract(response: str) -> str | None:
    """Video-MME's ``extract_characters_regex``: the answer letter, or None when there is none (a reply of
    more than 10 words without A-D, or no A-D at all): unanswered, out of the official denominator."""
    text = response.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    if len(text.split()) > 10 and not re.search("[ABCD]", text):
        return None
    found = _LETTER.search(text)
    return found[0] if found else None


def videomme_prompt(question: str, options: Sequence[str]) -> str:
    """Video-CCAM's Video-MME prompt (without the subtitle block, which the loop prepends)."""
    return "\n".join([INSTRUCTION, question, *options, MCQ_INSTRUCTION])


class VideoMME:
    name = "videomme"
    default_frames = 96

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        import pandas as pd  # the eval extra

        root = Path(root)
        parquet = self._parquet(root)
        frame = pd.read_parquet(parquet)
        absent = [c for c in COLUMNS if c not in frame.columns]
        if absent:
            raise ValueError(f"{parquet}: not a Video-MME parquet, missing column(s) {', '.join(absent)}")
        items, missing_videos = [], set()
        for index, rec in enumerate(frame.to_dict("records")):
            item = self._item(root, parquet, index, rec, subtitles)
            if item.error and "no such video" in item.error:
                missing_videos.add(str(rec["videoID"]))
            items.append(item)
        missing = [f"{len(missing_videos)} video(s) (e.g. {sorted(missing_videos)[0]}) in "
                   f"{' or '.join(f'{root}/{d}/' for d in VIDEO_FOLDERS[:2])}"] if missing_videos else []
        return LoadedBenchmark(items, missing)

    @staticmethod
    def _parquet(root: Path) -> Path:
        official = sorted((root / "videomme").glob("*.parquet"))
        found = official or sorted(root.rglob("*.parquet"))
        if len(found) != 1:
            raise FileNotFoundError(f"{root}: expected one Video-MME parquet (videomme/test-00000-of-00001.parquet), "
                                    f"found {len(found)}")
        return found[0]

    def _item(self, root: Path, parquet: Path, index: int, rec: dict[str, Any], subtitles: bool) -> EvalItem:
        qid = str(rec.get("question_id") or f"row{index}")
        options = [str(o) for o in rec["options"]] if rec.get("options") is not None else []
        if not rec.get("question") or len(options) != 4 or str(rec.get("answer")) not in "ABCD":
            return EvalItem(qid, str(rec.get("task_type")), None, "", "",
                            error=f"{parquet}: row {index}: needs a question, 4 options and an answer letter")
        video = self._video(root, str(rec["videoID"]))
        srt = root / "subtitle" / f"{rec['videoID']}.srt"
        meta = {k: (str(rec[k]) if k != "options" else options) for k in COLUMNS if k != "answer"}
        meta["subtitles"] = subtitles
        item = EvalItem(qid, str(rec["task_type"]), video, videomme_prompt(str(rec["question"]), options),
                        str(rec["answer"]), video_kwargs={"sample": "uniform"}, with_subtitles=subtitles,
                        subtitles=srt if srt.is_file() else None, meta=meta)
        if video is None:
            item.error = f"{root}/data/{rec['videoID']}.mp4: no such video (nor under video/)"
        return item

    @staticmethod
    def _video(root: Path, video_id: str) -> Path | None:
        for folder in VIDEO_FOLDERS:
            for suffix in VIDEO_SUFFIXES:
                path = root / folder / f"{video_id}{suffix}"
                if path.is_file():
                    return path
        return None

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        return check_answer(response, f"({row['answer']})")

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        ok = scored_rows(rows)

        def official(row: dict[str, Any]) -> bool | None:  # None: unanswerable, out of the denominator
            letter = official_extract(row["response"] or "")
            return None if letter is None else letter == row["answer"]

        def both(groups_of: str) -> dict[str, dict[str, Any]]:
            key = (lambda r: r["meta"][groups_of]) if groups_of != "task" else "task"
            return by_group_both(ok, key, official)

        unanswerable = sum(official(r) is None for r in ok)
        return {
            "overall": {"official": accuracy(ok, official), "videoccam": accuracy(ok)},
            "tasks": both("task"),
            "breakdowns": {name: both(name) for name in ("duration", "domain", "sub_category")},
            "notes": [f"official: Video-MME's eval_your_results.py rule; {unanswerable} unanswerable replies are "
                      "left out of its denominator", "videoccam: Video-CCAM's check_answer against (X)"],
        }

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        """``output_w_sub.json`` / ``output_wo_sub.json`` in the official template (one entry per video)."""
        videos: dict[str, dict[str, Any]] = {}
        for row in rows:
            meta = row.get("meta") or {}
            if not meta:
                continue
            entry = videos.setdefault(meta["video_id"], {k: meta[k] for k in ("video_id", "duration", "domain",
                                                                               "sub_category")} | {"questions": []})
            entry["questions"].append({"question_id": row["question_id"], "task_type": meta["task_type"],
                                       "question": meta["question"], "options": meta["options"],
                                       "answer": row["answer"], "response": row.get("response") or ""})
        with_sub = any((r.get("meta") or {}).get("subtitles") for r in rows)
        path = Path(out_dir) / ("output_w_sub.json" if with_sub else "output_wo_sub.json")
        path.write_text(json.dumps(list(videos.values()), indent=2, ensure_ascii=False) + "\n")
        return [path]


VIDEOMME = VideoMME()
