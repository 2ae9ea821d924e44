"""MVBench (20 tasks x 200 questions), as Video-CCAM and VideoChat2 evaluate it.

Layout (Ask-Anything / Video-CCAM): ``<root>/json/<task>.json`` and ``<root>/video/<prefix>/<video>``,
the prefix per task below. Episodic Reasoning reads TVQA frame folders (``00001.jpg``, ..., 3 fps,
numbered from 1). Records: ``video``, ``question``, ``candidates``, ``answer`` (the candidate's
text), and ``start`` / ``end`` (seconds) for the bound tasks.

Frames: VideoChat2's ``get_index`` (``sample="mvbench"`` of :func:`~videoccam.processing.video.sample_indices`):
``start_idx = max(first, round(start * fps))``, ``end_idx = min(round(end * fps), max_frame)``,
``seg = (end_idx - start_idx) / n``, frame ``i`` = ``int(start_idx + seg / 2 + round(seg * i))``;
frame folders count from 1 and their max frame is the file count. Video-CCAM reported v1.0 at
16 frames (the default here); its later code defaults to 32 (``--num-frames 32``).

Prompt (Video-CCAM): ``Question: {q}``, ``Options:``, ``(A) c0``, ..., the instruction line.
Official check (VideoChat2's notebook): the reply's first line with ``(`` prepended, its first word
against ``(X)``, substring either way; Video-CCAM's ``check_answer`` is reported beside it. The
leaderboard takes the micro accuracy over all questions (= macro, tasks being equal-sized).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videoccam.eval.scoring import (
    MCQ_INSTRUCTION,
    accuracy,
    by_group_both,
    check_answer,
    letter,
    macro_mean,
    options_block,
    scored_rows,
)
from videoccam.eval.types import EvalItem, LoadedBenchmark

logger = logging.getLogger(__name__)

# task -> (json file, video folder under <root>/video, frame folder?, bound?)
TASKS: dict[str, tuple[str, str, bool, bool]] = {
    "Action Sequence": ("action_sequence.json", "star/Charades_v1_480", False, True),
    "Action Prediction": ("action_prediction.json", "star/Charades_v1_480", False, True),
    "Action Antonym": ("action_antonym.json", "ssv2_video", False, False),
    "Fine-grained Action": ("fine_grained_action.json", "Moments_in_Time_Raw/videos", False, False),
    "Unexpected Action": ("unexpected_action.json", "FunQA_test/test", False, False),
    "Object Existence": ("object_existence.json", "clevrer/video_validation", False, False),
    "Object Interaction": ("object_interaction.json", "star/Charades_v1_480", False, True),
    "Object Shuffle": ("object_shuffle.json", "perception/videos", False, False),
    "Moving Direction": ("moving_direction.json", "clevrer/video_validation", False, False),
    "Action Localization": ("action_localization.json", "sta/sta_video", False, True),
    "Scene Transition": ("scene_transition.json", "scene_qa/video", False, False),
    "Action Count": ("action_count.json", "perception/videos", False, False),
    "Moving Count": ("moving_count.json", "clevrer/video_validation", False, False),
    "Moving Attribute": ("moving_attribute.json", "clevrer/video_validation", False, False),
    "State Change": ("state_change.json", "perception/videos", False, False),
    "Fine-grained Pose": ("fine_grained_pose.json", "nturgbd", False, False),
    "Character Order": ("character_order.json", "perception/videos", False, False),
    "Egocentric Navigation": ("egocentric_navigation.json", "vlnqa", False, False),
    "Episodic Reasoning": ("episodic_reasoning.json", "tvqa/frames_fps3_hq", True, True),
    "Counterfactual Inference": ("counterfactual_inference.json", "clevrer/video_validation", False, False),
}
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov")  # newer mirrors re-encode webm/avi to mp4
FRAME_FOLDER_FPS = 3.0


def mvbench_prompt(question: str, candidates: Sequence[str]) -> str:
    """Video-CCAM's MVBench prompt."""
    return f"Question: {question}\nOptions:\n{options_block(candidates)}\n{MCQ_INSTRUCTION}"


def official_check(response: str, target: str) -> tuple[str, bool]:
    """VideoChat2's ``check_ans`` on its reply: the first line with ``(`` prepended; its first
    space-separated word, with ``.`` deleted, in the target's ``(x)``, or ``(x)`` in the word."""
    option = ("(" + response.strip().split("\n")[0]).lower().split(" ")[0]
    gt = target.lower().split(" ")[0]
    return option, option.replace(".", "") in gt or gt in option


def find_video(folder: Path, name: str) -> Path | None:
    """``folder / name``, or a file with the same stem and another video suffix (re-encoded mirrors)."""
    path = folder / name
    if path.exists():
        return path
    for suffix in VIDEO_SUFFIXES:
        other = path.with_suffix(suffix)
        if other.exists():
            return other
    return None


class MVBench:
    name = "mvbench"
    default_frames = 16

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        root = Path(root)
        json_dir = root / "json"
        known = {spec[0] for spec in TASKS.values()}
        found = {p.name for p in json_dir.glob("*.json")} if json_dir.is_dir() else set()
        items: list[EvalItem] = []
        missing = [f"json/{spec[0]} ({task})" for task, spec in TASKS.items() if spec[0] not in found]
        missing += [f"json/{name} (not an MVBench task file; skipped)" for name in sorted(found - known)]
        for task, (file, prefix, frames, bound) in TASKS.items():
            if file in found:
                items += self._task_items(root, task, json_dir / file, root / "video" / prefix, frames, bound)
        return LoadedBenchmark(items, missing)

    def _task_items(self, root: Path, task: str, path: Path, video_dir: Path, frame_folder: bool, bound: bool
                    ) -> list[EvalItem]:
        try:
            records = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            return [EvalItem(f"{path.stem}/0", task, None, "", "", error=f"{path}: not readable JSON ({err})")]
        return [self._item(task, path, k, rec, video_dir, frame_folder, bound) for k, rec in enumerate(records)]

    def _item(self, task: str, path: Path, index: int, rec: Any, video_dir: Path, frame_folder: bool,
              bound: bool) -> EvalItem:
        qid = f"{path.stem}/{index}"
        fields = ("video", "question", "candidates", "answer")
        absent = [f for f in fields if not isinstance(rec, dict) or f not in rec]
        if absent:
            return EvalItem(qid, task, None, "", "", error=f"{path}: record {index}: missing field {absent[0]!r}")
        candidates = [str(c) for c in rec["candidates"]]
        if str(rec["answer"]) not in candidates:
            return EvalItem(qid, task, None, "", "", error=f"{path}: record {index}: answer {rec['answer']!r} is not "
                            "one of its candidates")
        answer = f"({letter(candidates.index(str(rec['answer'])))}) {rec['answer']}"
        prompt = mvbench_prompt(str(rec["question"]), candidates)
        kwargs: dict[str, Any] = {"sample": "mvbench"}
        if frame_folder:
            kwargs["frame_folder_fps"] = FRAME_FOLDER_FPS
        if bound and rec.get("start") is not None and rec.get("end") is not None:
            kwargs.update(start=float(rec["start"]), end=float(rec["end"]))
        video = video_dir / str(rec["video"]) if frame_folder else find_video(video_dir, str(rec["video"]))
        meta = {"candidates": candidates, "question": rec["question"]}
        item = EvalItem(qid, task, video, prompt, answer, video_kwargs=kwargs, meta=meta)
        if video is None or not video.exists():
            item.video, item.error = None, f"{video_dir / str(rec['video'])}: no such video"
        return item

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        return check_answer(response, row["answer"])

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        ok = scored_rows(rows)

        def official(row: dict[str, Any]) -> bool:
            return official_check(row["response"] or "", row["answer"])[1]

        tasks = by_group_both(ok, "task", official)
        return {
            "overall": {"official": accuracy(ok, official), "videoccam": accuracy(ok),
                        "official_task_mean": macro_mean({t: e["official"] for t, e in tasks.items()})},
            "tasks": tasks, "breakdowns": {},
            "notes": ["official: VideoChat2's check (first line, '(' prepended, substring against (X)), micro over "
                      "all questions as the leaderboard; videoccam: Video-CCAM's check_answer on the same responses",
                      "official_task_mean: the mean of the per-task accuracies (equal to official with the full "
                      "200 questions per task)"],
        }

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        """``upload_leaderboard.json``: ``{task: accuracy %, ..., "Avg": accuracy %}`` from the protocol's
        verdicts (Video-CCAM's check), as Video-CCAM writes it (``Avg`` rounded as ``round(x + 1e-5, 2)``)."""
        scores = self.score(rows)
        board = {task: round(100 * e["videoccam"]["accuracy"], 2)
                 for task, e in scores["tasks"].items() if e["videoccam"]["n"]}
        total = scores["overall"]["videoccam"]
        if total["n"]:
            board["Avg"] = round(100 * total["accuracy"] + 1e-5, 2)
        path = Path(out_dir) / "upload_leaderboard.json"
        path.write_text(json.dumps(board, indent=4) + "\n")
        return [path]


MVBENCH = MVBench()
