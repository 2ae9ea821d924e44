"""MLVU (dev): seven multiple-choice tasks (M-Avg) and two generation tasks judged by an LLM (G-Avg).

Layout (Video-CCAM): ``<root>/json/<N_name>.json`` and ``<root>/video/<N_name>/<video>``. Records:
``video``, ``duration``, ``question``, ``candidates``, ``answer`` (the text), ``question_type``;
the sub-scene (SSC) records add ``scoring_points`` and have no candidates.

Multiple choice: Video-CCAM's ``Question:`` / ``Options:`` / ``(A) ...`` prompt and letter check;
the official check (``choice_bench.py``: the character before the first ``)``, or the whole reply
when there is none) beside it. M-Avg is the official **macro** mean of the 7 task accuracies; the
micro mean is reported beside it. 96 frames.

Generation (only with a judge): the question alone, 512 new tokens, 5 beams (Video-CCAM's
settings); judged with MLVU's own prompts (``evaluate_ssc.py`` / ``evaluate_summary.py``, GPT-4-Turbo
at temperature 0 there) and parsed as ``calculate*.py`` does: each key's number after ``": "`` up
to the next comma; a failed parse adds 0 and still counts. SSC and VS totals are out of 10;
G-Avg = their mean.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from videoccam.eval.benchmarks.mvbench import mvbench_prompt
from videoccam.eval.judge import judge_all
from videoccam.eval.scoring import accuracy, by_group_both, check_answer, letter, macro_mean, scored_rows
from videoccam.eval.types import EvalItem, LoadedBenchmark

# file stem -> (task, kind): "M" multiple choice, "SSC" sub-scene captioning, "VS" video summary
TASKS: dict[str, tuple[str, str]] = {
    "1_plotQA": ("plotQA", "M"), "2_needle": ("findNeedle", "M"), "3_ego": ("ego", "M"), "4_count": ("count", "M"),
    "5_order": ("order", "M"), "6_anomaly_reco": ("anomaly_reco", "M"), "7_topic_reasoning": ("topic_reasoning", "M"),
    "8_sub_scene": ("subPlot", "SSC"), "9_summary": ("summary", "VS"),
}
GENERATE = {"max_new_tokens": 512, "num_beams": 5}

# The judges' texts, quoted from MLVU's generation_evaluation/evaluate_ssc.py and evaluate_summary.py
# (their indentation removed).
SSC_SYSTEM = textwrap.dedent("""\
    ##TASK DESCRIPTION: 
    You are required to evaluate a respondent's answer based on a provided question, some scoring points, and the respondent's answer. You should provide two scores. The first is the accuracy score, which should range from 1 to 5. The second is the relevance score, which should also range from 1 to 5. Below are the criteria for each scoring category.
    ##ACCURACY Scoring Criteria: 
    Evaluate the respondent's answer against specific scoring points as follows:
    Score 1: The response completely misses the scoring point.
    Score 3: The response mentions content related to the scoring point but is not entirely correct.
    Score 5: The response accurately addresses the scoring point.
    Calculate the average score across all scoring points to determine the final accuracy score.
    ##RELEVANCE Scoring Criteria:
    Assess how the respondent's answer relates to the original question:
    Score 1: The response is completely off-topic from the question.
    Score 2: The response is partially related to the question but contains a significant amount of irrelevant content.
    Score 3: The response primarily addresses the question, but the respondent seems uncertain about their own answer.
    Score 4: The response mostly addresses the question and the respondent appears confident in their answer.
    Score 5: The response is fully focused on addressing the question with no irrelevant content and demonstrates complete certainty.
    ----
    ##INSTRUCTION:
    1. Evaluate Accuracy: First, assess and score each scoring point based on the respondent's answer. Calculate the average of these scores to establish the final accuracy score. Provide a detailed rationale before assigning your score.
    2. Evaluate RELEVANCE: Assess the relevance of the respondent's answer to the question. Note that when evaluating relevance, the correctness of the answer is not considered; focus solely on how relevant the answer is to the question. Provide a comprehensive rationale before assigning your score.
    3. Output Scores in JSON Format: Present the scores in JSON format as follows:
    {'score_accuracy': score_acc, 'score_relevance': score_rele, 'total_score': score_acc + score_rele}
    """)  # noqa: E501
SSC_USER = ("Please score the respondent's answer according to the steps in the Instructions. You must end with a "
            "JSON dict to store the scores.\nQuestion: {question}\nScoring Points: {scoring_points}\n"
            "Respondent's Answer: {pred}")
VS_SYSTEM = textwrap.dedent("""\
    ##TASK DESCRIPTION: 
    You are required to evaluate the performance of the respondent in the video summarization task based on the standard answer and the respondent's answer. You should provide two scores. The first is the COMPLETENESS score, which should range from 1 to 5. The second is the RELIABILITY score, which should also range from 1 to 5. Below are the criteria for each scoring category:
    ##COMPLETENESS Scoring Criteria:
    The completeness score focuses on whether the summary covers all key points and main information from the video. 
    Score 1: The summary hardly covers any of the main content or key points of the video.
    Score 2: The summary covers some of the main content and key points but misses many.
    Score 3: The summary covers most of the main content and key points.
    Score 4: The summary is very comprehensive, covering most to nearly all of the main content and key points.
    Score 5: The summary completely covers all the main content and key points of the video.
    ##RELIABILITY Scoring Criteria:
    The reliability score evaluates the correctness and clarity of the video summary. It checks for factual errors, misleading statements, and contradictions with the video content. If the respondent's answer includes details that are not present in the standard answer, as long as these details do not conflict with the correct answer and are reasonable, points should not be deducted.
    Score 1: Contains multiple factual errors and contradictions; presentation is confusing.
    Score 2: Includes several errors and some contradictions; needs clearer presentation.
    Score 3: Generally accurate with minor errors; minimal contradictions; reasonably clear presentation.
    Score 4: Very accurate with negligible inaccuracies; no contradictions; clear and fluent presentation.
    Score 5: Completely accurate with no errors or contradictions; presentation is clear and easy to understand.
    ----
    ##INSTRUCTION:
    1. Evaluate COMPLETENESS: First, analyze the respondent's answer according to the scoring criteria, then provide an integer score between 1 and 5 based on sufficient evidence. 
    2. Evaluate RELIABILITY: First, analyze the respondent's answer according to the scoring criteria, then provide an integer score between 1 and 5 based on sufficient evidence. 
    3. Output Scores in JSON Format: Present the scores in JSON format as follows:
    {'score_completeness': score_comp, 'score_reliability': score_reli, 'total_score': score_comp + score_reli}
    """)  # noqa: E501
VS_USER = ("Please score the respondent's answer according to the steps in the Instructions. You must end with a "
           "JSON dict to store the scores.\nStandard Answer: {answer}\nRespondent's Answer: {pred}")
KEYS = {"SSC": ("score_accuracy", "score_relevance"), "VS": ("score_completeness", "score_reliability")}


def official_m_check(response: str, target: str) -> tuple[str, bool]:
    """MLVU's ``choice_bench.py`` check: the character before the first ``)``, or the whole stripped
    reply when there is none, must be the answer letter."""
    text = response.strip()
    parsed = text[text.index(")") - 1] if ")" in text and text.index(")") > 0 else text
    return parsed, parsed == target[1]


def parse_scores(text: str, keys: Sequence[str]) -> list[float]:
    """``calculate.py``'s reading: per key, the number after ``": "`` up to the next comma; 0 when the
    key is absent or the number does not parse (a failed parse adds 0 and still counts)."""
    scores = []
    for key in keys:
        start = text.find(key)
        if start == -1:
            scores.append(0.0)
            continue
        begin = text.find(":", start) + 2
        end = text.find(",", begin)
        try:
            scores.append(float(text[begin:end] if end != -1 else text[begin:]))
        except ValueError:
            scores.append(0.0)
    return scores


class MLVUBenchmark:
    name = "mlvu"
    default_frames = 96

    def load(self, root: Path, *, subtitles: bool = False, judged: bool = False) -> LoadedBenchmark:
        root = Path(root)
        items: list[EvalItem] = []
        missing = []
        for stem, (task, kind) in TASKS.items():
            path = root / "json" / f"{stem}.json"
            if kind != "M" and not judged:
                missing.append(f"json/{stem}.json ({task}: a generation task, evaluated only with --judge-url)")
                continue
            if not path.is_file():
                missing.append(f"json/{stem}.json ({task})")
                continue
            try:
                records = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                items.append(EvalItem(f"{stem}/0", task, None, "", "", error=f"{path}: not JSON ({err})"))
                continue
            items += [self._item(root, stem, task, kind, path, k, rec) for k, rec in enumerate(records)]
        return LoadedBenchmark(items, missing)

    def _item(self, root: Path, stem: str, task: str, kind: str, path: Path, index: int, rec: Any) -> EvalItem:
        qid = f"{stem}/{index}"
        fields = ("video", "question", "answer", *(("candidates",) if kind == "M" else ()),
                  *(("scoring_points",) if kind == "SSC" else ()))
        absent = [f for f in fields if not isinstance(rec, dict) or f not in rec]
        if absent:
            return EvalItem(qid, task, None, "", "", error=f"{path}: record {index}: missing field {absent[0]!r}")
        video = root / "video" / stem / str(rec["video"])
        meta = {"kind": kind, "video_name": rec["video"], "question": rec["question"],
                "duration": rec.get("duration"), "question_type": rec.get("question_type")}
        if kind == "M":
            candidates = [str(c) for c in rec["candidates"]]
            if str(rec["answer"]) not in candidates:
                return EvalItem(qid, task, None, "", "", error=f"{path}: record {index}: answer is not a candidate")
            answer = f"({letter(candidates.index(str(rec['answer'])))}) {rec['answer']}"
            item = EvalItem(qid, task, video, mvbench_prompt(str(rec["question"]), candidates), answer,
                            video_kwargs={"sample": "uniform"}, meta=meta)
        else:
            meta["scoring_points"] = rec.get("scoring_points")
            item = EvalItem(qid, task, video, str(rec["question"]), str(rec["answer"]),
                            video_kwargs={"sample": "uniform"}, generate=dict(GENERATE), meta=meta)
        if not video.is_file():
            item.video, item.error = None, f"{video}: no such video"
        return item

    def check(self, response: str, row: dict[str, Any]) -> tuple[str | None, bool | None]:
        if (row.get("meta") or {}).get("kind", "M") != "M":
            return None, None  # judged
        return check_answer(response, row["answer"])

    def score(self, rows: Sequence[dict[str, Any]], *, judge: Any = None) -> dict[str, Any]:
        ok = scored_rows(rows)
        m_rows = [r for r in ok if (r.get("meta") or {}).get("kind", "M") == "M"]

        def official(row: dict[str, Any]) -> bool:
            return official_m_check(row["response"] or "", row["answer"])[1]

        tasks: dict[str, dict[str, Any]] = by_group_both(m_rows, "task", official)
        overall: dict[str, Any] = {
            "m_avg": macro_mean({t: e["official"] for t, e in tasks.items()}),
            "m_micro": accuracy(m_rows, official),
            "videoccam_m_avg": macro_mean({t: e["videoccam"] for t, e in tasks.items()}),
            "videoccam_micro": accuracy(m_rows),
        }
        notes = ["m_avg: the official macro mean of the multiple-choice task accuracies (MLVU's check); m_micro: "
                 "over all questions; videoccam_*: Video-CCAM's check_answer on the same responses"]
        g_rows = [r for r in ok if (r.get("meta") or {}).get("kind") in KEYS]
        if g_rows and judge is None:
            notes.append("SSC/VS (G-Avg) need a judge: rerun `videoccam eval score mlvu ... --judge-url URL "
                         "--judge-model NAME`")
        elif g_rows:
            totals = {}
            for kind, task in (("SSC", "subPlot"), ("VS", "summary")):
                members = [r for r in g_rows if r["meta"]["kind"] == kind]
                if members:
                    scores = judge_all(judge, members, lambda r: parse_scores(judge.complete(judge_messages(r)),
                                                                                KEYS[r["meta"]["kind"]]))
                    subs = [sum(s[i] for s in scores) / len(scores) for i in range(2)]
                    totals[kind] = subs[0] + subs[1]
                    tasks[task] = {"total": {"mean": totals[kind], "n": len(members)},
                                   KEYS[kind][0]: {"mean": subs[0], "n": len(members)},
                                   KEYS[kind][1]: {"mean": subs[1], "n": len(members)}}
            if len(totals) == 2:
                overall["g_avg"] = {"mean": (totals["SSC"] + totals["VS"]) / 2, "n": len(g_rows)}
            notes.append(f"G: judged by {judge.model}; a reply whose scores do not parse adds 0 and still counts")
        return {"overall": overall, "tasks": tasks, "breakdowns": {}, "notes": notes}

    def write_official(self, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
        """The generation tasks' prediction files as MLVU's judges read them: ``[{video_name, Q, A, pred}]``."""
        written = []
        for kind, name in (("SSC", "subPlot_predictions.json"), ("VS", "summary_predictions.json")):
            members = [r for r in rows if (r.get("meta") or {}).get("kind") == kind and not r.get("error")]
            if members:
                path = Path(out_dir) / name
                path.write_text(json.dumps([{"video_name": r["meta"]["video_name"], "Q": r["meta"]["question"],
                                             "A": r["answer"], "pred": r["response"]} for r in members], indent=1))
                written.append(path)
        return written


def judge_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The official judge messages of a generation row."""
    meta, pred = row["meta"], row["response"] or ""
    question = str(meta["question"]).replace("\n", "")
    if meta["kind"] == "SSC":
        user = SSC_USER.format(question=question, scoring_points=meta["scoring_points"], pred=pred)
        return [{"role": "system", "content": SSC_SYSTEM}, {"role": "user", "content": user}]
    return [{"role": "system", "content": VS_SYSTEM},
            {"role": "user", "content": VS_USER.format(answer=row["answer"], pred=pred)}]


MLVU = MLVUBenchmark()
