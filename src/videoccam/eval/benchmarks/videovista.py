"""VideoVista (~25,000 questions on 3,402 videos, 27 question types).

Layout: ``<root>/VideoVista.json`` and the videos in ``<root>/merged/<category>/<duration group>/<video_name>``
(the duration group is the second dot-separated field of the name); a video missing there is
searched in the other category folders, as Video-CCAM does. Records: ``video_name``,
``category``, ``Question``, ``Answer_Choices``, ``Answer`` (an index), ``Type``, ``question_id``,
``time`` (seconds).

Prompt (Video-CCAM): the question, ``Options:``, each ``(A) option`` line ending in a newline (so
a blank line precedes the instruction), the instruction; 96 frames. Video-CCAM leaves out the query
image of "Relation Reasoning-Image" (so does this harness: a known fidelity gap).

Official scorer: the first character of the stripped reply, or the second when the first is not
A-D (``(A)``); accuracy overall (micro) and for the 19 Understanding and 8 Reasoning types apart,
per type, category and duration bin.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videoccam.eval.scoring import (
    LETTERS,
    MCQ_INSTRUCTION,
    accuracy,
    by_group_both,
    check_answer,
    letter,
    scored_rows,
)
from videoccam.eval.types import EvalItem, LoadedBenchmark

ANNOTATIONS = "VideoVista.json"
# the official evaluation_videovista.py's type lists
UNDERSTANDING = frozenset({
    "Objects Existence", "Objects Count", "Action Count", "Detailed Description", "Brief Description",
    "Event Description", "Event Sequence", "Optical Character Recognition", "Action Recognition",
    "Action Sequence", "Action Location", "Event Location", "Objects Temporal Location",
    "Objects Temporal Relation", "Objects Spatial Location", "Objects Spatial Relation",
    "Objects Spatial Tracking", "Human Activity Analysis", "Anomaly Detection",
})
REASONING = frozenset({
    "Relation Reasoning-Image", "Relation Reasoning-Video", "Event Prediction", "Action Prediction",
    "Causal Reasoning", "Counterfactual Reasoning", "Commonsense Reasoning", "Logic Reasoning",
})


def videovista_prompt(question: str, choices: Sequence[str]) -> str:
    """Video-CCAM's VideoVista prompt."""
    options = "".join(f"({letter(i)}) {c}\n" for i, c in enumerate(choices))
    return "\n".join([question, "Options:", options, MCQ_INSTRUCTION])


def official_letter(response: str) -> str:
    """VideoVista's rule: the first character of the stripped reply, else the second when the first is not
    A-D (as written there, so a reply "E" to a five-choice question reads as "")."""
    text = response.strip()
    first = text[:1]
    return first if first and first in "ABCD" else text[1:2]


def group_of(task: str) -> str:
    """``Understanding`` or ``Reasoning`` by the official type lists; ``other`` for a type in neither."""
    return "Understanding" if task in UNDERSTANDING else "Reasoning" if task in REASONING else "other"


def duration_bin(seconds: float | None) -> str:
    """The official duration bin: minutes = ``time // 60``, then 3-4 -> 2, 6-9 -> 5, above 10 -> 10
    (as the official script has it, 0, 1, 2, 5 and 10 stay themselves)."""
    if seconds is None:
        return "unknown"
    d = int(float(seconds) // 60)
    d = 2 if 2 < d < 5 else 5 if 5 < d < 10 else 10 if d > 10 else d
    return f"{d} min"


class VideoVista:
    name = "videovista"
    default_frames = 96

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        root = Path(root)
        path = root / ANNOTATIONS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no VideoVista annotation file")
        try:
            records = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
        categories = sorted(p.name for p in (root / "merged").iterdir() if p.is_dir()) if (
            root / "merged").is_dir() else []
        items = [self._item(root, path, k, rec, categories) for k, rec in enumerate(records)]
        absent = sorted({i.meta.get("video_name", "?") for i in items if i.error and "no such video" in i.error})
        missing = [f"{len(absent)} video(s) under {root}/merged/ (e.g. {absent[0]})"] if absent else []
        return LoadedBenchmark(items, missing)

    def _item(self, root: Path, path: Path, index: int, rec: Any, categories: list[str]) -> EvalItem:
        fields = ("video_name", "category", "Question", "Answer_Choices", "Answer", "Type")
        qid = str(rec.get("question_id", index)) if isinstance(rec, dict) else str(index)
        absent = [f for f in fields if not isinstance(rec, dict) or f not in rec]
        if absent:
            return EvalItem(qid, "unknown", None, "", "", error=f"{path}: record {index}: missing field {absent[0]!r}")
        choices = [str(c) for c in rec["Answer_Choices"]]
        answer = int(rec["Answer"])
        if not 0 <= answer < min(len(choices), len(LETTERS)):
            return EvalItem(qid, str(rec["Type"]), None, "", "", error=f"{path}: record {index}: Answer {answer} is "
                            f"not an index of its {len(choices)} choices")
        meta = {"video_name": rec["video_name"], "category": rec["category"], "time": rec.get("time"),
                "question_id": rec.get("question_id", index)}
        item = EvalItem(qid, str(rec["Type"]), self._video(root, rec, categories),
                        videovista_prompt(str(rec["Question"]), choices), f"({letter(answer)}) {choices[answer]}",
                        video_kwargs={"sample": "uniform"}, meta=meta)
        if item.video is None:
            item.error = f"{self._expected(root, rec)}: no such video (nor in the other category folders)"
        return item

    @staticmethod
    def _expected(root: Path, rec: dict[str, Any]) -> Path:
        name = str(rec["video_name"])
        parts = name.split(".")
        group = parts[1] if len(parts) > 2 else ""
        return root / "merged" / str(rec["category"]) / group / name

    def _video(self, root: Path, rec: dict[str, Any], categories: list[str]) -> Path | None:
        path = self._expected(root, rec)
        if path.is_file():
            return path
        for category in categories:  # Video-CCAM's fallback: the same group in another category
            other = root / "merged" / category / path.parent.name / path.name
            if other.is_file():
                return other
        return None

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        return check_answer(response, row["answer"])

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        ok = scored_rows(rows)

        def official(row: dict[str, Any]) -> bool:
            return official_letter(row["response"] or "") == row["answer"][1]

        def both(key: Any) -> dict[str, dict[str, Any]]:
            return by_group_both(ok, key, official)

        return {
            "overall": {"official": accuracy(ok, official), "videoccam": accuracy(ok)},
            "tasks": both("task"),
            "breakdowns": {"group": both(lambda r: group_of(r["task"])),
                           "category": both(lambda r: r["meta"]["category"]),
                           "duration": both(lambda r: duration_bin(r["meta"].get("time")))},
            "notes": ["official: VideoVista's rule (first character, or the second when the first is not A-D); "
                      "videoccam: Video-CCAM's check_answer", "group: Understanding (19 types) and Reasoning (8)",
                      "duration bins are the official script's (minutes // 1, folded to 0, 1, 2, 5, 10), over all "
                      "questions (the official script bins the Understanding ones)"],
        }

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        """``VideoVista_answers.json``: each question id with its ``Model_Answer``, for VideoVista's scorer."""
        out = [{"question_id": (r.get("meta") or {}).get("question_id", r["question_id"]), "Type": r["task"],
                "Model_Answer": r.get("response") or ""} for r in rows]
        path = Path(out_dir) / "VideoVista_answers.json"
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        return [path]


VIDEOVISTA = VideoVista()
