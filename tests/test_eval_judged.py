"""MLVU (M-Avg macro vs micro, the G tasks' judge and its parsing), the open-ended QA sets and the judge client,
against a local stub judge (no test calls a real API)."""

from __future__ import annotations

import pytest

from videoccam.eval.benchmarks import get_benchmark
from videoccam.eval.benchmarks.mlvu import official_m_check, parse_scores
from videoccam.eval.benchmarks.openqa import parse_judgment
from videoccam.eval.judge import Judge, JudgeError
from videoccam.eval.runner import decode_item
from videoccam.testing.benchmark_fixtures.mlvu import write_mlvu
from videoccam.testing.benchmark_fixtures.openqa import write_openqa
from videoccam.testing.stub_judge import StubJudge

MLVU = get_benchmark("mlvu")


def rows_for(bench, items, responses):
    rows = []
    for item, response in zip(items, responses, strict=True):
        row = {"question_id": item.question_id, "task": item.task, "answer": item.answer, "response": response,
               "prompt": item.prompt, "meta": item.meta, "error": item.error}
        row["parsed"], row["correct"] = bench.check(response, row)
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def mlvu_root(tmp_path_factory):
    return write_mlvu(tmp_path_factory.mktemp("mlvu"))


def test_mlvu_layout_and_generation_tasks_only_with_a_judge(mlvu_root):
    plain = MLVU.load(mlvu_root)
    assert [i.task for i in plain.items] == ["plotQA"] * 3 + ["count"] + ["topic_reasoning"] * 2
    assert any("9_summary.json (summary: a generation task" in m for m in plain.missing)
    assert "json/2_needle.json (findNeedle)" in plain.missing
    assert plain.items[1].answer == "(D) A key" and plain.items[1].prompt.startswith("Question: What is on the table?")
    judged = MLVU.load(mlvu_root, judged=True)
    ssc = judged.items[-2]
    assert ssc.task == "subPlot" and ssc.prompt == "Describe the scene where the man falls."
    assert ssc.generate == {"max_new_tokens": 512, "num_beams": 5} and ssc.meta["scoring_points"] == ["slips", "on ice",
                                                                                                        "falls"]
    assert len(decode_item(ssc, 4).indices) == 4


@pytest.mark.parametrize(("response", "official"), [("(B) Bob", True), ("B", True), ("B) Bob", True),
                                                     ("B. Bob", False), ("The answer is (B)", True), ("(A)", False)])
def test_mlvu_official_check(response, official):
    assert official_m_check(response, "(B) Bob")[1] is official


def test_m_avg_is_the_macro_mean_and_micro_is_beside_it(mlvu_root):
    """plotQA 1/3, count 1/1, topic 2/2: macro (1/3 + 1 + 1) / 3 = 0.778, micro 4/6 = 0.667."""
    items = MLVU.load(mlvu_root).items
    rows = rows_for(MLVU, items, ["(B) Bob", "C", "B", "C", "(C)", "D"])
    overall = MLVU.score(rows)["overall"]
    assert overall["m_avg"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert overall["m_micro"]["correct"] == 4 and overall["m_micro"]["n"] == 6


def test_g_avg_with_a_stub_judge_and_the_failed_parse_rule(mlvu_root, tmp_path):
    """SSC: one well-formed reply (accuracy 4, relevance 3); VS: a malformed one (0 + 0, still counted)."""
    def script(messages):
        if "Scoring Points: ['slips', 'on ice', 'falls']" in messages[1]["content"]:
            return "The answer covers two points...\n{'score_accuracy': 4, 'score_relevance': 3, 'total_score': 7}"
        return "I cannot score this."

    items = MLVU.load(mlvu_root, judged=True).items
    rows = rows_for(MLVU, items, ["(B) Bob", "C", "B", "C", "(C)", "D", "The man falls on ice.", "Bread."])
    with StubJudge(script) as stub:
        judge = Judge(stub.url, "stub-gpt", cache_path=tmp_path / "cache.jsonl")
        scores = MLVU.score(rows, judge=judge)
        assert len(stub.requests) == 2 and stub.requests[0]["model"] == "stub-gpt"
        assert stub.requests[0]["temperature"] == 0
        MLVU.score(rows, judge=Judge(stub.url, "stub-gpt", cache_path=tmp_path / "cache.jsonl"))
        assert len(stub.requests) == 2  # the second scoring asked nothing: every judgment was cached
    assert scores["tasks"]["subPlot"]["total"]["mean"] == 7.0 and scores["tasks"]["summary"]["total"]["mean"] == 0.0
    assert scores["overall"]["g_avg"]["mean"] == 3.5


@pytest.mark.parametrize(("text", "scores"), [
    ("{'score_accuracy': 4.5, 'score_relevance': 3, 'total_score': 7.5}", [4.5, 3.0]),
    ("score_accuracy: 2, score_relevance: 5, total", [2.0, 5.0]),
    ("{'score_accuracy': five, 'score_relevance': 3, }", [0.0, 3.0]), ("nothing", [0.0, 0.0]),
])
def test_mlvu_score_parsing(text, scores):
    assert parse_scores(text, ("score_accuracy", "score_relevance")) == scores


@pytest.mark.parametrize("dataset", ["msvd-qa", "tgif-qa", "activitynet-qa"])
def test_openqa_layouts(dataset, tmp_path):
    bench = get_benchmark(dataset)
    items = bench.load(write_openqa(tmp_path, dataset)).items
    assert [i.answer for i in items] == ["running", "red", "a woman"]  # matched by question_id
    assert all(i.error is None for i in items) and items[0].generate == {"max_new_tokens": 64}
    assert len(decode_item(items[2], 4).indices) == 4


@pytest.mark.parametrize(("reply", "parsed"), [("{'pred': 'yes', 'score': 4}", (True, 4)),
                                               ("{'pred':'no','score':'2'}", (False, 2)),
                                               ("{'pred': 'yes', 'score': 4.8}", (True, 4)),
                                               ("Sure! {'pred': 'yes'}", None),
                                               ("{'pred': 'maybe', 'score': 3}", None)])
def test_videochatgpt_judgment_parsing(reply, parsed):
    assert parse_judgment(reply) == parsed


def test_openqa_scores_with_retries_and_failed_judgments(tmp_path):
    """q0: a 500 then yes/4; q1: junk three times (a failed judgment, reported apart); q2: no/'2'."""
    bench = get_benchmark("msvd-qa")
    items = bench.load(write_openqa(tmp_path, "msvd-qa")).items
    rows = rows_for(bench, items, ["he runs", "blue", "a man"])
    failed_once = []

    def script(messages):
        text = messages[1]["content"]
        if "Predicted Answer: he runs" in text:
            if not failed_once:
                failed_once.append(1)
                return 500
            return "{'pred': 'yes', 'score': 4}"
        if "Predicted Answer: blue" in text:
            return "junk"
        return "{'pred':'no','score':'2'}"

    with StubJudge(script) as stub:
        scores = bench.score(rows, judge=Judge(stub.url, "stub", backoff_s=0.01))
        assert len(stub.requests) == 2 + 3 + 1  # the 500 retried; the junk asked 3 times
    assert scores["overall"]["accuracy"]["correct"] == 1 and scores["overall"]["accuracy"]["n"] == 2
    assert scores["overall"]["score"]["mean"] == 3.0 and scores["overall"]["failed_judgments"] == 1
    assert bench.score(rows)["overall"]["accuracy"] is None  # no judge: no number, a note


def test_judge_gives_up_with_the_url_and_the_last_error():
    with StubJudge(lambda messages: 503) as stub:
        judge = Judge(stub.url, "stub", max_retries=2, backoff_s=0.01)
        with pytest.raises(JudgeError, match=r"failed 3 times"):
            judge.complete([{"role": "user", "content": "hi"}])
        assert len(stub.requests) == 3
    with StubJudge(lambda messages: 401) as stub, pytest.raises(JudgeError, match="refused the request"):
        Judge(stub.url, "stub").complete([{"role": "user", "content": "hi"}])


def test_judged_benchmark_end_to_end_through_the_command(tmp_path):
    """`videoccam eval msvd-qa --judge-url` with the bundled model and a stub judge: every row judged, the
    judge in the manifest, the judgments cached (re-scoring asks nothing)."""
    import json

    from videoccam_cli import main

    data = write_openqa(tmp_path / "msvd", "msvd-qa")
    with StubJudge(lambda messages: "{'pred': 'yes', 'score': 5}") as stub:
        assert main(["eval", "msvd-qa", "--data", str(data), "--out", str(tmp_path / "out"), "--judge-url", stub.url,
                     "--judge-model", "stub-judge", "--num-frames", "4", "-q"]) == 0
        assert len(stub.requests) == 3
        results = json.loads((tmp_path / "out" / "results.json").read_text())
        assert results["overall"]["accuracy"]["correct"] == 3 and results["overall"]["score"]["mean"] == 5
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert manifest["judge"] == {"model": "stub-judge", "url": stub.url}
        assert main(["eval", "score", "msvd-qa", "--data", str(data), "--predictions",
                     str(tmp_path / "out" / "predictions.jsonl"), "--out", str(tmp_path / "out"), "--judge-url",
                     stub.url, "--judge-model", "stub-judge", "-q"]) == 0
        assert len(stub.requests) == 3  # cached in OUT/judge_cache.jsonl
