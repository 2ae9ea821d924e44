"""VideoChatGPT-style open-ended QA: MSVD-QA, MSRVTT-QA, TGIF-QA, ActivityNet-QA, judged by an LLM.

Layout (the Video-ChatGPT / Video-LLaVA packaging): ``<root>/test_q.json``
(``[{video_name, question, question_id}]``) and ``<root>/test_a.json`` (``[{answer, type,
question_id}]``, matched by ``question_id``), the videos in ``<root>/videos/`` (also ``video/``,
``YouTubeClips/`` for MSVD, ``gifs/`` for TGIF; ActivityNet names with or without ``v_``),
extensions tried in the dataset's order.

The prompt is the question; 64 new tokens; 16 frames. Scoring is Video-ChatGPT's: the judge sees
the question, the correct and the predicted answer and replies with a Python dict
``{'pred': 'yes'|'no', 'score': 0-5}``, read with ``ast.literal_eval``; an unreadable reply is asked
again (3 times at most), then counted as a failed judgment, reported apart. Accuracy =
yes / (yes + no); score = the mean of ``int(score)``. Judges change these numbers (the original used
``gpt-3.5-turbo``): the judge model is recorded in the manifest.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoccam.eval.judge import judge_all, judged
from videoccam.eval.scoring import proportion, scored_rows
from videoccam.eval.types import EvalItem, LoadedBenchmark

# Video-ChatGPT's quantitative_evaluation/evaluate_activitynet_qa.py (the same for the other sets)
SYSTEM = ("You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
          "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
          "if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the "
          "meaningful match between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases "
          "as valid matches.\n- Evaluate the correctness of the prediction compared to the answer.")
USER = ("Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\n"
        "Correct Answer: {answer}\nPredicted Answer: {pred}\n\nProvide your evaluation only as a yes/no and score "
        "where the score is an integer value between 0 and 5, with 5 indicating the highest meaningful match. Please "
        "generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where value "
        "of 'pred' is a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY "
        "OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. For example, your response "
        "should look like this: {{'pred': 'yes', 'score': 4.8}}.")


def parse_judgment(reply: str) -> tuple[bool, int] | None:
    """``(yes?, int(score))`` from a reply like ``{'pred': 'yes', 'score': 4}``; None if unreadable."""
    try:
        value = ast.literal_eval(reply.strip())
        pred, score = str(value["pred"]).strip().lower(), int(float(value["score"]))
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError):
        return None
    if pred not in ("yes", "no"):
        return None
    return pred == "yes", score


def judge_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    question = (row.get("meta") or {}).get("question", row.get("prompt", ""))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER.format(question=question, answer=row["answer"], pred=row["response"])}]


@dataclass(frozen=True)
class OpenQA:
    """One of the four sets (they differ in name, video folders and file types only)."""

    name: str
    folders: tuple[str, ...]
    suffixes: tuple[str, ...]
    default_frames: int = 16

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        root = Path(root)
        questions, answers = (self._read(root / name) for name in ("test_q.json", "test_a.json"))
        by_id = {str(a.get("question_id")): a for a in answers if isinstance(a, dict)}
        items = [self._item(root, k, q, by_id) for k, q in enumerate(questions)]
        absent = [i for i in items if i.error and "no such video" in i.error]
        missing = [f"{len(absent)} video(s) under {root}/{self.folders[0]}/"] if absent else []
        return LoadedBenchmark(items, missing)

    @staticmethod
    def _read(path: Path) -> list[Any]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the test_q.json / test_a.json layout, see docs/evaluation.md)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list")
        return data

    def _item(self, root: Path, index: int, q: Any, answers: dict[str, Any]) -> EvalItem:
        qid = str(q.get("question_id", index)) if isinstance(q, dict) else str(index)
        absent = [f for f in ("video_name", "question") if not isinstance(q, dict) or f not in q]
        if absent:
            return EvalItem(qid, "all", None, "", "", error=f"test_q.json: record {index}: missing field {absent[0]!r}")
        answer = answers.get(qid)
        if answer is None or "answer" not in answer:
            return EvalItem(qid, "all", None, "", "", error=f"test_a.json: no answer for question_id {qid}")
        video = self._video(root, str(q["video_name"]))
        item = EvalItem(qid, str(answer.get("type", "all")), video, str(q["question"]), str(answer["answer"]),
                        video_kwargs={"sample": "uniform"}, generate={"max_new_tokens": 64},
                        meta={"video_name": q["video_name"], "question": q["question"]})
        if video is None:
            item.error = f"{root / self.folders[0] / str(q['video_name'])}: no such video (any of {self.suffixes})"
        return item

    def _video(self, root: Path, name: str) -> Path | None:
        names = [name, f"v_{name}"] if not name.startswith("v_") else [name, name[2:]]
        for folder in self.folders:
            for stem in names:
                path = root / folder / stem
                if path.suffix and path.is_file():
                    return path
                for suffix in self.suffixes:
                    candidate = root / folder / f"{stem}{suffix}"
                    if candidate.is_file():
                        return candidate
        return None

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        return None, None  # judged

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        ok = scored_rows(rows)
        if judge is None:
            return {"overall": {"accuracy": None, "score": None}, "tasks": {}, "breakdowns": {},
                    "notes": ["open-ended answers need a judge: --judge-url URL --judge-model NAME "
                              "(or `videoccam eval score` later with them)"]}
        verdicts = judge_all(judge, ok, lambda r: judged(judge, judge_messages(r), parse_judgment)[0])

        def summary(pairs: list[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
            good = [v for _, v in pairs if v is not None]
            yes = sum(v[0] for v in good)
            return {"accuracy": proportion(yes, len(good)),
                    "score": {"mean": sum(v[1] for v in good) / len(good) if good else None, "n": len(good)},
                    "failed_judgments": len(pairs) - len(good)}

        pairs = list(zip(ok, verdicts, strict=True))
        types: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for row, verdict in pairs:
            types.setdefault(row["task"], []).append((row, verdict))
        overall = summary(pairs)
        return {"overall": overall, "tasks": {t: summary(p) for t, p in types.items()}, "breakdowns": {},
                "notes": [f"judged by {judge.model} (Video-ChatGPT's prompt); accuracy = yes / (yes + no), score = "
                          f"mean int(score); {overall['failed_judgments']} replies never parsed (left out)"]}

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        """``predictions_videochatgpt.json``: ``[{video_name, Q, A, pred}]``, the judges' input format."""
        out = [{"video_name": r["meta"]["video_name"], "Q": r["meta"]["question"], "A": r["answer"],
                "pred": r["response"]} for r in rows if not r.get("error") and r.get("meta")]
        path = Path(out_dir) / "predictions_videochatgpt.json"
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        return [path]


MSVD_QA = OpenQA("msvd-qa", ("videos", "video", "YouTubeClips"), (".avi", ".mp4"))
MSRVTT_QA = OpenQA("msrvtt-qa", ("videos", "video", "TestVideo"), (".mp4",))
TGIF_QA = OpenQA("tgif-qa", ("videos", "video", "gifs"), (".gif", ".mp4"))
ACTIVITYNET_QA = OpenQA("activitynet-qa", ("videos", "video", "all_test"), (".mp4", ".mkv", ".webm"))
