"""`videoccam eval`: the loop (decode once per video, batches), resume after SIGKILL, bad input, sweep, re-scoring.

The synthetic world's test split and the bundled model (trained on that world) make a benchmark whose
right answers are known: the bundled model answers these clips correctly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from videoccam import Pipeline
from videoccam.eval.benchmarks import get_benchmark
from videoccam.eval.harness import load_items
from videoccam.eval.predictions import PredictionFile, PredictionsExistError, read_rows
from videoccam.eval.runner import LoopOptions, decode_item, evaluate_items
from videoccam.synth import generate_dataset
from videoccam_cli import main

SYNTH = get_benchmark("synth")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalworld")
    generate_dataset(root, num_train=0, num_test=12, seed=3)
    return root


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(device="cpu")


def read_json(path: Path):
    return json.loads(path.read_text())


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videoccam", *args], capture_output=True, text=True, timeout=timeout)


def test_eval_synth_end_to_end_through_the_command(world, tmp_path):
    out = tmp_path / "out"
    done = run_cli("eval", "synth", "--data", str(world), "--out", str(out), "--batch-size", "5")
    assert done.returncode == 0, done.stderr
    results = read_json(out / "results.json")
    assert (results["questions"], results["answered"], results["failed"]) == (12, 12, 0)
    assert results["overall"]["accuracy"]["correct"] == 12  # the bundled model knows this world
    rows = read_rows(out / "predictions.jsonl")
    records = read_json(world / "test.json")
    assert [r["question_id"] for r in rows] == [r["id"] for r in records]
    assert rows[0]["frame_indices"] == [2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 42, 46, 50, 54, 58, 62]
    assert rows[0]["prompt"] == records[0]["conversations"][0]["value"].removeprefix("<video>\n")
    assert all(r["response"] == r["answer"] and r["correct"] and r["error"] is None for r in rows)
    manifest = read_json(out / "manifest.json")
    assert manifest["num_frames"] == 16 and manifest["benchmark"] == "synth" and manifest["dtype"] == "float32"
    assert manifest["model"]["weights"]["files"][0]["file"] == "model.safetensors"
    assert len(manifest["model"]["weights"]["files"][0]["sha256"]) == 64
    assert "| first | 100.0" in (out / "results.md").read_text() and "| first | 100.0" in done.stdout


class CountingPipe:
    """A Pipeline whose encode and chat calls are counted (and whose answers are real)."""

    def __init__(self, pipe):
        self.pipe, self.encodes, self.chats = pipe, 0, []

    def encode(self, *args, **kwargs):
        self.encodes += 1
        return self.pipe.encode(*args, **kwargs)

    def chat(self, convs, encoded, **kwargs):
        self.chats.append(len(convs))
        return self.pipe.chat(convs, encoded, **kwargs)


def test_each_video_is_decoded_and_encoded_once_and_batched_equals_single(world, pipe):
    """Three questions per video (Video-MME's shape): one decode and one encode per video, questions
    batched across videos; the rows equal those of a one-question-at-a-time run."""
    items = [item for item in load_items(SYNTH, world, subtitles=False, judged=False, limit=4)
             for _ in range(3)]
    for k, item in enumerate(items):  # three questions per video, distinct ids
        items[k] = type(item)(**{**item.__dict__, "question_id": f"{item.question_id}-{k % 3}"})
    decoded = []

    def decode(item, n, size):
        decoded.append(item.video)
        return decode_item(item, n, size)

    counting, rows = CountingPipe(pipe), []
    evaluate_items(counting, SYNTH, items, LoopOptions(num_frames=8, batch_size=5, workers=2),
                   write=rows.append, decode=decode)
    assert len(decoded) == 4 and len(set(decoded)) == 4 and counting.encodes == 4
    assert counting.chats == [5, 5, 2]
    alone = []
    evaluate_items(pipe, SYNTH, items, LoopOptions(num_frames=8, batch_size=1, workers=0), write=alone.append)
    assert [(r["question_id"], r["response"]) for r in rows] == [(r["question_id"], r["response"]) for r in alone]
    shares = [r["timings"]["decode"] for r in rows[:3]]
    assert shares[0] == shares[1] == shares[2] > 0  # each question carries a third of its video's decode


def test_bad_inputs_are_recorded_and_the_run_goes_on(world, tmp_path):
    """A missing, corrupt or empty video, an empty frame folder and a record without a field: each
    becomes a row with its error; the others are answered; the exit status says failures happened."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "videos").symlink_to(world / "videos")
    records = read_json(world / "test.json")[:3]
    (data / "corrupt.mp4").write_bytes(os.urandom(4000))
    (data / "empty.mp4").write_bytes(b"")
    (data / "no_frames").mkdir()
    bad = [{**records[0], "id": "missing", "video": "videos/nope.mp4"},
           {**records[0], "id": "corrupt", "video": "corrupt.mp4"},
           {**records[0], "id": "empty", "video": "empty.mp4"},
           {**records[0], "id": "folder", "video": "no_frames"},
           {k: v for k, v in records[0].items() if k != "meta"} | {"id": "nometa"}]
    (data / "test.json").write_text(json.dumps(records + bad))
    out = tmp_path / "out"
    assert main(["eval", "synth", "--data", str(data), "--out", str(out), "-q"]) == 1
    results = read_json(out / "results.json")
    assert (results["questions"], results["answered"], results["failed"]) == (8, 3, 5)
    assert results["overall"]["accuracy"]["n"] == 3
    errors = {f["question_id"]: f["error"] for f in results["failures"]}
    assert set(errors) == {"missing", "corrupt", "empty", "folder", "nometa"}
    assert "nope.mp4" in errors["missing"] and "missing field 'meta'" in errors["nometa"]
    assert "corrupt.mp4" in errors["corrupt"] and "empty.mp4" in errors["empty"] and "no_frames" in errors["folder"]


def test_resume_after_sigkill_gives_one_row_per_question(world, tmp_path):
    """A real SIGKILL in the middle of a run (and a torn last line): --resume ends with exactly one row
    per question, the rows written before the kill kept as they were."""
    out = tmp_path / "out"
    preds = out / "predictions.jsonl"
    cmd = [sys.executable, "-m", "videoccam", "eval", "synth", "--data", str(world), "--out", str(out),
           "--batch-size", "1", "--num-frames", "32", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not preds.exists() or preds.read_text().count("\n") < 3):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_rows(preds)
    assert 3 <= len(before) < 12
    with open(preds, "a") as f:
        f.write('{"question_id": "test_0000')  # a torn write
    refused = run_cli(*cmd[3:])
    assert refused.returncode == 2 and "--resume" in refused.stderr
    done = run_cli(*cmd[3:], "--resume")
    assert done.returncode == 0, done.stderr
    rows = read_rows(preds)
    ids = [r["question_id"] for r in rows]
    assert sorted(ids) == sorted(r["id"] for r in read_json(world / "test.json")) and len(ids) == len(set(ids)) == 12
    assert rows[: len(before)] == before
    assert read_json(out / "results.json")["answered"] == 12


def test_sweep_and_rescoring(world, tmp_path):
    out = tmp_path / "sweep"
    assert main(["eval", "synth", "--data", str(world), "--out", str(out), "--num-frames", "4", "16",
                 "--limit", "6", "-q"]) == 0
    sweep = read_json(out / "sweep.json")
    assert [s["num_frames"] for s in sweep] == [4, 16] and all(s["metric"] == "accuracy" for s in sweep)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert len(read_rows(out / "frames-4" / "predictions.jsonl")) == 6
    assert read_rows(out / "frames-4" / "predictions.jsonl")[0]["frame_indices"] == [8, 24, 40, 56]
    rescored = tmp_path / "rescored"
    assert main(["eval", "score", "synth", "--data", str(world), "--predictions",
                 str(out / "frames-16" / "predictions.jsonl"), "--out", str(rescored), "-q"]) == 0
    assert read_json(rescored / "results.json")["overall"] == read_json(out / "frames-16" / "results.json")["overall"]


def test_prediction_file_refuses_duplicates_and_overwrites(tmp_path):
    path = tmp_path / "p.jsonl"
    with PredictionFile.open(path, resume=False) as store:
        store.write({"question_id": "a"})
        with pytest.raises(ValueError, match="written twice"):
            store.write({"question_id": "a"})
    with pytest.raises(PredictionsExistError, match="--resume"):
        PredictionFile.open(path, resume=False)
    path.write_text('{"question_id": "a"}\nnot json\n{"question_id": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:2: not a JSON line"):
        read_rows(path)
