"""Every benchmark end to end through `videoccam eval` (in-process `main`), with the bundled model on the
generated fixtures: the rows, the counts, the failures and the official files."""

from __future__ import annotations

import json

import pytest

from videoccam.eval.predictions import read_rows
from videoccam.testing.benchmark_fixtures.mlvu import write_mlvu
from videoccam.testing.benchmark_fixtures.mvbench import write_mvbench
from videoccam.testing.benchmark_fixtures.openqa import write_openqa
from videoccam.testing.benchmark_fixtures.videomme import write_videomme
from videoccam.testing.benchmark_fixtures.videovista import write_videovista
from videoccam.testing.stub_judge import StubJudge
from videoccam_cli import main

# benchmark, fixture writer, extra flags, (questions, answered, failed), official files, exit status
CASES = [
    ("mvbench", write_mvbench, [], (7, 4, 3), ["upload_leaderboard.json"], 1),
    ("videomme", write_videomme, ["--subtitles"], (6, 6, 0), ["output_w_sub.json"], 0),
    ("videovista", write_videovista, [], (5, 4, 1), ["VideoVista_answers.json"], 1),
    ("mlvu", write_mlvu, ["JUDGE"], (8, 8, 0), ["subPlot_predictions.json", "summary_predictions.json"], 0),
    ("tgif-qa", lambda root: write_openqa(root, "tgif-qa"), ["JUDGE"], (3, 3, 0), ["predictions_videochatgpt.json"], 0),
]


def judge_reply(messages):
    system = messages[0]["content"]
    if "score_accuracy" in system:
        return "{'score_accuracy': 3, 'score_relevance': 4, 'total_score': 7}"
    if "score_completeness" in system:
        return "{'score_completeness': 2, 'score_reliability': 3, 'total_score': 5}"
    return "{'pred': 'no', 'score': 1}"


@pytest.mark.parametrize(("name", "write", "flags", "counts", "official", "status"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_end_to_end(tmp_path, name, write, flags, counts, official, status):
    data, out = write(tmp_path / "data"), tmp_path / "out"
    with StubJudge(judge_reply) as stub:
        flags = [f for flag in flags for f in (["--judge-url", stub.url, "--judge-model", "stub"]
                                               if flag == "JUDGE" else [flag])]
        assert main(["eval", name, "--data", str(data), "--out", str(out), "--num-frames", "4", "--batch-size", "3",
                     "-q", *flags]) == status
    results = json.loads((out / "results.json").read_text())
    assert (results["questions"], results["answered"], results["failed"]) == counts
    rows = read_rows(out / "predictions.jsonl")
    assert len(rows) == counts[0] and len({r["question_id"] for r in rows}) == counts[0]
    answered = [r for r in rows if not r["error"]]
    assert all(len(r["frame_indices"]) == 4 and r["response"] is not None for r in answered)
    assert all((out / f).is_file() for f in official)
    assert (out / "results.md").read_text().startswith(f"# {name} at 4 frames")
    if name == "mlvu":
        assert results["overall"]["g_avg"]["mean"] == pytest.approx((7 + 5) / 2)
    if name == "videomme":
        assert all(r["prompt"].startswith("This video's subtitles are listed below:") for r in rows)
